"""Read-only listings for the data page and the CLI, as plain rows (lists of dicts)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from db.models import Item, Label, PolicyVersion, Project, Prompt, Response, User
from feedback.actors import require_role

MAX_ROWS = 1000


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_prompts(*, session: Session, split: str | None = None, tag: str | None = None,
                 search: str | None = None, limit: int = MAX_ROWS) -> list[dict[str, Any]]:
    query = select(Prompt).order_by(Prompt.id.desc())
    if split:
        query = query.where(Prompt.split == split)
    if search:
        query = query.where(Prompt.text.ilike(_like(search), escape="\\"))
    rows = []
    for p in session.scalars(query):
        if tag and tag not in (p.tags or []):
            continue
        rows.append({"id": p.id, "text": p.text, "reference": p.reference, "split": p.split,
                     "tags": ", ".join(p.tags or []), "source": p.source, "turns": len(p.messages)})
        if len(rows) >= limit:
            break
    return rows


def list_responses(*, session: Session, policy_version: str | None = None, search: str | None = None,
                   limit: int = MAX_ROWS) -> list[dict[str, Any]]:
    query = (
        select(Response, Prompt.text, PolicyVersion.name)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .join(PolicyVersion, PolicyVersion.id == Response.policy_version_id)
        .order_by(Response.id.desc()).limit(limit)
    )
    if policy_version:
        query = query.where(PolicyVersion.name == policy_version)
    if search:
        query = query.where(or_(Response.text.ilike(_like(search), escape="\\"),
                                Prompt.text.ilike(_like(search), escape="\\")))
    return [
        {"id": r.id, "prompt": prompt_text, "response": r.text, "policy": version, "seed": r.seed,
         "tokens": r.completion_tokens, "latency_ms": round(r.latency_ms or 0), "finish": r.finish_reason,
         "temperature": r.params.get("temperature"), "job": r.job_id}
        for r, prompt_text, version in session.execute(query)
    ]


def list_items(*, session: Session, kind: str | None = None, limit: int = MAX_ROWS) -> list[dict[str, Any]]:
    ra, rb = aliased(Response), aliased(Response)
    n_labels = select(Label.item_id, func.count().label("n")).group_by(Label.item_id).subquery()
    query = (
        select(Item, Prompt.text, ra.text, rb.text, func.coalesce(n_labels.c.n, 0))
        .join(Prompt, Prompt.id == Item.prompt_id)
        .join(ra, ra.id == Item.response_a_id).outerjoin(rb, rb.id == Item.response_b_id)
        .outerjoin(n_labels, n_labels.c.item_id == Item.id)
        .order_by(Item.id.desc()).limit(limit)
    )
    if kind:
        query = query.where(Item.kind == kind)
    return [
        {"id": item.id, "kind": item.kind, "prompt": prompt_text, "response_a": a, "response_b": b, "labels": n}
        for item, prompt_text, a, b, n in session.execute(query)
    ]


def counts(*, session: Session) -> dict[str, int]:
    return {
        "prompts": session.scalar(select(func.count()).select_from(Prompt)) or 0,
        "responses": session.scalar(select(func.count()).select_from(Response)) or 0,
        "items": session.scalar(select(func.count()).select_from(Item)) or 0,
        "labels": session.scalar(select(func.count()).select_from(Label)) or 0,
    }


def policy_names(*, session: Session) -> list[str]:
    return list(session.scalars(select(PolicyVersion.name).order_by(PolicyVersion.id)))


def recent_labels(*, session: Session, user: User, source: str | None = None, kind: str | None = None,
                  username: str | None = None, project_id: int | None = None, limit: int = 200) -> list[dict]:
    """Recent labels for reviewers and admins: a fixed list of columns, nothing else."""
    require_role(user, "reviewer", "admin")
    annotator = aliased(User)
    query = (
        select(Label.id, Label.created_at, Project.name, Label.kind, Label.source, annotator.username,
               Label.producer, Label.item_id, Label.choice, Label.strength, Label.thumb, Label.score,
               Label.ranking, Label.edit_distance, Label.shown_order, Label.rationale, Prompt.text)
        .join(Item, Item.id == Label.item_id).join(Prompt, Prompt.id == Item.prompt_id)
        .join(Project, Project.id == Item.project_id)
        .outerjoin(annotator, annotator.id == Label.user_id)
        .order_by(Label.id.desc()).limit(min(limit, 1000))
    )
    if project_id is not None:
        query = query.where(Item.project_id == project_id)
    if source:
        query = query.where(Label.source == source)
    if kind:
        query = query.where(Label.kind == kind)
    if username:
        query = query.where(annotator.username == username)
    columns = ("id", "at", "project", "kind", "source", "annotator", "producer", "item", "choice", "strength",
               "thumb", "score", "ranking", "edit_distance", "shown_order", "rationale", "prompt")
    return [dict(zip(columns, row, strict=True)) for row in session.execute(query)]
