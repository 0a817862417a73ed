"""Browser sessions that survive a reload: a row per sign-in, found again through an HttpOnly cookie.

Streamlit cannot set a cookie from a script, so signing in takes two steps. The sign-in form
calls `start_session`, which makes the row and a one-time ticket (valid TICKET_SECONDS); the
signed-in tab keeps the row's id in its session state, so it works at once, and draws an
invisible image whose URL carries the ticket. That request (api/session_routes.py) trades the
ticket, once, for the session token (`claim_ticket`) and sets it as the cookie. Only sha256
hashes of the ticket and the token are stored; the token is never in a URL, a log or the page.

A session stops working when it expires (SESSION_DAYS), when it is revoked (sign-out ends that
session; a password reset, deactivation or role change ends all of the user's) or when its user
is deactivated. A browser holds one cookie, so one session: when a second tab signs in, the
session its claim replaces in the cookie ends (else a sign-out, which ends the cookie's
session, would leave the first tab's running unseen).
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import User, UserSession, utcnow
from feedback.settings import get_settings

COOKIE_NAME = "feedback_session"
# Where the browser trades a ticket for the cookie, and has it deleted (api/session_routes.py).
CLAIM_PATH, CLEAR_PATH = "/session/claim", "/session/clear"
TICKET_SECONDS = 60
# last_seen_at is written at most this often per session, so each rerun of a page does not write.
TOUCH_EVERY = timedelta(minutes=1)
CLIENT_CHARS = 64  # the widths of user_sessions.client and .user_agent
USER_AGENT_CHARS = 255


@dataclass(frozen=True)
class NewSession:
    """What the signing-in tab keeps: the row's id, and the ticket its image trades for the cookie."""

    session_id: int
    ticket: str
    ticket_expires_at: datetime


@dataclass(frozen=True)
class ActiveSession:
    """A live session and its (active) user; `touch_due`: last_seen_at should be noted."""

    session_id: int
    user: User
    touch_due: bool


@dataclass(frozen=True)
class Cookie:
    """The session token to set as the cookie, and how long the browser may keep it."""

    token: str
    max_age_s: int


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def start_session(*, session: Session, user: User, client: str, user_agent: str,
                  now: datetime | None = None) -> NewSession:
    """A new session for `user` (just signed in), with its one-time ticket."""
    now = now or utcnow()
    ticket = secrets.token_urlsafe(32)
    row = UserSession(user_id=user.id, ticket_hash=_hash(ticket),
                      ticket_expires_at=now + timedelta(seconds=TICKET_SECONDS),
                      client=(client or "")[:CLIENT_CHARS], user_agent=(user_agent or "")[:USER_AGENT_CHARS],
                      created_at=now, expires_at=now + timedelta(days=get_settings().session_days))
    session.add(row)
    session.flush()
    return NewSession(session_id=row.id, ticket=ticket, ticket_expires_at=row.ticket_expires_at)


def ticket_known(*, session: Session, ticket: str) -> bool:
    """Whether a ticket names a session (a read, so a stream of made-up tickets writes nothing)."""
    return bool(ticket) and session.scalar(
        select(UserSession.id).where(UserSession.ticket_hash == _hash(ticket))) is not None


def claim_ticket(*, session: Session, ticket: str, replacing: str | None = None,
                 now: datetime | None = None) -> Cookie | None:
    """Trade a ticket for a fresh session token, once: None for a used, expired or unknown ticket
    (or a session revoked or expired meanwhile). `replacing`: the token of the cookie the browser
    sent along, whose session (another one) ends, since this cookie takes its place."""
    if not ticket:
        return None
    now = now or utcnow()
    row = session.scalar(select(UserSession).where(UserSession.ticket_hash == _hash(ticket)))
    if row is None:
        return None
    token = secrets.token_urlsafe(32)
    # Conditional on the ticket still being there: of two requests with one ticket, one wins.
    claimed = session.execute(
        update(UserSession)
        .where(UserSession.id == row.id, UserSession.ticket_hash == _hash(ticket),
               UserSession.ticket_expires_at > now, UserSession.expires_at > now,
               UserSession.revoked_at.is_(None))
        .values(token_hash=_hash(token), ticket_hash=None, ticket_expires_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        return None
    if replacing:
        _revoke(session, (UserSession.token_hash == _hash(replacing)) & (UserSession.id != row.id), "replaced", now)
    return Cookie(token=token, max_age_s=max(1, int((row.expires_at - now).total_seconds())))


def _active(session: Session, condition, now: datetime) -> ActiveSession | None:
    found = session.execute(select(UserSession, User).join(User, User.id == UserSession.user_id)
                            .where(condition)).first()
    if found is None:
        return None
    row, user = found
    if row.revoked_at is not None or row.expires_at <= now or not user.active:
        return None
    touch_due = row.last_seen_at is None or now - row.last_seen_at >= TOUCH_EVERY
    return ActiveSession(session_id=row.id, user=user, touch_due=touch_due)


def user_for_token(*, session: Session, token: str | None, now: datetime | None = None) -> ActiveSession | None:
    """The live session a cookie's token names, or None (unknown, revoked, expired, inactive user).
    Only reads: call `touch_session` (in a write transaction) when `touch_due`."""
    if not token:
        return None
    return _active(session, UserSession.token_hash == _hash(token), now or utcnow())


def user_for_session_id(*, session: Session, session_id: int | None,
                        now: datetime | None = None) -> ActiveSession | None:
    """As `user_for_token`, for the session a tab signed in with (before its cookie is set)."""
    if session_id is None:
        return None
    return _active(session, UserSession.id == session_id, now or utcnow())


def touch_session(*, session: Session, session_id: int, now: datetime | None = None) -> None:
    """Note that the session was used, unless that was noted within TOUCH_EVERY (conditional, so
    two tabs running at once write it once)."""
    now = now or utcnow()
    session.execute(update(UserSession)
                    .where(UserSession.id == session_id,
                           UserSession.last_seen_at.is_(None) | (UserSession.last_seen_at <= now - TOUCH_EVERY))
                    .values(last_seen_at=now).execution_options(synchronize_session=False))


def end_session(*, session: Session, session_id: int, now: datetime | None = None) -> bool:
    """Sign-out: that session stops working everywhere its cookie is used. False if it had ended."""
    return _revoke(session, UserSession.id == session_id, "sign-out", now) > 0


def end_browser_sessions(*, session: Session, session_id: int | None, token: str | None,
                         now: datetime | None = None) -> int:
    """Sign-out of a tab: the session it signed in with and the one its browser's cookie names,
    when they differ (two tabs of one browser that each signed in); how many ended."""
    ended = end_session(session=session, session_id=session_id, now=now) if session_id is not None else 0
    if token:
        ended += _revoke(session, UserSession.token_hash == _hash(token), "sign-out", now)
    return int(ended)


def revoke_sessions(*, session: Session, user_id: int, reason: str, now: datetime | None = None) -> int:
    """End every live session of a user (password reset, deactivation, role change); how many."""
    return _revoke(session, UserSession.user_id == user_id, reason, now)


def _revoke(session: Session, condition, reason: str, now: datetime | None) -> int:
    return session.execute(
        update(UserSession).where(condition, UserSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow(), revoked_reason=reason[:32], ticket_hash=None, ticket_expires_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
