"""Admin: AI judge. Edit constitutions (each edit is a new version), launch judge batches as
background jobs and watch them, and see how far the judge agrees with people."""
from dataclasses import asdict

import pandas as pd
import streamlit as st

from db.engine import session_scope
from feedback.actors import Actor
from feedback.errors import UserError
from judges import calibration
from judges.backends import BACKENDS
from judges.batch import JudgeConfig, recent_judgments
from judges.constitutions import DEFAULT_NAME, ensure_shipped, list_constitutions, save_constitution
from judges.graders import parse_grader
from pages.common import get_engine, live_job_progress, require_page_role, start_admin_job

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
            st.success(f"Saved {label}.")
        except UserError as exc:
            st.error(str(exc))
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
            st.error(str(exc))

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
            st.error(str(exc))

    live_job_progress(engine=engine, kind="grade", user=me, unit="items")

with tab_calibration:
    with session_scope(engine, read_only=True) as s:
        report = calibration.judge_report(session=s)
        humans = calibration.human_agreement(session=s)
    st.subheader("Judge, per constitution version")
    st.caption("Agreement and Cohen's kappa against the human majority on pairs both labelled; the flip rate is "
               "the share of judgments whose two orders disagreed; longer-wins is how often the longer response won.")
    st.dataframe(pd.DataFrame(report), hide_index=True, width="stretch")
    st.subheader("Humans among themselves")
    alpha = "n/a (needs 2+ annotators on 2+ shared pairs)" if humans["alpha"] is None else f"{humans['alpha']:.3f}"
    st.write(f"Krippendorff's alpha (nominal): {alpha} over {humans['items']} pairs "
             f"and {humans['annotators']} annotators.")
