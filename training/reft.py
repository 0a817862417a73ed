"""ReFT as one job (Luong et al. 2024, "ReFT: Reasoning with Reinforced Fine-Tuning"): a warm-up
SFT on the prompts' reference answers, then GRPO or PPO from that SFT policy with a grader
reward against the same references, then the evaluation gate against the policy the job started
from. One 'reft' job, two stages, two policy versions:

    parent --sft (references)--> vN --grpo | ppo (grader reward)--> vN+1   (gate: vN+1 vs parent)

Both versions name this job (job_id), their stage and their RoundConfig (train_config, with a
"recipe" entry saying which step of which recipe made them). Each stage trains through
training.rounds.train_candidate, the code a single round uses, in its own directory
(POLICIES_DIR/round-<job id>/<stage>). A resumed job skips a stage whose version it already made,
and continues an unfinished one from its newest checkpoint.

It is a training job like a 'train' round: while either kind is queued or running, neither
starts (start_round refuses a round during a reft job, start_reft refuses a reft job during a
round, and the worker checks again before it trains).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Job, PolicyVersion
from feedback import jobs
from feedback.actors import Actor
from feedback.config_fields import cfg_field
from feedback.errors import UserError
from feedback.policies import active_policy, policy_by_name
from feedback.settings import get_settings
from training.rounds import TRAIN_JOB, RoundConfig, gate_candidate, lock_training, train_candidate
from training.stages import STAGES

TRAINING_KINDS = ("train", "reft")
RL_STAGES = ("grpo", "ppo")
# RoundConfig fields the recipe sets itself for each stage; `rl_round` may set the others.
RECIPE_FIELDS = {"stage", "stage_config", "parent", "reference", "sft_source", "evaluate", "gate", "grader",
                 "snapshot", "snapshot_id"}


@dataclass
class ReftConfig:
    parent: str | None = cfg_field(None, "The policy version to start from (None: the active one).")
    sft: dict[str, Any] = cfg_field({}, "Settings of the SFT warm-up (on the reference answers) that differ "
                                        "from the sft stage's defaults (JSON in --config).")
    rl_stage: Literal["grpo", "ppo"] = cfg_field("grpo", "The RL stage after the warm-up.", choices=RL_STAGES)
    rl: dict[str, Any] = cfg_field({}, "Settings of the RL stage that differ from its defaults (JSON in --config).")
    grader: str = cfg_field("numeric", "The RL stage's reward: a grader against the reference answers.")
    reference: Literal["sft", "base"] = cfg_field(
        "sft", "KL reference of the RL stage (where its beta > 0): the SFT version, as ReFT has it, or the base.",
        choices=("sft", "base"))
    rl_round: dict[str, Any] = cfg_field({}, "Further RoundConfig fields for the RL stage, e.g. reward_job for "
                                             "ppo (JSON in --config).")
    evaluate: bool = cfg_field(True, "Run the evaluation gate on the RL version against the starting parent.")
    gate: dict[str, Any] = cfg_field({}, "GateConfig overrides (JSON in --config).")

    def __post_init__(self) -> None:
        if self.rl_stage not in RL_STAGES:
            raise UserError(f"rl_stage is {' or '.join(RL_STAGES)}.")
        if self.reference not in ("sft", "base"):
            raise UserError("reference is 'sft' or 'base'.")
        known = {f.name for f in fields(RoundConfig)}
        bad = sorted(set(self.rl_round) - (known - RECIPE_FIELDS))
        if bad:
            raise UserError(f"rl_round cannot set {', '.join(bad)} (unknown, or set by the recipe itself).")
        self.sft_round(self.parent)  # validates the settings' names and the gate
        self.rl_round_config(None)
        STAGES.get("sft").config(**self.sft)  # and their values, now rather than in the worker
        STAGES.get(self.rl_stage).config(**self.rl)

    def sft_round(self, parent: str | None) -> RoundConfig:
        return RoundConfig(stage="sft", sft_source="reference", stage_config=self.sft, parent=parent,
                           reference="base", evaluate=False, gate=self.gate)

    def rl_round_config(self, parent: str | None) -> RoundConfig:
        return RoundConfig(**{**self.rl_round, "stage": self.rl_stage, "stage_config": self.rl, "parent": parent,
                              "reference": "parent" if self.reference == "sft" else "base",
                              "grader": self.grader, "evaluate": False, "gate": self.gate})


def active_training(*, session: Session, exclude: int | None = None) -> Job | None:
    query = select(Job).where(Job.kind.in_(TRAINING_KINDS), Job.status.in_(jobs.ACTIVE))
    if exclude is not None:
        query = query.where(Job.id != exclude)
    return session.scalar(query.order_by(Job.id).limit(1))


def start_reft(*, session: Session, config: ReftConfig, actor: Actor) -> Job:
    """Queue a reft job from `config.parent` (resolved now). Refused while a training job is active."""
    actor.require("admin")
    parent = policy_by_name(session=session, name=config.parent) if config.parent else active_policy(session=session)
    lock_training(session)
    active = active_training(session=session)
    if active is not None:
        raise UserError(f"Training job {active.id} ({active.kind}) is already {active.status}; one at a time.")
    return jobs.create_job(session=session, kind="reft", config={**asdict(config), "parent": parent.name}, actor=actor)


class _StageReporter:
    """The job's reporter for one stage: its logged metrics say which stage they belong to (both
    stages count their steps from 1)."""

    def __init__(self, reporter: jobs.Reporter, stage: str):
        self.reporter, self.stage = reporter, stage

    def progress(self, done: int, total: int | None = None, log: str | None = None) -> None:
        self.reporter.progress(done, total, log=f"[{self.stage}] {log}" if log else None)

    def log_metrics(self, entry: dict[str, Any]) -> None:
        self.reporter.log_metrics({**entry, "stage": self.stage})


def _made_by(engine: Engine, job_id: int) -> dict[str, dict[str, Any]]:
    """The versions this job already made, by stage, as train_candidate reports them."""
    with session_scope(engine, read_only=True) as s:
        versions = s.scalars(select(PolicyVersion).where(PolicyVersion.job_id == job_id).order_by(PolicyVersion.id))
        return {v.stage: {"stage": v.stage, "policy_version": v.name, "parent": v.parent.name if v.parent else None,
                          "metrics": v.metrics or {}, "skipped_on_resume": True} for v in versions}


def _stage(engine: Engine, job: Job, reporter: jobs.Reporter, made: dict[str, dict[str, Any]], step: int,
           config: RoundConfig) -> dict[str, Any]:
    if config.stage in made:
        done = made[config.stage]
        reporter.progress(0, None, log=f"step {step}/2 ({config.stage}): made {done['policy_version']} before the "
                                       "interruption, skipped")
        return done
    with session_scope(engine, read_only=True) as s:
        other = active_training(session=s, exclude=job.id)
    if other is not None:
        raise UserError(f"Training job {other.id} ({other.kind}) is {other.status}; one training job at a time. "
                        f"Resume job {job.id} when it has finished.")
    reporter.progress(0, None, log=f"step {step}/2: {config.stage} from {config.parent}")
    return train_candidate(engine=engine, job_id=job.id, config=config, reporter=_StageReporter(reporter, config.stage),
                           output_dir=get_settings().policies_dir / f"round-{job.id}" / config.stage,
                           lineage={"recipe": {"name": "reft", "job_id": job.id, "step": step, "steps": 2}})


def run_reft(*, engine: Engine, job: Job, reporter: jobs.Reporter) -> dict[str, Any]:
    config = ReftConfig(**job.config)
    made = _made_by(engine, job.id)
    sft = _stage(engine, job, reporter, made, 1, config.sft_round(config.parent))
    rl = _stage(engine, job, reporter, made, 2, config.rl_round_config(sft["policy_version"]))
    out = {"recipe": "reft", "stage": config.rl_stage, "policy_version": rl["policy_version"],
           "parent": config.parent, "sft_version": sft["policy_version"], "stages": [sft, rl]}
    if config.evaluate:
        reporter.progress(0, None, log=f"evaluating {rl['policy_version']} against {config.parent}")
        out["gate"] = gate_candidate(engine=engine, job_id=job.id, candidate=rl["policy_version"],
                                     baseline=config.parent, gate=config.gate)
    return out


# The same worker secrets as a training round: the gate samples and may ask an AI judge.
REFT_JOB = jobs.JobKind(runner=run_reft, config=ReftConfig, finished_event="round.finished",
                        secrets=TRAIN_JOB.secrets)
