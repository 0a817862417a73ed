"""API tokens: a token acts as its user, with the user's role (checked by the services, as for the
pages). Only the sha256 of a token is stored; the token itself is shown once, when it is made.

A token is `fb_` and 43 URL-safe characters (32 random bytes). Its first characters (the prefix)
are kept in clear to tell tokens apart in a listing, which is not enough to use one. A token
stops working when it expires, when it is revoked, or when its user is deactivated; a role
change applies to the next request.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ApiToken, User, utcnow
from feedback.actors import Actor
from feedback.errors import UserError

TOKEN_PREFIX = "fb_"
PREFIX_CHARS = len(TOKEN_PREFIX) + 8  # what listings show: "fb_" and 8 characters
MAX_EXPIRES_DAYS = 3650
NAME_MAX_CHARS = 64  # the width of api_tokens.name
# last_used_at is written at most this often per token, so a busy client does not write a row on
# every request.
TOUCH_EVERY = timedelta(minutes=1)


class AuthenticationFailed(UserError):
    """The token is missing, unknown, expired or revoked, or its user is deactivated (HTTP 401)."""


@dataclass(frozen=True)
class TokenInfo:
    """What a listing shows of a token: never the token or its hash."""

    id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime | None = None) -> str:
        now = now or utcnow()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(*, session: Session, actor: Actor, username: str, name: str = "",
                 expires_days: float | None = None) -> tuple[TokenInfo, str]:
    """Make a token for `username` (admins only); returns its listing and the token, which is not
    stored anywhere and cannot be shown again. `expires_days` None: it never expires."""
    actor.require("admin")
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None:
        raise UserError(f"No user {username!r}.")
    if not user.active:
        raise UserError(f"User {username!r} is deactivated; reactivate them before making them a token.")
    name = name.strip()
    if len(name) > NAME_MAX_CHARS:
        raise UserError(f"A token name is at most {NAME_MAX_CHARS} characters.")
    if expires_days is not None and not 0 < expires_days <= MAX_EXPIRES_DAYS:
        raise UserError(f"--expires is a number of days between 0 and {MAX_EXPIRES_DAYS}, not {expires_days:g}.")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(user_id=user.id, name=name, token_hash=hash_token(token), prefix=token[:PREFIX_CHARS],
                   created_by_id=actor.user_id, created_at=now,
                   expires_at=now + timedelta(days=expires_days) if expires_days is not None else None)
    session.add(row)
    session.flush()
    actor.record(session=session, action="token.create", target=f"token:{row.id}",
                 details={"username": user.username, "name": name, "prefix": row.prefix,
                          "expires_at": row.expires_at.isoformat() if row.expires_at else None})
    return _info(row, user.username), token


def list_tokens(*, session: Session, actor: Actor, username: str | None = None) -> list[TokenInfo]:
    """Every token (or one user's), newest first (admins only)."""
    actor.require("admin")
    query = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id.desc())
    if username:
        query = query.where(User.username == username.strip())
    return [_info(row, name) for row, name in session.execute(query)]


def revoke_token(*, session: Session, actor: Actor, token_id: int) -> bool:
    """Revoke a token (admins only): it stops working at once. False if it was already revoked."""
    actor.require("admin")
    row = session.get(ApiToken, token_id)
    if row is None:
        raise UserError(f"No token {token_id}.")
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    actor.record(session=session, action="token.revoke", target=f"token:{row.id}", details={"prefix": row.prefix})
    return True


def authenticate(*, session: Session, token: str | None, now: datetime | None = None,
                 note_use: bool = True) -> User:
    """The active user `token` acts as; AuthenticationFailed (with the reason) otherwise.

    With `note_use`, notes the token's use (last_used_at) at most once a minute, in the caller's
    session, which must then be a write session; without, `authenticate_use` says whether a caller
    should note it (the API reads first, and takes a write transaction only about once a minute)."""
    now = now or utcnow()
    user, stale = authenticate_use(session=session, token=token, now=now)
    if note_use and stale:
        note_token_use(session=session, token=token, now=now)
    return user


def authenticate_use(*, session: Session, token: str | None, now: datetime | None = None) -> tuple[User, bool]:
    """What `authenticate` checks, in one query, noting nothing: the user, and whether the token's
    use should be noted (its last_used_at is over a minute old)."""
    if not token:
        raise AuthenticationFailed("No API token: send the header 'Authorization: Bearer <token>' "
                                   "(make one with `python -m feedback tokens create --user NAME`).")
    now = now or utcnow()
    found = session.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                            .where(ApiToken.token_hash == hash_token(token))).first()
    if found is None:
        raise AuthenticationFailed("Unknown API token (check it was copied whole; a lost token cannot be "
                                   "shown again: make a new one).")
    row, user = found
    if row.revoked_at is not None:
        raise AuthenticationFailed(f"This API token ({row.prefix}...) was revoked on "
                                   f"{row.revoked_at:%Y-%m-%d %H:%M} UTC.")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationFailed(f"This API token ({row.prefix}...) expired on "
                                   f"{row.expires_at:%Y-%m-%d %H:%M} UTC.")
    if not user.active:
        raise AuthenticationFailed(f"The account {user.username!r} this token belongs to is deactivated.")
    return user, _stale(row.last_used_at, now)


def _stale(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or now - last_used_at >= TOUCH_EVERY


def note_token_use(*, session: Session, token: str, now: datetime | None = None) -> None:
    """Set last_used_at, unless a request noted it within the minute (conditional, so two requests
    at the same moment write it once)."""
    now = now or utcnow()
    session.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(token),
                                           (ApiToken.last_used_at.is_(None))
                                           | (ApiToken.last_used_at <= now - TOUCH_EVERY))
                    .values(last_used_at=now).execution_options(synchronize_session=False))


def token_info(*, session: Session, token: str) -> TokenInfo | None:
    """The listing of `token` (for "who am I"), or None if unknown."""
    found = session.execute(select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
                            .where(ApiToken.token_hash == hash_token(token))).first()
    return _info(*found) if found else None


def _info(row: ApiToken, username: str) -> TokenInfo:
    return TokenInfo(id=row.id, username=username, name=row.name, prefix=row.prefix, created_at=row.created_at,
                     expires_at=row.expires_at, revoked_at=row.revoked_at, last_used_at=row.last_used_at)
