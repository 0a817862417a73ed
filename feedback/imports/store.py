"""Writing imported preferences: responses filed under external policy versions, the project's
items made of them, and one label with source `imported` per item.

Items are built here rather than by feedback/sampling.record_samples: an imported item's
responses come from several models (one policy version each), its positions are fixed by the
labels that come with it (sampling drops duplicate texts and picks pairs itself), and the label
needs the item it belongs to.

Every label's submission id is a hash of what it says (project, prompt, answers, models, the
preference or the ratings), so importing the same row again, from the same file or another,
finds it and writes nothing.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Item, ItemResponse, Label, PolicyVersion, Project, Prompt, Response
from feedback.actors import Actor
from feedback.imports.common import PairRow, RatingRow, shown
from feedback.policies import EXTERNAL_PREFIX, external_version
from feedback.priority import new_item_key
from feedback.prompts import HASH_CHUNK

UNNAMED_MODEL = "imported"  # the version of responses whose file names no model: ext:imported
NAME_MAX_CHARS = 64  # policy_versions.name
CHUNK = 500  # rows written per flush


def external_name(model: str | None) -> str:
    return EXTERNAL_PREFIX + (model or UNNAMED_MODEL)


def check_model_name(model: str | None) -> None:
    """Raise ValueError when a model's name cannot name a policy version."""
    if model is not None and len(external_name(model)) > NAME_MAX_CHARS:
        raise ValueError(f"model name {shown(model)} is longer than {NAME_MAX_CHARS - len(EXTERNAL_PREFIX)} characters")
    if model is not None and "\x00" in model:
        raise ValueError("a model name contains a NUL character")


def external_versions(*, session: Session, actor: Actor, models: Iterable[str | None]) -> tuple[dict, list[str]]:
    """model -> PolicyVersion for `ext:<model>` (feedback.policies.external_version); and the
    names of those made now."""
    wanted = {external_name(m): m for m in models}
    existing = set(session.scalars(select(PolicyVersion.name).where(PolicyVersion.name.in_(list(wanted)))))
    versions = {model: external_version(session=session, actor=actor, model=model or UNNAMED_MODEL)
                for _name, model in sorted(wanted.items(), key=lambda kv: kv[0])}
    return versions, sorted(set(wanted) - existing)


def row_key(kind: str, project: str, payload: dict[str, Any]) -> str:
    """The submission id of an imported label: the same statement in the same project, same id."""
    text = json.dumps({"kind": kind, "project": project, **payload}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pair_key(project: str, row: PairRow) -> str:
    return row_key("pair", project, {"prompt": row.prompt.content_hash, "chosen": row.chosen,
                                     "rejected": row.rejected})


def rating_key(project: str, row: RatingRow) -> str:
    return row_key("rating", project, {"prompt": row.prompt.content_hash, "texts": list(row.texts),
                                       "models": list(row.models), "ratings": list(row.ratings)})


def chosen_side(key: str) -> str:
    """Which side of the pair the chosen answer takes: decided by the key, so it looks random
    across rows (no position for a model to learn) and a re-import agrees."""
    return "a" if int(key[0], 16) % 2 == 0 else "b"


def existing_keys(session: Session, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(keys), HASH_CHUNK):
        chunk = keys[i:i + HASH_CHUNK]
        found.update(session.scalars(select(Label.submission_id).where(Label.submission_id.in_(chunk))))
    return found


def prompt_ids(session: Session, hashes: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for i in range(0, len(hashes), HASH_CHUNK):
        rows = session.execute(select(Prompt.content_hash, Prompt.id)
                               .where(Prompt.content_hash.in_(hashes[i:i + HASH_CHUNK])))
        found.update(dict(rows.all()))
    return found


@dataclass(frozen=True)
class ToWrite:
    """One validated row, not imported before, with where it came from."""

    key: str
    row: PairRow | RatingRow
    provenance: dict[str, Any]


def _response(prompt_id: int, version: PolicyVersion, text: str, producer: str) -> Response:
    return Response(prompt_id=prompt_id, policy_version_id=version.id, text=text, params={"backend": producer})


def write_pairs(*, session: Session, project: Project, rows: Sequence[ToWrite], prompts: dict[str, int],
                version: PolicyVersion, producer: str) -> int:
    """A pair item and its label for each row; the number of responses written."""
    responses = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        made = []
        for w in chunk:
            prompt_id = prompts[w.row.prompt.content_hash]
            chosen = _response(prompt_id, version, w.row.chosen, producer)
            rejected = _response(prompt_id, version, w.row.rejected, producer)
            made.append((w, prompt_id, chosen, rejected))
            session.add_all([chosen, rejected])
        session.flush()
        items = []
        for w, prompt_id, chosen, rejected in made:
            side = chosen_side(w.key)
            a, b = (chosen, rejected) if side == "a" else (rejected, chosen)
            item = Item(kind="pair", project_id=project.id, prompt_id=prompt_id, response_a_id=a.id,
                        response_b_id=b.id, queue_key=new_item_key(project.queue_order))
            items.append((w, side, item))
            session.add(item)
        session.flush()
        session.add_all([Label(item_id=item.id, kind="pairwise", choice=side, source="imported", producer=producer,
                               provenance=w.provenance, submission_id=w.key) for w, side, item in items])
        session.flush()
        responses += 2 * len(chunk)
    return responses


def write_ratings(*, session: Session, project: Project, rows: Sequence[ToWrite], prompts: dict[str, int],
                  versions: dict[str | None, PolicyVersion], producer: str) -> int:
    """A rating item of K responses and its label for each row; the number of responses written."""
    responses = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        made = []
        for w in chunk:
            prompt_id = prompts[w.row.prompt.content_hash]
            texts = [_response(prompt_id, versions[m], t, producer) for t, m in zip(w.row.texts, w.row.models,
                                                                                    strict=True)]
            made.append((w, prompt_id, texts))
            session.add_all(texts)
        session.flush()
        items = []
        for w, prompt_id, texts in made:
            item = Item(kind="rating", project_id=project.id, prompt_id=prompt_id, response_a_id=texts[0].id,
                        queue_key=new_item_key(project.queue_order))
            items.append((w, texts, item))
            session.add(item)
        session.flush()
        for w, texts, item in items:
            session.add_all([ItemResponse(item_id=item.id, position=p, response_id=r.id) for p, r in enumerate(texts)])
            session.add(Label(item_id=item.id, kind="rating", ratings=list(w.row.ratings), source="imported",
                              producer=producer, provenance=w.provenance, submission_id=w.key))
            responses += len(texts)
        session.flush()
    return responses
