"""Export labels as training data in TRL's own column names.

- dpo:    prompt / chosen / rejected           (DPOTrainer)
- reward: prompt / chosen / rejected / margin  (RewardTrainer; margin from label strength)
- kto:    prompt / completion / label          (KTOTrainer; thumbs up = True)

Rows are "conversational" (prompt = chat messages, completions = one assistant message), so the
trainer applies the model's own chat template. Several labels on one pair are resolved by
majority between A and B; a pair whose majority is tie, both-bad or split is left out (it says
nothing about which is better). Binary labels on one response are resolved the same way.

Rule "soft" keeps the disagreement instead: every A-or-B vote becomes a row in its own direction,
so a pair voted 3 to 1 trains three rows towards the majority and one against it (conservative
DPO's label smoothing, per item: 0.25 for that pair). Ties and both-bad votes add no row.

KTO rows come from every source: thumbs (binary labels), graders' scores on single responses
(desirable when the score is at least `kto_threshold`), and, with `kto_from_pairs`, resolved
pairwise labels unpaired (the chosen response desirable, the rejected one undesirable).

Prompts of the val split are held out: no export includes them unless asked (`include_val`), and
a snapshot never does (training/snapshot.py).
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


def _labels(session: Session, kind: str, sources: Sequence[str], snapshot_id: int | None,
            include_val: bool = False) -> dict[int, list[Label]]:
    by_item: dict[int, list[Label]] = defaultdict(list)
    query = select(Label).where(Label.kind == kind, Label.source.in_(sources)).order_by(Label.id)
    if not include_val:
        train_items = select(Item.id).join(Prompt, Prompt.id == Item.prompt_id).where(Prompt.split != "val")
        query = query.where(Label.item_id.in_(train_items))
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


def _votes(labels: list[Label], rule: str) -> list[str]:
    """The directions an item trains in: its resolved winner once, or (rule 'soft') each A/B vote."""
    if rule == "soft":
        return [label.choice for label in labels if label.choice in ("a", "b")]
    winner = _resolve([label.choice for label in labels], rule)
    return [winner] if winner in ("a", "b") else []


def preference_rows(*, session: Session, sources: Sequence[str] = LABEL_SOURCES, with_margin: bool = False,
                    snapshot_id: int | None = None, rule: str = "majority",
                    include_val: bool = False) -> list[dict[str, Any]]:
    by_item = _labels(session, "pairwise", sources, snapshot_id, include_val)
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
        for winner in _votes(labels, rule):
            chosen, rejected = (text_a, text_b) if winner == "a" else (text_b, text_a)
            row: dict[str, Any] = {"prompt": messages, "chosen": _assistant(chosen), "rejected": _assistant(rejected)}
            if with_margin:
                agreeing = [label for label in labels if label.choice == winner]
                row["margin"] = sum(STRENGTH_MARGIN.get(label.strength, 0.0) for label in agreeing) / len(agreeing)
            out.append(row)
    return out


def kto_rows(*, session: Session, sources: Sequence[str] = LABEL_SOURCES, snapshot_id: int | None = None,
             rule: str = "majority", kto_threshold: float = 0.5, kto_from_pairs: bool = False,
             include_val: bool = False) -> list[dict[str, Any]]:
    """prompt / completion / label rows from thumbs, from scores (>= kto_threshold: desirable) and,
    with kto_from_pairs, from resolved pairs (see the module docstring)."""
    resolved: dict[int, bool] = {}  # single-response item -> desirable
    for item_id, labels in _labels(session, "binary", sources, snapshot_id, include_val).items():
        verdict = _resolve([label.thumb for label in labels], "majority" if rule == "soft" else rule)
        if verdict is not None:
            resolved[item_id] = verdict == "up"
    for item_id, labels in _labels(session, "score", sources, snapshot_id, include_val).items():
        if item_id not in resolved:  # a person's thumb on the same response wins over a score
            resolved[item_id] = sum(label.score for label in labels) / len(labels) >= kto_threshold
    out = []
    if resolved:
        rows = session.execute(
            select(Item.id, Prompt.messages, Response.text)
            .join(Prompt, Prompt.id == Item.prompt_id).join(Response, Response.id == Item.response_a_id)
            .where(Item.id.in_(list(resolved))).order_by(Item.id)
        )
        out = [{"prompt": messages, "completion": _assistant(text), "label": resolved[item_id]}
               for item_id, messages, text in rows]
    if kto_from_pairs:  # each pair once, by its resolved winner (a soft vote split would contradict itself)
        for row in preference_rows(session=session, sources=sources, snapshot_id=snapshot_id,
                                   rule="majority" if rule == "soft" else rule, include_val=include_val):
            out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
            out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    return out


def export_rows(*, session: Session, fmt: str, sources: Sequence[str] = LABEL_SOURCES, include_val: bool = False,
                kto_threshold: float = 0.5, kto_from_pairs: bool = False) -> list[dict[str, Any]]:
    if fmt not in FORMATS:
        raise UserError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    unknown = set(sources) - set(LABEL_SOURCES)
    if unknown:
        raise UserError(f"Unknown label source(s) {', '.join(sorted(unknown))}; "
                        f"choose from {', '.join(LABEL_SOURCES)}.")
    if fmt == "kto":
        return kto_rows(session=session, sources=sources, kto_threshold=kto_threshold, kto_from_pairs=kto_from_pairs,
                        include_val=include_val)
    return preference_rows(session=session, sources=sources, with_margin=fmt == "reward", include_val=include_val)


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
