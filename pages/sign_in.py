import streamlit as st

from db.engine import session_scope
from feedback.errors import UserError
from feedback.users import sign_in, sso_user
from pages.common import get_engine


def _sso_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def _signed_in(user_id: int) -> None:
    st.session_state["user_id"] = user_id
    st.rerun()


st.title("Sign in")

if _sso_configured():
    # OIDC through Streamlit's st.login; the account itself must exist (named by its e-mail).
    if getattr(st.user, "is_logged_in", False):
        with session_scope(get_engine(), read_only=True) as session:
            user = sso_user(session=session, email=st.user.get("email") or "")
            user_id = user.id if user else None
        if user_id is None:
            st.error("No active account for this e-mail address; ask an admin to create one.")
            st.button("Sign out of the identity provider", on_click=st.logout)
        else:
            _signed_in(user_id)
    else:
        st.button("Sign in with single sign-on", on_click=st.login, type="primary")
    st.divider()

with st.form("sign_in"):
    username = st.text_input("Username")
    password = st.text_input("Password", type="password")
    submitted = st.form_submit_button("Sign in", type="primary")

if submitted:
    try:
        with session_scope(get_engine()) as session:
            user = sign_in(session=session, username=username, password=password)
            user_id = user.id if user else None
    except UserError as exc:
        st.error(str(exc))
    else:
        if user_id is None:
            st.error("Unknown username or wrong password.")
        else:
            _signed_in(user_id)
