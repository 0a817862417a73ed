"""PPO's reward sum: a source's None ("not applicable", e.g. a judge out of budget) must not read
as a 0, which PPO's absolute rewards would take as a punishment."""
from __future__ import annotations

import pytest

from training.stages.ppo.rewards import RewardSources, score_completions


def _sum(*sources):
    funcs = [lambda values=values, **_: list(values) for values, _ in sources]
    total, by_source = score_completions(
        [{"prompt": "p"}] * 3, ["a", "b", "c"], [[1], [2], [3]],
        sources=RewardSources(funcs=funcs, weights=[w for _, w in sources], model=None, model_weight=0.0),
        trainer_state=None)
    return total.tolist(), by_source


def test_a_missing_reward_is_that_sources_batch_mean_not_zero():
    total, _ = _sum(([1.0, 0.0, None], 1.0), ([0.5, 0.5, 0.5], 2.0))
    assert total == pytest.approx([2.0, 1.0, 1.5])  # the third: 0.5 (mean of 1 and 0) + 2 * 0.5


def test_a_source_with_no_rewards_at_all_adds_nothing():
    total, _ = _sum(([None, None, None], 1.0), ([1.0, 0.0, 1.0], 1.0))
    assert total == pytest.approx([1.0, 0.0, 1.0])
