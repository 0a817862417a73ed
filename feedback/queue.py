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

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, joinedload

from db.models import (
    QUEUE_ORDERS,
    Assignment,
    Item,
    ItemDecision,
    ItemResponse,
    Label,
    Project,
    Prompt,
    Response,
    SnapshotLabel,
    User,
    utcnow,
)
from feedback import conversions, gold
from feedback.actors import Actor, require_role
from feedback.decisions import gold_items
from feedback.errors import UserError
from feedback.projects import current_guidelines, default_project, get_project, require_member
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
    project_id: int = 0
    # Every response in the order shown (rank and rating items: K of them; pairs: left, right).
    responses: tuple[str, ...] = ()
    guidelines_id: int | None = None


def update_queue_settings(*, session: Session, actor: Actor, project: Project, overlap: int, lease_seconds: int,
                          prompt_tags: list[str], policy_version_ids: list[int], refill_below: int,
                          refill_prompts: int, queue_order: str | None = None) -> Project:
    """Save a project's queue settings (`queue_order` None: leave it as it is; feedback/priority.py
    sets the items' keys for a new order)."""
    actor.require("admin")
    if overlap < 1 or lease_seconds < 10 or refill_below < 0 or refill_prompts < 1:
        raise UserError("overlap >= 1, lease >= 10 s, refill threshold >= 0 and refill size >= 1.")
    if queue_order is not None and queue_order not in QUEUE_ORDERS:
        raise UserError(f"The queue order is one of {', '.join(QUEUE_ORDERS)}, not {queue_order!r}.")
    settings = project
    settings.queue_order = queue_order or settings.queue_order
    settings.overlap, settings.lease_seconds = overlap, lease_seconds
    settings.prompt_tags = sorted({t.strip() for t in prompt_tags if t.strip()})
    settings.policy_version_ids = sorted(set(policy_version_ids))
    settings.refill_below, settings.refill_prompts = refill_below, refill_prompts
    settings.updated_at, settings.updated_by_id = utcnow(), actor.user_id
    actor.record(session=session, action="queue.settings", target=f"project:{project.name}",
                 details={"overlap": overlap, "lease_seconds": lease_seconds, "prompt_tags": settings.prompt_tags,
                          "policy_version_ids": settings.policy_version_ids, "queue_order": settings.queue_order})
    return settings


def _taken_slots(item_id, now: datetime):
    """Assignments holding a slot of `item_id`: finished, or leased and not expired."""
    return (
        select(func.count()).select_from(Assignment)
        .where(Assignment.item_id == item_id,
               or_(Assignment.status == "done", and_(Assignment.status == "leased", Assignment.expires_at > now)))
        .scalar_subquery()
    )


def open_items_query(*, settings: Project, now: datetime, dialect: str, user_id: int | None = None):
    """The project's items that still need an annotator (and, with `user_id`, that this one has
    not had). `settings` is the project: its queue settings are its own columns. Items with a
    final answer are not among them: an adjudicated one needs no more labels, and gold ones are
    handed out at the project's gold rate instead, to everyone."""
    decided = select(ItemDecision.item_id).where(ItemDecision.item_id == Item.id)
    query = select(Item.id).where(Item.project_id == settings.id, _taken_slots(Item.id, now) < settings.overlap,
                                  ~exists(decided))  # NOT EXISTS probes the primary key per item
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


def _item_texts(session: Session, item_id: int) -> list[str]:
    """A rank or rating item's K response texts, by position."""
    return list(session.scalars(
        select(Response.text).join(ItemResponse, ItemResponse.response_id == Response.id)
        .where(ItemResponse.item_id == item_id).order_by(ItemResponse.position)))


def _claim_of(session: Session, assignment: Assignment) -> Claim:
    # One query for everything the page shows (a hot path: every vote ends in a claim).
    ra, rb = _RESPONSE_A, _RESPONSE_B
    kind, project_id, messages, text_a, text_b = session.execute(
        select(Item.kind, Item.project_id, Prompt.messages, ra.text, rb.text)
        .join(Prompt, Prompt.id == Item.prompt_id).join(ra, ra.id == Item.response_a_id)
        .outerjoin(rb, rb.id == Item.response_b_id).where(Item.id == assignment.item_id)
    ).one()
    if assignment.shown_permutation is not None:
        by_position = _item_texts(session, assignment.item_id)
        texts = [by_position[p] for p in assignment.shown_permutation]
    else:
        texts = [text_a] + ([text_b] if text_b is not None else [])
        if assignment.shown_order == "ba":
            texts.reverse()
    return Claim(assignment_id=assignment.id, item_id=assignment.item_id, kind=kind, messages=messages,
                 left=texts[0], right=texts[1] if kind == "pair" else None, shown_order=assignment.shown_order,
                 expires_at=assignment.expires_at, project_id=project_id, responses=tuple(texts),
                 guidelines_id=assignment.guidelines_id)


def resolve_project(session: Session, project: Project | int | str | None, kind: str | None) -> Project:
    """A project given as itself, its id or its name; None means the default project of `kind`."""
    if isinstance(project, Project):
        return project
    if isinstance(project, str):
        return get_project(session=session, name=project)
    if project is not None:
        found = session.get(Project, project)
        if found is None:
            raise UserError(f"No project with id {project}.")
        return found
    return default_project(session=session, kind=kind or "pair")


def claim_next(*, session: Session, user: User, project: Project | int | str | None = None,
               kind: str | None = None, now: datetime | None = None, rng: random.Random | None = None) -> Claim | None:
    """The annotator's current item in this project, or a newly leased one; None if its pool is
    empty. Without a project, the default project of `kind` ('pair' or 'single')."""
    require_role(user, *ANNOTATING_ROLES)
    settings = resolve_project(session, project, kind)
    require_member(session=session, user=user, project=settings)
    gold.require_not_paused(session=session, user=user, project=settings)
    now = now or utcnow()
    current = session.scalar(
        select(Assignment).join(Item, Item.id == Assignment.item_id)
        .where(Assignment.user_id == user.id, Assignment.status == "leased", Assignment.expires_at > now,
               Item.project_id == settings.id)
        .order_by(Assignment.id).limit(1)
    )
    if current is not None:
        return _claim_of(session, current)

    dialect = session.get_bind().dialect.name
    postgres = dialect == "postgresql"
    tiers = _tiers(session)
    # Read before any item is locked: every statement between the lock and the commit makes the
    # other claimers wait longer.
    guidelines = current_guidelines(session=session, project_id=settings.id)
    rng = rng or random
    if settings.gold_rate > 0 and rng.random() < settings.gold_rate:
        gold_item = _unseen_gold_item(session, settings, user, rng)
        if gold_item is not None:
            claim = _lease(session, settings, user, gold_item, guidelines, now, rng)
            if claim is not None:
                return claim
    tried: list[int] = []
    for _ in range(CLAIM_ATTEMPTS):
        base = open_items_query(settings=settings, now=now, dialect=dialect, user_id=user.id)
        if tried:
            base = base.where(Item.id.not_in(tried))
        item_id = None
        for tier in tiers:
            query = (base if tier is None else base.where(tier)).order_by(Item.queue_key, Item.id).limit(1)
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
        claim = _lease(session, settings, user, item_id, guidelines, now, rng)
        if claim is None:
            tried.append(item_id)
            continue
        return claim
    return None


def _unseen_gold_item(session: Session, settings: Project, user: User, rng) -> int | None:
    """A random gold item of the project this annotator has never been handed."""
    mine = select(Assignment.item_id).where(Assignment.user_id == user.id)
    candidates = list(session.scalars(gold_items(settings.id).where(ItemDecision.item_id.not_in(mine))
                                      .order_by(ItemDecision.item_id)))
    return rng.choice(candidates) if candidates else None


def _lease(session: Session, settings: Project, user: User, item_id: int, guidelines, now: datetime,
           rng) -> Claim | None:
    """Lease `item_id` to the user in a fresh shown order; None if they got it meanwhile."""
    order, permutation = "ab", None
    if settings.task_type == "pairwise":
        order = rng.choice(("ab", "ba"))
    elif settings.task_type in ("rank", "rating"):  # a fresh order per annotator: no position bias
        k = session.scalar(select(func.count()).select_from(ItemResponse).where(ItemResponse.item_id == item_id))
        permutation = rng.sample(range(k), k)
    assignment = Assignment(item_id=item_id, user_id=user.id, shown_order=order, shown_permutation=permutation,
                            guidelines_id=guidelines.id if guidelines else None, status="leased",
                            leased_at=now, expires_at=now + timedelta(seconds=settings.lease_seconds))
    try:
        with session.begin_nested():
            session.add(assignment)
    except IntegrityError:
        # The same annotator claiming in a second tab at the same moment: give them that item.
        return None
    return _claim_of(session, assignment)


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
    is_gold = bool(session.scalar(select(ItemDecision.gold).where(ItemDecision.item_id == assignment.item_id)))
    if assignment.expires_at <= now and not is_gold:  # a gold item has no slots to lose
        if session.get_bind().dialect.name == "postgresql":
            # Lock the item as claim_next does: a claim of the freed slot that is in flight either
            # commits before the count below (which then sees it) or skips this item.
            session.execute(select(Item.id).where(Item.id == assignment.item_id).with_for_update(key_share=True))
        settings = session.get(Project, assignment.item.project_id)
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
    if is_gold:
        gold.after_label(session=session, label=label, project=session.get(Project, assignment.item.project_id))
    return label


def _clean_rationale(rationale: str | None) -> str | None:
    text = (rationale or "").strip()
    if len(text) > 4000:
        raise UserError("Please keep the rationale under 4000 characters.")
    return text or None


def _human_label(assignment: Assignment, user: User, submission_id: str, **values) -> Label:
    return Label(item_id=assignment.item_id, source="human", user_id=user.id, submission_id=submission_id,
                 guidelines_id=assignment.guidelines_id, **values)


def _assignment_of_kind(session: Session, user: User, assignment_id: int, kind: str) -> Assignment:
    require_role(user, *ANNOTATING_ROLES)
    assignment = _assignment_for(session, user, assignment_id)
    # Removed from the project while holding a lease: that lease no longer lets them label.
    project = session.get(Project, assignment.item.project_id)
    require_member(session=session, user=user, project=project)
    gold.require_not_paused(session=session, user=user, project=project)  # an old lease does not outlast a pause
    if assignment.item.kind != kind:
        raise UserError(f"That item is a {assignment.item.kind} item, not a {kind} item.")
    return assignment


def submit_pairwise(*, session: Session, user: User, assignment_id: int, submission_id: str, preferred: str,
                    strength: str | None = None, rationale: str | None = None, now: datetime | None = None) -> Label:
    """Record a pairwise judgement given in the annotator's terms (left/right as shown)."""
    require_role(user, *ANNOTATING_ROLES)
    if preferred not in PAIRWISE_PREFERENCES:
        raise UserError(f"preferred must be one of {', '.join(PAIRWISE_PREFERENCES)}.")
    if strength not in (None, "slight", "much") or (strength and preferred not in ("left", "right")):
        raise UserError("strength is 'slight' or 'much', and only for a left or right preference.")
    now = now or utcnow()
    assignment = _assignment_of_kind(session, user, assignment_id, "pair")
    # Left/right as shown -> the item's own a/b.
    left_is_a = assignment.shown_order == "ab"
    choice = {"left": "a" if left_is_a else "b", "right": "b" if left_is_a else "a"}.get(preferred, preferred)
    label = _human_label(assignment, user, submission_id, kind="pairwise", choice=choice, strength=strength,
                         rationale=_clean_rationale(rationale), shown_order=assignment.shown_order)
    return _record(session, user, assignment, label, now)


def submit_binary(*, session: Session, user: User, assignment_id: int, submission_id: str, thumb: str,
                  rationale: str | None = None, now: datetime | None = None) -> Label:
    if thumb not in ("up", "down"):
        raise UserError("thumb must be 'up' or 'down'.")
    now = now or utcnow()
    assignment = _assignment_of_kind(session, user, assignment_id, "single")
    label = _human_label(assignment, user, submission_id, kind="binary", thumb=thumb,
                         rationale=_clean_rationale(rationale))
    return _record(session, user, assignment, label, now)


def _to_positions(shown: list, permutation: list[int]) -> list:
    """Values given in the order shown -> the same values by item position."""
    by_position = [None] * len(permutation)
    for shown_index, position in enumerate(permutation):
        by_position[position] = shown[shown_index]
    return by_position


def submit_rank(*, session: Session, user: User, assignment_id: int, submission_id: str, ranks: list[int],
                rationale: str | None = None, now: datetime | None = None) -> Label:
    """Record a ranking given in the order shown: ranks[i] is the rank (1 = best, ties allowed) of
    the i-th response on screen. Stored by item position."""
    now = now or utcnow()
    assignment = _assignment_of_kind(session, user, assignment_id, "rank")
    permutation = assignment.shown_permutation
    try:
        shown = conversions.validate_ranking(ranks, len(permutation))
    except (TypeError, ValueError) as exc:
        raise UserError(f"Ranking: {exc}.") from None
    label = _human_label(assignment, user, submission_id, kind="rank", ranking=_to_positions(shown, permutation),
                         shown_permutation=permutation, rationale=_clean_rationale(rationale))
    return _record(session, user, assignment, label, now)


def submit_rating(*, session: Session, user: User, assignment_id: int, submission_id: str,
                  ratings: list[dict], rationale: str | None = None, now: datetime | None = None) -> Label:
    """Record ratings given in the order shown: ratings[i] = {"scores": {aspect: 1..5},
    "rationales": {aspect: text}} for the i-th response on screen. Stored by item position."""
    now = now or utcnow()
    assignment = _assignment_of_kind(session, user, assignment_id, "rating")
    permutation = assignment.shown_permutation
    aspects = session.get(Project, assignment.item.project_id).aspects
    try:
        shown = conversions.validate_ratings(ratings, len(permutation), aspects)
    except (AttributeError, TypeError, ValueError) as exc:
        raise UserError(f"Ratings: {exc}.") from None
    label = _human_label(assignment, user, submission_id, kind="rating", ratings=_to_positions(shown, permutation),
                         shown_permutation=permutation, rationale=_clean_rationale(rationale))
    return _record(session, user, assignment, label, now)


MAX_EDIT_CHARS = 20_000


def max_edit_chars(original: str) -> int:
    """How long a rewrite may be: a long original may always be submitted as it is."""
    return max(MAX_EDIT_CHARS, len(original.strip()))


def submit_edit(*, session: Session, user: User, assignment_id: int, submission_id: str, edited_text: str,
                rationale: str | None = None, now: datetime | None = None) -> Label:
    """Record a rewrite of the item's response, with its edit distance from the original."""
    now = now or utcnow()
    assignment = _assignment_of_kind(session, user, assignment_id, "edit")
    edited = (edited_text or "").strip()
    if not edited:
        raise UserError("The rewrite is empty; to say the response is fine as it is, submit it unchanged.")
    original = session.scalar(select(Response.text).where(Response.id == assignment.item.response_a_id))
    if len(edited) > (limit := max_edit_chars(original)):
        raise UserError(f"Please keep the rewrite under {limit:,} characters.")
    label = _human_label(assignment, user, submission_id, kind="edit", edited_text=edited,
                         edit_distance=conversions.edit_distance(original.strip(), edited),
                         rationale=_clean_rationale(rationale))
    return _record(session, user, assignment, label, now)


ANSWER_FIELDS = ("preferred", "thumb", "ranks", "ratings", "edited_text")


class AlreadyLabelled(UserError):
    """A submit for an item the annotator labelled already, under another submission id (the API
    answers 409, as for a client id that names a different record)."""


def submit_answer(*, session: Session, user: User, assignment_id: int, submission_id: str,
                  preferred: str | None = None, strength: str | None = None, thumb: str | None = None,
                  ranks: list[int] | None = None, ratings: list[dict] | None = None, edited_text: str | None = None,
                  rationale: str | None = None, now: datetime | None = None) -> Label:
    """Record the one answer given (pairwise `preferred`, binary `thumb`, `ranks`, `ratings` or
    `edited_text`) with the submit_* of that kind, for clients that retry (the HTTP API): the same
    submission id again returns the same label; a different one for an item already labelled is
    refused (AlreadyLabelled) rather than answered with the first label, so a client learns that its second
    answer was not recorded."""
    given = {name: value for name, value in (("preferred", preferred), ("thumb", thumb), ("ranks", ranks),
                                              ("ratings", ratings), ("edited_text", edited_text))
             if value is not None}
    if len(given) != 1:
        raise UserError(f"Give exactly one answer: one of {', '.join(ANSWER_FIELDS)}"
                        f"{f' (not {len(given)}: ' + ', '.join(given) + ')' if given else ''}.")
    if strength is not None and "preferred" not in given:
        raise UserError("strength goes with a pairwise preference only.")
    common = {"session": session, "user": user, "assignment_id": assignment_id, "submission_id": submission_id,
              "rationale": rationale, "now": now}
    if "preferred" in given:
        label = submit_pairwise(**common, preferred=preferred, strength=strength)
    elif "thumb" in given:
        label = submit_binary(**common, thumb=thumb)
    elif "ranks" in given:
        label = submit_rank(**common, ranks=ranks)
    elif "ratings" in given:
        label = submit_rating(**common, ratings=ratings)
    else:
        label = submit_edit(**common, edited_text=edited_text)
    if label.submission_id != submission_id:
        raise AlreadyLabelled(f"This item was labelled already, by the submission {label.submission_id[:64]!r}; "
                       "the answer of this one was not recorded.")
    return label


@dataclass(frozen=True)
class Submitted:
    label: Label
    next: Claim | None  # None: nothing left for this annotator in the project, or `refused` says why
    refused: str | None = None


def submit_then_claim(*, session: Session, user: User, assignment_id: int, submission_id: str,
                      now: datetime | None = None, rng: random.Random | None = None, **answer) -> Submitted:
    """submit_answer, then claim_next in the same project, in one transaction: what an annotator
    waits for after clicking, for one commit instead of two. The label stands even when no next
    item may be handed out (e.g. this answer paused them: gold.require_not_paused); `refused` says
    why. claim_next refuses before it writes anything, so the session is still good for the label."""
    label = submit_answer(session=session, user=user, assignment_id=assignment_id, submission_id=submission_id,
                          now=now, **answer)
    project_id = session.get(Item, label.item_id).project_id  # loaded with the assignment: no query
    try:
        claim = claim_next(session=session, user=user, project=project_id, now=now, rng=rng)
    except UserError as exc:
        return Submitted(label=label, next=None, refused=str(exc))
    return Submitted(label=label, next=claim)


def skip(*, session: Session, user: User, assignment_id: int, now: datetime | None = None) -> None:
    """Give the item back to the pool; this annotator will not be offered it again. (Allowed after
    leaving the project too: it only frees the slot.)"""
    require_role(user, *ANNOTATING_ROLES)
    assignment = _assignment_for(session, user, assignment_id)
    if assignment.status == "leased":
        assignment.status, assignment.finished_at = "skipped", now or utcnow()


# What the audit log keeps of an undone label: its values, since the row itself goes.
UNDONE_LABEL_FIELDS = ("kind", "choice", "strength", "thumb", "ranking", "ratings", "edited_text", "edit_distance",
                       "rationale", "shown_order", "shown_permutation", "submission_id", "guidelines_id")
ALREADY_UNDONE = "Nothing to undo: that label was taken back already."
IN_A_SNAPSHOT = "Too late to undo: this label is already in a training snapshot."


def undo_last_label(*, session: Session, user: User, label_id: int, now: datetime | None = None) -> int:
    """Take back one's own label while the item is still theirs. The label is deleted (the audit
    log keeps its values) and its assignment is leased to them again: the same assignment, with
    the same expiry, so their page shows the item again and the next submit writes one label.

    Refused once the lease has run out (the item may be someone else's by then), once the label
    is frozen into a training snapshot, and once a reviewer has decided the item after it. A gold
    answer is undone like any other, so nobody learns which items are checks; their standing is
    recounted without it. Returns the assignment's id."""
    require_role(user, *ANNOTATING_ROLES)
    now = now or utcnow()
    label = session.get(Label, label_id)
    if label is None:
        raise UserError(ALREADY_UNDONE)
    if label.user_id != user.id or label.source != "human":
        raise UserError("That label is not yours to undo.")
    # Locked (on SQLite the write lock serialises anyway): a second undo at the same moment waits
    # here, then finds the assignment leased again and refuses.
    query = (select(Assignment).options(joinedload(Assignment.item, innerjoin=True))
             .where(Assignment.item_id == label.item_id, Assignment.user_id == user.id))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Assignment, key_share=True)
    assignment = session.scalar(query.execution_options(populate_existing=True))
    if assignment is None:  # e.g. an imported label
        raise UserError("Only a label given on a labelling page can be undone.")
    if assignment.status != "done":
        raise UserError(ALREADY_UNDONE)
    if assignment.expires_at <= now:
        raise UserError("Too late to undo: your time on this item has run out.")
    if session.scalar(select(exists().where(SnapshotLabel.label_id == label.id))):
        raise UserError(IN_A_SNAPSHOT)
    decision = session.get(ItemDecision, label.item_id)
    if decision is not None and decision.decided_at >= label.created_at:  # a gold answer predates the label
        raise UserError("Too late to undo: a reviewer has already decided this item.")
    project = session.get(Project, assignment.item.project_id)
    require_member(session=session, user=user, project=project)
    gold.require_not_paused(session=session, user=user, project=project)
    details = {"label_id": label.id, "assignment_id": assignment.id,
               **{name: value for name in UNDONE_LABEL_FIELDS if (value := getattr(label, name)) is not None}}
    try:
        with session.begin_nested():
            deleted = session.execute(delete(Label).where(Label.id == label.id)).rowcount
    except IntegrityError:  # Postgres: a snapshot being made referenced the label first
        raise UserError(IN_A_SNAPSHOT) from None
    if deleted != 1:
        raise UserError(ALREADY_UNDONE)
    assignment.status, assignment.finished_at = "leased", None
    Actor.signed_in(user).record(session=session, action="label.undo", target=f"item:{label.item_id}",
                                 details=details)
    gold.after_undo(session=session, label=label, project=project)  # a gold answer keeps counting
    return assignment.id


@dataclass(frozen=True)
class Progress:
    today: int
    total: int
    open_for_me: int  # items of this kind this annotator could still get
    standing: str = "ok"  # from gold answers: ok, warned or paused (feedback/gold.py)


def progress(*, session: Session, user: User, project: Project | int | None = None, kind: str | None = None,
             now: datetime | None = None, tz: str = "UTC") -> Progress:
    """This annotator's labels today and in all (in this project), and what is left for them.
    "Today" starts at midnight in the annotator's time zone `tz` (an IANA name)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    now = now or utcnow()
    settings = resolve_project(session, project, kind)
    try:
        local_now = now.astimezone(ZoneInfo(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"Unknown time zone {tz[:64]!r}; give an IANA name such as Europe/Berlin.") from None
    start_of_day = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    mine = (select(func.count()).select_from(Label).join(Item, Item.id == Label.item_id)
            .where(Label.user_id == user.id, Label.source == "human", Item.project_id == settings.id))
    open_query = open_items_query(settings=settings, now=now, dialect=session.get_bind().dialect.name,
                                  user_id=user.id)
    return Progress(
        today=session.scalar(mine.where(Label.created_at >= start_of_day)) or 0,
        total=session.scalar(mine) or 0,
        open_for_me=session.scalar(select(func.count()).select_from(open_query.subquery())) or 0,
        standing=gold.standing_status(session, settings.id, user.id),
    )


def open_item_count(*, session: Session, project: Project | int | None = None, kind: str | None = None,
                    now: datetime | None = None) -> int:
    """The project's items anyone could still be handed (what its refills watch)."""
    settings = resolve_project(session, project, kind)
    query = open_items_query(settings=settings, now=now or utcnow(), dialect=session.get_bind().dialect.name)
    return session.scalar(select(func.count()).select_from(query.subquery())) or 0
