"""Accounts: argon2id password hashes (argon2-cffi), roles checked here, not only in the UI."""
from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ROLES, User
from feedback import audit
from feedback.errors import PermissionDenied, UserError

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 8
# Verifying against this when the user does not exist keeps sign-in time the same either way.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def create_user(*, session: Session, username: str, role: str, password: str, actor: str = "cli") -> User:
    username = username.strip()
    if not username or len(username) > 64 or not username.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise UserError("A username is 1-64 letters, digits, '.', '_' or '-'.")
    if role not in ROLES:
        raise UserError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"User {username!r} already exists.")
    user = User(username=username, role=role, password_hash=_hasher.hash(password))
    session.add(user)
    session.flush()
    audit.record(session=session, actor=actor, action="user.create", target=f"user:{user.id}",
                 details={"username": username, "role": role})
    return user


def authenticate(*, session: Session, username: str, password: str) -> User | None:
    """The active user with these credentials, or None. Never says which part was wrong."""
    user = session.scalar(select(User).where(User.username == username.strip()))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def require_role(user: User | None, *roles: str) -> User:
    """Raise PermissionDenied unless `user` is active and has one of `roles`."""
    if user is None or not user.active or user.role not in roles:
        raise PermissionDenied(f"This needs the role {' or '.join(roles)}.")
    return user


def set_password(*, session: Session, username: str, password: str, actor: str = "cli") -> User:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"No user {username!r}.")
    user.password_hash = _hasher.hash(password)
    audit.record(session=session, actor=actor, action="user.set_password", target=f"user:{user.id}")
    return user
