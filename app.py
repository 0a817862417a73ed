"""Entry point: page config, the sign-in gate, and the navigation. No business logic here."""
import streamlit as st

from cli import job_kinds
from pages.common import signed_in_user

job_kinds.install()  # what the pages' jobs are and which module runs each

st.set_page_config(page_title="Preference data", page_icon="⚖️", layout="wide")

user = signed_in_user()
if user is None:
    navigation = st.navigation([st.Page("pages/sign_in.py", title="Sign in", icon=":material/login:")])
else:
    sections = {
        "Label": [
            st.Page("pages/annotate_pairwise.py", title="Compare", icon=":material/compare:", default=True),
            st.Page("pages/annotate_binary.py", title="Rate", icon=":material/thumbs_up_down:"),
        ],
        "Overview": [st.Page("pages/home.py", title="Home", icon=":material/home:")],
    }
    if user.role in ("reviewer", "admin"):
        sections["Overview"].append(st.Page("pages/labels.py", title="Labels", icon=":material/table:"))
    if user.role == "admin":
        sections["Admin"] = [
            st.Page("pages/data.py", title="Data", icon=":material/database:"),
            st.Page("pages/judge.py", title="AI judge", icon=":material/gavel:"),
            st.Page("pages/training.py", title="Training", icon=":material/model_training:"),
            st.Page("pages/queue.py", title="Queue", icon=":material/queue:"),
            st.Page("pages/users.py", title="Users", icon=":material/group:"),
        ]
    navigation = st.navigation(sections)
    with st.sidebar:
        st.write(f"**{user.username}** · {user.role}")
        if st.button("Sign out", icon=":material/logout:"):
            st.session_state.clear()
            st.rerun()
navigation.run()
