"""The import formats: what each is called, the columns it needs and uses, how a row is read, and
how `auto` tells them apart by their columns."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from feedback.imports import FORMAT_NAMES, pairs, prompt_formats, ratings
from feedback.imports.common import maybe_json

Kind = Literal["pairs", "ratings", "prompts"]


@dataclass(frozen=True)
class Format:
    name: str
    title: str
    kind: Kind
    # Every group must be met by one of its columns: (("chosen",), ("rejected",)) needs both,
    # (("prompt", "messages"),) either.
    needs: tuple[tuple[str, ...], ...]
    uses: tuple[str, ...]
    # pairs: parse(raw, max_chars=) -> PairRow; ratings: -> RatingRow; prompts: -> a prompt import row
    parse: Callable[..., Any]

    def missing(self, columns: Sequence[str]) -> list[str]:
        return [" or ".join(group) for group in self.needs if not set(group) & set(columns)]


FORMATS = {f.name: f for f in (
    Format("trl", "TRL preference: prompt, chosen, rejected", "pairs",
           (("chosen",), ("rejected",)), pairs.TRL_COLUMNS, pairs.parse_trl),
    Format("hh-rlhf", "Anthropic HH-RLHF transcripts", "pairs",
           (("chosen",), ("rejected",)), pairs.HH_COLUMNS, pairs.parse_hh),
    Format("ultrafeedback", "UltraFeedback: completions with their ratings", "ratings",
           (("instruction",), ("completions",)), ratings.COLUMNS, ratings.parse_ultrafeedback),
    Format("sharegpt", "ShareGPT conversations", "prompts",
           (("conversations",),), prompt_formats.SHAREGPT_COLUMNS, prompt_formats.sharegpt_row),
    Format("alpaca", "Alpaca instructions", "prompts",
           (("instruction",),), prompt_formats.ALPACA_COLUMNS, prompt_formats.alpaca_row),
    Format("mt-bench", "FastChat / MT-bench questions", "prompts",
           (("turns",),), prompt_formats.MT_BENCH_COLUMNS, prompt_formats.mt_bench_row),
    Format("prompts", "prompt rows, as prompts import reads them", "prompts",
           (("prompt", "messages"),), prompt_formats.PROMPT_COLUMNS, prompt_formats.prompts_row),
)}
assert tuple(FORMATS) == FORMAT_NAMES


def _looks_like_transcript(value: Any) -> bool:
    value = maybe_json(value)
    return isinstance(value, str) and "Human:" in value and "Assistant:" in value


def detect(columns: Sequence[str], rows: list[dict[str, Any]]) -> str | None:
    """The format a file's columns say it is, or None. `rows` are its readable rows (only a
    column's values tell TRL's implicit-prompt form from HH-RLHF's transcripts)."""
    have = set(columns)
    if {"chosen", "rejected"} <= have:
        if "prompt" in have:
            return "trl"
        first = next((r["chosen"] for r in rows if r.get("chosen") is not None), None)
        if _looks_like_transcript(first):
            return "hh-rlhf"
        return "trl" if isinstance(maybe_json(first), list) else None
    if {"instruction", "completions"} <= have:
        return "ultrafeedback"
    if "conversations" in have:
        return "sharegpt"
    if "turns" in have:
        return "mt-bench"
    if "instruction" in have:
        return "alpaca"
    if "prompt" in have or "messages" in have:
        return "prompts"
    return None
