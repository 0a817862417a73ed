"""Accounts: argon2id password hashes (argon2-cffi), roles checked here, not only in the UI."""
from __future__ import annotations

import ipaddress
import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import ROLES, SignInFailure, User, utcnow
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.sessions import revoke_sessions
from feedback.settings import get_settings

_hasher = PasswordHasher()
# Failed sign-ins allowed per username in the window before sign-in is refused for the rest of it.
MAX_FAILURES = 5
# And per client, whatever the usernames (SIGN_IN_CLIENT_LIMIT, a setting): one client trying many
# names is stopped too. An IPv6 client is its /64: one host is usually handed a whole /64, so
# counting its addresses one by one would let it pick a fresh address every few guesses.
IPV6_CLIENT_PREFIX = 64
FORGOTTEN = " "  # the username of failures forgiven by a success: strip() never leaves a lone space
FAILURE_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 8
USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# Verifying against this when the user does not exist keeps sign-in time the same either way.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def create_user(*, session: Session, username: str, role: str, password: str, actor: Actor) -> User:
    actor.require("admin")
    username = username.strip()
    if not USERNAME.fullmatch(username):
        raise UserError("A username is 1-64 letters, digits, '.', '_', '-' or '@' (an e-mail for single sign-on).")
    if role not in ROLES:
        raise UserError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"User {username!r} already exists.")
    user = User(username=username, role=role, password_hash=_hasher.hash(password))
    session.add(user)
    session.flush()
    actor.record(session=session, action="user.create", target=f"user:{user.id}",
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


def set_password(*, session: Session, username: str, password: str, actor: Actor) -> User:
    actor.require("admin")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"No user {username!r}.")
    user.password_hash = _hasher.hash(password)
    # Whoever had the old password may be signed in with it somewhere: those sessions end too.
    revoke_sessions(session=session, user_id=user.id, reason="password")
    actor.record(session=session, action="user.set_password", target=f"user:{user.id}")
    return user


class TooManyAttempts(UserError):
    """Sign-in refused for a while after repeated failures."""


def _refuse_after(failures: list[datetime], limit: int, now: datetime) -> None:
    if len(failures) >= limit:
        wait = failures[-limit] + FAILURE_WINDOW - now
        raise TooManyAttempts(f"Too many failed sign-ins; try again in {max(1, round(wait.total_seconds() / 60))} min.")


def _recent_failures(session: Session, condition, since: datetime) -> list[datetime]:
    return list(session.scalars(select(SignInFailure.at).where(condition, SignInFailure.at > since)
                                .order_by(SignInFailure.at)))


def client_key(client: str) -> str:
    """Who counts as one client: an IPv4 address as it is, an IPv6 address as its /64 (an
    IPv4-mapped one as its IPv4 address), any other text as it is ("" when unknown)."""
    text = (client or "").strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        # From the integer, so a zone ("fe80::1%eth0") is dropped rather than refused.
        return str(ipaddress.IPv6Network((int(address), IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


def sign_in(*, session: Session, username: str, password: str, client: str = "",
            now: datetime | None = None) -> User | None:
    """`authenticate` behind rate limits: after MAX_FAILURES failures within FAILURE_WINDOW for a
    username, or SIGN_IN_CLIENT_LIMIT from one client (`client_key` of its address; "" when
    unknown, which is not counted as one client; a limit of 0 turns this rule off), sign-in is
    refused (without checking the password) until the window has passed. The failures live in
    the database, so every app process shares the count."""
    now = now or utcnow()
    name = username.strip()[:64]
    client = client_key(client)
    since = now - FAILURE_WINDOW
    _refuse_after(_recent_failures(session, SignInFailure.username == name, since), MAX_FAILURES, now)
    client_limit = get_settings().sign_in_client_limit
    if client and client_limit:
        _refuse_after(_recent_failures(session, SignInFailure.client == client, since), client_limit, now)
    user = authenticate(session=session, username=name, password=password)
    if user is None:
        session.add(SignInFailure(username=name, client=client, at=now))
        return None
    # This username's count restarts, but the rows stay for their clients' counts (else signing in
    # to one's own account would reset a client's count): they move to a name no input can have.
    session.execute(update(SignInFailure).where(SignInFailure.username == name)
                    .values(username=FORGOTTEN).execution_options(synchronize_session=False))
    return user


def list_users(*, session: Session, actor: Actor) -> list[User]:
    actor.require("admin")
    return list(session.scalars(select(User).order_by(User.username)))


def _target(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise UserError(f"No user {user_id}.")
    return user


def _keep_an_admin(session: Session, target: User) -> None:
    """Refuse a change that would leave no active admin (nobody could manage users any more)."""
    # Lock the active admins' rows (Postgres; SQLite's BEGIN IMMEDIATE already serialises writers):
    # otherwise two admins demoting each other at once both count two admins and leave none.
    admins = len(session.scalars(select(User.id).where(User.role == "admin", User.active).with_for_update()).all())
    if target.role == "admin" and target.active and admins <= 1:
        raise UserError("This is the last active admin; make another admin first.")


def set_active(*, session: Session, actor: Actor, user_id: int, active: bool) -> User:
    actor.require("admin")
    target = _target(session, user_id)
    if not active:
        _keep_an_admin(session, target)
    target.active = active
    if not active:
        revoke_sessions(session=session, user_id=target.id, reason="deactivated")
    actor.record(session=session, action="user.activate" if active else "user.deactivate", target=f"user:{target.id}")
    return target


def set_role(*, session: Session, actor: Actor, user_id: int, role: str) -> User:
    actor.require("admin")
    if role not in ROLES:
        raise UserError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    target = _target(session, user_id)
    if role != "admin":
        _keep_an_admin(session, target)
    old, target.role = target.role, role
    if old != role:  # signed in again, with the new role's pages
        revoke_sessions(session=session, user_id=target.id, reason="role")
    actor.record(session=session, action="user.role", target=f"user:{target.id}", details={"from": old, "to": role})
    return target


def reset_password(*, session: Session, actor: Actor, user_id: int) -> str:
    """Set a generated password and return it (to show once); the old one stops working."""
    actor.require("admin")
    target = _target(session, user_id)
    password = generate_password()
    set_password(session=session, username=target.username, password=password, actor=actor)
    return password


def add_user(*, session: Session, actor: Actor, username: str, role: str) -> tuple[User, str]:
    """An admin creates an account; returns it with a generated password to show once."""
    actor.require("admin")
    password = generate_password()
    user = create_user(session=session, username=username, role=role, password=password, actor=actor)
    return user, password


def sso_user(*, session: Session, email: str) -> User | None:
    """The active account named by an identity provider's verified e-mail, or None."""
    if not email:
        return None
    user = session.scalar(select(User).where(func.lower(User.username) == email.strip().lower()))
    return user if user is not None and user.active else None
