"""Admin: accounts and roles. Every action goes through feedback.users, which checks the role again."""
import pandas as pd
import streamlit as st

from db.engine import session_scope
from db.models import ROLES
from feedback import users
from feedback.actors import Actor
from feedback.render import inert_text
from pages.common import call_service, get_engine, require_page_role

me = require_page_role("admin")
engine = get_engine()
st.title("Users")


def run(action, **kwargs):
    """Call a user service as the signed-in admin (pages.common.call_service)."""
    return call_service(me, action, **kwargs)


with st.form("add_user", clear_on_submit=True):
    st.subheader("Add a user")
    c1, c2 = st.columns([3, 1])
    username = c1.text_input("Username")
    role = c2.selectbox("Role", ROLES)
    if st.form_submit_button("Create", type="primary"):
        created = run(users.add_user, username=username, role=role)
        if created:
            st.success(f"Created {inert_text(created[0].username)} ({role}). Password, shown once:")
            st.code(created[1], language=None)

with session_scope(engine, read_only=True) as s:
    accounts = users.list_users(session=s, actor=Actor.signed_in(me))
st.subheader("Accounts")
st.dataframe(pd.DataFrame([{"username": u.username, "role": u.role, "active": u.active, "created": u.created_at}
                           for u in accounts]), hide_index=True, width="stretch")

st.subheader("Change an account")
by_name = {u.username: u for u in accounts}
name = st.selectbox("Account", list(by_name))
if name:
    target = by_name[name]
    c1, c2, c3 = st.columns(3)
    new_role = c1.selectbox("Role", ROLES, index=ROLES.index(target.role), key=f"role-{target.id}")
    if c1.button("Change role", disabled=new_role == target.role):
        if run(users.set_role, user_id=target.id, role=new_role):
            st.rerun()
    if c2.button("Deactivate" if target.active else "Reactivate"):
        if run(users.set_active, user_id=target.id, active=not target.active):
            st.rerun()
    if c3.button("Reset password"):
        password = run(users.reset_password, user_id=target.id)
        if password:
            st.success(f"New password for {inert_text(name)}, shown once:")
            st.code(password, language=None)
