"""UltraFeedback rows (openbmb/UltraFeedback): one instruction, K completions, each rated by GPT-4
on four aspects.

    {"source": "evol_instruct", "instruction": "...", "models": [...],
     "completions": [{"model": "gpt-4", "principle": "...", "custom_system_prompt": "...",
                      "response": "...", "critique": "...", "overall_score": 7.5,
                      "fine-grained_score": 4.25,
                      "annotations": {"helpfulness": {"Rating": "4", "Rationale": "...",
                                                      "Rationale For Rating": "...", "Type": ["1"]},
                                      "honesty": {"Rating": "5", "Rationale": "..."}, ...}}, ...],
     "correct_answers": [...], "incorrect_answers": [...]}

An aspect's annotation is an object, or (in some releases) a list holding one. A rating is a
number or a numeric string; "N/A" is no rating, and a rating label needs every aspect of every
response, so such a row is reported. The rationale kept is "Rationale For Rating" where there is
one (it explains the rating), else "Rationale". The instruction becomes the prompt and `source`
(where UltraFeedback took the instruction from) the prompt's source.
"""
from __future__ import annotations

import numbers
from typing import Any

from feedback.conversions import RATING_SCALE, validate_ratings
from feedback.imports.common import RatingRow, cut_rationale, maybe_json, prompt_of, response_text, shown
from feedback.projects import TASKS
from feedback.prompt_files import RowInvalid, type_name

COLUMNS = ("instruction", "completions", "source", "split")
COMPLETION_FIELDS = ("model", "response", "annotations")
ANNOTATION_FIELDS = ("Rating", "Rationale", "Rationale For Rating")


def _rating(value: Any, where: str) -> int:
    low, high = RATING_SCALE
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise RowInvalid(f"{where} is rated {shown(value)}; a rating label needs every aspect rated {low} to {high}")
    return int(value)


def _annotation(value: Any, where: str) -> dict[str, Any]:
    value = maybe_json(value)
    if isinstance(value, list):  # some releases wrap each aspect's annotation in a list of one
        value = value[0] if len(value) == 1 else None
    if not isinstance(value, dict):
        raise RowInvalid(f"{where} must be an object with a 'Rating'")
    return value


def parse_ultrafeedback(raw: dict[str, Any], *, max_chars: int) -> RatingRow:
    instruction = raw.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise RowInvalid("'instruction' must be a non-empty string")
    prompt = prompt_of({"prompt": instruction, "split": raw.get("split"), "source": raw.get("source")},
                       max_chars=max_chars)
    completions = maybe_json(raw.get("completions"))
    if not isinstance(completions, list):
        raise RowInvalid(f"'completions' must be a list, not {type_name(completions)}")
    low, high = TASKS["rating"].k_range
    if not low <= len(completions) <= high:
        raise RowInvalid(f"{len(completions)} completions; a rating item holds {low} to {high} responses")

    texts, models, ratings, aspects, cut = [], [], [], None, 0
    for i, completion in enumerate(completions, start=1):
        if not isinstance(completion, dict):
            raise RowInvalid(f"completion {i} must be an object, not {type_name(completion)}")
        texts.append(response_text(completion.get("response"), f"completion {i}: 'response'", max_chars=max_chars))
        model = completion.get("model")
        if model is not None and not isinstance(model, str):
            raise RowInvalid(f"completion {i}: 'model' must be a string")
        models.append((model.strip() or None) if model else None)
        annotations = maybe_json(completion.get("annotations"))
        if not isinstance(annotations, dict) or not annotations:
            raise RowInvalid(f"completion {i} has no 'annotations' (its ratings per aspect)")
        # Parquet files give every struct field to every row: an aspect absent here comes as None.
        these = tuple(a for a, v in annotations.items() if v is not None)
        if aspects is None:
            aspects = these
        elif set(these) != set(aspects):
            raise RowInvalid(f"completion {i} is rated on other aspects than completion 1 "
                             f"({', '.join(shown(a) for a in these)} against {', '.join(shown(a) for a in aspects)})")
        scores, rationales = {}, {}
        for aspect in aspects:
            where = f"completion {i}: {shown(aspect)}"
            annotation = _annotation(annotations[aspect], where)
            scores[aspect] = _rating(annotation.get("Rating"), where)
            rationale = annotation.get("Rationale For Rating") or annotation.get("Rationale")
            if isinstance(rationale, str) and rationale.strip():
                rationales[aspect], was_cut = cut_rationale(rationale)
                cut += was_cut
        ratings.append({"scores": scores, "rationales": rationales})
    try:
        checked = validate_ratings(ratings, len(ratings), aspects)
    except ValueError as exc:
        raise RowInvalid(str(exc)) from None
    return RatingRow(prompt=prompt, texts=tuple(texts), models=tuple(models), ratings=tuple(checked),
                     aspects=tuple(aspects), rationales_cut=cut)


def unused_fields(raws: list[dict[str, Any]]) -> list[str]:
    """The completions' fields (and their annotations' fields) that the import leaves out."""
    completion_keys: dict[str, None] = {}
    annotation_keys: dict[str, None] = {}
    for raw in raws:
        completions = maybe_json(raw.get("completions"))
        for completion in completions if isinstance(completions, list) else []:
            if not isinstance(completion, dict):
                continue
            completion_keys.update(dict.fromkeys(k for k, v in completion.items() if v is not None))
            annotations = maybe_json(completion.get("annotations"))
            for value in (annotations.values() if isinstance(annotations, dict) else []):
                value = maybe_json(value)
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, dict):
                        annotation_keys.update(dict.fromkeys(k for k, v in item.items() if v is not None))
    return ([f"completions[].{k}" for k in completion_keys if k not in COMPLETION_FIELDS]
            + [f"completions[].annotations.*.{k}" for k in annotation_keys if k not in ANNOTATION_FIELDS])
