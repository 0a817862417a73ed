"""Pairwise preference rows: TRL's preference format and Anthropic's HH-RLHF transcripts.

TRL (https://huggingface.co/docs/trl/dataset_formats), every form of it:
- standard:                 prompt, chosen, rejected are strings;
- conversational:           prompt is a list of messages, chosen and rejected each one assistant
                            message (a list of one);
- implicit prompt:          no prompt; chosen and rejected are whole conversations sharing their
                            first turns, which are the prompt (what TRL's `extract_prompt` does);
- a prompt repeated inside: chosen and rejected start with the prompt's turns (as in
                            ultrafeedback_binarized), which are taken off.

HH-RLHF: chosen and rejected are transcripts, "\\n\\nHuman: ...\\n\\nAssistant: ...", identical but
for the last answer. The turns before it are the prompt; the two last answers are the pair.
"""
from __future__ import annotations

import re
from typing import Any

from feedback.imports.common import PairRow, maybe_json, prompt_of, response_text, same_text, shown
from feedback.prompt_files import RowInvalid, type_name

TRL_COLUMNS = ("prompt", "chosen", "rejected", "split")
HH_COLUMNS = ("chosen", "rejected", "split")


def _turn(message: Any) -> Any:
    """What makes two messages the same turn: role and content (ids or names do not)."""
    return (message.get("role"), message.get("content")) if isinstance(message, dict) else message


def _shared_prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and _turn(a[n]) == _turn(b[n]):
        n += 1
    return n


def _answer(value: Any, name: str, *, max_chars: int) -> str:
    """The text of one answer: a string, or a list holding one assistant message."""
    if isinstance(value, str):
        return response_text(value, f"{name!r}", max_chars=max_chars)
    if not isinstance(value, list):
        raise RowInvalid(f"{name!r} must be a string or a list of messages, not {type_name(value)}")
    if not value:
        raise RowInvalid(f"{name!r} has no answer after the prompt")
    if len(value) > 1:
        raise RowInvalid(f"{name!r} has {len(value)} messages after the prompt; one assistant answer can be imported")
    message = value[0]
    if not isinstance(message, dict) or message.get("role") != "assistant":
        role = message.get("role") if isinstance(message, dict) else None
        raise RowInvalid(f"{name!r} must be an assistant message, not {shown(role) if role else type_name(message)}")
    return response_text(message.get("content"), f"{name!r} content", max_chars=max_chars)


def _pair(prompt_raw: dict, chosen: Any, rejected: Any, *, max_chars: int) -> PairRow:
    prompt = prompt_of(prompt_raw, max_chars=max_chars)
    chosen_text = _answer(chosen, "chosen", max_chars=max_chars)
    rejected_text = _answer(rejected, "rejected", max_chars=max_chars)
    if same_text(chosen_text, rejected_text):
        raise RowInvalid("'chosen' and 'rejected' are the same answer: there is no preference to import")
    return PairRow(prompt=prompt, chosen=chosen_text, rejected=rejected_text)


def parse_trl(raw: dict[str, Any], *, max_chars: int) -> PairRow:
    chosen, rejected, prompt = (maybe_json(raw.get(k)) for k in ("chosen", "rejected", "prompt"))
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if value is None:
            raise RowInvalid(f"missing {name!r}")
    split = raw.get("split")
    if prompt is None:
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise RowInvalid("no 'prompt', and 'chosen' and 'rejected' are not conversations to take it from "
                             "(for Human:/Assistant: transcripts use the hh-rlhf format)")
        n = _shared_prefix(chosen, rejected)
        if n == 0:
            raise RowInvalid("no 'prompt', and 'chosen' and 'rejected' share no first turns to take it from")
        return _pair({"messages": chosen[:n], "split": split}, chosen[n:], rejected[n:], max_chars=max_chars)
    if isinstance(prompt, str):
        prompt_raw, prompt_turns = {"prompt": prompt, "split": split}, [("user", prompt)]
    elif isinstance(prompt, list):
        prompt_raw, prompt_turns = {"messages": prompt, "split": split}, [_turn(m) for m in prompt]
    else:
        raise RowInvalid(f"'prompt' must be a string or a list of messages, not {type_name(prompt)}")
    # A conversation that repeats the prompt before its answer: the answer is what follows it.
    answers = []
    for value in (chosen, rejected):
        if isinstance(value, list) and len(value) > len(prompt_turns) \
                and [_turn(m) for m in value[: len(prompt_turns)]] == prompt_turns:
            value = value[len(prompt_turns):]
        answers.append(value)
    return _pair(prompt_raw, *answers, max_chars=max_chars)


_SPEAKER = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def _transcript(value: Any, name: str) -> list[dict[str, str]]:
    value = maybe_json(value)
    if not isinstance(value, str):
        raise RowInvalid(f"{name!r} must be a Human:/Assistant: transcript string, not {type_name(value)}")
    text = value.lstrip()
    if not text.startswith("Human:"):
        raise RowInvalid(f"{name!r} must start with a 'Human:' turn")
    parts = _SPEAKER.split(text)  # ['', 'Human', text, 'Assistant', text, ...]
    turns = [{"role": _ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
    if turns[-1]["role"] != "assistant":
        raise RowInvalid(f"{name!r} does not end with an 'Assistant:' answer")
    return turns


def parse_hh(raw: dict[str, Any], *, max_chars: int) -> PairRow:
    for name in ("chosen", "rejected"):
        if raw.get(name) is None:
            raise RowInvalid(f"missing {name!r}")
    chosen, rejected = _transcript(raw["chosen"], "chosen"), _transcript(raw["rejected"], "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise RowInvalid("'chosen' and 'rejected' differ before their last answer; they must share the conversation")
    return _pair({"messages": chosen[:-1], "split": raw.get("split")}, chosen[-1:], rejected[-1:], max_chars=max_chars)
