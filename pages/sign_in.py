import streamlit as st

from db.engine import session_scope
from db.models import User
from feedback.errors import UserError
from feedback.sessions import CLEAR_PATH, start_session
from feedback.users import sign_in, sso_user
from pages.common import SESSION_KEY, SIGNED_OUT_KEY, TICKET_KEY, USER_KEY, fetch_quietly, get_engine, request_text

# Set once this tab has signed out: a still signed-in identity provider (st.user is read when the
# tab's session starts, so another tab's st.logout does not reach it) does not sign it back in
# until the button is pressed.
SSO_PAUSED_KEY = "sso_paused"


def _resume_sso() -> None:
    st.session_state.pop(SSO_PAUSED_KEY, None)


def _sso_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def _client() -> str:
    return request_text(st.context.ip_address)


def _signed_in(session, user: User) -> None:
    """Start a browser session for `user` in the caller's transaction; this tab uses it at once,
    and app.py draws the image that trades its ticket for the cookie (reloads, other tabs)."""
    new = start_session(session=session, user=user, client=_client(),
                        user_agent=request_text(st.context.headers.get("User-Agent")))
    st.session_state[SESSION_KEY] = new.session_id
    st.session_state[USER_KEY] = user.id
    st.session_state[TICKET_KEY] = (new.ticket, new.ticket_expires_at)


st.title("Preference data")
st.caption("No account? Ask an admin for one.")
if st.session_state.pop(SIGNED_OUT_KEY, False):
    fetch_quietly(CLEAR_PATH)  # the browser forgets the ended session's cookie
    st.session_state[SSO_PAUSED_KEY] = True

if _sso_configured():
    # OIDC through Streamlit's st.login; the account itself must exist (named by its e-mail).
    idp_signed_in = getattr(st.user, "is_logged_in", False)
    if idp_signed_in and st.session_state.get(SSO_PAUSED_KEY):
        st.button("Sign in with single sign-on", on_click=_resume_sso, type="primary")
    elif idp_signed_in:
        with session_scope(get_engine()) as session:
            user = sso_user(session=session, email=st.user.get("email") or "")
            if user is not None:
                _signed_in(session, user)
        if user is None:
            st.error("No active account for this e-mail address; ask an admin to create one.")
            st.button("Sign out of the identity provider", on_click=st.logout)
        else:
            st.rerun()
    else:
        st.button("Sign in with single sign-on", on_click=st.login, type="primary")
    st.divider()

with st.form("sign_in"):
    st.subheader("Sign in")
    # The autocomplete hints let password managers offer and fill the saved account.
    username = st.text_input("Username", autocomplete="username")
    password = st.text_input("Password", type="password", autocomplete="current-password")
    submitted = st.form_submit_button("Sign in", type="primary")

if submitted:
    try:
        with session_scope(get_engine()) as session:
            user = sign_in(session=session, username=username, password=password, client=_client())
            if user is not None:
                _signed_in(session, user)
    except UserError as exc:
        st.error(str(exc))
    else:
        if user is None:
            st.error("Unknown username or wrong password.")
        else:
            st.rerun()
