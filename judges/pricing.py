"""What an AI judgment costs, in USD, from the token counts the API reports.

Prices are USD per million tokens (input, output) at the standard (synchronous) rate, from
Anthropic's pricing page (https://docs.anthropic.com/en/docs/about-claude/pricing), checked in
mid-2026 against third-party summaries of the same page. They change: a wrong figure only skews
the cost shown and the job budget (`max_cost_usd`), never a label. An unknown model costs None
("unknown"), not 0, so a budget is never silently bypassed by a typo.

Not modelled, because a judge's requests are short and uncached: prompt-cache writes/reads and
the long-context (>200K input tokens) rates. The Message Batches API bills half of both rates.
"""
from __future__ import annotations

import re

# model id (alias, without a date suffix) -> (USD per 1M input tokens, USD per 1M output tokens)
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-opus-4-7": (5.00, 25.00),
    "claude-opus-4-6": (5.00, 25.00),
    "claude-opus-4-5": (5.00, 25.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4-0": (15.00, 75.00),
    "claude-sonnet-4-6": (3.00, 15.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4-0": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
}
BATCH_DISCOUNT = 0.5  # Message Batches: 50% of the standard input and output rates

# Dated snapshots ("claude-haiku-4-5-20251001") and "-latest" aliases price like their base id;
# the original Claude 4 ids are dated without the "-0" ("claude-opus-4-20250514").
_SUFFIX = re.compile(r"-(\d{8}|latest)$")
_ALIASES = {"claude-opus-4": "claude-opus-4-0", "claude-sonnet-4": "claude-sonnet-4-0"}


def price_per_mtok(model: str | None) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for `model`, or None if the table does not know it."""
    if not model:
        return None
    name = _SUFFIX.sub("", model.strip().lower())
    name = _ALIASES.get(name, name)
    return PRICES_PER_MTOK.get(name)


def cost_usd(model: str | None, input_tokens: int | None, output_tokens: int | None,
             batch: bool = False) -> float | None:
    """USD for one request; None when the model's price or a token count is unknown."""
    prices = price_per_mtok(model)
    if prices is None or input_tokens is None or output_tokens is None:
        return None
    usd = (input_tokens * prices[0] + output_tokens * prices[1]) / 1_000_000
    return usd * BATCH_DISCOUNT if batch else usd
