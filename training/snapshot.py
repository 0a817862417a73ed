"""Snapshots: the immutable, content-hashed set of labels a training round trains on.

A snapshot freezes label ids (labels are append-only facts; items and responses never change),
so a round trains on exactly its snapshot even while annotators keep labelling. The same filter
over the same labels gives the same hash, and the existing snapshot is reused.

Only labels on train prompts go in: a val prompt's labels never reach training, whatever the
filter says, because the evaluation gate judges on the val split.

A snapshot can be limited to one project. How its labels become rows is part of the snapshot
(its RowSettings fields, feedback/rows.py): the resolution rule for several labels on one item
("majority", "drop", "soft"), which pairs a ranking gives, the rating margin and KTO thresholds.
Every row names the conversion that made it in its `rule` column.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (
    LABEL_SOURCES,
    Item,
    ItemDecision,
    Label,
    PolicyVersion,
    Project,
    Prompt,
    Response,
    Snapshot,
    SnapshotLabel,
)
from feedback.actors import Actor
from feedback.config_fields import cfg_field
from feedback.decisions import attention_items, value_of
from feedback.errors import UserError
from feedback.export import rows_for
from feedback.reliability import Estimates, estimates_for
from feedback.rows import RowSettings, Scope

Rule = Literal["majority", "drop", "soft", "reliability"]


@dataclass
class SnapshotFilter:
    """Which labels a round trains on, and how they become rows (feedback/rows.py)."""

    sources: list[str] = cfg_field(list(LABEL_SOURCES), "Label sources to train on: human, judge, grader.",
                                   flag="--sources")
    policy_versions: list[str] = cfg_field([], "Only labels on responses of these policy versions (empty: any).")
    since: str | None = cfg_field(None, "Only labels created at or after this ISO date/time.")
    until: str | None = cfg_field(None, "Only labels created before this ISO date/time.")
    project: str | None = cfg_field(None, "Only this project's labels (None: every project).")
    items: list[int] = cfg_field([], "Only labels on these items (empty: any); a people loop's round trains on "
                                 "the labels of its own pairs.", flag="--item")
    rule: Rule = cfg_field("majority", "Several labels on one item: majority, drop (unanimous only), soft "
                           "(every vote a row) or reliability (Dawid-Skene; its estimates are frozen with the "
                           "snapshot).")
    rank_pairs: str | None = cfg_field(None, "Pairs from a ranking: all_pairs, best_vs_rest or best_vs_worst "
                                       "(None: all_pairs for reward, best_vs_worst for DPO).")
    rating_min_margin: float = cfg_field(1.0, "Ratings: pairs need mean aspect scores at least this far apart.")
    rating_kto_threshold: float = cfg_field(4.0, "Ratings: desirable for KTO at this mean aspect score or more.")
    kto_threshold: float = cfg_field(0.5, "Grader scores: a single response is desirable for KTO at this score "
                                     "or more.")
    kto_from_pairs: bool = cfg_field(False, "KTO: also unpair resolved pairwise labels (chosen desirable, "
                                     "rejected not).")
    min_confidence: float = cfg_field(0.6, "Rule reliability: leave out items whose aggregated label has a lower "
                                      "posterior probability.")

    def __post_init__(self) -> None:
        if not self.sources or set(self.sources) - set(LABEL_SOURCES):
            raise UserError(f"sources must be some of {', '.join(LABEL_SOURCES)}.")
        self.row_settings()  # validates the conversion settings
        for value in (self.since, self.until):
            if value:
                try:
                    datetime.fromisoformat(value)
                except ValueError:
                    raise UserError(f"{value!r} is not an ISO date (YYYY-MM-DD).") from None

    def row_settings(self) -> RowSettings:
        return RowSettings(rule=self.rule, rank_pairs=self.rank_pairs, rating_min_margin=self.rating_min_margin,
                           rating_kto_threshold=self.rating_kto_threshold, kto_threshold=self.kto_threshold,
                           kto_from_pairs=self.kto_from_pairs, min_confidence=self.min_confidence)


def _matching_labels(session: Session, f: SnapshotFilter):
    """A query of the ids of the labels the filter takes (a query, not a list: a snapshot can
    hold more labels than Postgres takes bind parameters)."""
    train_items = select(Item.id).join(Prompt, Prompt.id == Item.prompt_id).where(Prompt.split == "train")
    query = select(Label.id).where(Label.source.in_(f.sources), Label.item_id.in_(train_items),
                                   Label.item_id.not_in(attention_items()))  # checks never train
    if f.since:
        query = query.where(Label.created_at >= _aware(f.since))
    if f.until:
        query = query.where(Label.created_at < _aware(f.until))
    if f.project:
        project_id = session.scalar(select(Project.id).where(Project.name == f.project))
        if project_id is None:
            raise UserError(f"No project called {f.project!r}.")
        query = query.where(Label.item_id.in_(select(Item.id).where(Item.project_id == project_id)))
    if f.items:
        query = query.where(Label.item_id.in_(f.items))
    if f.policy_versions:
        versions = select(PolicyVersion.id).where(PolicyVersion.name.in_(f.policy_versions))
        responses = select(Response.id).where(Response.policy_version_id.in_(versions))
        query = query.join(Item, Item.id == Label.item_id).where(Item.response_a_id.in_(responses))
    return query


def _aware(value: str) -> datetime:

    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def create_snapshot(*, session: Session, filters: SnapshotFilter, actor: Actor) -> Snapshot:
    actor.require("admin")
    matching = _matching_labels(session, filters)
    label_ids = sorted(session.scalars(matching))
    if not label_ids:
        raise UserError("No labels match that filter: nothing to train on.")
    decisions = _frozen_decisions(session, matching)
    content: dict[str, Any] = {"labels": label_ids, "filters": asdict(filters)}
    if decisions:  # a new final answer makes a new snapshot (without any, hashes are as before)
        content["decisions"] = decisions
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    existing = session.scalar(select(Snapshot).where(Snapshot.content_hash == digest))
    if existing is not None:
        return existing
    frozen = asdict(filters)
    if decisions:  # final answers (gold, adjudicated) as they were when it was made
        frozen["decisions"] = decisions
    if filters.rule == "reliability":  # the estimates it trains on, kept with it (they follow from the labels)
        frozen["estimates"] = _reliability_estimates(session, matching)
    snapshot = Snapshot(content_hash=digest, filters=frozen, n_labels=len(label_ids), created_by_id=actor.user_id)
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


def _frozen_decisions(session: Session, matching) -> dict[str, list[str]]:
    decided = session.scalars(select(ItemDecision).where(
        ItemDecision.item_id.in_(select(Label.item_id).where(Label.id.in_(matching.scalar_subquery())))))
    return {str(d.item_id): [value_of(d), d.origin] for d in sorted(decided, key=lambda d: d.item_id)}


def _reliability_estimates(session: Session, matching) -> dict[str, Any]:
    labels = list(session.scalars(select(Label).where(Label.id.in_(matching.scalar_subquery()))))
    return {kind: estimates_for(session, [label for label in labels if label.kind == kind]).as_json()
            for kind in ("pairwise", "binary")}


def rows_for_stage(*, session: Session, snapshot: Snapshot, stage: str) -> list[dict[str, Any]]:
    """The snapshot as the rows a stage trains on (TRL's column names, conversational)."""
    if stage not in ("dpo", "reward", "kto", "sft"):
        raise UserError(f"Stage {stage!r} does not train on a label snapshot.")
    known = {f for f in SnapshotFilter.__dataclass_fields__}
    # Snapshots made before a setting existed get its default.
    filters = SnapshotFilter(**{k: v for k, v in snapshot.filters.items() if k in known})
    frozen = snapshot.filters.get("estimates")
    estimates = {kind: Estimates.from_json(data) for kind, data in frozen.items()} if frozen else None
    # Snapshots made before decisions existed have none: their rows are what they always were.
    decisions = {int(k): (v[0], v[1]) for k, v in snapshot.filters.get("decisions", {}).items()}
    return rows_for(session=session, fmt=stage, settings=filters.row_settings(),
                    scope=Scope(sources=tuple(filters.sources), snapshot_id=snapshot.id, estimates=estimates,
                                decisions=decisions))


def reference_rows(*, session: Session, split: str = "train", limit: int | None = None) -> list[dict[str, Any]]:
    """Prompts with reference answers: what GRPO/RLOO/PPO against graders (ReFT) and SFT on
    references train on. Not labels, so no snapshot: the prompt set is what is frozen."""
    query = select(Prompt).where(Prompt.reference.is_not(None), Prompt.split == split).order_by(Prompt.id)
    prompts = session.scalars(query.limit(limit) if limit else query)
    return [{"prompt": p.messages, "reference": p.reference} for p in prompts]
