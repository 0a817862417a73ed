"""Snapshots: the immutable, content-hashed set of labels a training round trains on.

A snapshot freezes label ids (labels are append-only facts; items and responses never change),
so a round trains on exactly its snapshot even while annotators keep labelling. The same filter
over the same labels gives the same hash, and the existing snapshot is reused.

Only labels on train prompts go in: a val prompt's labels never reach training, whatever the
filter says, because the evaluation gate judges on the val split.

Disagreements among several labels on one item are resolved by the snapshot's rule:
- "majority": the majority verdict (ties between verdicts drop the item);
- "drop": only unanimous items;
- "soft": each vote trains in its own direction, so an item's vote fractions carry into training
  (feedback/export.py: a 3-to-1 pair gives three rows towards the majority and one against).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import LABEL_SOURCES, Item, Label, PolicyVersion, Prompt, Response, Snapshot, SnapshotLabel
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.export import kto_rows, preference_rows

Rule = Literal["majority", "drop", "soft"]


@dataclass
class SnapshotFilter:
    sources: list[str] = field(default_factory=lambda: list(LABEL_SOURCES))  # human / judge / grader
    policy_versions: list[str] = field(default_factory=list)  # responses from these versions (empty: any)
    since: str | None = None  # ISO date/time: labels created at or after
    until: str | None = None  # ISO date/time: labels created before
    rule: Rule = "majority"
    kto_threshold: float = 0.5  # kto: a grader score at least this makes a single response desirable
    kto_from_pairs: bool = False  # kto: also unpair resolved pairwise labels (chosen desirable, rejected not)

    def __post_init__(self) -> None:
        if not self.sources or set(self.sources) - set(LABEL_SOURCES):
            raise UserError(f"sources must be some of {', '.join(LABEL_SOURCES)}.")
        if self.rule not in ("majority", "drop", "soft"):
            raise UserError("rule is majority, drop or soft.")
        for value in (self.since, self.until):
            if value:
                try:
                    datetime.fromisoformat(value)
                except ValueError:
                    raise UserError(f"{value!r} is not an ISO date (YYYY-MM-DD).") from None


def _matching_label_ids(session: Session, f: SnapshotFilter) -> list[int]:
    train_items = select(Item.id).join(Prompt, Prompt.id == Item.prompt_id).where(Prompt.split == "train")
    query = select(Label.id).where(Label.source.in_(f.sources), Label.item_id.in_(train_items))
    if f.since:
        query = query.where(Label.created_at >= _aware(f.since))
    if f.until:
        query = query.where(Label.created_at < _aware(f.until))
    if f.policy_versions:
        versions = select(PolicyVersion.id).where(PolicyVersion.name.in_(f.policy_versions))
        responses = select(Response.id).where(Response.policy_version_id.in_(versions))
        query = query.join(Item, Item.id == Label.item_id).where(Item.response_a_id.in_(responses))
    return sorted(session.scalars(query))


def _aware(value: str) -> datetime:

    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def create_snapshot(*, session: Session, filters: SnapshotFilter, actor: Actor) -> Snapshot:
    actor.require("admin")
    label_ids = _matching_label_ids(session, filters)
    if not label_ids:
        raise UserError("No labels match that filter: nothing to train on.")
    digest = hashlib.sha256(json.dumps({"labels": label_ids, "filters": asdict(filters)},
                                       sort_keys=True).encode()).hexdigest()
    existing = session.scalar(select(Snapshot).where(Snapshot.content_hash == digest))
    if existing is not None:
        return existing
    snapshot = Snapshot(content_hash=digest, filters=asdict(filters), n_labels=len(label_ids),
                        created_by_id=actor.user_id)
    try:
        with session.begin_nested():
            session.add(snapshot)
            session.flush()
    except IntegrityError:
        # The same snapshot was just frozen by a concurrent request (two clicks on "start"): use it.
        return session.scalar(select(Snapshot).where(Snapshot.content_hash == digest))
    session.execute(insert(SnapshotLabel), [{"snapshot_id": snapshot.id, "label_id": i} for i in label_ids])
    actor.record(session=session, action="snapshot.create", target=f"snapshot:{snapshot.id}",
                 details={"labels": len(label_ids), "hash": digest})
    return snapshot


def _row_rule(snapshot: Snapshot) -> str:
    return snapshot.filters.get("rule", "majority")


def rows_for_stage(*, session: Session, snapshot: Snapshot, stage: str) -> list[dict[str, Any]]:
    """The snapshot as the rows a stage trains on (TRL's column names, conversational)."""
    sources, rule = snapshot.filters.get("sources", list(LABEL_SOURCES)), _row_rule(snapshot)
    if stage in ("dpo", "reward"):
        return preference_rows(session=session, sources=sources, with_margin=stage == "reward",
                               snapshot_id=snapshot.id, rule=rule)
    if stage == "kto":
        return kto_rows(session=session, sources=sources, snapshot_id=snapshot.id, rule=rule,
                        kto_threshold=snapshot.filters.get("kto_threshold", 0.5),
                        kto_from_pairs=snapshot.filters.get("kto_from_pairs", False))
    if stage == "sft":  # warm-up on the chosen responses: the winners only, also under "soft"
        winners = preference_rows(session=session, sources=sources, snapshot_id=snapshot.id,
                                  rule="majority" if rule == "soft" else rule)
        return [{"prompt": r["prompt"], "completion": r["chosen"]} for r in winners]
    raise UserError(f"Stage {stage!r} does not train on a label snapshot.")


def reference_rows(*, session: Session, split: str = "train", limit: int | None = None) -> list[dict[str, Any]]:
    """Prompts with reference answers: what GRPO/RLOO/PPO against graders (ReFT) and SFT on
    references train on. Not labels, so no snapshot: the prompt set is what is frozen."""
    query = select(Prompt).where(Prompt.reference.is_not(None), Prompt.split == split).order_by(Prompt.id)
    prompts = session.scalars(query.limit(limit) if limit else query)
    return [{"prompt": p.messages, "reference": p.reference} for p in prompts]
