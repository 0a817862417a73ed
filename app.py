"""Entry point: page config, the sign-in gate, the project picker and the navigation. No business
logic here.

`streamlit run app.py` finds `app` at the bottom (an st.App) and serves it: these pages, and the
HTTP API (api/) under /api on the same port. The server imports this file once, as a module, to
find it (no page is running then); every browser session then runs it as the page script."""
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from cli import job_kinds
from db.engine import session_scope
from db.models import utcnow
from feedback.render import inert_text
from feedback.sessions import CLAIM_PATH, COOKIE_NAME, end_browser_sessions
from pages.common import (
    SESSION_KEY,
    SIGNED_OUT_KEY,
    TICKET_KEY,
    fetch_quietly,
    get_engine,
    project_picker,
    request_text,
    run_page,
    signed_in_user,
)

job_kinds.install()  # what the pages' jobs are and which module runs each

# One annotate page per task type; the picked project's task decides which one "Label" shows.
# Their url_paths differ from the file names on purpose: where Streamlit takes pages/ for an
# old-style pages directory (every AppTest run; a server until some session ran st.navigation, which
# the bottom of this file prevents) it runs a pages/ file a URL names directly, without this
# script, and these pages need the project picked here.
ANNOTATE_PAGES = {
    "pairwise": ("pages/annotate_pairwise.py", "Compare", ":material/compare:", "compare"),
    "binary": ("pages/annotate_binary.py", "Rate", ":material/thumbs_up_down:", "rate"),
    "rank": ("pages/annotate_rank.py", "Rank", ":material/format_list_numbered:", "rank"),
    "rating": ("pages/annotate_rating.py", "Rate aspects", ":material/star_rate:", "rate-aspects"),
    "edit": ("pages/annotate_edit.py", "Edit", ":material/edit_note:", "edit"),
}


SIGN_IN_PATH = "sign-in"


def page_url_paths() -> list[str]:
    """Every url_path a signed-in navigation may hold: the annotate pages', "label", and the other
    pages' file names (st.Page's default url_path)."""
    special = {path for path, *_ in ANNOTATE_PAGES.values()} | {"pages/sign_in.py", "pages/no_project.py"}
    others = sorted(p.stem for p in (Path(__file__).parent / "pages").glob("*.py")
                    if p.stem not in ("__init__", "common") and f"pages/{p.name}" not in special)
    return [url for *_, url in ANNOTATE_PAGES.values()] + ["label", *others]


def sign_in_pages() -> list:
    """The signed-out navigation: the sign-in page, also (hidden) under every page's url_path, so a
    deep link or a reload shows the sign-in form where it is, not "Page not found", and the same
    page opens once signed in (Streamlit knows a page by its url_path; one this user may not see
    gives way to the default page). Each of them runs the sign-in page, nothing else."""
    return [st.Page("pages/sign_in.py", title="Sign in", icon=":material/login:", url_path=SIGN_IN_PATH,
                    default=True),
            *(st.Page("pages/sign_in.py", title="Sign in", url_path=path, visibility="hidden")
              for path in page_url_paths())]


def hand_over_ticket() -> None:
    """Until it expires, draw the image that trades this tab's one-time ticket for the session
    cookie (drawn on every run until then: a run cut short by a page switch may never show it)."""
    pending = st.session_state.get(TICKET_KEY)
    if pending is None:
        return
    ticket, expires_at = pending
    if utcnow() >= expires_at:
        st.session_state.pop(TICKET_KEY, None)
        return
    fetch_quietly(f"{CLAIM_PATH}?ticket={ticket}")


def sign_out() -> None:
    """End this tab's session, and the one the browser's cookie names if another tab replaced it,
    everywhere they are used; the sign-in page then has the browser forget the cookie. Signed in
    through the identity provider, sign out there too: otherwise st.user would sign straight back in."""
    with session_scope(get_engine()) as session:
        end_browser_sessions(session=session, session_id=st.session_state.get(SESSION_KEY),
                             token=request_text(st.context.cookies.get(COOKIE_NAME)))
    st.session_state.clear()
    st.session_state[SIGNED_OUT_KEY] = True
    if getattr(st.user, "is_logged_in", False):
        st.logout()  # the browser is sent through /auth/logout (and the provider's end-session page)
    st.rerun()


def main() -> None:
    st.set_page_config(page_title="Preference data", page_icon="⚖️", layout="wide")
    user = signed_in_user()
    if user is None:
        navigation = st.navigation(sign_in_pages())
    else:
        project = project_picker(user)  # drawn before the navigation: it decides the "Label" page
        if project is None:
            label = [st.Page("pages/no_project.py", title="Label", icon=":material/block:", url_path="label",
                             default=True)]
            wanted = None
        else:
            # The other tasks' pages stay registered but hidden, so a tab left on one of them (or a
            # change of project) can be sent on to this project's page below.
            label = [st.Page(path, title=title, icon=icon, url_path=url, default=task == project.task_type,
                             visibility="visible" if task == project.task_type else "hidden")
                     for task, (path, title, icon, url) in ANNOTATE_PAGES.items()]
            wanted = next(page for page in label if page.visibility == "visible")
        sections = {
            "Label": label,
            "Overview": [st.Page("pages/home.py", title="Home", icon=":material/home:")],
        }
        if user.role in ("reviewer", "admin"):
            sections["Overview"] += [st.Page("pages/labels.py", title="Labels", icon=":material/table:"),
                                     st.Page("pages/review.py", title="Review", icon=":material/rule:")]
            sections["Overview"] += [
                st.Page("pages/leaderboard.py", title="Leaderboard", icon=":material/leaderboard:")]
        if user.role == "admin":
            sections["Admin"] = [
                st.Page("pages/projects.py", title="Projects", icon=":material/folder_open:"),
                st.Page("pages/data.py", title="Data", icon=":material/database:"),
                st.Page("pages/judge.py", title="AI judge", icon=":material/gavel:"),
                st.Page("pages/training.py", title="Training", icon=":material/model_training:"),
                st.Page("pages/users.py", title="Users", icon=":material/group:"),
                st.Page("pages/webhooks.py", title="Webhooks", icon=":material/webhook:"),
            ]
        navigation = st.navigation(sections)
        if wanted is not None and navigation in label and navigation is not wanted:
            st.switch_page(wanted)  # on another task's annotate page: go to this project's
        with st.sidebar:
            st.write(f"**{inert_text(user.username)}** · {user.role}")  # "_", "@" and "-" are allowed in names
            if st.button("Sign out", icon=":material/logout:"):
                sign_out()
            hand_over_ticket()
    run_page(navigation, user)  # a failing page: an apology for most, the exception for admins


if get_script_run_ctx(suppress_warning=True) is None:  # imported by the server, to serve the pages and the API
    from streamlit.runtime.pages_manager import PagesManager

    from api.server import api_routes

    # pages/ holds our st.navigation pages, not a Streamlit "pages directory" app. Streamlit decides
    # which kind an app is once per server, and until some session has run st.navigation it takes
    # pages/ for the old kind: a deep link (/review) on a fresh server ran pages/review.py alone,
    # without this script, under a sidebar of every file. Saying so up front, as st.navigation does
    # on its first call, makes every first visit run this script.
    PagesManager.uses_pages_directory = False
    app = st.App(__file__, routes=api_routes())
else:
    main()
