"""The two requests that set and forget the browser's session cookie (feedback/sessions.py).

The signed-in tab draws an invisible `<img src="/session/claim?ticket=...">`: the ticket is
traded, once, for the session token, sent back as an HttpOnly cookie (the page's scripts never
see it). After sign-out the tab draws `<img src="/session/clear">`, whose answer deletes it.
Both answer only requests the browser says come from our own pages (403 otherwise).
Plain Starlette routes served by st.App next to the pages, outside the token-authenticated API.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import get_engine
from db.engine import session_scope
from feedback.sessions import CLAIM_PATH, CLEAR_PATH, COOKIE_NAME, claim_ticket, ticket_known

# Neither answer may be kept by a cache: each is about one browser's cookie.
NO_STORE = {"Cache-Control": "no-store"}


def _secure(request: Request) -> bool:
    # Behind a TLS-terminating proxy the request arrives as http; its header tells the truth.
    # (Trusting it only ever adds Secure, which can only narrow where the cookie goes.)
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        return (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:  # a port that is not a number
        return None


def _from_our_pages(request: Request) -> bool:
    """Whether the browser says this request comes from one of our own pages: Sec-Fetch-Site, or,
    from a browser that does not send it (plain http to a host other than localhost), a Referer
    or Origin on the host:port the request was sent to. A request saying neither is refused."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    host = request.headers.get("host", "")
    for header in ("origin", "referer"):
        try:
            source = urlsplit(request.headers.get(header, ""))
        except ValueError:  # e.g. an unclosed "[" of an IPv6 host
            return False
        if source.scheme in DEFAULT_PORTS and source.netloc:
            ours = _host_port(host, source.scheme)
            return ours is not None and ours[0] != "" and _host_port(source.netloc, source.scheme) == ours
    return False


def claim(request: Request) -> Response:
    # Another site's page could embed this image to sign a visitor in as someone else; browsers
    # say where a request came from, and only our own pages may trade a ticket.
    if not _from_our_pages(request):
        return Response(status_code=403, headers=NO_STORE)
    ticket = request.query_params.get("ticket", "")
    engine = get_engine()
    # Read first: an unknown ticket costs no write transaction (SQLite's write lock).
    with session_scope(engine, read_only=True) as session:
        known = ticket_known(session=session, ticket=ticket)
    cookie = None
    if known:
        with session_scope(engine) as session:
            # The browser's current cookie, if another session's, is replaced: that session ends.
            cookie = claim_ticket(session=session, ticket=ticket, replacing=request.cookies.get(COOKIE_NAME))
    if cookie is None:
        return Response(status_code=404, headers=NO_STORE)
    response = Response(status_code=204, headers=NO_STORE)
    response.set_cookie(COOKIE_NAME, cookie.token, max_age=cookie.max_age_s, path="/", httponly=True,
                        samesite="lax", secure=_secure(request))
    return response


def clear(request: Request) -> Response:
    # Another site must not sign a visitor's browser out either (harmless, but a nuisance).
    if not _from_our_pages(request):
        return Response(status_code=403, headers=NO_STORE)
    response = Response(status_code=204, headers=NO_STORE)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=_secure(request))
    return response


def session_routes() -> list[Route]:
    return [Route(CLAIM_PATH, claim, methods=["GET"]), Route(CLEAR_PATH, clear, methods=["GET"])]
