"""A round's rewards (grpo, rloo, ppo) as one spec: a list of entries "WEIGHT*SOURCE", the weight
optional (1), where SOURCE is

    a grader spec           numeric | exact | numeric:tol=0.01 | score_model:backend=...;model=...;rubric=...
    a judge reward          judge-score:backend=...;model=... | judge-pairwise:backend=...;model=...
    a trained reward model  reward-model:JOB_ID   (the training job that produced it; at most one)

for example ["numeric", "0.5*judge-score:backend=anthropic;model=claude-sonnet-4-6;max_cost_usd=2"].
The weight goes in front because specs themselves hold '=' and end in numbers (tol=0.01,
max_cost_usd=2), so a trailing "=WEIGHT" could not be told from them.

The stage sums the sources with these weights: TRL's `reward_weights` for GRPO / RLOO (the reward
model last among reward_funcs), `reward_weights` + `reward_model_weight` for PPO. A round with no
`rewards` keeps the older fields: its `grader` with weight 1, and for PPO the reward model of
`reward_job` at the stage's `reward_model_weight`.

Parsing needs no database, key or network (a round's config is checked when it is made);
building the functions reads constitutions and reward-model jobs, and makes no request.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from db.models import Job
from feedback.errors import UserError
from judges.graders import GRADERS, as_reward_func, parse_grader
from judges.judge_rewards import KINDS as JUDGE_KINDS
from judges.judge_rewards import build_judge_reward, parse_judge_reward

REWARD_MODEL = "reward-model"
# A leading number and '*': grader and judge names are identifiers, so no spec starts that way.
_WEIGHTED = re.compile(r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*\*\s*(.*)$", re.DOTALL)


@dataclass(frozen=True)
class RewardSource:
    kind: str  # "grader" | "judge" | "reward_model"
    spec: str  # the source as written, budget options included (a canonical spec would drop them)
    weight: float | None = 1.0  # None: the stage's own setting (the older reward_job path)
    job_id: int | None = None  # reward_model: the training job that produced it


def parse_reward(entry: str) -> RewardSource:
    """One "WEIGHT*SOURCE" entry; a bad one raises UserError naming it."""
    if not isinstance(entry, str) or not entry.strip():
        raise UserError("A reward entry is empty; write e.g. 'numeric' or '0.5*judge-score:backend=...;model=...'.")
    weight, source = 1.0, entry.strip()
    found = _WEIGHTED.match(source)
    if found:
        weight, source = float(found.group(1)), found.group(2).strip()
        if not math.isfinite(weight):
            raise UserError(f"Reward weight {found.group(1)!r} is not a finite number.")
    name, _, arg = source.partition(":")
    name = name.strip()
    if name == REWARD_MODEL:
        if not arg.strip().isdigit():
            raise UserError(f"{REWARD_MODEL} needs the id of the training job that produced it, e.g. "
                            f"'{REWARD_MODEL}:12' (got {arg.strip()[:40]!r}).")
        job_id = int(arg.strip())
        return RewardSource(kind="reward_model", spec=f"{REWARD_MODEL}:{job_id}", weight=weight, job_id=job_id)
    if name in JUDGE_KINDS:
        parse_judge_reward(source)  # validates
        return RewardSource(kind="judge", spec=source, weight=weight)
    if name not in GRADERS.names():
        raise UserError(f"Unknown reward source {name[:40]!r}: a grader ({', '.join(GRADERS.names())}), "
                        f"{', '.join(JUDGE_KINDS)} or {REWARD_MODEL}:JOB_ID.")
    parse_grader(source)
    return RewardSource(kind="grader", spec=source, weight=weight)


def parse_rewards(entries: list[str]) -> list[RewardSource]:
    if not isinstance(entries, list):
        raise UserError("rewards is a list of entries, e.g. ['numeric', '0.5*judge-score:backend=...;model=...'].")
    sources = [parse_reward(entry) for entry in entries]
    if sum(source.kind == "reward_model" for source in sources) > 1:
        raise UserError("A round takes at most one reward-model:JOB_ID (the stage loads one reward model).")
    return sources


def round_sources(*, rewards: list[str], grader: str, reward_job: int | None) -> list[RewardSource]:
    """The round's sources: `rewards`, or the older `grader` (+ `reward_job`) when it is empty."""
    if rewards:
        return parse_rewards(rewards)
    sources = [RewardSource(kind="grader", spec=grader)]
    if reward_job:
        sources.append(RewardSource(kind="reward_model", spec=f"{REWARD_MODEL}:{reward_job}", weight=None,
                                    job_id=reward_job))
    return sources


def stage_weights(sources: list[RewardSource]) -> dict[str, Any]:
    """The stage settings the weights become: reward_weights (one per reward function, in order)
    and, with a reward model, reward_model_weight."""
    weights: dict[str, Any] = {"reward_weights": [s.weight for s in sources if s.kind != "reward_model"]}
    model = [s.weight for s in sources if s.kind == "reward_model" and s.weight is not None]
    if model:
        weights["reward_model_weight"] = model[0]
    return weights


def with_stage_weights(stage_config: dict[str, Any], rewards: list[str]) -> dict[str, Any]:
    """`stage_config` with the weights of `rewards` in it. A weight set there by hand as well must
    agree: one place says how the sources mix, and the version's train_config records it."""
    weights = stage_weights(parse_rewards(rewards))
    for key, value in weights.items():
        if key in stage_config and stage_config[key] != value:
            raise UserError(f"stage_config {key}={stage_config[key]!r} disagrees with the weights in rewards "
                            f"({value!r}); give the weights in rewards only ('WEIGHT*SOURCE').")
    return {**stage_config, **weights}


@dataclass
class RoundRewards:
    """What a stage gets: reward functions in order, and the reward model's directory."""

    funcs: list[Any] = field(default_factory=list)
    model_dir: str | None = None


def reward_model_dir(*, session: Session, job_id: int) -> str:
    job = session.get(Job, job_id)
    if job is None or not (job.result or {}).get("reward_model_dir"):
        raise UserError(f"Job {job_id} did not produce a reward model.")
    return job.result["reward_model_dir"]


def build_rewards(sources: list[RewardSource], *, session: Session) -> RoundRewards:
    out = RoundRewards()
    for source in sources:
        if source.kind == "reward_model":
            out.model_dir = reward_model_dir(session=session, job_id=source.job_id)
        elif source.kind == "judge":
            out.funcs.append(build_judge_reward(parse_judge_reward(source.spec), session=session))
        else:
            out.funcs.append(as_reward_func(parse_grader(source.spec)))
    return out

