"""The evaluation gate before promotion: is the new version better than its parent?

- Win rate on held-out (val) prompts: both versions answer each prompt (same settings and seed),
  an AI judge compares the pair in both orders; a win counts 1, a tie or order-inconsistent
  verdict 0.5, a loss 0. The 95% interval is a percentile bootstrap over prompts (scipy).
- Grader accuracy on val prompts that have references: the share of answers a grader scores
  >= 0.5, for both versions.
The gate passes when the win rate reaches `min_win_rate` and accuracy did not drop by more than
`max_accuracy_drop`. The figures are stored on the version; promotion stays a human decision.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from db.engine import session_scope
from db.models import Prompt
from feedback.policies import policy_by_name
from feedback.policy import SamplingParams, client_for
from judges.backends import get_backend
from judges.constitutions import ensure_shipped, latest_constitution
from judges.graders import parse_grader
from judges.pairwise import choose_principles, judge_pair


@dataclass
class GateConfig:
    prompts: int = 16  # val prompts to compare on
    judge_backend: str = "local"
    judge_model: str | None = None
    constitution: str = "default"
    grader: str = "numeric"  # for val prompts with references
    max_new_tokens: int = 96
    temperature: float = 0.0  # greedy: the comparison measures the policies, not sampling luck
    seed: int = 0
    min_win_rate: float = 0.5
    max_accuracy_drop: float = 0.0


def bootstrap_interval(scores: list[float], *, seed: int = 0) -> tuple[float, float]:
    from scipy.stats import bootstrap

    if len(scores) < 2 or len(set(scores)) == 1:
        value = float(np.mean(scores)) if scores else 0.0
        return value, value
    result = bootstrap((np.asarray(scores),), np.mean, confidence_level=0.95, n_resamples=2000,
                       method="percentile", random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def evaluate(*, engine: Engine, candidate: str, baseline: str, config: GateConfig | None = None) -> dict[str, Any]:
    config = config or GateConfig()
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        new, old = policy_by_name(session=s, name=candidate), policy_by_name(session=s, name=baseline)
        principles = latest_constitution(session=s, name=config.constitution).principles
        prompts = [(p.messages, p.reference) for p in
                   s.scalars(select(Prompt).where(Prompt.split == "val").order_by(Prompt.id).limit(config.prompts))]
    if not prompts:
        return {"skipped": "no val prompts"}
    params = SamplingParams(temperature=config.temperature, top_p=1.0, max_new_tokens=config.max_new_tokens, n=1,
                            seed=config.seed)
    conversations = [m for m, _ in prompts]
    new_texts = [c[0].text if c else "" for c in client_for(new).generate(conversations, params)]
    old_texts = [c[0].text if c else "" for c in client_for(old).generate(conversations, params)]

    judge = get_backend(config.judge_backend, **({"model": config.judge_model} if config.judge_model else {}))
    rng = random.Random(config.seed)
    outcomes = [
        judge_pair(backend=judge, messages=m, text_a=a, text_b=b,
                   principles=choose_principles(principles, "sample", rng), key=f"eval{k}").outcome
        for k, (m, a, b) in enumerate(zip(conversations, new_texts, old_texts, strict=True))
    ]
    scores = [1.0 if o == "a" else 0.0 if o == "b" else 0.5 for o in outcomes]
    low, high = bootstrap_interval(scores, seed=config.seed)

    grader = parse_grader(config.grader)
    graded = [(grader.grade(a, ref), grader.grade(b, ref))
              for (_, ref), a, b in zip(prompts, new_texts, old_texts, strict=True) if ref]
    accuracy_new = float(np.mean([a >= 0.5 for a, _ in graded])) if graded else None
    accuracy_old = float(np.mean([b >= 0.5 for _, b in graded])) if graded else None
    win_rate = float(np.mean(scores))
    passed = win_rate >= config.min_win_rate and (
        accuracy_new is None or accuracy_new >= accuracy_old - config.max_accuracy_drop)
    return {
        "candidate": candidate, "baseline": baseline, "prompts": len(prompts),
        "win_rate": win_rate, "win_rate_ci95": [low, high],
        "wins": outcomes.count("a"), "losses": outcomes.count("b"), "ties": outcomes.count("tie"),
        "inconsistent": outcomes.count("inconsistent") + outcomes.count("failed"),
        "graded_prompts": len(graded), "accuracy": accuracy_new, "baseline_accuracy": accuracy_old,
        "judge": f"{config.judge_backend}:{judge.model}", "grader": grader.spec, "passed": passed,
        "config": asdict(config),
    }
