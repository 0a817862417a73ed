"""Admin: training rounds. Start a round on a label snapshot, watch it with its loss and reward
curves, read the evaluation gate, and promote or roll back policy versions."""
import altair as alt
import pandas as pd
import streamlit as st
from sqlalchemy import select

from db.engine import session_scope
from db.models import Job
from feedback import jobs
from feedback.errors import UserError
from feedback.policies import list_policies, promote
from feedback.refill import sample_new_policy
from feedback.settings import get_settings
from pages.common import get_engine, job_progress_rows, require_page_role
from training.deploy import deploy
from training.rounds import RoundConfig, start_round
from training.stages.base import STAGE_MODULES, on_cpu

me = require_page_role("admin")
engine = get_engine()
st.title("Training")

with session_scope(engine, read_only=True) as s:
    versions = list_policies(session=s)
    reward_jobs = [j.id for j in s.scalars(select(Job).where(Job.kind == "train", Job.status == "succeeded"))
                   if (j.result or {}).get("reward_model_dir")]
names = [v.name for v in versions]
name_of = {v.id: v.name for v in versions}
active = next((v.name for v in versions if v.status == "active"), None)

tab_start, tab_progress, tab_versions = st.tabs(["Start a round", "Progress", "Policy versions"])

with tab_start:
    st.caption(f"Defaults are sized for {'this CPU' if on_cpu() else 'a GPU'}: a small round on the 135M model "
               "takes minutes. Labels are frozen into a content-hashed snapshot when the round starts.")
    with st.form("round"):
        c1, c2, c3 = st.columns(3)
        stage = c1.selectbox("Stage", list(STAGE_MODULES), index=list(STAGE_MODULES).index("dpo"))
        parent = c2.selectbox("Improve", names, index=names.index(active) if active in names else 0)
        reference = c3.selectbox("Reference policy", ["base", "parent"], help="KL / DPO reference")
        c1, c2, c3 = st.columns(3)
        sources = c1.multiselect("Label sources", ["human", "judge", "grader"], default=["human", "judge", "grader"])
        rule = c2.selectbox("Disagreements", ["majority", "drop", "soft"],
                            help="majority vote; drop items with any disagreement; or soft (DPO label smoothing)")
        from_versions = c3.multiselect("Responses from versions (empty: all)", names)
        c1, c2, c3, c4 = st.columns(4)
        max_steps = c1.number_input("Steps", 1, 100_000, 30 if on_cpu() else 300)
        lr = c2.number_input("Learning rate", 1e-7, 1e-2, 5e-5 if on_cpu() else 1e-5, format="%.1e")
        batch = c3.number_input("Batch size", 1, 512, 4 if on_cpu() else 16)
        lora_r = c4.number_input("LoRA rank", 1, 64, 8)
        c1, c2, c3 = st.columns(3)
        loss_type = c1.selectbox("DPO loss", ["sigmoid", "ipo", "hinge", "robust"])
        beta = c2.number_input("beta", 0.0, 10.0, 0.1)
        grader = c3.text_input("Grader (grpo / rloo / ppo rewards)", "numeric")
        reward_job = st.selectbox("PPO: also reward with the reward model of job", [None, *reward_jobs])
        evaluate_gate = st.checkbox("Run the evaluation gate afterwards", value=True)
        submitted = st.form_submit_button("Start round", type="primary")
    if submitted:
        stage_config = {"max_steps": int(max_steps), "learning_rate": float(lr),
                        "per_device_train_batch_size": int(batch), "lora_r": int(lora_r)}
        if stage == "dpo":
            stage_config.update(loss_type=loss_type, beta=float(beta))
        try:
            config = RoundConfig(stage=stage, stage_config=stage_config, parent=parent, reference=reference,
                                 snapshot={"sources": sources, "rule": rule, "policy_versions": from_versions},
                                 grader=grader, reward_job=reward_job, evaluate=evaluate_gate)
            with session_scope(engine) as s:
                job = start_round(session=s, config=config, user=s.merge(me))
            jobs.start_detached(job=job, database_url=get_settings().database_url)
            st.success(f"Round started as job {job.id}; follow it under Progress.")
        except UserError as exc:
            st.error(str(exc))

with tab_progress:
    @st.fragment(run_every="3s")
    def progress() -> None:
        job_progress_rows(engine=engine, kind="train", user=me, unit="steps", limit=3)
        with session_scope(engine, read_only=True) as s:
            latest = s.scalar(select(Job).where(Job.kind == "train").order_by(Job.id.desc()).limit(1))
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
             "win rate": (v.evaluation or {}).get("win_rate"), "win rate 95% CI": (v.evaluation or {}).get("win_rate_ci95"),
             "accuracy": (v.evaluation or {}).get("accuracy"), "gate": (v.evaluation or {}).get("passed"),
             "created": v.created_at} for v in versions]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    choice = st.selectbox("Version", names, index=len(names) - 1 if names else 0)
    chosen = next((v for v in versions if v.name == choice), None)
    if chosen is not None and chosen.evaluation:
        st.json(chosen.evaluation, expanded=False)
    label = "Roll back to it" if chosen is not None and chosen.id < next(
        (v.id for v in versions if v.status == "active"), 0) else "Promote"
    if st.button(label, type="primary", disabled=chosen is None or chosen.status == "active"):
        try:
            done = deploy(version=chosen)  # a server refusing the adapter leaves everything as it was
            with session_scope(engine) as s:
                promote(session=s, name=chosen.name, user=s.merge(me))
            job_id = sample_new_policy(engine=engine, database_url=get_settings().database_url,
                                       actor=f"app:{me.username}")
            st.success(f"{chosen.name} is now the active policy ({done}). Sampling job {job_id} is making pairs "
                       "from it; annotators get them first.")
        except UserError as exc:
            st.error(str(exc))
