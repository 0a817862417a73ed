"""Who is calling: the bearer token's user, as an Actor whose role the services check.

Each request takes one from the token's rate-limit bucket first (before the database is asked),
then the token is looked up by its hash, in one query (feedback.tokens.authenticate_use). The actor
is named "api:<username>" in the audit log. Nothing about a token is cached: a revoked or expired
token, or a deactivated user, is refused from the next request on.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from db.engine import engine_for, session_scope
from feedback.actors import Actor
from feedback.settings import Settings, get_settings
from feedback.tokens import authenticate_use, hash_token, note_token_use

bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="An API token: `python -m feedback tokens create --user NAME` prints one.")


_last_settings: tuple[dict, Settings] | None = None
_settings_guard = threading.Lock()


def api_settings() -> Settings:
    """get_settings(), read again only when the environment changed. Settings come from the
    environment alone (no .env file), and building them costs ~3.6 ms, which was most of an
    annotation request's CPU; comparing a copy of the environment's raw dict costs ~1 us."""
    global _last_settings
    environ = os.environ._data  # the bytes dict behind os.environ: copying it decodes nothing
    last = _last_settings
    if last is not None and last[0] == environ:
        return last[1]
    with _settings_guard:
        snapshot = dict(environ)
        settings = get_settings()
        _last_settings = (snapshot, settings)
    return settings


def get_engine() -> Engine:
    # Read at call time: tests and deployments point DATABASE_URL elsewhere.
    return engine_for(api_settings().database_url)


@dataclass(frozen=True)
class Caller:
    actor: Actor
    token: str


def _caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    token = credentials.credentials if credentials else ""
    settings = api_settings()
    if token:
        request.app.state.buckets.take(hash_token(token), settings.api_rate_limit_per_minute)
    engine = engine_for(settings.database_url)
    # Read first; a write transaction (BEGIN IMMEDIATE on SQLite) only to note the token's use,
    # about once a minute, not on every request.
    with session_scope(engine, read_only=True) as session:
        user, stale = authenticate_use(session=session, token=token)
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
