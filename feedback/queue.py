"""Handing items to annotators, and recording their labels exactly once.

The rules:
- An item needs `overlap` different annotators. A slot is taken by a finished assignment or by
  a lease that has not expired; an abandoned lease simply expires and frees its slot.
- Nobody gets the same item twice: one assignment row per (item, annotator), ever, skipped or not.
- A label is written once: unique (item, annotator) and a unique client submission id. Submitting
  again (double click, rerun, second tab) returns the label already written.
- A late submission (lease expired) is accepted only if its slot was not handed to someone else.

Concurrency: on SQLite every write transaction is BEGIN IMMEDIATE, so claims are serialised. On
Postgres candidates are locked with FOR NO KEY UPDATE SKIP LOCKED (claimers do not wait on each
other, and the foreign-key checks of label and assignment inserts, which take KEY SHARE on the
item, do not wait on claimers either)
and the item's slots are counted again after the lock, in a fresh statement that sees every
lease committed before it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, joinedload

from db.models import (
    Assignment,
    Item,
    Label,
    Prompt,
    QueueSettings,
    Response,
    User,
    utcnow,
)
from feedback.actors import Actor, require_role
from feedback.errors import UserError
from feedback.tags import has_any_tag

ANNOTATING_ROLES = ("annotator", "reviewer", "admin")
PAIRWISE_PREFERENCES = ("left", "right", "tie", "both_bad")
CLAIM_ATTEMPTS = 8  # candidates tried when others filled them between our read and our lock


@dataclass(frozen=True)
class Claim:
    """What the annotation pages show: the item in the order this annotator sees it."""

    assignment_id: int
    item_id: int
    kind: str
    messages: list[dict[str, str]]
    left: str
    right: str | None  # None for a single response
    shown_order: str
    expires_at: datetime


def get_queue_settings(*, session: Session) -> QueueSettings:
    settings = session.get(QueueSettings, 1)
    if settings is None:
        settings = QueueSettings(id=1)
        session.add(settings)
        session.flush()
    return settings


def update_queue_settings(*, session: Session, actor: Actor, overlap: int, lease_seconds: int,
                          prompt_tags: list[str], policy_version_ids: list[int], refill_below: int,
                          refill_prompts: int) -> QueueSettings:
    actor.require("admin")
    if overlap < 1 or lease_seconds < 10 or refill_below < 0 or refill_prompts < 1:
        raise UserError("overlap >= 1, lease >= 10 s, refill threshold >= 0 and refill size >= 1.")
    settings = get_queue_settings(session=session)
    settings.overlap, settings.lease_seconds = overlap, lease_seconds
    settings.prompt_tags = sorted({t.strip() for t in prompt_tags if t.strip()})
    settings.policy_version_ids = sorted(set(policy_version_ids))
    settings.refill_below, settings.refill_prompts = refill_below, refill_prompts
    settings.updated_at, settings.updated_by_id = utcnow(), actor.user_id
    actor.record(session=session, action="queue.settings",
                 details={"overlap": overlap, "lease_seconds": lease_seconds, "prompt_tags": settings.prompt_tags,
                          "policy_version_ids": settings.policy_version_ids})
    return settings


def _taken_slots(item_id, now: datetime):
    """Assignments holding a slot of `item_id`: finished, or leased and not expired."""
    return (
        select(func.count()).select_from(Assignment)
        .where(Assignment.item_id == item_id,
               or_(Assignment.status == "done", and_(Assignment.status == "leased", Assignment.expires_at > now)))
        .scalar_subquery()
    )


def open_items_query(*, settings: QueueSettings, kind: str | None, now: datetime, dialect: str,
                     user_id: int | None = None):
    """Items that still need an annotator (and, with `user_id`, that this one has not had)."""
    query = select(Item.id).where(_taken_slots(Item.id, now) < settings.overlap)
    if kind:
        query = query.where(Item.kind == kind)
    if user_id is not None:
        mine = select(Assignment.id).where(Assignment.item_id == Item.id, Assignment.user_id == user_id)
        query = query.where(~exists(mine))
    if settings.policy_version_ids:
        query = query.where(
            Item.response_a_id.in_(select(Response.id).where(Response.policy_version_id.in_(settings.policy_version_ids)))
        )
    if settings.prompt_tags:
        query = query.where(
            Item.prompt_id.in_(select(Prompt.id).where(has_any_tag(Prompt.tags, settings.prompt_tags, dialect)))
        )
    return query


def _tiers(session: Session) -> list:
    """Filters tried in order, so annotators get first what matters most: pairs the AI judge
    could not decide (its two orders disagreed, or its requests failed: routed to humans), then responses of the active
    policy (fresh on-policy data right after a promotion), then anything, oldest first. Separate
    small queries rather than one ORDER BY over every item keep a claim cheap."""
    from db.models import Judgment, PolicyVersion

    active = session.scalar(select(PolicyVersion.id).where(PolicyVersion.status == "active"))
    return [
        # ... until a later judge run labelled them after all
        Item.id.in_(select(Judgment.item_id).where(Judgment.outcome.in_(("inconsistent", "failed"))))
        & ~Item.id.in_(select(Label.item_id).where(Label.source == "judge")),
        Item.response_a_id.in_(select(Response.id).where(Response.policy_version_id == active)),
        None,
    ]


# Built once: a fresh aliased() per call costs ~2 ms of column adaptation and defeats the
# compiled-statement cache, on a path every vote takes.
_RESPONSE_A, _RESPONSE_B = aliased(Response, name="response_a"), aliased(Response, name="response_b")


def _claim_of(session: Session, assignment: Assignment) -> Claim:
    # One query for everything the page shows (a hot path: every vote ends in a claim).
    ra, rb = _RESPONSE_A, _RESPONSE_B
    kind, messages, text_a, text_b = session.execute(
        select(Item.kind, Prompt.messages, ra.text, rb.text)
        .join(Prompt, Prompt.id == Item.prompt_id).join(ra, ra.id == Item.response_a_id)
        .outerjoin(rb, rb.id == Item.response_b_id).where(Item.id == assignment.item_id)
    ).one()
    texts = [text_a] + ([text_b] if text_b is not None else [])
    if assignment.shown_order == "ba":
        texts.reverse()
    return Claim(assignment_id=assignment.id, item_id=assignment.item_id, kind=kind, messages=messages,
                 left=texts[0], right=texts[1] if len(texts) > 1 else None, shown_order=assignment.shown_order,
                 expires_at=assignment.expires_at)


def claim_next(*, session: Session, user: User, kind: str, now: datetime | None = None,
               rng: random.Random | None = None) -> Claim | None:
    """The annotator's current item of this kind, or a newly leased one; None if the pool is empty."""
    require_role(user, *ANNOTATING_ROLES)
    if kind not in ("pair", "single"):
        raise UserError("kind must be 'pair' or 'single'.")
    now = now or utcnow()
    current = session.scalar(
        select(Assignment).join(Item, Item.id == Assignment.item_id)
        .where(Assignment.user_id == user.id, Assignment.status == "leased", Assignment.expires_at > now,
               Item.kind == kind)
        .order_by(Assignment.id).limit(1)
    )
    if current is not None:
        return _claim_of(session, current)

    settings = get_queue_settings(session=session)
    dialect = session.get_bind().dialect.name
    postgres = dialect == "postgresql"
    tiers = _tiers(session)
    tried: list[int] = []
    for _ in range(CLAIM_ATTEMPTS):
        base = open_items_query(settings=settings, kind=kind, now=now, dialect=dialect, user_id=user.id)
        if tried:
            base = base.where(Item.id.not_in(tried))
        item_id = None
        for tier in tiers:
            query = (base if tier is None else base.where(tier)).order_by(Item.id).limit(1)
            item_id = session.scalar(query.with_for_update(skip_locked=True, of=Item, key_share=True)
                                     if postgres else query)
            if item_id is None and postgres:
                # SKIP LOCKED also hides items locked by claims in flight, which (overlap > 1) can
                # still have a slot once those commit: wait for the lock rather than skip it.
                item_id = session.scalar(query.with_for_update(of=Item, key_share=True))
            if item_id is not None:
                break
        if item_id is None:
            return None
        # Under the row lock, count again: this statement sees leases committed since the last one.
        if postgres and session.scalar(select(_taken_slots(item_id, now))) >= settings.overlap:
            tried.append(item_id)
            continue
        order = "ab" if kind == "single" else (rng or random).choice(("ab", "ba"))
        assignment = Assignment(item_id=item_id, user_id=user.id, shown_order=order, status="leased",
                                leased_at=now, expires_at=now + timedelta(seconds=settings.lease_seconds))
        try:
            with session.begin_nested():
                session.add(assignment)
        except IntegrityError:
            # The same annotator claiming in a second tab at the same moment: give them that item.
            tried.append(item_id)
            continue
        return _claim_of(session, assignment)
    return None


def _assignment_for(session: Session, user: User, assignment_id: int) -> Assignment:
    # The item comes in the same query: the submit checks its kind (a hot path).
    query = (select(Assignment).options(joinedload(Assignment.item, innerjoin=True))
             .where(Assignment.id == assignment_id))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Assignment, key_share=True)
    assignment = session.scalar(query)
    if assignment is None or assignment.user_id != user.id:
        raise UserError("That item is not assigned to you.")
    return assignment


def _existing_label(session: Session, *, submission_id: str, item_id: int, user_id: int) -> Label | None:
    return session.scalar(
        select(Label).where(or_(Label.submission_id == submission_id,
                                and_(Label.item_id == item_id, Label.user_id == user_id)))
    )


def _record(session: Session, user: User, assignment: Assignment, label: Label, now: datetime) -> Label:
    existing = _existing_label(session, submission_id=label.submission_id, item_id=assignment.item_id, user_id=user.id)
    if existing is not None:
        if existing.user_id != user.id:
            raise UserError("That submission id belongs to someone else.")
        return existing
    if assignment.status == "skipped":
        raise UserError("You skipped this item.")
    if assignment.expires_at <= now:
        if session.get_bind().dialect.name == "postgresql":
            # Lock the item as claim_next does: a claim of the freed slot that is in flight either
            # commits before the count below (which then sees it) or skips this item.
            session.execute(select(Item.id).where(Item.id == assignment.item_id).with_for_update(key_share=True))
        settings = get_queue_settings(session=session)
        others = session.scalar(
            select(func.count()).select_from(Assignment).where(
                Assignment.item_id == assignment.item_id, Assignment.id != assignment.id,
                or_(Assignment.status == "done", and_(Assignment.status == "leased", Assignment.expires_at > now)))
        )
        if others >= settings.overlap:
            raise UserError("Your time on this item ran out and it went to someone else; please take the next one.")
    try:
        with session.begin_nested():
            session.add(label)
    except IntegrityError:
        # A concurrent submit of the same label won the race: return what it wrote.
        existing = _existing_label(session, submission_id=label.submission_id, item_id=assignment.item_id,
                                   user_id=user.id)
        if existing is None or existing.user_id != user.id:
            raise
        return existing
    assignment.status, assignment.finished_at = "done", now
    return label


def _clean_rationale(rationale: str | None) -> str | None:
    text = (rationale or "").strip()
    if len(text) > 4000:
        raise UserError("Please keep the rationale under 4000 characters.")
    return text or None


def submit_pairwise(*, session: Session, user: User, assignment_id: int, submission_id: str, preferred: str,
                    strength: str | None = None, rationale: str | None = None, now: datetime | None = None) -> Label:
    """Record a pairwise judgement given in the annotator's terms (left/right as shown)."""
    require_role(user, *ANNOTATING_ROLES)
    if preferred not in PAIRWISE_PREFERENCES:
        raise UserError(f"preferred must be one of {', '.join(PAIRWISE_PREFERENCES)}.")
    if strength not in (None, "slight", "much") or (strength and preferred not in ("left", "right")):
        raise UserError("strength is 'slight' or 'much', and only for a left or right preference.")
    now = now or utcnow()
    assignment = _assignment_for(session, user, assignment_id)
    if assignment.item.kind != "pair":
        raise UserError("That item is a single response, not a pair.")
    # Left/right as shown -> the item's own a/b.
    left_is_a = assignment.shown_order == "ab"
    choice = {"left": "a" if left_is_a else "b", "right": "b" if left_is_a else "a"}.get(preferred, preferred)
    label = Label(item_id=assignment.item_id, kind="pairwise", choice=choice, strength=strength,
                  rationale=_clean_rationale(rationale), source="human", user_id=user.id,
                  shown_order=assignment.shown_order, submission_id=submission_id)
    return _record(session, user, assignment, label, now)


def submit_binary(*, session: Session, user: User, assignment_id: int, submission_id: str, thumb: str,
                  rationale: str | None = None, now: datetime | None = None) -> Label:
    require_role(user, *ANNOTATING_ROLES)
    if thumb not in ("up", "down"):
        raise UserError("thumb must be 'up' or 'down'.")
    now = now or utcnow()
    assignment = _assignment_for(session, user, assignment_id)
    if assignment.item.kind != "single":
        raise UserError("That item is a pair, not a single response.")
    label = Label(item_id=assignment.item_id, kind="binary", thumb=thumb, rationale=_clean_rationale(rationale),
                  source="human", user_id=user.id, submission_id=submission_id)
    return _record(session, user, assignment, label, now)


def skip(*, session: Session, user: User, assignment_id: int, now: datetime | None = None) -> None:
    """Give the item back to the pool; this annotator will not be offered it again."""
    require_role(user, *ANNOTATING_ROLES)
    assignment = _assignment_for(session, user, assignment_id)
    if assignment.status == "leased":
        assignment.status, assignment.finished_at = "skipped", now or utcnow()


@dataclass(frozen=True)
class Progress:
    today: int
    total: int
    open_for_me: int  # items of this kind this annotator could still get


def progress(*, session: Session, user: User, kind: str, now: datetime | None = None) -> Progress:
    now = now or utcnow()
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    mine = select(func.count()).select_from(Label).where(Label.user_id == user.id, Label.source == "human")
    settings = get_queue_settings(session=session)
    open_query = open_items_query(settings=settings, kind=kind, now=now, dialect=session.get_bind().dialect.name,
                                  user_id=user.id)
    return Progress(
        today=session.scalar(mine.where(Label.created_at >= start_of_day)) or 0,
        total=session.scalar(mine) or 0,
        open_for_me=session.scalar(select(func.count()).select_from(open_query.subquery())) or 0,
    )


def open_item_count(*, session: Session, now: datetime | None = None) -> int:
    """Items anyone could still be handed (what refills watch)."""
    settings = get_queue_settings(session=session)
    query = open_items_query(settings=settings, kind=None, now=now or utcnow(), dialect=session.get_bind().dialect.name)
    return session.scalar(select(func.count()).select_from(query.subquery())) or 0


def recent_labels(*, session: Session, user: User, source: str | None = None, kind: str | None = None,
                  username: str | None = None, limit: int = 200) -> list[dict]:
    """Recent labels for reviewers and admins: a fixed list of columns, nothing else."""
    require_role(user, "reviewer", "admin")
    annotator = aliased(User)
    query = (
        select(Label.id, Label.created_at, Label.kind, Label.source, annotator.username, Label.producer,
               Label.item_id, Label.choice, Label.strength, Label.thumb, Label.score, Label.shown_order,
               Label.rationale, Prompt.text)
        .join(Item, Item.id == Label.item_id).join(Prompt, Prompt.id == Item.prompt_id)
        .outerjoin(annotator, annotator.id == Label.user_id)
        .order_by(Label.id.desc()).limit(min(limit, 1000))
    )
    if source:
        query = query.where(Label.source == source)
    if kind:
        query = query.where(Label.kind == kind)
    if username:
        query = query.where(annotator.username == username)
    columns = ("id", "at", "kind", "source", "annotator", "producer", "item", "choice", "strength", "thumb",
               "score", "shown_order", "rationale", "prompt")
    return [dict(zip(columns, row, strict=True)) for row in session.execute(query)]
