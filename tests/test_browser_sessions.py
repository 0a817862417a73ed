"""Sign-in that survives a reload, in headless Chromium against the real app (`streamlit run
app.py`): the HttpOnly session cookie, F5, a second tab, sign-out reaching the other tab, a
second tab's sign-in replacing the first's session, and a deep link opened while signed out."""
from __future__ import annotations

import pytest

from db.engine import make_engine, session_scope
from db.migrate import upgrade
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.sessions import COOKIE_NAME
from feedback.users import create_user
from testkit.browser import chromium
from testkit.factories import set_queue
from testkit.local_servers import AppDidNotStart, running_app

pytestmark = [pytest.mark.browser]

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

PASSWORDS = {"ann": "annotator-pw", "rev": "reviewer-pw"}
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    yield from _served(tmp_path_factory)


@pytest.fixture
def fresh_base(tmp_path_factory):
    """A server no browser has visited yet (the module's `base` has been, by earlier tests)."""
    yield from _served(tmp_path_factory)


def _served(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('sessions') / 'app.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        for name, role in (("ann", "annotator"), ("rev", "reviewer")):
            create_user(session=s, username=name, role=role, password=PASSWORDS[name], actor=CLI)
        set_queue(s, kind="pair", refill_below=0)  # an empty Compare page starts no sampling worker
    engine.dispose()
    try:
        with running_app(url, tmp_path_factory.mktemp("sessions-log") / "streamlit.log") as running:
            yield running
    except AppDidNotStart as exc:
        pytest.fail(str(exc))


@pytest.fixture
def context():
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        yield context


def fill_sign_in(page, username: str) -> None:
    expect(page.get_by_role("heading", name="Preference data")).to_be_visible()
    expect(page.get_by_text("No account? Ask an admin for one.")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_attribute("autocomplete", "username")
    expect(page.get_by_label("Password", exact=True)).to_have_attribute("autocomplete", "current-password")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()


def signed_in_as(page, username: str) -> None:
    expect(page.get_by_test_id("stSidebar").get_by_text(username, exact=True)).to_be_visible()


def signed_out(page) -> None:
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_test_id("stSidebar").get_by_text("ann", exact=True)).to_have_count(0)


def session_cookie(context) -> dict | None:
    return next((c for c in context.cookies() if c["name"] == COOKIE_NAME), None)


def wait_for_cookie(page, context, present: bool) -> dict | None:
    for _ in range(50):
        if (session_cookie(context) is not None) == present:
            return session_cookie(context)
        page.wait_for_timeout(100)
    raise AssertionError(f"the session cookie is {'missing' if present else 'still there'}")


def test_a_reload_and_a_second_tab_stay_signed_in_until_sign_out(base, context):
    page = context.new_page()
    page.goto(base)
    fill_sign_in(page, "ann")
    expect(page.get_by_role("heading", name="Compare responses")).to_be_visible()
    signed_in_as(page, "ann")

    cookie = wait_for_cookie(page, context, present=True)  # set by the ticket image the page drew
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert cookie["expires"] > 0  # kept across browser restarts, not a session-only cookie
    assert page.evaluate("document.cookie").find(COOKIE_NAME) == -1  # the page's scripts cannot read it

    page.reload()  # F5
    signed_in_as(page, "ann")
    expect(page.get_by_role("heading", name="Compare responses")).to_be_visible()

    other = context.new_page()  # a second tab, same browser
    other.goto(f"{base}/home")
    signed_in_as(other, "ann")
    expect(other.get_by_role("heading", name="Preference data")).to_be_visible()

    other.get_by_role("button", name="Sign out").click()
    signed_out(other)
    wait_for_cookie(other, context, present=False)  # the sign-in page had the browser forget it

    # The first tab, untouched so far, is signed out at its next action.
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Home").click()
    signed_out(page)
    page.reload()
    signed_out(page)


def test_a_second_tab_signing_in_replaces_the_first_tabs_session(base, context):
    # Two tabs opened signed out; each signs in, so there are two sessions but one cookie.
    first, second = context.new_page(), context.new_page()
    first.goto(base)
    second.goto(base)
    fill_sign_in(first, "ann")
    signed_in_as(first, "ann")
    first_cookie = wait_for_cookie(first, context, present=True)
    fill_sign_in(second, "rev")
    signed_in_as(second, "rev")
    for _ in range(50):  # the second tab's image replaces the cookie
        if session_cookie(context)["value"] != first_cookie["value"]:
            break
        second.wait_for_timeout(100)
    else:
        raise AssertionError("the second sign-in did not replace the cookie")
    # The session the browser no longer holds ended: the first tab is signed out at its next action
    # (else signing out in the second tab would leave it signed in unseen).
    first.get_by_test_id("stSidebarNav").get_by_role("link", name="Home").click()
    signed_out(first)
    second.get_by_role("button", name="Sign out").click()
    expect(second.get_by_role("button", name="Sign in")).to_be_visible()
    wait_for_cookie(second, context, present=False)
    first.reload()
    signed_out(first)


def no_page_not_found(page) -> None:
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.get_by_text("Page not found")).to_have_count(0)


def test_a_deep_link_opened_signed_out_lands_there_after_signing_in(base, context):
    page = context.new_page()
    page.goto(f"{base}/review")
    fill_sign_in(page, "rev")  # the form where the link pointed, no "Page not found" over it
    no_page_not_found(page)
    expect(page.get_by_role("heading", name="Review")).to_be_visible()
    signed_in_as(page, "rev")
    wait_for_cookie(page, context, present=True)
    page.reload()  # the deep link again, now signed in: the cookie is read
    expect(page.get_by_role("heading", name="Review")).to_be_visible()
    assert page.url.endswith("/review")


def test_a_deep_link_is_the_first_visit_of_a_fresh_server(fresh_base, context):
    # Until some session has run app.py's st.navigation, Streamlit took pages/ for an old-style
    # pages directory and ran pages/review.py alone, under a sidebar listing every file.
    page = context.new_page()
    page.goto(f"{fresh_base}/review")
    fill_sign_in(page, "rev")
    expect(page.get_by_role("heading", name="Review")).to_be_visible()
    expect(page.get_by_test_id("stSidebarNavLink").filter(has_text="common")).to_have_count(0)


def test_a_deep_link_to_a_page_the_user_may_not_see_lands_on_the_default_page(base, context):
    page = context.new_page()
    page.goto(f"{base}/review")
    fill_sign_in(page, "ann")  # an annotator: no Review page
    expect(page.get_by_role("heading", name="Compare responses")).to_be_visible()
    signed_in_as(page, "ann")
    no_page_not_found(page)
