"""An exception escaping a page (pages.common.run_page, which app.py runs every page through):
logged with its traceback, an apology for annotators, the exception itself for admins; st.rerun
and st.stop still work."""
from __future__ import annotations

import logging

import pytest
from streamlit.testing.v1 import AppTest


def page_script(role: str | None, behaviour: str) -> None:
    # AppTest runs this function's source as the page script: everything it needs is imported here.
    import streamlit as st

    from db.models import User
    from pages.common import run_page

    class Page:
        url_path = "broken"

        def run(self):
            st.write("page started")
            if behaviour == "raise":
                raise RuntimeError("database at /srv/secret.sqlite3 is locked")
            if behaviour == "stop":
                st.stop()
            if behaviour == "rerun" and not st.session_state.get("reran"):
                st.session_state["reran"] = True
                st.rerun()
            st.write("page finished")

    run_page(Page(), None if role is None else User(username="someone", role=role))


def run(role, behaviour) -> AppTest:
    return AppTest.from_function(page_script, args=(role, behaviour), default_timeout=30).run()


@pytest.mark.parametrize("role", ["annotator", "reviewer", None])
def test_people_other_than_admins_see_an_apology_and_no_traceback(role, caplog):
    with caplog.at_level(logging.ERROR, logger="pages.common"):
        at = run(role, "raise")
    assert [e.value for e in at.error] == [
        "Something went wrong on this page. It has been logged; try again, or tell an admin."]
    assert not at.exception  # neither st.exception nor Streamlit's own uncaught-exception box
    logged = [r for r in caplog.records if r.name == "pages.common"]
    assert logged and logged[0].exc_info and "secret.sqlite3" in str(logged[0].exc_info[1])


def test_admins_also_see_the_exception():
    at = run("admin", "raise")
    assert at.error[0].value.startswith("Something went wrong on this page.")
    assert [e.message for e in at.exception] == ["database at /srv/secret.sqlite3 is locked"]
    assert any("raise RuntimeError" in line for line in at.exception[0].stack_trace)  # with its traceback


@pytest.mark.parametrize("behaviour", ["stop", "rerun"])
def test_stop_and_rerun_pass_through(behaviour):
    at = run("annotator", behaviour)
    assert not at.error and not at.exception
    shown = [m.value for m in at.markdown]
    assert shown == (["page started"] if behaviour == "stop" else ["page started", "page finished"])
    if behaviour == "rerun":
        assert at.session_state["reran"]
