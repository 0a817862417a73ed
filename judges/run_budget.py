"""One run's spending on a judge backend, kept in memory: what the score_model grader and the judge
rewards of a training run (judges/judge_rewards.py) share.

The rules are those of judge jobs (judges/batch.py): a budget needs a known price (the backend's,
or one given with the spec), a new unit of work (one request, or one pair judged both ways) starts
only while spent + the costliest unit so far stays under the budget, and a unit of unknown cost
stops the run rather than counting as zero.
"""
from __future__ import annotations

from dataclasses import dataclass

from feedback.errors import UserError


@dataclass
class RunBudget:
    max_cost_usd: float | None = None  # None: no budget
    own_price: tuple[float, float] | None = None  # (input, output) USD per million tokens, replacing the backend's
    spent_usd: float = 0.0
    unknown_costs: int = 0  # units whose cost could not be told
    costliest_usd: float = 0.0
    units: int = 0  # units of work paid for
    requests: int = 0  # requests sent for them

    def price(self, backend) -> tuple[float, float] | None:
        return self.own_price or getattr(backend, "price_per_mtok", None)

    def require_price(self, backend, who: str) -> None:
        """Refuse a budget that cannot be kept: no price known for this backend and model."""
        if self.max_cost_usd is not None and self.price(backend) is None:
            raise UserError(f"No price is known for {who}, so a budget of ${self.max_cost_usd:g} cannot be kept: "
                            "add price_input= and price_output= (USD per million tokens) to the spec, or leave out "
                            "max_cost_usd.")

    def cost(self, reported: float | None, input_tokens: int | None, output_tokens: int | None) -> float | None:
        """A unit's cost: from the spec's own price when it has one (None if tokens are unknown), else as reported."""
        if self.own_price is None:
            return reported
        if input_tokens is None or output_tokens is None:
            return None
        return (input_tokens * self.own_price[0] + output_tokens * self.own_price[1]) / 1_000_000

    def stop_reason(self, who: str) -> str | None:
        """Why no further unit may start, or None while the budget allows one."""
        if self.max_cost_usd is None:
            return None
        if self.unknown_costs:
            return (f"{who}: stopped, {self.unknown_costs} request(s) of unknown cost under a budget of "
                    f"${self.max_cost_usd:g}")
        # The next unit may cost as much as the costliest so far (nothing known yet: any spend left).
        if self.spent_usd + self.costliest_usd >= self.max_cost_usd:
            return (f"{who}: budget of ${self.max_cost_usd:g} reached (${self.spent_usd:.4f} spent on "
                    f"{self.requests} requests)")
        return None

    def account(self, cost: float | None, requests: int = 1) -> None:
        self.units += 1
        self.requests += requests
        if cost is None:
            self.unknown_costs += 1
            return
        self.spent_usd += cost
        self.costliest_usd = max(self.costliest_usd, cost)
