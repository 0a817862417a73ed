"""The real app driven by Streamlit's AppTest: sign-in gate, role-gated data page, import,
browse (model text shown as text, never HTML), sampling job start, export download."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Job, Prompt, Response
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.settings import PROJECT_ROOT
from feedback.users import create_user
from testkit.factories import set_queue

APP = str(PROJECT_ROOT / "app.py")
XSS = '<script>alert(1)</script><img src=x onerror="alert(2)">[click](javascript:alert(3))'


@pytest.fixture
def app_db(use_db, engine):
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        create_user(session=s, username="root", role="admin", password="admin-password", actor=CLI)
        create_user(session=s, username="ann", role="annotator", password="annotator-password", actor=CLI)
        # Signing in lands on Compare, whose empty pool would start a refill (a sampling job).
        set_queue(s, kind="pair", refill_below=0)
    return engine


def signed_in(username: str, password: str) -> AppTest:
    """Sign in through the real form. AppTest keeps running the sign-in script after its
    st.rerun(), so the test then opens the home page the way a browser lands on it."""
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input(username)
    at.text_input[1].input(password)
    at.button[0].click().run()
    if "user_id" in at.session_state:
        at.switch_page("pages/home.py").run()
    return at


def test_signed_out_sees_only_sign_in(app_db):
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert at.title[0].value == "Preference data"  # the product's name, then the form
    assert at.caption[0].value == "No account? Ask an admin for one."
    assert at.subheader[0].value == "Sign in"
    assert [(t.label, t.autocomplete) for t in at.text_input] == [("Username", "username"),
                                                                 ("Password", "current-password")]
    # Navigation only knows the sign-in page while signed out: the data page cannot be reached.
    with pytest.raises(ValueError, match="Known pages: .*sign_in.py"):
        at.switch_page("pages/data.py")


def test_wrong_password_is_refused(app_db):
    at = signed_in("root", "not-the-password")
    assert "wrong password" in at.error[0].value
    assert at.subheader[0].value == "Sign in" and "session_id" not in at.session_state


def test_annotator_cannot_open_data_page(app_db):
    at = signed_in("ann", "annotator-password")
    assert not at.exception
    assert at.title[0].value == "Preference data"
    assert at.caption[0].value.startswith("Signed in as ann (annotator)")
    at.switch_page("pages/data.py").run()
    assert any("needs the role admin" in e.value for e in at.error)
    assert not at.tabs


def test_admin_imports_prompts_and_sees_errors(app_db, tmp_path):
    at = signed_in("root", "admin-password")
    at.switch_page("pages/data.py").run()
    assert not at.exception
    assert at.title[0].value == "Data"
    assert [t.label for t in at.tabs] == ["Import prompts", "Browse", "Sample", "Export"]

    bad = b'{"prompt": "ok one"}\n{"prompt": 5}\n{"prompt": "ok two"}\n'
    at.file_uploader[0].upload("prompts.jsonl", bad).run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception
    assert "line 2" in at.dataframe[0].value["where"].tolist()
    with session_scope(app_db, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Prompt)) == 0  # all or nothing

    at.radio[0].set_value("skip").run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert any("Imported 2" in m.value for m in at.success)
    with session_scope(app_db, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Prompt)) == 2


def test_browse_shows_model_text_as_plain_data(app_db):
    with session_scope(app_db) as s:
        v0 = ensure_base_policy(session=s, actor=CLI)
        prompt = Prompt(text="p", messages=[{"role": "user", "content": "p"}], content_hash="h1", split="train")
        s.add(prompt)
        s.flush()
        s.add(Response(prompt_id=prompt.id, policy_version_id=v0.id, text=XSS, params={}))
    at = signed_in("root", "admin-password")
    at.switch_page("pages/data.py").run()
    at.segmented_control[0].set_value("Responses").run()
    assert not at.exception
    frame = at.dataframe[0].value
    assert XSS in frame["response"].tolist()  # carried as data to the grid, which renders text
    assert all(XSS not in m.value for m in at.markdown)  # and never through markdown/HTML


def test_admin_starts_sampling_job(app_db, monkeypatch):
    started = []
    monkeypatch.setattr("feedback.jobs.start_detached", lambda **kw: started.append(kw["job"].id) or 1)
    with session_scope(app_db) as s:
        s.add(Prompt(text="q", messages=[{"role": "user", "content": "q"}], content_hash="h2", split="train"))
    at = signed_in("root", "admin-password")
    at.switch_page("pages/data.py").run()
    start = next(b for b in at.button if b.label == "Start sampling job")
    start.click().run()
    assert not at.exception
    with session_scope(app_db, read_only=True) as s:
        job = s.scalar(select(Job))
        assert (job.kind == "sample" and job.config["limit"] == 16  # the config's default
                and job.created_by_id is not None)
    assert started == [job.id]
