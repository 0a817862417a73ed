"""Reviewers and admins: the most recent labels, with filters (a fixed list of columns, shown as
a table: prompts and rationales are untrusted text, never markdown)."""
import pandas as pd
import streamlit as st

from db.engine import session_scope
from db.models import LABEL_KINDS, User
from feedback import browse
from feedback.projects import all_projects
from pages.common import annotator_measures, get_engine, require_page_role

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
    rows = browse.recent_labels(session=s, user=s.get(User, me.id), source=source, kind=kind, username=username or None,
                               project_id=project_id)
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

st.subheader("Annotators")
annotator_measures(me, project_id)
