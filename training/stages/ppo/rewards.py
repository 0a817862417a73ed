"""Step 2 of a PPO step: one scalar reward per completion, the weighted sum of a round's reward
functions (graders, judges) and its trained reward model. A judge's counts (requests, cost, cache
hits, budget) go into the step's logs as rewards/<judge>/<count>."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from feedback.errors import UserError
from training.reward_model import RewardModel, is_conversational
from training.stages.base import StageInputs
from training.stages.ppo.config import PPOConfig


@dataclass(frozen=True)
class RewardSources:
    """A round's reward functions and reward model, with the weight of each in the sum."""

    funcs: list[Callable[..., list[float | None]]]
    weights: list[float]  # one per func
    model: RewardModel | None
    model_weight: float


def reward_sources(cfg: PPOConfig, inputs: StageInputs, device: torch.device) -> RewardSources:
    """The round's sources; the reward model scores at most cfg.max_length tokens, the policy's budget too."""
    model = RewardModel(inputs.reward_model_dir, device, cfg.max_length) if inputs.reward_model_dir else None
    weights = [float(w) for w in cfg.reward_weights] or [1.0] * len(inputs.reward_funcs)
    return RewardSources(funcs=list(inputs.reward_funcs), weights=weights, model=model,
                         model_weight=cfg.reward_model_weight)


def score_completions(rows: list[dict[str, Any]], texts: list[str], completion_ids: list[list[int]], *,
                      sources: RewardSources, trainer_state) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum of all reward sources per completion, and each source's mean for the logs.
    Reward functions get TRL's signature: prompts, completions (messages when the prompt is
    messages), completion_ids, and every other column of the rows as a list keyword."""
    prompts = [row["prompt"] for row in rows]
    completions = [[{"role": "assistant", "content": t}] if is_conversational(p) else t
                   for p, t in zip(prompts, texts, strict=True)]
    columns = sorted({k for row in rows for k in row} - {"prompt", "completion", "completion_ids"})
    extra = {k: [row.get(k) for row in rows] for k in columns}
    total = torch.zeros(len(rows))
    by_source: dict[str, float] = {}
    for func, weight in zip(sources.funcs, sources.weights, strict=True):
        raw = func(prompts=prompts, completions=completions, completion_ids=completion_ids,
                   trainer_state=trainer_state, **extra)
        if len(raw) != len(rows):
            raise UserError(f"{getattr(func, '__name__', func)} returned {len(raw)} rewards "
                            f"for {len(rows)} completions.")
        scores = torch.tensor([math.nan if s is None else float(s) for s in raw])
        # None = "not applicable" (TRL's convention), e.g. a judge whose budget ran out. PPO rewards
        # are absolute, so a 0 there would punish the sample; it gets the batch's mean of that
        # source instead, which neither rewards nor punishes it against the others.
        known = scores.isfinite()
        fill = float(scores[known].mean()) if known.any() else 0.0
        total += weight * torch.where(known, scores, torch.full_like(scores, fill))
        name = getattr(func, "__name__", "reward_func")
        by_source[name] = float(scores.nanmean()) if scores.isfinite().any() else 0.0
        if callable(getattr(func, "stats", None)):  # a judge's requests, cost, cache hits, budget so far
            by_source.update({f"{name}/{key}": float(value) for key, value in func.stats().items()})
    if sources.model is not None:
        scores = torch.tensor(sources.model(prompts, texts))
        total += sources.model_weight * scores
        by_source["reward_model"] = float(scores.mean())
    return total, by_source
