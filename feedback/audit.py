"""The audit log: every mutating service call records who did what."""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import AuditLog


def record(
    *, session: Session, actor: str, action: str, target: str | None = None,
    user_id: int | None = None, details: dict[str, Any] | None = None,
) -> None:
    session.add(AuditLog(actor=actor, action=action, target=target, user_id=user_id, details=details or {}))
