"""The reviewers' queue: items whose labels disagree, settled by a person with a final answer and
a note. The decision (feedback/decisions.py) wins over every aggregate in training rows, is in the
audit log, and may be made gold on the spot.

An item is disputed, for one or more reasons, when it has no decision yet and
- annotators disagree: people gave it different values;
- judge and humans disagree: an AI judge's or a grader's value differs from the people's majority;
- low confidence: Dawid-Skene's aggregated value (feedback/reliability.py) has a posterior below
  `min_confidence`.
Most reasons first, then the least confident.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import Item, ItemDecision, Label, Project, Prompt, Response, User
from feedback.actors import Actor
from feedback.decisions import get_item, set_decision, value_of
from feedback.errors import UserError
from feedback.reliability import annotator_name, estimates_for
from feedback.reliability import value_of as label_value

LABEL_KIND = {"pairwise": "pairwise", "binary": "binary"}
REASONS = ("annotators disagree", "judge and humans disagree", "low confidence")


@dataclass(frozen=True)
class Dispute:
    item_id: int
    reasons: tuple[str, ...]
    votes: dict[str, int]  # value -> how many labels gave it
    confidence: float | None  # Dawid-Skene's posterior for its aggregated value
    aggregate: str | None  # Dawid-Skene's aggregated value


@dataclass(frozen=True)
class LabelView:
    annotator: str
    source: str
    value: str
    rationale: str | None


@dataclass(frozen=True)
class ItemView:
    """One item as a reviewer settles it: in the item's own a/b order, with every label."""

    item_id: int
    kind: str
    messages: list[dict[str, str]]
    responses: tuple[str, ...]
    labels: tuple[LabelView, ...] = field(default=())
    decision: str | None = None
    decision_origin: str | None = None
    gold: bool = False
    note: str = ""


def _majority(values: list[str]) -> str | None:
    top = Counter(values).most_common(2)
    if not top or (len(top) == 2 and top[0][1] == top[1][1]):
        return None
    return top[0][0]


def disputed_items(*, session: Session, actor: Actor, project: Project, min_confidence: float = 0.6,
                   limit: int = 200) -> list[Dispute]:
    actor.require("reviewer", "admin")
    kind = LABEL_KIND.get(project.task_type)
    if kind is None:
        raise UserError(f"Adjudication is for pairwise and binary projects, not {project.task_type} ones.")
    decided = select(ItemDecision.item_id).where(ItemDecision.project_id == project.id)
    labels = list(session.scalars(
        select(Label).join(Item, Item.id == Label.item_id)
        .where(Item.project_id == project.id, Label.kind == kind, Label.item_id.not_in(decided))
        .order_by(Label.id)))
    estimates = estimates_for(session, labels).items
    by_item: dict[int, list[Label]] = {}
    for label in labels:
        by_item.setdefault(label.item_id, []).append(label)
    out = []
    for item_id, item_labels in by_item.items():
        human = [label_value(label) for label in item_labels if label.source == "human"]
        machine = [label_value(label) for label in item_labels if label.source != "human"]
        reasons = []
        if len(set(human)) > 1:
            reasons.append(REASONS[0])
        people = _majority(human)
        if human and machine and any(value != people for value in machine):
            reasons.append(REASONS[1])
        aggregate, confidence = estimates.get(item_id, (None, None))
        if confidence is not None and confidence < min_confidence:
            reasons.append(REASONS[2])
        if reasons:
            votes = Counter(label_value(label) for label in item_labels)
            out.append(Dispute(item_id, tuple(reasons), dict(votes.most_common()),
                               round(confidence, 3) if confidence is not None else None, aggregate))
    out.sort(key=lambda d: (-len(d.reasons), d.confidence if d.confidence is not None else 1.0, d.item_id))
    return out[:limit]


def item_view(*, session: Session, actor: Actor, item_id: int) -> ItemView:
    actor.require("reviewer", "admin")
    item = get_item(session, item_id)
    ra, rb = aliased(Response), aliased(Response)
    messages, text_a, text_b = session.execute(
        select(Prompt.messages, ra.text, rb.text).select_from(Prompt).join(ra, ra.id == item.response_a_id)
        .outerjoin(rb, rb.id == item.response_b_id).where(Prompt.id == item.prompt_id)).one()
    names = dict(session.execute(select(User.id, User.username)).all())
    labels = tuple(
        LabelView(annotator_name(label, names.get(label.user_id)), label.source, label_value(label), label.rationale)
        for label in session.scalars(select(Label).where(Label.item_id == item.id).order_by(Label.id))
        if label_value(label) is not None)
    decision = session.get(ItemDecision, item.id)
    return ItemView(item_id=item.id, kind=item.kind, messages=messages,
                    responses=(text_a,) + ((text_b,) if text_b is not None else ()), labels=labels,
                    decision=value_of(decision) if decision else None,
                    decision_origin=decision.origin if decision else None,
                    gold=bool(decision and decision.gold), note=decision.note if decision else "")


def adjudicate(*, session: Session, actor: Actor, item_id: int, answer: str, note: str,
               make_gold: bool = False) -> ItemDecision:
    """Settle an item: its final answer, why, and whether it becomes gold from now on."""
    actor.require("reviewer", "admin")
    if not (note or "").strip():
        raise UserError("Say in a note why this is the answer: the next reviewer reads it.")
    item = get_item(session, item_id)
    already_gold = bool(session.scalar(select(ItemDecision.gold).where(ItemDecision.item_id == item.id)))
    # Settling a gold item again keeps it gold (unmark_gold is how it stops being one).
    return set_decision(session=session, actor=actor, item=item, origin="adjudication", answer=answer,
                        gold=make_gold or already_gold, note=note)
