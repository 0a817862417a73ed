"""Who is calling: the bearer token's user, as an Actor whose role the services check.

Each request takes one from the token's rate-limit bucket first (before the database is asked),
then the token is looked up by its hash (feedback.tokens.authenticate). The actor is named
"api:<username>" in the audit log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from db.engine import engine_for, session_scope
from feedback.actors import Actor
from feedback.settings import get_settings
from feedback.tokens import authenticate, hash_token, note_token_use, use_is_stale

bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="An API token: `python -m feedback tokens create --user NAME` prints one.")


def get_engine() -> Engine:
    # Read at call time: tests and deployments point DATABASE_URL elsewhere.
    return engine_for(get_settings().database_url)


@dataclass(frozen=True)
class Caller:
    actor: Actor
    token: str


def _caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    token = credentials.credentials if credentials else ""
    if token:
        request.app.state.buckets.take(hash_token(token), get_settings().api_rate_limit_per_minute)
    engine = get_engine()
    # Read first; a write transaction (BEGIN IMMEDIATE on SQLite) only to note the token's use,
    # about once a minute, not on every request.
    with session_scope(engine, read_only=True) as session:
        user = authenticate(session=session, token=token, note_use=False)
        stale = use_is_stale(session=session, token=token)
    if stale:
        with session_scope(engine) as session:
            note_token_use(session=session, token=token)
    return Caller(actor=Actor(name=f"api:{user.username}", user=user), token=token)


def caller(*roles: str):
    """A dependency giving the Caller, refused (403) unless the user has one of `roles`."""

    def dependency(who: Annotated[Caller, Depends(_caller)]) -> Caller:
        if roles:
            who.actor.require(*roles)
        return who

    return dependency


# What endpoints declare: `who: Admin` is the caller, refused unless an admin.
Anyone = Annotated[Caller, Depends(caller())]
Reader = Annotated[Caller, Depends(caller("reviewer", "admin"))]
Admin = Annotated[Caller, Depends(caller("admin"))]
