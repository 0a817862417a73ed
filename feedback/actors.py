"""Who is calling a mutating service. Every such service takes `actor=` (keyword-only, no
default), so a call that forgets to say who it is fails at once instead of writing an audit row
that blames nobody.

An actor is either a signed-in user, whose role is checked, or a trusted process: the CLI, a job
worker, first-run setup or the refill. A process has the database credentials anyway, so it is
not role-checked; it is named in the audit log all the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.models import User
from feedback import audit
from feedback.errors import PermissionDenied


def require_role(user: User | None, *roles: str) -> User:
    """Raise PermissionDenied unless `user` is active and has one of `roles`."""
    if user is None or not user.active or user.role not in roles:
        raise PermissionDenied(f"This needs the role {' or '.join(roles)}.")
    return user


@dataclass(frozen=True)
class Actor:
    name: str  # what the audit log records: "app:alice", "cli", "worker:job-12", "setup"
    user: User | None = None  # the signed-in user, whose role is checked; None for a process

    @classmethod
    def signed_in(cls, user: User) -> Actor:
        return cls(name=f"app:{user.username}", user=user)

    @classmethod
    def process(cls, name: str) -> Actor:
        return cls(name=name)

    @classmethod
    def worker(cls, job_id: int) -> Actor:
        return cls(name=f"worker:job-{job_id}")

    @property
    def user_id(self) -> int | None:
        return self.user.id if self.user is not None else None

    def require(self, *roles: str) -> None:
        """A user must have one of `roles`; a trusted process always may."""
        if self.user is not None:
            require_role(self.user, *roles)

    def record(self, *, session: Session, action: str, target: str | None = None,
               details: dict[str, Any] | None = None) -> None:
        audit.record(session=session, actor=self.name, action=action, target=target, user_id=self.user_id,
                     details=details)


CLI = Actor.process("cli")
SETUP = Actor.process("setup")
