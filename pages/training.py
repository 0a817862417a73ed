"""Admin: training rounds. Start a round on a label snapshot, watch it with its loss and reward
curves, read the evaluation gate, and promote or roll back policy versions; or start an iterative
loop of rounds (sample, label, train, gate, promote, repeat) and pause, cancel or resume it."""
import altair as alt
import pandas as pd
import streamlit as st

from db.engine import session_scope
from db.models import Job
from feedback import jobs
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.policies import gate_decision, list_policies
from feedback.projects import visible_projects
from feedback.release import release_policy
from feedback.render import inert_markdown, inert_text
from feedback.rows import RowSettings
from feedback.settings import get_settings
from pages.common import (
    SIGNED_OUT,
    config_form,
    get_engine,
    job_progress_rows,
    require_page_role,
    still_signed_in,
    take_error,
)
from training.evaluate import GateConfig
from training.loop import PAIR_STAGES, LoopConfig, loop_rounds, pause_loop, resume_loop, start_loop
from training.reft import RL_STAGES, ReftConfig, start_reft
from training.rounds import RoundConfig, reward_model_jobs, start_round
from training.stages import STAGES
from training.stages.base import on_cpu

me = require_page_role("admin")
engine = get_engine()
st.title("Training")

with session_scope(engine, read_only=True) as s:
    versions = list_policies(session=s)
    reward_jobs = reward_model_jobs(session=s)
    projects = visible_projects(session=s, user=me)  # an admin's: all
project_names = [p.name for p in projects]
pairwise_names = [p.name for p in projects if p.task_type == "pairwise"]
names = [v.name for v in versions]
name_of = {v.id: v.name for v in versions}
active = next((v.name for v in versions if v.status == "active"), None)

tab_start, tab_progress, tab_versions, tab_loop, tab_reft = st.tabs(
    ["Start a round", "Progress", "Policy versions", "Loop", "ReFT"])

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
        rewards_text = st.text_area(
            "Rewards mixed by weight (grpo / rloo / ppo; one per line, empty: the grader above)", "",
            placeholder="numeric\n0.5*judge-score:backend=anthropic;model=claude-sonnet-4-6;max_cost_usd=2\n"
                        "0.25*reward-model:12",
            help="Each line is WEIGHT*SOURCE (the weight is optional, 1): a grader spec, judge-score:... (the AI "
                 "judge's 1-10 score), judge-pairwise:... (the judge's verdict against the reference answer), or "
                 "reward-model:JOB_ID. A judge reward is cached per prompt and response and stops at its "
                 "max_cost_usd.")
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
                                 grader=grader, reward_job=reward_job, evaluate=evaluate_gate, gate=gate_config,
                                 rewards=[line.strip() for line in rewards_text.splitlines() if line.strip()])
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

# --- Loop: iterative rounds, each sampling from the version the previous one promoted

LOOP_ERROR = "loop-error"  # in st.session_state: a refused pause/cancel/resume, shown on the next run
LOOP_RESUMABLE = ("paused", "interrupted", "failed")
# What the per-round chart plots from loop_rounds, with the titles people read.
LOOP_FIGURES = {"labels": "labels trained on", "accuracy": "held-out accuracy", "win_rate": "win rate vs parent",
                "kl": "KL to reference", "mean_length": "mean length (tokens)"}
GATE_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "undecided": "#f9a825", "not yet": "#9e9e9e"}
SHARES = ("accuracy", "win_rate")  # figures between 0 and 1
OUTCOME_SHAPES = {"promoted": "triangle-up", "held back": "square", "in progress": "circle", "skipped": "cross"}


def checked_form(cls: type, *, key: str, skip: tuple[str, ...] = ()) -> dict | None:
    """config_form, with a value that does not parse shown as an error (None then)."""
    try:
        return config_form(cls, key=key, skip=skip)
    except ValueError as exc:
        st.error(f"Not a valid value: {inert_text(exc)}")
        return None


def round_outcome(row: dict) -> str:
    if row.get("promoted") is None:  # not decided yet, or a round without informative pairs: no version
        return "skipped" if row.get("phase") == "done" else "in progress"
    return "promoted" if row["promoted"] else "held back"


def outcome_line(row: dict) -> str:
    """"round 2: v2, gate failed, held back", what the table says in one phrase."""
    made = f"{row['policy']}, " if row.get("policy") else ""
    gate = f"gate {row['gate']}, " if row.get("gate") else ""
    outcome = round_outcome(row)
    state = {"in progress": row.get("status") or outcome, "skipped": row.get("note") or outcome}.get(outcome, outcome)
    return f"round {row.get('round')}: {made}{gate}{state}"


def rounds_table(rounds: list[dict]) -> pd.DataFrame:
    """One row per round, each with the version it made (also in Policy versions) and what became of it."""
    return pd.DataFrame([{
        "round": r.get("round"), "status": r.get("status"), "parent": r.get("parent"), "version": r.get("policy"),
        "train job": r.get("train_job"), "pairs": r.get("pairs"), "labels": r.get("labels"),
        "accuracy": r.get("accuracy"), "parent accuracy": r.get("parent_accuracy"), "win rate": r.get("win_rate"),
        "gate": r.get("gate"), "outcome": round_outcome(r), "KL": r.get("kl"), "mean length": r.get("mean_length"),
        "note": r.get("note"),
    } for r in rounds])


def rounds_chart(rounds: list[dict]) -> alt.ConcatChart | None:
    """Small multiples, one per figure the rounds have: x the round, colour the gate's decision,
    shape whether the round's version was promoted. Shares sit on 0..1, counts start at 0."""
    frame = pd.DataFrame(rounds)
    figures = {column: title for column, title in LOOP_FIGURES.items()
               if column in frame and pd.to_numeric(frame[column], errors="coerce").notna().any()}
    if not figures:
        return None
    frame["gate result"] = [r.get("gate") or "not yet" for r in rounds]
    frame["outcome"] = [round_outcome(r) for r in rounds]
    long = frame.melt(id_vars=["round", "gate result", "outcome"], value_vars=list(figures), var_name="figure")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    long = long.dropna(subset=["value"])
    long["figure"] = long["figure"].map(figures)
    x = alt.X("round:O", title="round", axis=alt.Axis(labelAngle=0))
    colour = alt.Color("gate result:N", scale=alt.Scale(domain=list(GATE_COLOURS), range=list(GATE_COLOURS.values())))
    shape = alt.Shape("outcome:N", scale=alt.Scale(domain=list(OUTCOME_SHAPES), range=list(OUTCOME_SHAPES.values())))
    tooltip = ["round:O", "figure:N", alt.Tooltip("value:Q", format=".3~g"), "gate result:N", "outcome:N"]
    panels = []
    for column, title in figures.items():
        y = alt.Y("value:Q", title=None, axis=alt.Axis(format="~g"),
                  scale=alt.Scale(domain=[0, 1]) if column in SHARES else alt.Scale(zero=True))
        base = alt.Chart().transform_filter(alt.datum.figure == title).encode(x=x, y=y)
        panels.append(alt.layer(base.mark_line(color="#9e9e9e"),
                                base.mark_point(filled=True, size=110).encode(color=colour, shape=shape,
                                                                              tooltip=tooltip))
                      .properties(title=title, width=220, height=150))
    return alt.concat(*panels, data=long, columns=3)


def act_on_loop(action, job_id: int, *, start_worker: bool = False) -> None:
    """A loop button's callback: `action` (pause_loop, request_cancel, resume_loop) as the admin
    still signed in here; a refusal waits in st.session_state for the next run, and a resumed
    loop gets its worker once the transaction has committed."""
    current = still_signed_in(me)
    if current is None:
        st.session_state[LOOP_ERROR] = SIGNED_OUT
        return
    try:
        with session_scope(engine) as s:
            result = action(session=s, job_id=job_id, actor=Actor.signed_in(current))
    except UserError as exc:
        st.session_state[LOOP_ERROR] = str(exc)
        return
    if start_worker:
        jobs.start_detached(job=result, database_url=get_settings().database_url)


def loop_buttons(job: Job) -> None:
    """Only the buttons that apply to the loop's status."""
    row = st.container(horizontal=True)
    if job.status in LOOP_RESUMABLE:
        row.button("Resume", key=f"loop-resume-{job.id}", icon=":material/play_arrow:", type="primary",
                   on_click=act_on_loop, args=(resume_loop, job.id), kwargs={"start_worker": True},
                   help="Go on from the round it stopped in.")
    if job.status in jobs.ACTIVE and not job.pause_requested:
        row.button("Pause", key=f"loop-pause-{job.id}", icon=":material/pause:", on_click=act_on_loop,
                   args=(pause_loop, job.id), help="Stop at the next safe point (a round's training finishes "
                                                   "first); Resume goes on from there.")
    if job.status in (*jobs.ACTIVE, "paused"):
        row.button("Cancel", key=f"loop-cancel-{job.id}", icon=":material/stop:", on_click=act_on_loop,
                   args=(jobs.request_cancel, job.id), help="Stop for good; the versions made so far stay.")


@st.fragment(run_every="3s")
def loop_status() -> None:
    """The newest loop: its status and progress, the buttons for it, and its rounds."""
    take_error(LOOP_ERROR)
    with session_scope(engine) as s:
        recent = jobs.list_jobs(session=s, kind="loop", limit=1)  # marks a silent worker's loop interrupted
        job = recent[0] if recent else None
        rounds = loop_rounds(session=s, job_id=job.id) if job is not None else []
    if job is None:
        st.info("No loop has run yet. Once one starts (below), its status and progress show here, then each round: "
                "a chart of its labels, held-out accuracy or win rate, gate result, KL and mean length, and a "
                "table of rounds with the version each made (also listed under Policy versions).")
        return
    total = job.progress_total or (job.config or {}).get("rounds") or 0
    now = f" · round {rounds[-1]['round']}: {rounds[-1].get('status')}" if rounds and rounds[-1].get("status") else ""
    if job.status == "running" and job.pause_requested:
        now += " · pausing at the next safe point"
    st.progress(min(1.0, job.progress_done / total) if total else 0.0,
                text=inert_text(f"Loop job {job.id} · {job.status} · {job.progress_done} of {total or '?'} "
                                f"rounds done{now}"))
    loop_buttons(job)
    if job.status in ("failed", "interrupted") and job.error:
        st.code(job.error[-2000:], language=None)
    if not rounds:
        st.caption("Round 1 is on its way: its figures appear here once it has sampled.")
        return
    chart = rounds_chart(rounds)
    if chart is not None:
        st.altair_chart(chart)
    st.caption(inert_text(" · ".join(outcome_line(r) for r in rounds)))
    st.dataframe(rounds_table(rounds), hide_index=True, width="stretch")
    if job.log_tail:
        with st.expander("Log"):
            st.code(job.log_tail[-1500:], language=None)


with tab_loop:
    # The newest loop first, since that is what people come back to watch; drawn after the form has
    # run, so a loop started just now is already in it.
    status_box = st.container()
    st.divider()
    st.subheader("Start a loop")
    st.caption("R rounds of: sample K answers per prompt from the active policy, label them (a grader against "
               "references, the AI judge, a reward model, or people in a project's queue), train the stage on "
               "exactly those labels, gate, and promote by the rule you pick; the next round samples from what "
               "is then active.")
    # Outside the form, as for a round: the Advanced section shows the chosen stage's settings.
    loop_stage = st.selectbox("Loop stage", PAIR_STAGES, index=PAIR_STAGES.index("dpo"), key="loop-stage",
                              help="Every round trains this stage, on the pairs the round labelled.")
    with st.form("loop"):
        # The people labeler's project: only pairwise projects (a pair per prompt) can hold its items.
        loop_project = st.selectbox("People labeler: the project whose annotators label", [None, *pairwise_names],
                                    format_func=lambda n: n or "the default pairwise project")
        loop_values = checked_form(LoopConfig, key="loop", skip=("stage", "project"))
        with st.expander("Gate settings (with promote = gate, a round's version is promoted only if its gate passes)"):
            loop_gate = checked_form(GateConfig, key="loop-gate")
        with st.expander(f"Advanced: {loop_stage} settings for every round (each starts at the stage's default)"):
            loop_stage_config = checked_form(STAGES.get(loop_stage).config, key=f"loop-stage-{loop_stage}")
        start_loop_clicked = st.form_submit_button("Start loop", type="primary")
    if start_loop_clicked and None not in (loop_values, loop_gate, loop_stage_config):
        try:
            chosen = {"project": loop_project} if loop_project else {}
            loop_config = LoopConfig(**loop_values, **chosen, stage=loop_stage, stage_config=loop_stage_config,
                                     gate=loop_gate)
            with session_scope(engine) as s:
                loop_job = start_loop(session=s, config=loop_config, actor=Actor.signed_in(me))
            jobs.start_detached(job=loop_job, database_url=get_settings().database_url)
            st.success(f"Loop started as job {loop_job.id}; follow it above.")
        except UserError as exc:
            st.error(inert_markdown(str(exc)))
    with status_box:
        loop_status()

with tab_reft:
    st.caption("ReFT as one job: SFT on the prompts' reference answers, then GRPO or PPO from that SFT version "
               "with a grader reward against the same references, then the gate against the version it started "
               "from. Both versions appear under Policy versions, the RL one with the SFT one as its parent.")
    rl_stage = st.selectbox("RL stage after the warm-up", RL_STAGES, key="reft-rl-stage")
    with st.form("reft"):
        c1, c2, c3 = st.columns(3)
        reft_parent = c1.selectbox("Start from", names, index=names.index(active) if active in names else 0,
                                   key="reft-parent")
        reft_grader = c2.text_input("Grader (the RL reward)", "numeric", key="reft-grader")
        reft_reference = c3.selectbox("KL reference of the RL stage", ["sft", "base"], key="reft-reference")
        reft_evaluate = st.checkbox("Run the evaluation gate afterwards", value=True, key="reft-evaluate")
        problems = []
        with st.expander("SFT warm-up settings (each starts at the stage's default)"):
            try:
                sft_config = config_form(STAGES.get("sft").config, key="reft-sft")
            except ValueError as exc:
                problems.append(str(exc))
        with st.expander(f"{rl_stage} settings (each starts at the stage's default)"):
            try:
                rl_config = config_form(STAGES.get(rl_stage).config, key=f"reft-{rl_stage}")
            except ValueError as exc:
                problems.append(str(exc))
        with st.expander("Gate settings"):
            try:
                reft_gate = config_form(GateConfig, key="reft-gate")
            except ValueError as exc:
                problems.append(str(exc))
        reft_submitted = st.form_submit_button("Start ReFT", type="primary")
    for problem in problems:
        st.error(f"Not a valid value: {inert_text(problem)}")
    if reft_submitted and not problems:
        try:
            config = ReftConfig(parent=reft_parent, sft=sft_config, rl_stage=rl_stage, rl=rl_config,
                                grader=reft_grader, reference=reft_reference, evaluate=reft_evaluate, gate=reft_gate)
            with session_scope(engine) as s:
                job = start_reft(session=s, config=config, actor=Actor.signed_in(me))
            jobs.start_detached(job=job, database_url=get_settings().database_url)
            st.success(f"ReFT started as job {job.id}; it is followed below.")
        except UserError as exc:
            st.error(inert_markdown(str(exc)))

    @st.fragment(run_every="3s")
    def reft_progress() -> None:
        job_progress_rows(engine=engine, kind="reft", user=me, unit="steps", limit=3)
        with session_scope(engine, read_only=True) as s:
            latest = jobs.latest_job(session=s, kind="reft")
            history = list(latest.metrics or []) if latest else []
        if not history:
            st.caption("Each stage's loss and reward curves appear here once a ReFT job trains.")
            return
        frame = pd.DataFrame(history)
        curves = [c for c in frame.columns if c not in ("step", "stage") and frame[c].notna().sum() > 1
                  and any(k in c for k in ("loss", "reward", "kl"))]
        if curves and "stage" in frame:
            long = frame.melt(id_vars=["step", "stage"], value_vars=curves, var_name="metric").dropna()
            chart = alt.Chart(long).mark_line(point=True).encode(
                x="step:Q", y=alt.Y("value:Q", title=None), color="metric:N",
                column=alt.Column("stage:N", title=None)).properties(height=220, width=280)
            st.altair_chart(chart)

    reft_progress()
