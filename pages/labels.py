"""Reviewers and admins: the most recent labels, with filters (a fixed list of columns, shown as
a table: prompts and rationales are untrusted text, never markdown)."""
import pandas as pd
import streamlit as st

from db.engine import session_scope
from db.models import LABEL_KINDS
from feedback import browse
from feedback.actors import Actor
from feedback.projects import all_projects
from feedback.quality import TOO_FAST_S, annotator_table
from pages.common import get_engine, require_page_role

me = require_page_role("reviewer", "admin")
st.title("Recent labels")
with session_scope(get_engine(), read_only=True) as s:
    projects = {p.id: p.name for p in all_projects(session=s)}  # reviewers see every project's labels
c1, c2, c3, c4 = st.columns(4)
project_id = c1.selectbox("Project", [None, *projects], format_func=lambda v: "all" if v is None else projects[v])
source = c2.selectbox("Source", [None, "human", "judge", "grader"], format_func=lambda v: v or "all")
kind = c3.selectbox("Kind", [None, *LABEL_KINDS], format_func=lambda v: v or "all")
username = c4.text_input("Annotator")
with session_scope(get_engine(), read_only=True) as s:
    rows = browse.recent_labels(session=s, user=s.merge(me), source=source, kind=kind, username=username or None,
                               project_id=project_id)
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

st.subheader("Annotators")
st.caption("People, the AI judge and graders alike. agree_others: share of agreeing label pairs on the same item; "
           "agree_majority: against the majority of the other labels; reliability: Dawid-Skene's expected accuracy; "
           f"left_wins: share of A/B choices for the left side (0.5 = no position bias); too_fast: labels under "
           f"{TOO_FAST_S:g} s.")
with session_scope(get_engine(), read_only=True) as s:
    measures = annotator_table(session=s, actor=Actor.signed_in(me), project_id=project_id)
st.dataframe(pd.DataFrame(measures), hide_index=True, width="stretch")
