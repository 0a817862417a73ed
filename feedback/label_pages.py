"""Labels, page by page, oldest first: what the HTTP API's /labels reads, with each label's item,
client id, project and the item's responses (with their policy versions), so a caller that pushed
records can join the labels back to them."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import LABEL_KINDS, LABEL_SOURCES, Item, ItemResponse, Label, PolicyVersion, Project, Response, User
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.projects import get_project

MAX_LABELS_PAGE = 1000


@dataclass
class LabelPage:
    labels: list[dict[str, Any]] = field(default_factory=list)
    # The id to ask for labels after (`after=`) for the next page; None when this was the last.
    next_after: int | None = None


def read_labels(*, session: Session, actor: Actor, project: str | None = None, source: str | None = None,
                kind: str | None = None, since: datetime | None = None, after: int = 0,
                limit: int = 100) -> LabelPage:
    """Labels with an id above `after`, oldest first, at most `limit` (reviewers and admins).

    Each label names its item, the item's client id (for records pushed through the API), its
    project, and the item's responses in the item's own order with the policy version of each:
    a pair's `choice` "a" is responses[0], a ranking's positions index the responses."""
    actor.require("reviewer", "admin")
    if not 1 <= limit <= MAX_LABELS_PAGE:
        raise UserError(f"limit is between 1 and {MAX_LABELS_PAGE}, not {limit}.")
    if after < 0:
        raise UserError("after is a label id (0 or more).")
    if source is not None and source not in LABEL_SOURCES:
        raise UserError(f"Unknown label source {source!r}; choose one of {', '.join(LABEL_SOURCES)}.")
    if kind is not None and kind not in LABEL_KINDS:
        raise UserError(f"Unknown label kind {kind!r}; choose one of {', '.join(LABEL_KINDS)}.")
    annotator = aliased(User)
    query = (select(Label, Item, Project.name, annotator.username)
             .join(Item, Item.id == Label.item_id).join(Project, Project.id == Item.project_id)
             .outerjoin(annotator, annotator.id == Label.user_id)
             .where(Label.id > after).order_by(Label.id).limit(limit + 1))
    if project is not None:
        query = query.where(Item.project_id == get_project(session=session, name=project).id)
    if source is not None:
        query = query.where(Label.source == source)
    if kind is not None:
        query = query.where(Label.kind == kind)
    if since is not None:
        query = query.where(Label.created_at >= (since if since.tzinfo else since.replace(tzinfo=UTC)))
    rows = session.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    responses = _item_responses(session, [item for _, item, _, _ in rows])
    labels = [_label_row(label, item, project_name, username, responses[item.id])
              for label, item, project_name, username in rows]
    return LabelPage(labels=labels, next_after=rows[-1][0].id if more else None)


def _item_responses(session: Session, items: list[Item]) -> dict[int, list[dict[str, Any]]]:
    """Each item's responses in its own order: [a, b] for a pair, positions for rank and rating."""
    order: dict[int, list[int]] = {}
    k_items = [item.id for item in items if item.kind in ("rank", "rating")]
    for item in items:
        order[item.id] = [item.response_a_id] + ([item.response_b_id] if item.response_b_id else [])
    if k_items:
        positions: dict[int, list[int]] = {}
        for item_id, response_id in session.execute(
                select(ItemResponse.item_id, ItemResponse.response_id).where(ItemResponse.item_id.in_(k_items))
                .order_by(ItemResponse.item_id, ItemResponse.position)):
            positions.setdefault(item_id, []).append(response_id)
        order.update(positions)
    ids = {r for rs in order.values() for r in rs}
    names = dict(session.execute(select(Response.id, PolicyVersion.name)
                                 .join(PolicyVersion, PolicyVersion.id == Response.policy_version_id)
                                 .where(Response.id.in_(ids))).all()) if ids else {}
    return {item_id: [{"id": r, "policy_version": names.get(r)} for r in rs] for item_id, rs in order.items()}


def _label_row(label: Label, item: Item, project: str, username: str | None,
               responses: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": label.id, "created_at": label.created_at, "project": project, "item_id": item.id,
        "client_id": item.client_id, "prompt_id": item.prompt_id, "item_kind": item.kind, "kind": label.kind,
        "source": label.source, "annotator": username, "producer": label.producer, "choice": label.choice,
        "strength": label.strength, "thumb": label.thumb, "score": label.score, "ranking": label.ranking,
        "ratings": label.ratings, "edited_text": label.edited_text, "edit_distance": label.edit_distance,
        "rationale": label.rationale, "shown_order": label.shown_order,
        "shown_permutation": label.shown_permutation, "guidelines_id": label.guidelines_id,
        "responses": responses,
    }
