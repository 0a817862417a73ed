"""What a judge job is asked to do: JudgeConfig, with its checks (a budget needs a known price)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from feedback.config_fields import cfg_field
from feedback.errors import UserError
from feedback.settings import get_settings
from judges.pairwise import Mode
from judges.pricing import price_per_mtok

Selection = Literal["unlabelled", "disputed", "calibration", "failed"]


@dataclass
class JudgeConfig:
    constitution: str = cfg_field("default", "Constitution name; its latest version is used and recorded.")
    backend: str = cfg_field("local", "Judge backend: anthropic, openai (any OpenAI-compatible server), local, "
                                      "or any registered name.")
    model: str | None = cfg_field(None, "The backend's model (None: its default).")
    mode: Mode = cfg_field("sample", "One principle sampled per pair, or a verdict per principle combined (all).")
    on_disagreement: Literal["escalate", "tie"] = cfg_field(
        "escalate", "When the two orders disagree: leave the pair to humans, or label a tie.")
    selection: Selection = cfg_field(
        "unlabelled", "Unlabelled pairs, pairs humans disagree on, a sample of human-labelled pairs "
                      "(calibration), or pairs this judge setup failed on before (failed).", flag="--select")
    max_items: int = cfg_field(50, "Most pairs to judge.", flag="--limit")
    max_cost_usd: float | None = cfg_field(None, "Stop taking new pairs past this many US dollars (None: no limit).",
                                           flag="--max-cost")
    concurrency: int = cfg_field(4, "Requests in flight at once.")
    batch_api: bool = cfg_field(False, "The provider's asynchronous batch API (Anthropic: half price, slower).")
    price_input_per_mtok: float | None = cfg_field(
        None, "USD per million input tokens, for a model the price table does not know (needed with --max-cost); "
              "given, it prices every request of the job.", flag="--price-input")
    price_output_per_mtok: float | None = cfg_field(
        None, "USD per million output tokens (with --price-input).", flag="--price-output")
    seed: int = cfg_field(0, "Seed for the principle drawn per pair and the calibration sample.")

    def __post_init__(self) -> None:
        if self.mode not in ("sample", "all"):
            raise UserError("mode is 'sample' or 'all'.")
        if self.on_disagreement not in ("escalate", "tie"):
            raise UserError("on_disagreement is 'escalate' or 'tie'.")
        if self.selection not in ("unlabelled", "disputed", "calibration", "failed"):
            raise UserError("selection is 'unlabelled', 'disputed', 'calibration' or 'failed'.")
        if self.max_items < 1 or self.concurrency < 1:
            raise UserError("max_items and concurrency must be at least 1.")
        if (self.price_input_per_mtok is None) != (self.price_output_per_mtok is None):
            raise UserError("Give both prices (input and output, USD per million tokens) or neither.")
        if self.max_cost_usd is not None and not (math.isfinite(self.max_cost_usd) and self.max_cost_usd > 0):
            raise UserError("max_cost_usd must be a finite number > 0 (leave it out for no budget).")
        for price in (self.price_input_per_mtok, self.price_output_per_mtok):
            if price is not None and not (math.isfinite(price) and price >= 0):
                raise UserError("Prices must be finite numbers >= 0 (USD per million tokens).")
        if self.max_cost_usd is not None and self.price_input_per_mtok is None:
            self._check_known_price()

    def _check_known_price(self) -> None:
        """Refuse a budget at the door when the price is known to be unknown (the run checks again
        for backends this cannot tell about)."""
        if self.backend == "openai":
            model = self.model or "the served model"
        elif self.backend == "anthropic":
            model = self.model or get_settings().judge_anthropic_model
            if price_per_mtok(model) is not None:
                return
        else:
            return
        raise UserError(f"No price is known for {self.backend}:{model}, so a budget of ${self.max_cost_usd:g} "
                        "cannot be kept: give --price-input and --price-output (USD per million tokens), or "
                        "judge without --max-cost.")

    def own_price(self) -> tuple[float, float] | None:
        """The job's own (input, output) USD per million tokens, which replace the backend's costs."""
        if self.price_input_per_mtok is None:
            return None
        return self.price_input_per_mtok, self.price_output_per_mtok

    def price(self, backend) -> tuple[float, float] | None:
        """(input, output) USD per million tokens: the job's own, else the backend's, else None."""
        return self.own_price() or getattr(backend, "price_per_mtok", None)
