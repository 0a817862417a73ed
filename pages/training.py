"""Admin: training rounds. Start a round on a label snapshot, watch it with its loss and reward
curves, read the evaluation gate, and promote or roll back policy versions."""
import altair as alt
import pandas as pd
import streamlit as st

from db.engine import session_scope
from feedback import jobs
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.policies import gate_decision, list_policies
from feedback.projects import visible_projects
from feedback.release import release_policy
from feedback.render import inert_markdown, inert_text
from feedback.rows import RowSettings
from feedback.settings import get_settings
from pages.common import config_form, get_engine, job_progress_rows, require_page_role
from training.evaluate import GateConfig
from training.rounds import RoundConfig, reward_model_jobs, start_round
from training.stages import STAGES
from training.stages.base import on_cpu

me = require_page_role("admin")
engine = get_engine()
st.title("Training")

with session_scope(engine, read_only=True) as s:
    versions = list_policies(session=s)
    reward_jobs = reward_model_jobs(session=s)
    project_names = [p.name for p in visible_projects(session=s, user=me)]  # an admin's: all
names = [v.name for v in versions]
name_of = {v.id: v.name for v in versions}
active = next((v.name for v in versions if v.status == "active"), None)

tab_start, tab_progress, tab_versions = st.tabs(["Start a round", "Progress", "Policy versions"])

with tab_start:
    st.caption(f"Defaults are each stage's own, sized for {'this CPU' if on_cpu() else 'a GPU'}: a small round on "
               "the 135M model takes minutes. Labels are frozen into a content-hashed snapshot when the round starts.")
    # Outside the form: the Advanced section below shows the chosen stage's own settings.
    stage = st.selectbox("Stage", STAGES.names(), index=STAGES.names().index("dpo"))
    stage_cls = STAGES.get(stage).config
    with st.form("round"):
        c1, c2, c3 = st.columns(3)
        parent = c1.selectbox("Improve", names, index=names.index(active) if active in names else 0)
        reference = c2.selectbox("Reference policy", ["base", "parent"], help="KL / DPO reference")
        grader = c3.text_input("Grader (grpo / rloo / ppo rewards)", "numeric")
        c1, c2, c3 = st.columns(3)
        sources = c1.multiselect("Label sources", ["human", "judge", "grader"], default=["human", "judge", "grader"])
        project = c2.selectbox("Labels of project", [None, *project_names], format_func=lambda n: n or "every project")
        from_versions = c3.multiselect("Responses from versions (empty: all)", names)
        reward_job = st.selectbox("PPO: also reward with the reward model of job", [None, *reward_jobs])
        evaluate_gate = st.checkbox("Run the evaluation gate afterwards", value=True)
        with st.expander("Label conversions: disagreements, rankings, ratings (recorded with the snapshot)"):
            try:
                row_settings = config_form(RowSettings, key="rows")
            except ValueError as exc:
                row_settings = None
                st.error(f"Not a valid value: {inert_text(exc)}")
        with st.expander("Gate settings (a candidate is promoted without an override only if its gate passes)"):
            try:
                gate_config = config_form(GateConfig, key="gate")
            except ValueError as exc:
                gate_config = None
                st.error(f"Not a valid value: {inert_text(exc)}")
        with st.expander(f"Advanced: {stage} settings (each starts at the stage's default)"):
            try:
                stage_config = config_form(stage_cls, key=f"stage-{stage}")
            except ValueError as exc:
                stage_config = None
                st.error(f"Not a valid value: {inert_text(exc)}")
        submitted = st.form_submit_button("Start round", type="primary")
    if submitted and stage_config is not None and gate_config is not None and row_settings is not None:
        try:
            snapshot = {"sources": sources, "policy_versions": from_versions, "project": project, **row_settings}
            config = RoundConfig(stage=stage, stage_config=stage_config, parent=parent, reference=reference,
                                 snapshot=snapshot,
                                 grader=grader, reward_job=reward_job, evaluate=evaluate_gate, gate=gate_config)
            with session_scope(engine) as s:
                job = start_round(session=s, config=config, actor=Actor.signed_in(me))
            jobs.start_detached(job=job, database_url=get_settings().database_url)
            st.success(f"Round started as job {job.id}; follow it under Progress.")
        except UserError as exc:
            st.error(inert_markdown(str(exc)))

with tab_progress:
    @st.fragment(run_every="3s")
    def progress() -> None:
        job_progress_rows(engine=engine, kind="train", user=me, unit="steps", limit=3)
        with session_scope(engine, read_only=True) as s:
            latest = jobs.latest_job(session=s, kind="train")
            history = list(latest.metrics or []) if latest else []
            log = latest.log_tail if latest else ""
        if history:
            frame = pd.DataFrame(history)
            curves = [c for c in frame.columns if c != "step" and frame[c].notna().sum() > 1
                      and any(k in c for k in ("loss", "reward", "kl", "accuracy", "margin"))]
            if curves:
                long = frame.melt(id_vars="step", value_vars=curves, var_name="metric").dropna()
                chart = alt.Chart(long).mark_line(point=True).encode(
                    x="step:Q", y=alt.Y("value:Q", title=None), color="metric:N").properties(height=260)
                st.altair_chart(chart, width="stretch")
        if log:
            st.code(log[-1500:], language=None)

    progress()

with tab_versions:
    rows = [{"name": v.name, "status": v.status, "parent": name_of.get(v.parent_id), "stage": v.stage,
             "job": v.job_id, "snapshot": v.snapshot_id, "adapter": v.adapter_path,
             "win rate": (v.evaluation or {}).get("win_rate"),
             "win rate 95% CI": (v.evaluation or {}).get("win_rate_ci95"),
             "accuracy": (v.evaluation or {}).get("accuracy"), "gate": gate_decision(v),
             "created": v.created_at} for v in versions]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    choice = st.selectbox("Version", names, index=len(names) - 1 if names else 0)
    chosen = next((v for v in versions if v.name == choice), None)
    if chosen is not None and chosen.evaluation:
        st.json(chosen.evaluation, expanded=False)
    label = "Roll back to it" if chosen is not None and chosen.id < next(
        (v.id for v in versions if v.status == "active"), 0) else "Promote"
    decision = gate_decision(chosen) if chosen is not None else "passed"
    reason = ""
    if chosen is not None and chosen.status != "active" and decision != "passed":
        reasons = "; ".join((chosen.evaluation or {}).get("reasons") or []) or "never evaluated"
        st.warning(f"{inert_text(chosen.name)}'s evaluation gate is {decision} ({inert_text(reasons)}). "
                   "Promoting it anyway needs a "
                   "reason, which the audit log keeps.")
        reason = st.text_input("Override reason", key=f"override-{chosen.name}")
        label += " anyway"
    if st.button(label, type="primary", disabled=chosen is None or chosen.status == "active"
                 or (decision != "passed" and not reason.strip())):
        try:  # a server refusing the adapter leaves everything as it was
            release = release_policy(engine=engine, name=chosen.name, actor=Actor.signed_in(me),
                                     override_reason=reason or None)
            st.success(inert_text(release.summary() + "."))
        except UserError as exc:
            st.error(inert_markdown(str(exc)))
