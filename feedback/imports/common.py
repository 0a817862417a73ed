"""What the import formats share: parsed rows, checks on texts, and how untrusted values are shown."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from feedback.prompt_files import RowInvalid, type_name
from feedback.prompts import PromptRow, validate_row

# Rationales longer than this are cut (feedback/conversions.validate_ratings takes up to 2000).
RATIONALE_MAX_CHARS = 2000
_PLAIN = re.compile(r"^[\w .:/+*\[\]-]*$")


@dataclass(frozen=True)
class PairRow:
    """A prompt with a chosen and a rejected answer (TRL, HH-RLHF)."""

    prompt: PromptRow
    chosen: str
    rejected: str


@dataclass(frozen=True)
class RatingRow:
    """A prompt with K answers, each from a named model and rated on every aspect (UltraFeedback)."""

    prompt: PromptRow
    texts: tuple[str, ...]
    models: tuple[str | None, ...]
    # By position: {"scores": {aspect: 1..5}, "rationales": {aspect: text}}, as rating labels hold them.
    ratings: tuple[dict[str, Any], ...]
    aspects: tuple[str, ...]
    rationales_cut: int = 0


def shown(value: Any, limit: int = 40) -> str:
    """An untrusted value as a message may quote it: a short plain name as it is, anything else
    through repr (quoted, control characters escaped) and cut to `limit` characters."""
    if isinstance(value, str):
        if len(value) <= limit and _PLAIN.match(value):
            return value
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def names(values: list[str], limit: int = 20) -> str:
    """A list of column names for a message, each shown safely, at most `limit` of them."""
    listed = ", ".join(shown(v) for v in values[:limit])
    return listed + (f" and {len(values) - limit} more" if len(values) > limit else "")


def maybe_json(value: Any) -> Any:
    """A CSV cell that holds a JSON list or object (messages, completions, turns) as that value;
    anything else as it is."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def response_text(value: Any, what: str, *, max_chars: int) -> str:
    """An answer's text, checked as prompt import checks prompts (length, NUL)."""
    if not isinstance(value, str):
        raise RowInvalid(f"{what} must be a string, not {type_name(value)}")
    if not value.strip():
        raise RowInvalid(f"{what} is empty")
    if len(value) > max_chars:
        raise RowInvalid(f"{what} is {len(value)} characters, the limit is {max_chars}")
    if "\x00" in value:
        raise RowInvalid(f"{what} contains a NUL character")
    return value


def same_text(a: str, b: str) -> bool:
    """Equal up to white space: no comparison to be made (sampling drops such pairs too)."""
    return " ".join(a.split()) == " ".join(b.split())


def prompt_of(raw: dict[str, Any], *, max_chars: int) -> PromptRow:
    """The prompt import's own validation of a prompt row."""
    return validate_row(raw, max_prompt_chars=max_chars)


def cut_rationale(text: str) -> tuple[str, bool]:
    text = text.strip()
    if len(text) <= RATIONALE_MAX_CHARS:
        return text, False
    return text[: RATIONALE_MAX_CHARS - 1] + "…", True
