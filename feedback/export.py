"""Export labels as training data in TRL's own column names.

- dpo:    prompt / chosen / rejected           (DPOTrainer)
- reward: prompt / chosen / rejected / margin  (RewardTrainer; margin from label strength)
- kto:    prompt / completion / label          (KTOTrainer; thumbs up = True)

Rows are "conversational" (prompt = chat messages, completions = one assistant message), so the
trainer applies the model's own chat template. Several labels on one pair are resolved by
majority between A and B; a pair whose majority is tie, both-bad or split is left out (it says
nothing about which is better). Binary labels on one response are resolved the same way.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import LABEL_SOURCES, Item, Label, Prompt, Response, SnapshotLabel
from feedback.errors import UserError

ExportFormat = Literal["dpo", "kto", "reward"]
FORMATS = ("dpo", "kto", "reward")
# How far the chosen reward should exceed the rejected one, by the strength annotators gave.
STRENGTH_MARGIN = {None: 0.0, "slight": 0.5, "much": 1.0}


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _majority(values: Iterable[str]) -> str | None:
    counts = Counter(values).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def _labels(session: Session, kind: str, sources: Sequence[str], snapshot_id: int | None) -> dict[int, list[Label]]:
    by_item: dict[int, list[Label]] = defaultdict(list)
    query = select(Label).where(Label.kind == kind, Label.source.in_(sources)).order_by(Label.id)
    if snapshot_id is not None:  # only the labels frozen into that snapshot
        query = (query.join(SnapshotLabel, SnapshotLabel.label_id == Label.id)
                 .where(SnapshotLabel.snapshot_id == snapshot_id))
    for label in session.scalars(query):
        by_item[label.item_id].append(label)
    return by_item


def _resolve(values: list[str], rule: str) -> str | None:
    """One value from several labels: the majority, or (rule 'drop') only a unanimous one."""
    if rule == "drop" and len(set(values)) > 1:
        return None
    return _majority(values)


def preference_rows(*, session: Session, sources: Sequence[str] = LABEL_SOURCES, with_margin: bool = False,
                    snapshot_id: int | None = None, rule: str = "majority") -> list[dict[str, Any]]:
    by_item = _labels(session, "pairwise", sources, snapshot_id)
    if not by_item:
        return []
    ra, rb = aliased(Response), aliased(Response)
    rows = session.execute(
        select(Item.id, Prompt.messages, ra.text, rb.text)
        .join(Prompt, Prompt.id == Item.prompt_id)
        .join(ra, ra.id == Item.response_a_id).join(rb, rb.id == Item.response_b_id)
        .where(Item.id.in_(list(by_item))).order_by(Item.id)  # stable output: same labels, same file
    )
    out = []
    for item_id, messages, text_a, text_b in rows:
        labels = by_item[item_id]
        winner = _resolve([label.choice for label in labels], rule)
        if winner not in ("a", "b"):
            continue
        chosen, rejected = (text_a, text_b) if winner == "a" else (text_b, text_a)
        row: dict[str, Any] = {"prompt": messages, "chosen": _assistant(chosen), "rejected": _assistant(rejected)}
        if with_margin:
            agreeing = [label for label in labels if label.choice == winner]
            row["margin"] = sum(STRENGTH_MARGIN.get(label.strength, 0.0) for label in agreeing) / len(agreeing)
        out.append(row)
    return out


def kto_rows(*, session: Session, sources: Sequence[str] = LABEL_SOURCES, snapshot_id: int | None = None,
             rule: str = "majority") -> list[dict[str, Any]]:
    by_item = _labels(session, "binary", sources, snapshot_id)
    if not by_item:
        return []
    rows = session.execute(
        select(Item.id, Prompt.messages, Response.text)
        .join(Prompt, Prompt.id == Item.prompt_id).join(Response, Response.id == Item.response_a_id)
        .where(Item.id.in_(list(by_item))).order_by(Item.id)
    )
    out = []
    for item_id, messages, text in rows:
        verdict = _resolve([label.thumb for label in by_item[item_id]], rule)
        if verdict is not None:
            out.append({"prompt": messages, "completion": _assistant(text), "label": verdict == "up"})
    return out


def export_rows(*, session: Session, fmt: str, sources: Sequence[str] = LABEL_SOURCES) -> list[dict[str, Any]]:
    if fmt not in FORMATS:
        raise UserError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    unknown = set(sources) - set(LABEL_SOURCES)
    if unknown:
        raise UserError(f"Unknown label source(s) {', '.join(sorted(unknown))}; "
                        f"choose from {', '.join(LABEL_SOURCES)}.")
    if fmt == "kto":
        return kto_rows(session=session, sources=sources)
    return preference_rows(session=session, sources=sources, with_margin=fmt == "reward")


def to_jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def write_rows(rows: list[dict[str, Any]], out: Path) -> None:
    """JSONL, or parquet when the file name ends in .parquet; written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        import pandas as pd

        pd.DataFrame(rows).to_parquet(tmp, index=False)
    else:
        tmp.write_bytes(to_jsonl(rows))
    tmp.replace(out)
