"""Entry point: page config, the sign-in gate, and the navigation. No business logic here."""
import streamlit as st

from pages.common import signed_in_user

st.set_page_config(page_title="Preference data", page_icon=":material/thumbs_up_down:", layout="wide")

user = signed_in_user()
if user is None:
    navigation = st.navigation([st.Page("pages/sign_in.py", title="Sign in", icon=":material/login:")])
else:
    sections = {"": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)]}
    if user.role == "admin":
        sections["Admin"] = [st.Page("pages/data.py", title="Data", icon=":material/database:")]
    navigation = st.navigation(sections)
    with st.sidebar:
        st.write(f"**{user.username}** · {user.role}")
        if st.button("Sign out", icon=":material/logout:"):
            st.session_state.clear()
            st.rerun()
navigation.run()
