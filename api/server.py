"""The API application, and the routes app.py gives `st.App` so one process and port serve both
the pages and the API (`streamlit run app.py`).

    app = st.App("app.py", routes=api_routes())   # /api/v1/..., /api/docs, /api/openapi.json

`create_app()` alone is an ordinary ASGI app (the tests drive it in-process); mounted at /api,
FastAPI takes the mount's root path for its docs and schema.
"""
from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.routing import Mount, Route

from api import errors, routes
from api.limits import BodyLimit, TokenBuckets
from api.session_routes import session_routes
from cli import job_kinds

MOUNT = "/api"
DESCRIPTION = """Push prompts and records (a prompt with responses from named models) into projects,
read the labels people, the AI judge and graders gave, export them as TRL training rows, and start
and watch jobs. Send a token made with `python -m feedback tokens create --user NAME` as
`Authorization: Bearer <token>`; it acts with its user's role. Errors are `{"error": "..."}`.
The Python client is `feedback.client.Client`."""


def create_app() -> FastAPI:
    job_kinds.install()  # the kinds jobs can be started as (the pages install them too)
    # The docs page's script and styles are served from here (fastapi-offline ships them), not a CDN:
    # the docs work on a machine without internet, and the page loads nothing from elsewhere.
    app = FastAPIOffline(title="feedback API", version="1", description=DESCRIPTION, docs_url="/docs",
                         redoc_url=None, openapi_url="/openapi.json", static_url="/static")
    app.state.buckets = TokenBuckets()  # per-token rate limits, in this process
    app.add_middleware(BodyLimit)
    errors.install(app)
    app.include_router(routes.router)
    return app


def api_routes() -> list[Mount | Route]:
    """What st.App serves next to the pages: the API under /api."""
    return [Mount(MOUNT, app=create_app()), *session_routes()]  # and /session/*: the sign-in cookie
