import pandas as pd
import streamlit as st

from db.engine import session_scope
from feedback.browse import counts
from feedback.policies import list_policies
from pages.common import get_engine, signed_in_user

user = signed_in_user()
st.title("Preference data")
st.caption(f"Signed in as {user.username} ({user.role})")

with session_scope(get_engine(), read_only=True) as session:
    totals = counts(session=session)
    versions = [
        {"name": v.name, "status": v.status, "base model": v.base_model, "stage": v.stage,
         "parent": v.parent.name if v.parent else None, "created": v.created_at}
        for v in list_policies(session=session)
    ]

cols = st.columns(len(totals))
for col, (name, value) in zip(cols, totals.items(), strict=True):
    col.metric(name.capitalize(), value)

st.subheader("Policy versions")
st.dataframe(pd.DataFrame(versions), hide_index=True, width="stretch")
