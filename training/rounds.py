"""A training round: snapshot -> one stage -> artifact -> a new candidate policy version with
its lineage -> the evaluation gate. Runs as a 'train' job in a detached worker; the database
allows one queued or running training job at a time (a partial unique index on jobs).

Resuming an interrupted round continues from its newest checkpoint in the round's directory
(POLICIES_DIR/round-<job id>, a new directory per round so a vLLM server never serves a stale
adapter under a reused path).
"""
from __future__ import annotations

import hashlib
import shutil
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Job, PolicyVersion, Snapshot
from feedback import jobs, webhooks
from feedback.actors import Actor
from feedback.config_fields import cfg_field
from feedback.errors import UserError
from feedback.model_cache import resolve_model_dir
from feedback.policies import active_policy, next_version_name, policy_by_name
from feedback.settings import get_settings
from training.evaluate import GateConfig, evaluate
from training.rewards import build_rewards, round_sources, with_stage_weights
from training.snapshot import SnapshotFilter, create_snapshot, reference_rows, rows_for_stage
from training.stages import STAGES
from training.stages.base import StageInputs, latest_checkpoint

LABEL_STAGES = ("sft", "reward", "dpo", "kto", "orpo", "simpo")
# The reference-free preference stages train on the same prompt/chosen/rejected rows as DPO.
ROW_FORMAT = {"orpo": "dpo", "simpo": "dpo"}
GRADER_STAGES = ("grpo", "rloo", "ppo")


@dataclass
class RoundConfig:
    stage: str = cfg_field("dpo", "The stage: sft, reward, dpo, kto, orpo, simpo, grpo, rloo or ppo.")
    stage_config: dict[str, Any] = cfg_field({}, "Settings of the stage that differ from its own defaults.")
    snapshot: dict[str, Any] = cfg_field({}, "SnapshotFilter fields: which labels the round trains on (label stages).")
    parent: str | None = cfg_field(None, "The policy version to improve (None: the active one).")
    reference: str = cfg_field("base", "KL / DPO reference: the base model, or the parent policy.",
                               choices=("base", "parent"))
    sft_source: str = cfg_field("chosen", "sft trains on the snapshot's chosen responses, or on prompts' references.",
                                choices=("chosen", "reference"))
    grader: str = cfg_field("numeric", "Reward for grpo / rloo / ppo: a grader against references (ReFT / RFT); "
                                       "unused when rewards is given.")
    reward_job: int | None = cfg_field(None, "ppo: also reward with the reward model this training job produced.")
    rewards: list[str] = cfg_field(  # noqa: RUF009 - cfg_field copies a list default per instance
        [], "grpo / rloo / ppo: the rewards mixed by weight, 'WEIGHT*SOURCE' each (weight optional): a grader spec, "
            "judge-score:..., judge-pairwise:... or reward-model:JOB_ID (see training/rewards.py); empty: grader "
            "(and reward_job).")
    evaluate: bool = cfg_field(True, "Run the evaluation gate on the new version.")
    gate: dict[str, Any] = cfg_field({}, "GateConfig overrides.")
    snapshot_id: int | None = cfg_field(None, "Set by start_round: the snapshot frozen for this round.")

    def __post_init__(self) -> None:
        if self.reference not in ("base", "parent"):
            raise UserError("reference is 'base' or 'parent'.")
        if self.sft_source not in ("chosen", "reference"):
            raise UserError("sft_source is 'chosen' or 'reference'.")
        config_cls = STAGES.get(self.stage).config
        known = {f.name for f in fields(config_cls)}
        unknown = set(self.stage_config) - known
        if unknown:
            raise UserError(f"Unknown {self.stage} setting(s): {', '.join(sorted(unknown))}.")
        SnapshotFilter(**self.snapshot)  # validates
        GateConfig(**self.gate)
        if self.rewards:
            if self.stage not in GRADER_STAGES:
                raise UserError(f"rewards are for {', '.join(GRADER_STAGES)} rounds, not {self.stage}.")
            if self.reward_job:
                raise UserError("With rewards, name the reward model there ('reward-model:JOB_ID'), not in reward_job.")
            # The weights become the stage's settings, so the version's train_config records them.
            self.stage_config = with_stage_weights(self.stage_config, self.rewards)


def reward_model_jobs(*, session: Session) -> list[int]:
    """Finished rounds that trained a reward model, newest first (PPO can reward with one)."""
    done = session.scalars(select(Job).where(Job.kind == "train", Job.status == "succeeded").order_by(Job.id.desc()))
    return [job.id for job in done if (job.result or {}).get("reward_model_dir")]


def uses_snapshot(config: RoundConfig) -> bool:
    return config.stage in LABEL_STAGES and not (config.stage == "sft" and config.sft_source == "reference")


def lock_training(session: Session) -> None:
    """Serialise "is a training job active? then queue one" across both training kinds. SQLite
    already runs write transactions one at a time (BEGIN IMMEDIATE); on Postgres two requests would
    both pass the check without this lock, which lasts until the commit. (The partial unique index
    on jobs covers kind 'train' only.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(b"feedback.training")})


def start_round(*, session: Session, config: RoundConfig, actor: Actor) -> Job:
    """Freeze the snapshot and queue the round. Refused while another training job is active."""
    actor.require("admin")
    parent = policy_by_name(session=session, name=config.parent) if config.parent else active_policy(session=session)
    payload = {**asdict(config), "parent": parent.name}
    if uses_snapshot(config):
        snapshot = create_snapshot(session=session, filters=SnapshotFilter(**config.snapshot), actor=actor)
        payload["snapshot_id"] = snapshot.id
    # A 'reft' job (training/reft.py) trains too: one training job of either kind at a time.
    lock_training(session)
    active = session.scalar(select(Job).where(Job.kind.in_(("train", "reft")), Job.status.in_(jobs.ACTIVE)))
    if active is not None:
        raise UserError(f"Training job {active.id} is already {active.status}; one round at a time.")
    try:
        with session.begin_nested():  # the unique index decides when two requests race
            job = jobs.create_job(session=session, kind="train", config=payload, actor=actor)
    except IntegrityError:
        raise UserError("Another training round was started just now; one round at a time.") from None
    return job


def _eval_split(rows: list[dict[str, Any]], share: float = 0.2) -> tuple[list, list]:
    """A stable held-out share (by content hash), so a resumed round holds out the same rows."""
    def held_out(row: dict[str, Any]) -> bool:
        digest = hashlib.sha256(repr(row).encode()).hexdigest()
        return int(digest[:8], 16) / 0xFFFFFFFF < share

    train = [r for r in rows if not held_out(r)]
    test = [r for r in rows if held_out(r)]
    return (train, test) if train and test else (rows, [])


def _inputs(session: Session, config: RoundConfig, job: Job, parent: PolicyVersion) -> StageInputs:
    settings = get_settings()
    output_dir = settings.policies_dir / f"round-{job.id}"
    resume = latest_checkpoint(output_dir) is not None
    inputs = StageInputs(
        # A full fine-tune parent is its own model; an adapter parent continues from its adapter.
        model_dir=parent.model_path or str(resolve_model_dir(parent.base_model, cache_dir=settings.model_cache_dir)),
        output_dir=output_dir, parent_adapter=parent.adapter_path,
        reference_adapter=parent.adapter_path if config.reference == "parent" else None, resume=resume,
    )
    if uses_snapshot(config):
        snapshot = session.get(Snapshot, config.snapshot_id)
        rows = rows_for_stage(session=session, snapshot=snapshot, stage=ROW_FORMAT.get(config.stage, config.stage))
    elif config.stage == "sft":
        rows = [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["reference"]}]}
                for r in reference_rows(session=session)]
    else:
        rows = reference_rows(session=session)
        rewards = build_rewards(round_sources(rewards=config.rewards, grader=config.grader,
                                              reward_job=config.reward_job if config.stage == "ppo" else None),
                                session=session)
        inputs.reward_funcs, inputs.reward_model_dir = rewards.funcs, rewards.model_dir
    if not rows:
        raise UserError(f"Nothing to train a {config.stage} round on (no matching labels or reference prompts).")
    inputs.train_rows, inputs.eval_rows = _eval_split(rows) if config.stage == "reward" else (rows, [])
    return inputs


def train_candidate(*, engine: Engine, job_id: int, config: RoundConfig, reporter: jobs.Reporter,
                    output_dir: Path | None = None, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `config.stage` from `config.parent` and store what it made as a new candidate policy
    version of job `job_id` (a reward model is an artifact for later rounds, not a version).

    output_dir: where this stage checkpoints and saves (default: the round's directory); a job that
    trains several stages gives each its own, so each resumes from its own checkpoints.
    lineage: keys added to the version's train_config (a recipe names itself and the step).
    """
    with session_scope(engine) as s:
        parent = policy_by_name(session=s, name=config.parent)
        inputs = _inputs(s, config, s.get(Job, job_id), parent)
    if output_dir is not None:
        inputs.output_dir = output_dir
        inputs.resume = latest_checkpoint(output_dir) is not None
    from training.callbacks import JobCallback  # transformers: here, so the CLI's parser starts fast

    callback = JobCallback(reporter)
    inputs.callbacks = [callback]
    round_stage = STAGES.get(config.stage)
    stage_config = round_stage.config(**config.stage_config)
    reporter.progress(0, stage_config.max_steps if stage_config.max_steps > 0 else None,
                      log=f"{config.stage} on {len(inputs.train_rows)} rows from {parent.name}"
                          + (" (resuming from a checkpoint)" if inputs.resume else ""))
    result = round_stage.main(stage_config, inputs)
    if callback.cancelled:
        raise jobs.Cancelled()
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str)) or v is None}
    if config.stage == "reward":
        return {"stage": config.stage, "reward_model_dir": str(result.model_dir), "metrics": metrics}

    adapter_dir = model_dir = None
    if result.adapter_dir is not None:
        adapter_dir = inputs.output_dir / "adapter"
        if Path(result.adapter_dir) != adapter_dir:
            shutil.copytree(result.adapter_dir, adapter_dir, dirs_exist_ok=True)
    else:  # a full fine-tune (use_lora off): served as its own model directory
        model_dir = result.model_dir
    with session_scope(engine) as s:
        name = next_version_name(session=s)
        version = PolicyVersion(
            name=name, base_model=parent.base_model, served_name=name,
            adapter_path=str(adapter_dir) if adapter_dir else None, model_path=str(model_dir) if model_dir else None,
            parent_id=parent.id, job_id=job_id, snapshot_id=config.snapshot_id, stage=config.stage,
            train_config={**asdict(config), "stage_config": asdict(stage_config), **(lineage or {})},
            metrics=metrics, status="candidate",
        )
        s.add(version)
        s.flush()
        Actor.worker(job_id).record(session=s, action="policy.create", target=f"policy:{version.id}",
                                    details={"name": name, "parent": parent.name, "stage": config.stage})
    return {"stage": config.stage, "policy_version": name, "parent": parent.name, "metrics": metrics}


GATE_SUMMARY = ("decision", "reasons", "win_rate", "win_rate_ci95", "decisive", "accuracy", "baseline_accuracy",
                "length_ratio", "passed")


def gate_candidate(*, engine: Engine, job_id: int, candidate: str, baseline: str,
                   gate: dict[str, Any]) -> dict[str, Any]:
    """The evaluation gate on `candidate` against `baseline`: stored on the candidate, announced as
    a gate.result webhook, and summarised for the job's result."""
    evaluation = evaluate(engine=engine, candidate=candidate, baseline=baseline, config=GateConfig(**gate))
    summary = {k: evaluation.get(k) for k in GATE_SUMMARY}
    with session_scope(engine) as s:
        s.scalar(select(PolicyVersion).where(PolicyVersion.name == candidate)).evaluation = evaluation
        webhooks.emit(session=s, event="gate.result", payload={"job_id": job_id, "policy_version": candidate,
                                                                "baseline": baseline, **summary})
    return summary


def run_round(*, engine: Engine, job: Job, reporter: jobs.Reporter) -> dict[str, Any]:
    config = RoundConfig(**job.config)
    out = train_candidate(engine=engine, job_id=job.id, config=config, reporter=reporter)
    if config.evaluate and "policy_version" in out:
        name, parent = out["policy_version"], out["parent"]
        reporter.progress(out["metrics"].get("global_step") or 0, None, log=f"evaluating {name} against {parent}")
        out["gate"] = gate_candidate(engine=engine, job_id=job.id, candidate=name, baseline=parent, gate=config.gate)
    return out


def run_train_job(*, engine: Engine, job, reporter: jobs.Reporter) -> dict[str, Any]:
    return run_round(engine=engine, job=job, reporter=reporter)


# The gate samples from the policy and may ask an AI judge: a round's worker needs all three keys,
# and SECRET_KEY to deliver its round.finished and gate.result webhooks.
TRAIN_JOB = jobs.JobKind(runner=run_train_job, config=RoundConfig, finished_event="round.finished",
                         secrets=("POLICY_API_KEY", "ANTHROPIC_API_KEY", "JUDGE_API_KEY", "SECRET_KEY"))
