import pandas as pd
import streamlit as st
from sqlalchemy import select

from db.engine import session_scope
from db.models import PolicyVersion
from feedback.browse import counts
from pages.common import get_engine, signed_in_user

user = signed_in_user()
st.title("Preference data")
st.caption(f"Signed in as {user.username} ({user.role})")

with session_scope(get_engine(), read_only=True) as session:
    totals = counts(session=session)
    versions = [
        {"name": v.name, "status": v.status, "base model": v.base_model, "stage": v.stage,
         "parent": v.parent.name if v.parent else None, "created": v.created_at}
        for v in session.scalars(select(PolicyVersion).order_by(PolicyVersion.id))
    ]

cols = st.columns(4)
for col, (name, value) in zip(cols, totals.items()):
    col.metric(name.capitalize(), value)

st.subheader("Policy versions")
st.dataframe(pd.DataFrame(versions), hide_index=True, width="stretch")
