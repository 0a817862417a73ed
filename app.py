"""Entry point: page config, the sign-in gate, the project picker and the navigation. No business
logic here.

`streamlit run app.py` finds `app` at the bottom (an st.App) and serves it: these pages, and the
HTTP API (api/) under /api on the same port. The server imports this file once, as a module, to
find it (no page is running then); every browser session then runs it as the page script."""
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from cli import job_kinds
from pages.common import project_picker, signed_in_user

job_kinds.install()  # what the pages' jobs are and which module runs each

# One annotate page per task type; the picked project's task decides which one "Label" shows.
# Their url_paths differ from the file names on purpose: Streamlit runs a pages/ file that a URL
# names directly, without this script, on a server's first run (and in every AppTest run), and
# these pages need the project picked here.
ANNOTATE_PAGES = {
    "pairwise": ("pages/annotate_pairwise.py", "Compare", ":material/compare:", "compare"),
    "binary": ("pages/annotate_binary.py", "Rate", ":material/thumbs_up_down:", "rate"),
    "rank": ("pages/annotate_rank.py", "Rank", ":material/format_list_numbered:", "rank"),
    "rating": ("pages/annotate_rating.py", "Rate aspects", ":material/star_rate:", "rate-aspects"),
    "edit": ("pages/annotate_edit.py", "Edit", ":material/edit_note:", "edit"),
}


def main() -> None:
    st.set_page_config(page_title="Preference data", page_icon="⚖️", layout="wide")
    user = signed_in_user()
    if user is None:
        navigation = st.navigation([st.Page("pages/sign_in.py", title="Sign in", icon=":material/login:",
                                              url_path="sign-in")])
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
            st.write(f"**{user.username}** · {user.role}")
            if st.button("Sign out", icon=":material/logout:"):
                st.session_state.clear()
                st.rerun()
    navigation.run()


if get_script_run_ctx(suppress_warning=True) is None:  # imported by the server, to serve the pages and the API
    from api.server import api_routes

    app = st.App(__file__, routes=api_routes())
else:
    main()
