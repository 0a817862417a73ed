"""An item's final answer (db.models.ItemDecision), which wins over whatever its labels aggregate
to: gold answers, reviewers' adjudications and the known answers of attention checks.

Answers are in the item's own terms, as labels are: a / b / tie / both_bad for a pair (whatever
order anyone was shown), up / down for a single response. Only pairwise and binary projects have
decisions; rank, rating and edit labels are not one value to settle on.

This module writes and reads them; feedback/gold.py (gold items, attention checks, standings) and
feedback/adjudication.py (the reviewers' queue) decide when.
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import PAIRWISE_CHOICES, THUMB_VALUES, Item, ItemDecision, utcnow
from feedback.actors import Actor
from feedback.errors import UserError

ANSWERS = {"pair": PAIRWISE_CHOICES, "single": THUMB_VALUES}
MAX_NOTE_CHARS = 4000


def value_of(decision: ItemDecision) -> str:
    return decision.choice if decision.choice is not None else decision.thumb


def check_answer(item: Item, answer: str) -> str:
    """The answer, if it is one this item can have; a clear error otherwise."""
    allowed = ANSWERS.get(item.kind)
    if allowed is None:
        raise UserError(f"Item {item.id} is a {item.kind} item: only pairs and single responses have a final "
                        "answer to decide.")
    answer = (answer or "").strip().lower()
    if answer not in allowed:
        raise UserError(f"An answer for a {'pair' if item.kind == 'pair' else 'single response'} is one of "
                        f"{', '.join(allowed)}, not {answer[:20]!r}.")
    return answer


def get_item(session: Session, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise UserError(f"No item with id {item_id}.")
    return item


def set_decision(*, session: Session, actor: Actor, item: Item, origin: str, answer: str, gold: bool,
                 note: str = "") -> ItemDecision:
    """Write (or replace) the item's decision and log it. Reviewers and admins only; an attention
    check's answer is fixed when it is made and cannot be replaced."""
    actor.require("reviewer", "admin")
    answer = check_answer(item, answer)
    note = (note or "").strip()
    if len(note) > MAX_NOTE_CHARS:
        raise UserError(f"Please keep the note under {MAX_NOTE_CHARS} characters.")
    decision = session.get(ItemDecision, item.id)
    if decision is not None and decision.origin == "attention" and origin != "attention":
        raise UserError(f"Item {item.id} is an attention check; its answer is fixed.")
    previous = None if decision is None else {"origin": decision.origin, "answer": value_of(decision),
                                              "gold": decision.gold}
    if decision is None:
        decision = ItemDecision(item_id=item.id, project_id=item.project_id)
        session.add(decision)
    decision.origin, decision.gold, decision.note = origin, gold, note
    decision.choice, decision.thumb = (answer, None) if item.kind == "pair" else (None, answer)
    decision.decided_by_id, decision.decided_at = actor.user_id, utcnow()
    session.flush()
    actor.record(session=session, action=f"decision.{origin}", target=f"item:{item.id}",
                 details={"answer": answer, "gold": gold, "note": note[:200], "previous": previous})
    return decision


def decisions_for(session: Session, item_ids: Iterable[int]) -> dict[int, ItemDecision]:
    ids = list(item_ids)
    if not ids:
        return {}
    return {d.item_id: d for d in session.scalars(select(ItemDecision).where(ItemDecision.item_id.in_(ids)))}


def attention_items():
    """Item ids of attention checks: never training data."""
    return select(ItemDecision.item_id).where(ItemDecision.origin == "attention")


def gold_items(project_id: int | None = None):
    query = select(ItemDecision.item_id).where(ItemDecision.gold.is_(True))
    return query if project_id is None else query.where(ItemDecision.project_id == project_id)
