"""What every page needs: the shared engine, the signed-in user, role checks."""
from __future__ import annotations

import streamlit as st
from sqlalchemy import Engine

from db.engine import engine_for, session_scope
from db.models import User
from feedback.settings import get_settings


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> Engine:
    return engine_for(url)


def get_engine() -> Engine:
    # Read at call time: tests and deployments point DATABASE_URL elsewhere.
    return _engine(get_settings().database_url)


def signed_in_user() -> User | None:
    """The signed-in user, freshly loaded: a deactivated account or changed role applies at once."""
    user_id = st.session_state.get("user_id")
    if user_id is None:
        return None
    with session_scope(get_engine(), read_only=True) as session:
        user = session.get(User, user_id)
    if user is None or not user.active:
        st.session_state.pop("user_id", None)
        return None
    return user


def require_page_role(*roles: str) -> User:
    """Stop the page unless the signed-in user has one of `roles` (the services check again)."""
    user = signed_in_user()
    if user is None or user.role not in roles:
        st.error(f"This page needs the role {' or '.join(roles)}.")
        st.stop()
    return user
