import streamlit as st

from db.engine import session_scope
from feedback.users import authenticate
from pages.common import get_engine

st.title("Sign in")
with st.form("sign_in"):
    username = st.text_input("Username")
    password = st.text_input("Password", type="password")
    submitted = st.form_submit_button("Sign in", type="primary")

if submitted:
    with session_scope(get_engine()) as session:
        user = authenticate(session=session, username=username, password=password)
        user_id = user.id if user else None
    if user_id is None:
        st.error("Unknown username or wrong password.")
    else:
        st.session_state["user_id"] = user_id
        st.rerun()
