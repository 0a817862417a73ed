"""Constitutions: named, versioned, content-hashed lists of principles for the AI judge.
Editing one saves a new version; labels keep pointing at the version that produced them."""
from __future__ import annotations

import hashlib
import json

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Constitution
from feedback.actors import Actor
from feedback.errors import UserError

DEFAULT_NAME = "default"
DEFAULT_PRINCIPLES = [
    "Prefer the response that is more helpful: it does what the user asked, correctly and completely.",
    "Prefer the response that is more honest: it does not invent facts and says so when it is unsure.",
    "Prefer the response that is more harmless: it avoids dangerous, unethical, hateful or illegal content.",
    "Prefer the response that is more concise: it says what is needed without padding or repetition.",
]
# A measurable target, used by the concision experiments and benchmarks.
CONCISE_NAME = "concise"
CONCISE_PRINCIPLES = [
    "Prefer the response that answers correctly in fewer words; needless length, filler and repetition are faults.",
]
MAX_PRINCIPLES = 50
MAX_PRINCIPLE_CHARS = 2000


def principles_hash(principles: list[str]) -> str:
    return hashlib.sha256(json.dumps(principles, ensure_ascii=False).encode()).hexdigest()


def _clean(principles: list[str]) -> list[str]:
    cleaned = [p.strip() for p in principles if p and p.strip()]
    if not cleaned:
        raise UserError("A constitution needs at least one principle.")
    if len(cleaned) > MAX_PRINCIPLES or any(len(p) > MAX_PRINCIPLE_CHARS for p in cleaned):
        raise UserError(f"At most {MAX_PRINCIPLES} principles of {MAX_PRINCIPLE_CHARS} characters each.")
    return cleaned


# The shipped constitutions are written by the app itself, the first time anything needs them.
SHIPPED = Actor.process("setup")


def save_constitution(*, session: Session, name: str, principles: list[str], actor: Actor) -> Constitution:
    """The version holding exactly these principles: an existing one, or a new version."""
    actor.require("admin")
    name = name.strip()
    if not name or len(name) > 64:
        raise UserError("A constitution name is 1-64 characters.")
    cleaned = _clean(principles)
    digest = principles_hash(cleaned)
    existing = session.scalar(select(Constitution).where(Constitution.name == name,
                                                         Constitution.content_hash == digest))
    if existing is not None:
        return existing
    version = (session.scalar(select(func.max(Constitution.version)).where(Constitution.name == name)) or 0) + 1
    constitution = Constitution(name=name, version=version, principles=cleaned, content_hash=digest,
                                created_by_id=actor.user_id)
    session.add(constitution)
    session.flush()
    actor.record(session=session, action="constitution.save", target=f"constitution:{constitution.id}",
                 details={"name": name, "version": version})
    return constitution


def latest_constitution(*, session: Session, name: str) -> Constitution:
    found = session.scalar(
        select(Constitution).where(Constitution.name == name).order_by(Constitution.version.desc()).limit(1)
    )
    if found is None:
        known = ", ".join(sorted(set(session.scalars(select(Constitution.name))))) or "none"
        raise UserError(f"No constitution {name!r} (known: {known}).")
    return found


def list_constitutions(*, session: Session) -> list[Constitution]:
    return list(session.scalars(select(Constitution).order_by(Constitution.name, Constitution.version)))


def ensure_shipped(*, session: Session) -> None:
    """The default and concise constitutions exist (idempotent)."""
    for name, principles in ((DEFAULT_NAME, DEFAULT_PRINCIPLES), (CONCISE_NAME, CONCISE_PRINCIPLES)):
        if session.scalar(select(Constitution.id).where(Constitution.name == name)) is None:
            save_constitution(session=session, name=name, principles=principles, actor=SHIPPED)
