"""A reward-model ensemble's view of a project's open pairs, for the uncertainty queue order.

Each member is a reward model as the 'reward' stage saves it: a full sequence-classification
model directory (a finished reward round's job result names it as `reward_model_dir`). Each
member scores both responses of every open pair with the scorer PPO and the loop use
(training/reward_model.py), and its P(response a better) is the Bradley-Terry probability the
reward stage trained: sigmoid(reward(a) - reward(b)). The result, item id -> one probability per
member, is what feedback.priority.reorder_queue takes as `model_scores` (it turns the mean and the
members' disagreement into an uncertainty).

Members are loaded one at a time and freed before the next, so an ensemble costs the memory of
one model; the scoring runs outside any write transaction (call it with a read-only session).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import Item, Job, Project, Prompt, Response, utcnow
from feedback.errors import UserError
from feedback.queue import open_items_query

MAX_LENGTH = 1024  # tokens per prompt + answer, as the online loop's reward labeler reads them


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def resolve_reward_models(*, session: Session, specs: Sequence[str]) -> list[str]:
    """Each spec is a reward-model directory or a training job that made one (`12`, `job:12` or
    `job-12`); returns the directories."""
    dirs = []
    for spec in (s.strip() for s in specs):
        if not spec:
            continue
        path = Path(spec)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise UserError(f"{spec}: not a model directory (no config.json).")
            dirs.append(str(path))
            continue
        number = spec.removeprefix("job").lstrip(":-")
        if not number.isdigit():
            raise UserError(f"{spec}: no such directory, and not a training job id.")
        job = session.get(Job, int(number))
        found = (job.result or {}).get("reward_model_dir") if job is not None and job.kind == "train" else None
        if not found:
            raise UserError(f"Job {number} did not produce a reward model.")
        if not Path(found).is_dir():
            raise UserError(f"Job {number}'s reward model {found} is gone.")
        dirs.append(found)
    if not dirs:
        raise UserError("Name at least one reward model (a directory or a reward round's job id).")
    return dirs


def open_pairs(*, session: Session, project: Project, now: datetime | None = None,
               limit: int | None = None) -> list[tuple[int, list[dict], str, str]]:
    """(item id, prompt messages, text a, text b) of the project's open pair items, by id."""
    ra, rb = aliased(Response), aliased(Response)
    open_query = open_items_query(settings=project, now=now or utcnow(), dialect=session.get_bind().dialect.name)
    query = (select(Item.id, Prompt.messages, ra.text, rb.text).join(Prompt, Prompt.id == Item.prompt_id)
             .join(ra, ra.id == Item.response_a_id).join(rb, rb.id == Item.response_b_id)
             .where(Item.kind == "pair", Item.id.in_(open_query)).order_by(Item.id))
    if limit is not None:
        query = query.limit(limit)
    return [tuple(row) for row in session.execute(query)]


def ensemble_scores(*, session: Session, project: Project, model_dirs: Sequence[str | Path],
                    now: datetime | None = None, max_length: int = MAX_LENGTH, limit: int | None = None,
                    device: str = "cpu") -> dict[int, list[float]]:
    """item id -> [P(a better) under each member, in the order given] for the project's open pairs."""
    pairs = open_pairs(session=session, project=project, now=now, limit=limit)
    return score_pairs(pairs, model_dirs, max_length=max_length, device=device)


def score_pairs(pairs: Sequence[tuple[int, list[dict], str, str]], model_dirs: Sequence[str | Path], *,
                max_length: int = MAX_LENGTH, device: str = "cpu") -> dict[int, list[float]]:
    """The members' P(a better) for each (item id, messages, text a, text b)."""
    import torch

    from training.reward_model import RewardModel

    scores: dict[int, list[float]] = {item_id: [] for item_id, *_ in pairs}
    if not pairs:
        return scores
    prompts = [messages for _, messages, _, _ in pairs]
    for model_dir in model_dirs:
        member = RewardModel(str(model_dir), torch.device(device), max_length=max_length)
        rewards_a = member(prompts, [a for *_, a, _ in pairs])
        rewards_b = member(prompts, [b for *_, b in pairs])
        for (item_id, *_), ra, rb in zip(pairs, rewards_a, rewards_b, strict=True):
            scores[item_id].append(sigmoid(ra - rb))
        del member
    return scores
