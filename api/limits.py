"""Request limits: a body size limit and a per-token rate limit, both read from the settings at
call time (API_MAX_BODY_BYTES, API_RATE_LIMIT_PER_MINUTE)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import api_settings

MAX_TRACKED = 10_000  # buckets kept before idle (full) ones are forgotten


class RateLimited(Exception):
    def __init__(self, retry_after_s: float, per_minute: int):
        super().__init__(f"retry in {retry_after_s:.1f} s")
        self.retry_after_s, self.per_minute = retry_after_s, per_minute


class TokenBuckets:
    """One token bucket per key (a token's hash), in this process: it holds a minute's worth of
    requests and refills continuously, so a client may burst and then keeps the average rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (requests left, when counted)

    def take(self, key: str, per_minute: int) -> None:
        """Count one request for `key`; RateLimited when its bucket is empty. per_minute 0: no limit."""
        if per_minute <= 0:
            return
        now = self._clock()
        with self._lock:
            left, at = self._buckets.get(key, (float(per_minute), now))
            left = min(float(per_minute), left + (now - at) * per_minute / 60.0)
            if left >= 1.0:
                self._buckets[key] = (left - 1.0, now)
                if len(self._buckets) > MAX_TRACKED:
                    self._forget_idle(now, per_minute)
                return
            self._buckets[key] = (left, now)
        raise RateLimited((1.0 - left) * 60.0 / per_minute, per_minute)

    def _forget_idle(self, now: float, per_minute: int) -> None:
        # A bucket that would be full again by now holds nothing worth keeping.
        full = [k for k, (left, at) in self._buckets.items() if left + (now - at) * per_minute / 60.0 >= per_minute]
        for key in full:
            del self._buckets[key]


def too_large_message(limit: int) -> str:
    return (f"The request body is larger than the API's limit of {limit:,} bytes (API_MAX_BODY_BYTES); "
            "send less per request.")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=too_large_message(limit))


class BodyLimit:
    """Refuses a request body over API_MAX_BODY_BYTES (read on every request) with 413: at once when
    its Content-Length says so, else when the endpoint reads past the limit, before it is all in
    memory."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = api_settings().api_max_body_bytes  # read on every request: the cached copy
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse({"error": too_large_message(limit)}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # the API's handler answers it (api.errors)
            return message

        await self.app(scope, limited, send)
