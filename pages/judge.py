"""Admin: AI judge. Edit constitutions (each edit is a new version), launch judge batches as
background jobs and watch them, and see how far the judge agrees with people."""
from dataclasses import asdict

import altair as alt
import pandas as pd
import streamlit as st

from db.engine import session_scope
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.render import inert_markdown, inert_text
from judges import calibration
from judges.backends import BACKENDS
from judges.batch import JudgeConfig, recent_judgments
from judges.constitutions import DEFAULT_NAME, ensure_shipped, list_constitutions, save_constitution
from judges.graders import parse_grader
from pages.common import get_engine, live_job_progress, require_page_role, start_admin_job, user_timezone

me = require_page_role("admin")
engine = get_engine()
st.title("AI judge")

with session_scope(engine) as s:
    ensure_shipped(session=s)
    constitutions = list_constitutions(session=s)
latest = {}
for c in constitutions:
    latest[c.name] = c  # ordered by version: the last one wins
default_index = list(latest).index(DEFAULT_NAME) if DEFAULT_NAME in latest else 0

tab_run, tab_graders, tab_constitutions, tab_calibration = st.tabs(
    ["Run a batch", "Graders", "Constitutions", "Calibration"])

with tab_constitutions:
    name = st.selectbox("Constitution", list(latest), index=default_index, key="edit_constitution")
    current = latest[name]
    st.caption(f"Version {current.version} · hash {current.content_hash[:12]}")
    edited = st.text_area("Principles, one per line", "\n".join(current.principles), height=180,
                          key=f"principles-{current.id}")
    new_name = st.text_input("Save as (a new name starts a new constitution)", name)
    if st.button("Save a new version", type="primary"):
        try:
            with session_scope(engine) as s:
                saved = save_constitution(session=s, name=new_name, principles=edited.splitlines(),
                                          actor=Actor.signed_in(me))
                label = f"{saved.name} v{saved.version}"
            st.success(f"Saved {inert_text(label)}.")
        except UserError as exc:
            st.error(inert_markdown(str(exc)))
    st.dataframe(pd.DataFrame([{"name": c.name, "version": c.version, "principles": len(c.principles),
                                "hash": c.content_hash[:12], "created": c.created_at} for c in constitutions]),
                 hide_index=True, width="stretch")

with tab_run:
    defaults = JudgeConfig()  # the form starts from the config's own defaults
    with st.form("judge"):
        c1, c2, c3 = st.columns(3)
        constitution = c1.selectbox("Constitution", list(latest), index=default_index)
        backend = c2.selectbox("Backend", BACKENDS.names(), index=BACKENDS.names().index(defaults.backend))
        model = c3.text_input("Model (empty: the backend's default)")
        c1, c2, c3 = st.columns(3)
        mode = c1.selectbox("Principles", ["sample", "all"], format_func={
            "sample": "one sampled per pair", "all": "every principle, majority"}.get)
        selection = c2.selectbox("Pairs", ["unlabelled", "disputed", "calibration", "failed"], format_func={
            "unlabelled": "not labelled yet", "disputed": "humans disagree",
            "calibration": "sample of human-labelled (calibration)", "failed": "this judge failed on before"}.get)
        disagreement = c3.selectbox("When the two orders disagree", ["escalate", "tie"], format_func={
            "escalate": "leave the pair to humans", "tie": "label a tie"}.get)
        c1, c2, c3, c4 = st.columns(4)
        max_items = c1.number_input("Most pairs", 1, 100_000, defaults.max_items)
        max_cost = c2.number_input("Budget in USD (0: none)", 0.0, 10_000.0, defaults.max_cost_usd or 0.0)
        concurrency = c3.number_input("Concurrency", 1, 64, defaults.concurrency)
        batch_api = c4.checkbox("Batch API (cheaper, slower)", value=defaults.batch_api)
        c1, c2 = st.columns(2)
        price_in = c1.number_input("Price per million input tokens, USD (0: the backend's own)", 0.0, 1000.0, 0.0,
                                   help="Needed for a budget when the price table does not know the model.")
        price_out = c2.number_input("Price per million output tokens, USD (0: the backend's own)", 0.0, 1000.0, 0.0)
        start = st.form_submit_button("Start judging", type="primary")
    if start:
        try:
            config = JudgeConfig(constitution=constitution, backend=backend, model=model or None, mode=mode,
                                 selection=selection, on_disagreement=disagreement, max_items=int(max_items),
                                 max_cost_usd=max_cost or None, concurrency=int(concurrency), batch_api=batch_api,
                                 price_input_per_mtok=price_in or None, price_output_per_mtok=price_out or None)
            job = start_admin_job(engine, me, kind="judge", config=asdict(config))
            st.toast(f"Judge job {job.id} started")
        except UserError as exc:
            st.error(inert_markdown(str(exc)))

    live_job_progress(engine=engine, kind="judge", user=me, unit="pairs")

    with session_scope(engine, read_only=True) as s:
        recent = recent_judgments(session=s, limit=100)
        st.subheader("Recent judgments")
        st.dataframe(pd.DataFrame([{"job": j.job_id, "item": j.item_id, "outcome": j.outcome, "A first": j.verdict_ab,
                                    "B first": j.verdict_ba, "model": j.model,
                                    "tokens": (j.input_tokens or 0) + (j.output_tokens or 0),
                                    "cost_usd": j.cost_usd} for j in recent]), hide_index=True, width="stretch")

with tab_graders:
    st.write("Score responses against the prompts' reference answers (0 to 1). Pairs get the higher-scoring "
             "response as chosen (equal: tie); single responses get a score label.")
    with st.form("grade"):
        spec = st.text_input("Grader", "numeric", help="exact, normalized, numeric[:tol=0.01], regex:PATTERN, "
                             "similarity[:metric=ratio|token_set|bleu|chrf], python:FILE, "
                             "multi:0.7*numeric+0.3*similarity")
        grade_limit = st.number_input("Most items (0: all)", 0, 1_000_000, 0)
        start_grading = st.form_submit_button("Start grading", type="primary")
    if start_grading:
        try:
            parse_grader(spec)
            job = start_admin_job(engine, me, kind="grade", config={"spec": spec, "limit": int(grade_limit) or None})
            st.toast(f"Grading job {job.id} started")
        except UserError as exc:
            st.error(inert_markdown(str(exc)))

    live_job_progress(engine=engine, kind="grade", user=me, unit="items")

with tab_calibration:
    period = st.segmented_control("Per", list(calibration.PERIODS), default="week", key="calibration-period") or "week"
    with session_scope(engine, read_only=True) as s:
        report = calibration.judge_report(session=s)
        over_time = calibration.calibration_over_time(session=s, period=period, tz=user_timezone())
        humans = calibration.human_agreement(session=s)

    def shown(value, n: int) -> str:
        """A figure with the n behind it, or why there is none to read."""
        if not calibration.enough(n):
            return f"not enough data yet (n={n})"
        return f"{value:.2f} (n={n})" if value is not None else f"undefined: one answer throughout (n={n})"

    st.subheader("Judge, per constitution version")
    st.caption("Agreement and Cohen's kappa against the human majority on pairs both labelled; the flip rate is "
               "the share of judgments whose two orders disagreed; longer-wins is how often the longer response won. "
               f"A figure needs {calibration.MIN_N} pairs behind it: with fewer, one more pair moves it by 20 points "
               "or more.")
    if not report:
        st.info("No judgments yet — run a batch (Run a batch tab; the calibration selection judges pairs people "
                "have labelled) and the judge's agreement, kappa, flip rate and length bias appear here.")
    else:
        st.dataframe(pd.DataFrame([
            {"constitution": r["constitution"], "judgments": r["judgments"], "labels": r["labels"],
             **{title: shown(r[figure], r[n]) for figure, n, title in calibration.FIGURES}, "cost_usd": r["cost_usd"]}
            for r in report]), hide_index=True, width="stretch")
        st.subheader(f"Per {period}")
        points = pd.DataFrame([
            {"period": r["period"], "constitution": r["constitution"], "figure": title, "value": r[figure],
             "n": r[n]}
            for r in over_time for figure, n, title in calibration.FIGURES
            if calibration.enough(r[n]) and r[figure] is not None])
        for k, (figure, n, title) in enumerate(calibration.FIGURES):
            if k % 2 == 0:  # two per row, in reading order
                chart_cols = st.columns(2)
            with chart_cols[k % 2]:
                st.markdown(f"**{title}**")
                mine = points[points["figure"] == title] if not points.empty else points
                if mine.empty and any(calibration.enough(r[n]) for r in over_time):
                    st.caption("Undefined so far: people and the judge gave one and the same answer throughout.")
                    continue
                if mine.empty:
                    st.caption(f"Not enough data yet: a {period} shows once it has {calibration.MIN_N} pairs "
                               "behind this figure.")
                    continue
                low = -1.0 if figure == "cohen_kappa" else 0.0  # kappa below 0: worse than chance
                st.altair_chart(alt.Chart(mine).mark_line(point=True).encode(
                    x=alt.X("period:O", title=f"{period} from"),
                    y=alt.Y("value:Q", title=None, scale=alt.Scale(domain=[low, 1.0])),
                    color=alt.Color("constitution:N", title=None),
                    tooltip=["constitution:N", "period:O", alt.Tooltip("value:Q", format=".2f"), "n:Q"],
                ).properties(height=220), width="stretch")
    st.subheader("Humans among themselves")
    if humans["alpha"] is not None and humans["items"] >= calibration.MIN_N:
        alpha = f"{humans['alpha']:.3f}"
    elif humans["items"] >= calibration.MIN_N and humans["annotators"] >= 2:
        alpha = "undefined: every label gave the same answer"
    else:
        alpha = f"not enough data yet (needs 2+ annotators on {calibration.MIN_N}+ shared pairs)"
    st.write(f"Krippendorff's alpha (nominal): {alpha} over {humans['items']} pairs "
             f"and {humans['annotators']} annotators.")
