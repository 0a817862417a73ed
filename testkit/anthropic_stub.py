"""A local stand-in for the Anthropic API, for testing the wire path with the real SDK.

    with AnthropicStub(decide=prefer_shorter) as stub:
        client = anthropic.Anthropic(api_key="sk-test", base_url=stub.base_url)

Speaks the API's JSON on 127.0.0.1 (a free port): POST /v1/messages, POST /v1/messages/batches,
GET /v1/messages/batches/{id}, GET /v1/messages/batches/{id}/results (JSONL), plus a minimal
OpenAI-style POST /v1/chat/completions for OpenAI-compatible clients (base URL `stub.openai_base_url`).

Scriptable:
- `decide(request_json) -> {"reasoning": ..., "winner": "1" | "2" | "tie"}` is the judge policy
  behind every default answer (prefer_first, prefer_second, prefer_shorter below);
- `enqueue(*replies, path=...)` queues canned answers (rate_limited(), overloaded(), server_error(),
  malformed_json(), truncated(...), hang(...), or any Reply / callable(request_json) -> Reply) used
  before the default; `fallback[path] = reply` answers every request once the queue is empty;
- `batch_outcomes[custom_id] = "errored" | "expired" | "canceled" | "malformed" | "missing"` shapes
  batch results ("malformed": its line is cut in half, not JSON; "missing": no line at all), and
  `polls_until_ended` how many GETs of a batch it takes to end;
- `latency_s` delays every answer (for benchmarks); `api_key` makes it reject other keys (401).

Every request is recorded (method, path, headers, body) in `requests`. The server prints nothing:
the requests it records carry the API key, and they stay in memory.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

MESSAGES = "/v1/messages"
BATCHES = "/v1/messages/batches"
CHAT = "/v1/chat/completions"
DEFAULT_MODEL = "claude-sonnet-4-6"
_BATCH_PATH = re.compile(r"^/v1/messages/batches/([A-Za-z0-9_-]+)(/results)?$")
_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# --- what the stub answers -----------------------------------------------------------------------


@dataclass
class Reply:
    """One HTTP answer. `body` (raw bytes) wins over `json`; `delay_s` waits before answering."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay_s: float = 0.0


Scripted = Reply | Callable[[dict[str, Any]], Reply]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # the parsed body, or None


def api_error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    """The API's error envelope: {"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}."""
    return Reply(status=status, headers=dict(headers or {}), json={
        "type": "error", "error": {"type": error_type, "message": message},
        "request_id": f"req_stub_{uuid.uuid4().hex[:12]}",
    })


def _retry_headers(retry_after: float | str | None, retry_after_ms: float | None) -> dict[str, str]:
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    return headers


def rate_limited(retry_after: float | str | None = 1, retry_after_ms: float | None = None) -> Reply:
    """429 rate_limit_error; the real API sends `retry-after` in seconds."""
    return api_error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit.",
                     _retry_headers(retry_after, retry_after_ms))


def overloaded(retry_after: float | str | None = None, retry_after_ms: float | None = None) -> Reply:
    """529 overloaded_error (the API is temporarily overloaded)."""
    return api_error(529, "overloaded_error", "Overloaded", _retry_headers(retry_after, retry_after_ms))


def server_error(status: int = 500, retry_after: float | str | None = None,
                 retry_after_ms: float | None = None) -> Reply:
    return api_error(status, "api_error", "Internal server error", _retry_headers(retry_after, retry_after_ms))


def malformed_json() -> Reply:
    """A 200 that says JSON but is cut off mid-object."""
    return Reply(body=b'{"id": "msg_broken", "type": "message", "role": "assistant", "content": [{"type": "te')


def not_json(text: str = "<html>upstream proxy error page</html>") -> Reply:
    return Reply(body=text.encode(), content_type="text/html")


def hang(seconds: float, then: Scripted | None = None) -> Callable[[dict[str, Any]], Reply]:
    """Answer only after `seconds` (to trip a client timeout); then `then` or a normal answer."""
    def build(request: dict[str, Any], stub: AnthropicStub | None = None) -> Reply:
        reply = _resolve(then, request, stub) if then is not None else stub.default_message_reply(request)
        reply.delay_s = seconds
        return reply
    build.wants_stub = True  # type: ignore[attr-defined]
    return build


def truncated(text: str = '{"reasoning": "Response 1 answers the question but Response 2 is') -> Callable:
    """A message cut off by max_tokens before any tool call: text only, stop_reason "max_tokens"."""
    def build(request: dict[str, Any], stub: AnthropicStub | None = None) -> Reply:
        return Reply(json=stub.message_json(request, [{"type": "text", "text": text}], "max_tokens",
                                            output_tokens=int(request.get("max_tokens") or 1)))
    build.wants_stub = True  # type: ignore[attr-defined]
    return build


def text_message(text: str, stop_reason: str = "end_turn") -> Callable:
    """A message with one text block and no tool use."""
    def build(request: dict[str, Any], stub: AnthropicStub | None = None) -> Reply:
        return Reply(json=stub.message_json(request, [{"type": "text", "text": text}], stop_reason))
    build.wants_stub = True  # type: ignore[attr-defined]
    return build


def chat_reply(content: str | None, finish_reason: str = "stop") -> Callable:
    """An OpenAI-style chat completion with `content` as the assistant message."""
    def build(request: dict[str, Any], stub: AnthropicStub | None = None) -> Reply:
        return Reply(json=stub.chat_json(request, content, finish_reason))
    build.wants_stub = True  # type: ignore[attr-defined]
    return build


def _resolve(scripted: Scripted, request: dict[str, Any], stub: AnthropicStub | None) -> Reply:
    if isinstance(scripted, Reply):
        return Reply(**{**scripted.__dict__, "headers": dict(scripted.headers)})  # a copy: replies may be reused
    if getattr(scripted, "wants_stub", False):
        return scripted(request, stub)
    return scripted(request)


# --- judge policies (decide hooks) ---------------------------------------------------------------


def request_text(request: dict[str, Any]) -> str:
    """All user-visible text of a Messages or chat request (system excluded)."""
    parts = []
    for message in request.get("messages") or []:
        if message.get("role") == "system":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(b.get("text", "") for b in content if isinstance(b, dict))
    return "\n".join(parts)


_TAGGED = re.compile(r"<response_([12])\b[^>]*>\n?(.*?)\n?</response_\1\b", re.DOTALL)
_HEADED = re.compile(r"(?:^|\n)\W*Response\s*([12])\W*\n(.*?)(?=\n\W*Response\s*[12]\W*\n|\Z)",
                     re.DOTALL | re.IGNORECASE)


def responses_in(request: dict[str, Any]) -> tuple[str, str] | None:
    """(Response 1, Response 2) as shown to the judge: `<response_1 ...>` blocks (judges/template.py)
    or "Response 1:" headings; None if the prompt has neither."""
    text = request_text(request)
    for pattern in (_TAGGED, _HEADED):
        found = dict(pattern.findall(text))
        if "1" in found and "2" in found:
            return found["1"], found["2"]
    return None


def prefer_first(request: dict[str, Any]) -> dict[str, str]:
    return {"reasoning": "Response 1 is shown first, and this judge always prefers it.", "winner": "1"}


def prefer_second(request: dict[str, Any]) -> dict[str, str]:
    return {"reasoning": "This judge always prefers the second response.", "winner": "2"}


def prefer_shorter(request: dict[str, Any]) -> dict[str, str]:
    pair = responses_in(request)
    if pair is None:
        return {"reasoning": "No pair of responses was found in the prompt.", "winner": "tie"}
    first, second = (len(r.strip()) for r in pair)
    winner = "tie" if first == second else ("1" if first < second else "2")
    return {"reasoning": f"Prefers the shorter response ({first} vs {second} characters).", "winner": winner}


# --- the server ----------------------------------------------------------------------------------


class AnthropicStub:
    def __init__(self, *, decide: Callable[[dict[str, Any]], dict[str, Any]] = prefer_first, latency_s: float = 0.0,
                 polls_until_ended: int = 1, api_key: str | None = None):
        self.decide = decide
        self.latency_s = latency_s
        self.polls_until_ended = polls_until_ended
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.queues: dict[str, deque[Scripted]] = {}
        self.fallback: dict[str, Scripted] = {}
        self.batch_outcomes: dict[str, str] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> AnthropicStub:
        stub = self

        class Handler(_Handler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, client_address: None  # a client that hung up: nothing to say
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="anthropic-stub", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the stub first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    # scripting
    def enqueue(self, *replies: Scripted, path: str = MESSAGES) -> None:
        with self._lock:
            self.queues.setdefault(path, deque()).extend(replies)

    def requests_to(self, path: str, method: str = "POST") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path and r.method == method]

    def _next_scripted(self, path: str) -> Scripted | None:
        with self._lock:
            queue = self.queues.get(path)
            if queue:
                return queue.popleft()
            return self.fallback.get(path)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}_stub{next(self._ids):06d}{uuid.uuid4().hex[:6]}"

    # message shapes
    @staticmethod
    def _count_tokens(value: Any) -> int:
        """A deterministic stand-in for a tokenizer: ~4 characters per token."""
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return max(1, len(text) // 4)

    def message_json(self, request: dict[str, Any], content: list[dict[str, Any]], stop_reason: str, *,
                     output_tokens: int | None = None) -> dict[str, Any]:
        prompt = [request.get("system"), request.get("messages"), request.get("tools")]
        return {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": request.get("model") or DEFAULT_MODEL,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._count_tokens(prompt),
                "output_tokens": output_tokens if output_tokens is not None else self._count_tokens(content),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "service_tier": "standard",
            },
        }

    def default_message(self, request: dict[str, Any]) -> dict[str, Any]:
        """What the judge answers: a tool call when a tool is forced or offered, else JSON text."""
        verdict = self.decide(request)
        tools = request.get("tools") or []
        choice = request.get("tool_choice") or {}
        name = choice.get("name") if choice.get("type") == "tool" else (tools[0].get("name") if tools else None)
        if name and choice.get("type") != "none":
            content = [{"type": "tool_use", "id": self._next_id("toolu"), "name": name, "input": verdict}]
            return self.message_json(request, content, "tool_use")
        return self.message_json(request, [{"type": "text", "text": json.dumps(verdict)}], "end_turn")

    def default_message_reply(self, request: dict[str, Any]) -> Reply:
        return Reply(json=self.default_message(request))

    def chat_json(self, request: dict[str, Any], content: str | None, finish_reason: str = "stop") -> dict[str, Any]:
        return {
            "id": self._next_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model") or "stub-judge",
            "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": self._count_tokens(request.get("messages")),
                      "completion_tokens": self._count_tokens(content or ""),
                      "total_tokens": 0},
        }

    @staticmethod
    def validate_params(params: Any) -> str | None:
        """The checks the real API makes that a client bug would trip; the error message, or None."""
        if not isinstance(params, dict):
            return "body: expected an object"
        if not isinstance(params.get("model"), str) or not params["model"]:
            return "model: Field required"
        if not isinstance(params.get("max_tokens"), int) or params["max_tokens"] < 1:
            return "max_tokens: Field required (an integer >= 1)"
        messages = params.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        if messages[0].get("role") != "user":
            return "messages: first message must use the \"user\" role"
        tools = params.get("tools") or []
        for tool in tools:
            if not isinstance(tool, dict) or not tool.get("name") or not isinstance(tool.get("input_schema"), dict):
                return "tools: each tool needs a name and an input_schema object"
        choice = params.get("tool_choice")
        if (isinstance(choice, dict) and choice.get("type") == "tool"
                and choice.get("name") not in {t["name"] for t in tools}):
            return f"tool_choice: tool {choice.get('name')!r} not found in tools"
        return None

    # batches
    def create_batch(self, body: Any) -> Reply:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return api_error(400, "invalid_request_error", "requests: at least one request is required")
        seen = set()
        for entry in requests:
            custom_id = entry.get("custom_id") if isinstance(entry, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
                return api_error(400, "invalid_request_error", f"requests: invalid custom_id {custom_id!r}")
            if custom_id in seen:
                return api_error(400, "invalid_request_error", f"requests: duplicate custom_id {custom_id!r}")
            seen.add(custom_id)
            if problem := self.validate_params(entry.get("params")):
                return api_error(400, "invalid_request_error", f"requests[{custom_id}].params.{problem}")
        now = datetime.now(UTC)
        batch_id = self._next_id("msgbatch")
        results = []
        for entry in requests:
            custom_id, params = entry["custom_id"], entry["params"]
            outcome = self.batch_outcomes.get(custom_id, "succeeded")
            if outcome == "missing":
                continue
            if outcome in ("succeeded", "malformed"):
                result = {"type": "succeeded", "message": self.default_message(params)}
            elif outcome == "errored":
                result = {"type": "errored", "error": {"type": "error", "request_id": None, "error": {
                    "type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000 maximum"}}}
            else:
                result = {"type": outcome}
            results.append({"custom_id": custom_id, "result": result, "_malformed": outcome == "malformed"})
        batch = {
            "id": batch_id, "type": "message_batch", "processing_status": "in_progress",
            "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": now.isoformat().replace("+00:00", "Z"),
            "expires_at": (now + timedelta(hours=24)).isoformat().replace("+00:00", "Z"),
            "ended_at": None, "cancel_initiated_at": None, "archived_at": None, "results_url": None,
        }
        with self._lock:
            self.batches[batch_id] = {"batch": batch, "results": results, "polls": 0}
        return Reply(json=batch)

    def poll_batch(self, batch_id: str) -> Reply:
        with self._lock:
            state = self.batches.get(batch_id)
            if state is None:
                return api_error(404, "not_found_error", f"message batch {batch_id} not found")
            state["polls"] += 1
            batch = state["batch"]
            if batch["processing_status"] != "ended" and state["polls"] >= self.polls_until_ended:
                counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
                for line in state["results"]:
                    counts[line["result"]["type"]] += 1
                batch.update(processing_status="ended", request_counts=counts,
                             ended_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                             results_url=f"{self.base_url}/v1/messages/batches/{batch_id}/results")
            return Reply(json=json.loads(json.dumps(batch)))

    def batch_results(self, batch_id: str) -> Reply:
        with self._lock:
            state = self.batches.get(batch_id)
            if state is None:
                return api_error(404, "not_found_error", f"message batch {batch_id} not found")
            if state["batch"]["processing_status"] != "ended":
                return api_error(400, "invalid_request_error", "results are not available until the batch has ended")
            # Results come in no particular order: reversed, so clients must key by custom_id.
            lines = []
            for line in reversed(state["results"]):
                text = json.dumps({k: v for k, v in line.items() if k != "_malformed"})
                lines.append(text[: len(text) // 2] if line["_malformed"] else text)
        return Reply(body=("\n".join(lines) + "\n").encode(), content_type="application/binary")

    # routing
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        request_json: Any = None
        if body:
            try:
                request_json = json.loads(body)
            except ValueError:
                request_json = None
        with self._lock:
            self.requests.append(Recorded(method, path, headers, body, request_json))
        if self.latency_s:
            time.sleep(self.latency_s)

        if path == CHAT and method == "POST":
            return self._chat(request_json if isinstance(request_json, dict) else {})

        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not key or (self.api_key is not None and key != self.api_key):
            return api_error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return api_error(400, "invalid_request_error", "anthropic-version: header is required")
        if body and request_json is None:
            return api_error(400, "invalid_request_error", "The request body is not valid JSON.")

        if path == MESSAGES and method == "POST":
            if scripted := self._next_scripted(MESSAGES):
                return _resolve(scripted, request_json or {}, self)
            if problem := self.validate_params(request_json):
                return api_error(400, "invalid_request_error", problem)
            return self.default_message_reply(request_json)
        if path == BATCHES and method == "POST":
            if scripted := self._next_scripted(BATCHES):
                return _resolve(scripted, request_json or {}, self)
            return self.create_batch(request_json)
        if method == "GET" and (match := _BATCH_PATH.match(path)):
            if scripted := self._next_scripted(path):
                return _resolve(scripted, {}, self)
            return self.batch_results(match[1]) if match[2] else self.poll_batch(match[1])
        return api_error(404, "not_found_error", f"{method} {path} not found")

    def _chat(self, request: dict[str, Any]) -> Reply:
        if scripted := self._next_scripted(CHAT):
            return _resolve(scripted, request, self)
        return Reply(json=self.chat_json(request, json.dumps(self.decide(request))))


class _Handler(BaseHTTPRequestHandler):
    owner: AnthropicStub
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API; every answer has a Content-Length
    # Headers and body go out as separate small writes; with Nagle on, the client's delayed ACK
    # holds each reply ~40 ms, which would show up as fake latency in benchmarks.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silent: the requests carry the API key

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        reply = self.owner.handle(method, path, headers, body)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        payload = reply.body if reply.body is not None else json.dumps(reply.json).encode()
        self.send_response(reply.status, {529: "Overloaded"}.get(reply.status))
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", f"req_stub_{uuid.uuid4().hex[:12]}")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")
