"""Prompt-only formats: each row becomes a prompt row for the prompt import (feedback/prompts.py),
which validates, deduplicates and stores it as it does any prompt file.

- ShareGPT: `conversations`, a list of {"from": "human" | "gpt" | "system", "value": text}, and
  optionally `system`. The turns up to the last human one are the prompt; a final gpt answer
  becomes the prompt's reference.
- Alpaca: `instruction`, optional `input` (appended after a blank line) and `output` (the
  prompt's reference).
- FastChat / MT-bench question files: `question_id`, `category`, `turns` (a list of user turns)
  and optionally `reference` (a list, one answer per turn). The first turn is the prompt and the
  first reference its reference. A later turn is asked after the model's own answer to the one
  before, which sampling does not do, so later turns are not imported (the report says how many).
- prompts: this app's own prompt rows (`prompt` or `messages`, ...), as `prompts import` reads them.

Every prompt format also takes the prompt import's own `split`, `tags` and `source` columns, and a
`category` column adds a tag.
"""
from __future__ import annotations

from typing import Any

from feedback.imports.common import maybe_json, shown
from feedback.prompt_files import RowInvalid, type_name

GENERIC_COLUMNS = ("split", "tags", "source", "category")
SHAREGPT_COLUMNS = ("conversations", "system", *GENERIC_COLUMNS)
ALPACA_COLUMNS = ("instruction", "input", "output", *GENERIC_COLUMNS)
MT_BENCH_COLUMNS = ("turns", "reference", *GENERIC_COLUMNS)
PROMPT_COLUMNS = ("prompt", "messages", "reference", "split", "tags", "source")

SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
            "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}


def _generic(raw: dict[str, Any]) -> dict[str, Any]:
    """split, tags and source as the prompt import reads them; a category is one more tag."""
    out = {k: raw[k] for k in ("split", "source") if raw.get(k) is not None}
    tags, category = maybe_json(raw.get("tags")), raw.get("category")
    if category is not None:
        if not isinstance(category, str):
            raise RowInvalid(f"'category' must be a string, not {type_name(category)}")
        if isinstance(tags, str):
            tags = tags.replace(",", ";").split(";")
        if tags is not None and not isinstance(tags, list):
            raise RowInvalid("'tags' must be a list of strings")
        tags = [category, *(tags or [])]
    if tags is not None:
        out["tags"] = tags
    return out


def sharegpt_row(raw: dict[str, Any]) -> dict[str, Any]:
    conversations = maybe_json(raw.get("conversations"))
    if not isinstance(conversations, list) or not conversations:
        raise RowInvalid("'conversations' must be a non-empty list of {from, value} turns")
    messages = []
    system = raw.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise RowInvalid(f"'system' must be a string, not {type_name(system)}")
        if system.strip():
            messages.append({"role": "system", "content": system})
    for i, turn in enumerate(conversations, start=1):
        if not isinstance(turn, dict):
            raise RowInvalid(f"turn {i} must be an object with 'from' and 'value'")
        speaker, value = turn.get("from"), turn.get("value")
        role = SPEAKERS.get(speaker.strip().lower()) if isinstance(speaker, str) else None
        if role is None:
            raise RowInvalid(f"turn {i}: 'from' must be human, gpt or system, not {shown(speaker)}")
        if not isinstance(value, str):
            raise RowInvalid(f"turn {i}: 'value' must be a string, not {type_name(value)}")
        messages.append({"role": role, "content": value})
    reference = None
    if messages[-1]["role"] == "assistant":
        reference = messages.pop()["content"]  # the answer to the last question: its reference
    if not any(m["role"] == "user" for m in messages):
        raise RowInvalid("the conversation has no human turn to use as the prompt")
    return {"messages": messages, **({"reference": reference} if reference and reference.strip() else {}),
            **_generic(raw)}


def alpaca_row(raw: dict[str, Any]) -> dict[str, Any]:
    instruction, extra, output = raw.get("instruction"), raw.get("input"), raw.get("output")
    if not isinstance(instruction, str) or not instruction.strip():
        raise RowInvalid("'instruction' must be a non-empty string")
    for name, value in (("input", extra), ("output", output)):
        if value is not None and not isinstance(value, str):
            raise RowInvalid(f"{name!r} must be a string, not {type_name(value)}")
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return {"prompt": prompt, **({"reference": output} if output and output.strip() else {}), **_generic(raw)}


def mt_bench_row(raw: dict[str, Any]) -> dict[str, Any]:
    turns = maybe_json(raw.get("turns"))
    if isinstance(turns, str):
        turns = [turns]
    if not isinstance(turns, list) or not turns:
        raise RowInvalid("'turns' must be a non-empty list of questions")
    if not all(isinstance(t, str) for t in turns):
        raise RowInvalid("every turn must be a string")
    reference = maybe_json(raw.get("reference"))
    if isinstance(reference, list):
        reference = reference[0] if reference else None
    if reference is not None and not isinstance(reference, str):
        raise RowInvalid(f"'reference' must be a list of strings, not {type_name(reference)}")
    return {"prompt": turns[0], **({"reference": reference} if reference and reference.strip() else {}),
            **_generic(raw)}


def prompts_row(raw: dict[str, Any]) -> dict[str, Any]:
    return raw


def later_turns(raws: list[dict[str, Any]]) -> int:
    """MT-bench questions with more than one turn (only the first is imported)."""
    return sum(1 for raw in raws if isinstance(t := maybe_json(raw.get("turns")), list) and len(t) > 1)
