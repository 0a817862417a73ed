"""Read-only listings for the data page and the CLI, as plain rows (lists of dicts)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from db.models import Item, Label, PolicyVersion, Prompt, Response

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
