"""Reviewers and admins: the most recent labels, with filters (a fixed list of columns)."""
import pandas as pd
import streamlit as st

from db.engine import session_scope
from feedback import queue
from pages.common import get_engine, require_page_role

me = require_page_role("reviewer", "admin")
st.title("Recent labels")
c1, c2, c3 = st.columns(3)
source = c1.selectbox("Source", [None, "human", "judge", "grader"], format_func=lambda v: v or "all")
kind = c2.selectbox("Kind", [None, "pairwise", "binary", "score"], format_func=lambda v: v or "all")
username = c3.text_input("Annotator")
with session_scope(get_engine(), read_only=True) as s:
    rows = queue.recent_labels(session=s, user=s.merge(me), source=source, kind=kind, username=username or None)
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
