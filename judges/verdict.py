"""Turning whatever a judge model answered into "1", "2" or "tie" (or a clear failure).

A pure function, tested on every odd output we could think of (tests/test_verdict.py): tool
input dicts, JSON in code fences, JSON with prose around it, single quotes, numbers instead of
strings, "Response 1", MT-Bench's [[A]] style, truncated JSON, refusals.
"""
from __future__ import annotations

import json
import re
from typing import Any


class VerdictError(ValueError):
    """No verdict could be read; the message says why (kept in provenance)."""


_WORDS = {
    "1": "1", "one": "1", "first": "1", "response 1": "1", "response_1": "1", "a": "1", "response a": "1",
    "2": "2", "two": "2", "second": "2", "response 2": "2", "response_2": "2", "b": "2", "response b": "2",
    "tie": "tie", "draw": "tie", "equal": "tie", "both": "tie", "neither": "tie", "c": "tie",
}
_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.S)
_WINNER_FIELD = re.compile(r"""["']?winner["']?\s*[:=]\s*["']?\s*([A-Za-z0-9_ ]{1,12}?)\s*["'}\n,]""", re.I)
_BRACKETS = re.compile(r"\[\[\s*(1|2|A|B|C|tie)\s*\]\]", re.I)


def _normalise(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        value = str(int(value)) if float(value).is_integer() else str(value)
    if not isinstance(value, str):
        return None
    return _WORDS.get(value.strip().strip(".").lower())


def parse_verdict(text: str | None, structured: dict[str, Any] | None = None) -> str:
    """'1', '2' or 'tie'; raises VerdictError."""
    if structured is not None:
        winner = _normalise(structured.get("winner"))
        if winner:
            return winner
    if not text or not text.strip():
        raise VerdictError("empty answer")
    # The last JSON object that names a winner: a model may quote an example object first.
    for candidate in reversed(_JSON_OBJECT.findall(text)):
        for loader in (json.loads, lambda s: json.loads(s.replace("'", '"'))):
            try:
                obj = loader(candidate)
            except ValueError:
                continue
            if isinstance(obj, dict) and "winner" in obj:
                winner = _normalise(obj["winner"])
                if winner:
                    return winner
                raise VerdictError(f"unknown winner {obj['winner']!r}")
    fields = _WINNER_FIELD.findall(text)
    if fields:
        winner = _normalise(fields[-1])
        if winner:
            return winner
    brackets = _BRACKETS.findall(text)
    if brackets:
        return _WORDS[brackets[-1].lower()]
    raise VerdictError("no verdict found" + (" (answer looks cut off)" if text.count("{") > text.count("}") else ""))
