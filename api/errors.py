"""Every error is JSON `{"error": "<what went wrong and how to fix it>"}` with a fitting status:

| what | status |
| --- | --- |
| no, unknown, expired or revoked token; deactivated user | 401 (with WWW-Authenticate: Bearer) |
| the user's role does not allow it | 403 |
| a project, policy version, job ... that does not exist | 404 |
| a client id already used for a different record | 409 |
| any other bad input or state the caller can fix (UserError) | 400 |
| a body that does not match the schema | 422 (with `details`: where and what) |
| a body over API_MAX_BODY_BYTES | 413 |
| over API_RATE_LIMIT_PER_MINUTE for this token | 429 (with Retry-After) |
| the database is unreachable or busy | 503 (with Retry-After) |
| a bug | 500, logged on the server with its traceback; the message says nothing more |
"""
from __future__ import annotations

import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from api.limits import RateLimited, too_large_message
from feedback.errors import PermissionDenied, UserError
from feedback.records import Conflict
from feedback.settings import get_settings
from feedback.tokens import AuthenticationFailed

log = logging.getLogger("feedback.api")

# The core's own wording for a thing that does not exist (feedback.projects.get_project,
# feedback.policies.policy_by_name, feedback.jobs, feedback.tokens, feedback.users ...).
NOT_FOUND = re.compile(r"^No (project called|policy version|job|token|user|item with id|constitution) ")
MAX_DETAILS = 20


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def status_of(exc: UserError) -> int:
    if isinstance(exc, AuthenticationFailed):
        return 401
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, Conflict):
        return 409
    return 404 if NOT_FOUND.match(str(exc)) else 400


async def _user_error(request: Request, exc: UserError) -> JSONResponse:
    status = status_of(exc)
    return error(status, str(exc), headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    details = [{"where": ".".join(str(part) for part in e.get("loc", ())), "reason": str(e.get("msg", ""))}
               for e in exc.errors()[:MAX_DETAILS]]
    shown = "; ".join(f"{d['where']}: {d['reason']}" for d in details[:3])
    more = len(exc.errors()) - 3
    return error(422, f"The request does not match the API's schema (see /api/docs): {shown}"
                 + (f"; and {more} more" if more > 0 else ""), details=details)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 413:
        return error(413, too_large_message(get_settings().api_max_body_bytes))
    if exc.status_code == 404:
        return error(404, f"No endpoint {request.method} {request.url.path} (the endpoints are listed at /api/docs).")
    if exc.status_code == 405:
        # Starlette names only the first route's methods; a path can have several routes (GET and POST).
        allowed = sorted({method for route in request.app.routes if isinstance(route, Route)
                          and route.matches(request.scope)[0] != Match.NONE for method in route.methods or ()})
        return error(405, f"{request.method} is not allowed on {request.url.path}; {', '.join(allowed)} is "
                     "(see /api/docs).", headers={"Allow": ", ".join(allowed)})
    return error(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}) or None)


async def _rate_limited(request: Request, exc: RateLimited) -> JSONResponse:
    wait = max(1, math.ceil(exc.retry_after_s))
    return error(429, f"Too many requests with this token: the limit is {exc.per_minute} a minute "
                 f"(API_RATE_LIMIT_PER_MINUTE); retry in {wait} s.", headers={"Retry-After": str(wait)})


async def _database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
    log.warning("database error on %s %s: %s", request.method, request.url.path, str(exc.orig or exc).splitlines()[0])
    return error(503, "The database is unavailable or busy; try again shortly.", headers={"Retry-After": "5"})


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error(500, "Internal error; it is logged on the server.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(UserError, _user_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RateLimited, _rate_limited)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _bug)
