"""Snapshots: the immutable, content-hashed set of labels a training round trains on.

A snapshot freezes label ids (labels are append-only facts; items and responses never change),
so a round trains on exactly its snapshot even while annotators keep labelling. The same filter
over the same labels gives the same hash, and the existing snapshot is reused.

Disagreements among several labels on one item are resolved by the snapshot's rule:
- "majority": the majority verdict (ties between verdicts drop the item);
- "drop": only unanimous items;
- "soft": the majority verdict, plus a DPO label_smoothing equal to the share of votes that
  disagreed with their item's majority (a global noise estimate, as in robust DPO).
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
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
    query = select(Label.id).where(Label.source.in_(f.sources))
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


def disagreement_rate(*, session: Session, snapshot: Snapshot) -> float:
    """Share of pairwise votes that disagree with their item's majority (the 'soft' smoothing)."""
    votes: dict[int, list[str]] = defaultdict(list)
    for item_id, choice in session.execute(
        select(Label.item_id, Label.choice).join(SnapshotLabel, SnapshotLabel.label_id == Label.id)
        .where(SnapshotLabel.snapshot_id == snapshot.id, Label.kind == "pairwise")
    ):
        votes[item_id].append(choice)
    total = sum(len(v) for v in votes.values())
    minority = sum(len(v) - Counter(v).most_common(1)[0][1] for v in votes.values())
    return minority / total if total else 0.0


def _row_rule(snapshot: Snapshot) -> str:
    return "drop" if snapshot.filters.get("rule") == "drop" else "majority"


def rows_for_stage(*, session: Session, snapshot: Snapshot, stage: str) -> list[dict[str, Any]]:
    """The snapshot as the rows a stage trains on (TRL's column names, conversational)."""
    sources, rule = snapshot.filters.get("sources", list(LABEL_SOURCES)), _row_rule(snapshot)
    if stage in ("dpo", "reward"):
        return preference_rows(session=session, sources=sources, with_margin=stage == "reward",
                               snapshot_id=snapshot.id, rule=rule)
    if stage == "kto":
        return kto_rows(session=session, sources=sources, snapshot_id=snapshot.id, rule=rule)
    if stage == "sft":  # warm-up on the chosen responses
        return [{"prompt": r["prompt"], "completion": r["chosen"]}
                for r in preference_rows(session=session, sources=sources, snapshot_id=snapshot.id, rule=rule)]
    raise UserError(f"Stage {stage!r} does not train on a label snapshot.")


def reference_rows(*, session: Session, split: str = "train", limit: int | None = None) -> list[dict[str, Any]]:
    """Prompts with reference answers: what GRPO/RLOO/PPO against graders (ReFT) and SFT on
    references train on. Not labels, so no snapshot: the prompt set is what is frozen."""
    query = select(Prompt).where(Prompt.reference.is_not(None), Prompt.split == split).order_by(Prompt.id)
    prompts = session.scalars(query.limit(limit) if limit else query)
    return [{"prompt": p.messages, "reference": p.reference} for p in prompts]
