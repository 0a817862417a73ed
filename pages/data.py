"""Admin data page: import prompts, browse what is stored, start sampling jobs into a project,
download exports.

Tables go through st.dataframe and previews through st.code, which show text as text: model
output is never rendered as HTML or markdown.
"""
from dataclasses import asdict

import pandas as pd
import streamlit as st

from db.engine import session_scope
from db.models import ITEM_KINDS
from feedback.actors import Actor
from feedback.browse import counts, list_items, list_prompts, list_responses, policy_names
from feedback.errors import UserError
from feedback.export import FORMATS, export_rows, to_jsonl
from feedback.projects import visible_projects
from feedback.prompts import import_prompt_file_bytes
from feedback.render import inert_markdown, inert_text
from feedback.rows import RowSettings
from feedback.sampling import SamplingConfig
from feedback.settings import get_settings
from pages.common import config_form, get_engine, live_job_progress, require_page_role, start_admin_job

user = require_page_role("admin")
engine = get_engine()
settings = get_settings()

st.title("Data")
with session_scope(engine, read_only=True) as session:
    totals = counts(session=session)
    versions = policy_names(session=session)
    projects = {p.name: p.task_type for p in visible_projects(session=session, user=user)}  # an admin's: all
st.caption(" · ".join(f"{v} {k}" for k, v in totals.items()))

tab_import, tab_browse, tab_sample, tab_export = st.tabs(["Import prompts", "Browse", "Sample", "Export"])

with tab_import:
    st.write(
        "JSONL, CSV or parquet; each row has `prompt` (text) or `messages` (a chat), and optionally "
        "`reference`, `split` (train/val) and `tags`. Duplicates are skipped."
    )
    upload = st.file_uploader("Prompt file", type=["jsonl", "json", "csv", "parquet"],
                              max_upload_size=max(1, settings.import_max_bytes // (1024 * 1024)))
    mode = st.radio("If some rows are invalid", ["abort", "skip"], horizontal=True,
                    format_func={"abort": "import nothing (all or nothing)", "skip": "import the valid rows"}.get)
    if st.button("Import", type="primary", disabled=upload is None):
        try:
            with session_scope(engine) as session:
                report = import_prompt_file_bytes(session=session, data=upload.getvalue(), filename=upload.name,
                                                  on_error=mode, actor=Actor.signed_in(user))
        except UserError as exc:
            st.error(inert_text(str(exc)))  # it echoes the file's values: shown as typed
        else:
            (st.success if report.committed else st.error)(inert_text(report.summary()))
            if report.errors:
                st.dataframe(pd.DataFrame([{"where": e.where, "reason": e.reason} for e in report.errors]),
                             hide_index=True, width="stretch")

with tab_browse:
    what = st.segmented_control("Show", ["Prompts", "Responses", "Items"], default="Prompts")
    search = st.text_input("Text contains", key="browse_search")
    with session_scope(engine, read_only=True) as session:
        if what == "Responses":
            version = st.selectbox("Policy version", [None, *versions], format_func=lambda v: v or "all")
            rows = list_responses(session=session, policy_version=version, search=search or None)
        elif what == "Items":
            kind = st.selectbox("Kind", [None, *ITEM_KINDS], format_func=lambda v: v or "all")
            rows = list_items(session=session, kind=kind)
        else:
            c1, c2 = st.columns(2)
            split = c1.selectbox("Split", [None, "train", "val"], format_func=lambda v: v or "all")
            tag = c2.text_input("Tag")
            rows = list_prompts(session=session, split=split, tag=tag or None, search=search or None)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

with tab_sample:
    defaults = SamplingConfig()  # the form starts from the config's own defaults
    with st.form("sample"):
        # The project's task type decides what is made: pairs, singles, or K-response items.
        project = st.selectbox("Project", list(projects), index=list(projects).index(defaults.project)
                               if defaults.project in projects else 0,
                               format_func=lambda name: f"{name} · {projects[name]}")
        c1, c2, c3 = st.columns(3)
        limit = c1.number_input("Prompts", 1, 10_000, defaults.limit)
        n = c2.number_input("Samples per prompt", 1, 16, defaults.n_per_prompt,
                            help="Pairwise projects pair them up; rank and rating projects take their K.")
        max_new_tokens = c3.number_input("Max new tokens", 8, 4096, defaults.max_new_tokens)
        c1, c2 = st.columns(2)
        temperature = c1.slider("Temperature", 0.0, 2.0, defaults.temperature)
        top_p = c2.slider("Top p", 0.05, 1.0, defaults.top_p)
        c1, c2 = st.columns(2)
        version = c1.selectbox("Policy version", [None, *versions], format_func=lambda v: v or "the active one")
        versus = c2.selectbox("Versus (pair across versions)", [None, *versions], format_func=lambda v: v or "none")
        start = st.form_submit_button("Start sampling job", type="primary")
    if start:
        try:
            config = SamplingConfig(limit=int(limit), n_per_prompt=int(n), max_new_tokens=int(max_new_tokens),
                                    temperature=temperature, top_p=top_p, project=project,
                                    policy_version=version, versus_version=versus)
            job = start_admin_job(engine, user, kind="sample", config=asdict(config))
            st.toast(f"Sampling job {job.id} started")
        except UserError as exc:
            st.error(inert_markdown(str(exc)))

    live_job_progress(engine=engine, kind="sample", user=user, unit="prompts")

with tab_export:
    c1, c2 = st.columns([1, 2])
    export_project = c1.selectbox("Project", [None, *projects], format_func=lambda v: v or "all projects")
    fmt = c2.radio("Format", FORMATS, horizontal=True, format_func={
        "dpo": "DPO (prompt/chosen/rejected)", "kto": "KTO (prompt/completion/label)",
        "reward": "Reward model (prompt/chosen/rejected/margin)", "sft": "SFT (prompt/completion)"}.get)
    c1, c2 = st.columns([2, 1])
    sources = c1.multiselect("Label sources", ["human", "judge", "grader"], default=["human", "judge", "grader"])
    include_val = c2.checkbox("Include the val split", help="Held out for the evaluation gate; off for training.")
    with st.form("row_settings"):
        st.caption("How labels become rows (ranks, ratings and edits convert by these rules)")
        changed = config_form(RowSettings, key="rows")
        st.form_submit_button("Apply")
    try:
        with session_scope(engine, read_only=True) as session:
            rows = export_rows(session=session, fmt=fmt, sources=sources, include_val=include_val,
                               project=export_project, settings=RowSettings(**changed)) if sources else []
    except UserError as exc:
        st.error(inert_markdown(str(exc)))
        rows = []
    st.write(f"{len(rows)} rows")
    if rows:  # the first rows as JSON text: prompts and responses are untrusted, never markdown
        st.code(to_jsonl(rows[:3]).decode("utf-8"), language="json", wrap_lines=True)
    name = f"{export_project or 'all'}-{fmt}.jsonl"
    st.download_button(f"Download {name}", to_jsonl(rows), file_name=name, mime="application/jsonl",
                       disabled=not rows)
