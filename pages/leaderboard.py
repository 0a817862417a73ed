"""Reviewers and admins: policy versions ranked by their head-to-head pairwise labels
(feedback.leaderboard: Bradley-Terry ratings with bootstrap intervals, and the win matrix), from
people, the AI judge or both, in one project or all of them."""
import altair as alt
import pandas as pd
import streamlit as st

from db.engine import session_scope
from feedback.leaderboard import EMPTY, SOURCE_CHOICES, leaderboard
from feedback.projects import all_projects
from feedback.render import inert_markdown
from pages.common import get_engine, require_page_role

require_page_role("reviewer", "admin")
engine = get_engine()
SOURCE_NAMES = {"human": "People", "judge": "AI judge", "all": "Both"}
st.title("Leaderboard")

with session_scope(engine, read_only=True) as s:
    projects = {p.id: p.name for p in all_projects(session=s) if p.task_type == "pairwise"}
c1, c2 = st.columns(2)
source = c1.radio("Labels from", list(SOURCE_CHOICES), format_func=SOURCE_NAMES.get, horizontal=True)
project_id = c2.selectbox("Project", [None, *projects],
                          format_func=lambda p: "all projects" if p is None else projects[p])
with session_scope(engine, read_only=True) as s:
    board = leaderboard(session=s, sources=SOURCE_CHOICES[source], project_id=project_id)
if not board.standings:
    st.info(EMPTY)
    st.stop()

st.caption(f"{board.comparisons} comparisons. Ratings are Bradley-Terry strengths on an Elo-like scale (the versions "
           "average 1000; 400 points are odds of 10 to 1), with 95% bootstrap intervals. A tie or \"both bad\" "
           "counts as half a win each way; an item with a final answer counts once, with that answer.")
if board.note:
    st.warning(inert_markdown(board.note))  # it names versions: names can come from imported files
table = pd.DataFrame([{"version": r.name, "rating": r.rating, "low (95%)": r.low, "high (95%)": r.high,
                       "comparisons": r.comparisons, "wins": r.wins, "losses": r.losses, "ties": r.ties}
                      for r in board.standings])
whole = st.column_config.NumberColumn(format="%.0f")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={c: whole for c in ("rating", "low (95%)", "high (95%)")})

rated = table.dropna(subset=["rating"])
order = rated["version"].tolist()  # best first
y = alt.Y("version:N", sort=order, title=None, axis=alt.Axis(labelOverlap=False))
bars = alt.Chart(rated).mark_rule(strokeWidth=2).encode(
    y=y, x=alt.X("low (95%):Q", title="rating", scale=alt.Scale(zero=False)), x2="high (95%):Q")
points = alt.Chart(rated).mark_point(filled=True, size=80).encode(
    y=y, x="rating:Q", tooltip=["version", alt.Tooltip("rating:Q", format=".0f"), "comparisons"])
st.altair_chart((bars + points).properties(height=60 * len(rated)), width="stretch")

st.subheader("Win rates")
st.caption("The share of comparisons the row version won against the column version (ties: half), and their number.")
cells = pd.DataFrame([{"version": c.row, "against": c.column, "share": c.share, "n": c.n,
                       "label": f"{c.share:.0%} of {c.n}"} for c in board.cells])
names = [r.name for r in board.standings]
base = alt.Chart(cells).encode(x=alt.X("against:N", sort=names, title="against", axis=alt.Axis(labelAngle=0)),
                               y=alt.Y("version:N", sort=names, title=None))
heat = base.mark_rect().encode(
    color=alt.Color("share:Q", scale=alt.Scale(domain=[0, 1], scheme="redblue"), title="won"),
    tooltip=["version", "against", alt.Tooltip("share:Q", format=".0%"), "n"])
text = base.mark_text().encode(text="label:N")
st.altair_chart((heat + text).properties(height=60 * len(names)), width="stretch")
