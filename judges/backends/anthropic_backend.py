"""The Anthropic judge: the Messages API with one forced tool (`record_verdict`), so the verdict
comes back as a tool input dict instead of prose, and the Message Batches API for bulk judging at
half price.

Retries are the SDK's own (`max_retries`): connection errors, timeouts, 408/409/429 and every 5xx
(529 overloaded included), with exponential backoff from 0.5 s (x0.75-1 jitter, capped at 8 s), or
exactly the server's `retry-after-ms` / `retry-after` when it sends one.

The API key is a secret: it lives only inside the SDK client. Errors are re-raised as
AnthropicJudgeError with a short message built from the status and the API's error type and
message, outside the SDK exception's context, so no request object (whose headers carry the key)
travels with them.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
from anthropic.types import Message
from anthropic.types.messages import MessageBatchIndividualResponse
from pydantic import SecretStr

from feedback.errors import UserError
from feedback.settings import get_settings
from judges.backends.base import VERDICT_SCHEMA, JudgeReply, JudgeRequest
from judges.pricing import cost_usd, price_per_mtok

DEFAULT_MODEL = "claude-sonnet-4-6"  # the SDK flags claude-sonnet-4-5 as deprecated (EOL 2026-11-30)
MODEL_ENV = "JUDGE_ANTHROPIC_MODEL"  # read at call time; an explicit `model` option wins
TOOL_NAME = "record_verdict"
VERDICT_TOOL: dict[str, Any] = {
    "name": TOOL_NAME,
    "description": "Record your verdict: which response is better under the principle, with brief reasoning.",
    "input_schema": VERDICT_SCHEMA,
}
# What the Batches API accepts as a custom_id.
_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_MESSAGE_CHARS = 300
UNREADABLE_LINES = ""  # batch_results() key for lines whose custom_id could not be read

T = TypeVar("T")


class AnthropicJudgeError(RuntimeError):
    """A judge request that failed for good. The message is short and never holds the API key."""

    def __init__(self, message: str, *, status_code: int | None = None, error_type: str | None = None,
                 request_id: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.request_id = request_id


def _short(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "..."


class AnthropicJudge:
    """JudgeBackend and BatchJudgeBackend over the official SDK. Thread-safe (one shared client)."""

    name = "anthropic"
    answer_format = "tool"  # the verdict comes back through the forced record_verdict tool

    def __init__(self, *, model: str, api_key: str, base_url: str | None = None, max_retries: int = 4,
                 timeout_s: float = 60.0):
        self.model = model
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        # base_url None: the SDK's own default, which honours ANTHROPIC_BASE_URL.
        self._client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=max_retries,
                                           timeout=timeout_s)
        self.base_url = str(self._client.base_url)

    @property
    def price_per_mtok(self) -> tuple[float, float] | None:
        return price_per_mtok(self.model)

    def __repr__(self) -> str:
        return (f"AnthropicJudge(model={self.model!r}, base_url={self.base_url!r}, "
                f"max_retries={self.max_retries}, timeout_s={self.timeout_s})")

    # --- one request ---------------------------------------------------------------------------

    def params(self, request: JudgeRequest) -> dict[str, Any]:
        """The Messages API parameters for one request (the same in a batch)."""
        return {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "system": request.system,
            "messages": [{"role": "user", "content": request.user}],
            "tools": [VERDICT_TOOL],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
        }

    def complete(self, request: JudgeRequest) -> JudgeReply:
        message = self._call(lambda: self._client.messages.create(**self.params(request)))
        return self._reply(message, batch=False)

    # --- Message Batches -----------------------------------------------------------------------

    def submit_batch(self, requests: list[JudgeRequest]) -> str:
        if not requests:
            raise ValueError("A batch needs at least one request.")
        ids = [r.custom_id for r in requests]
        bad = [i for i in ids if not _CUSTOM_ID.match(i)]
        if bad:
            raise ValueError(f"Batch custom_ids must match {_CUSTOM_ID.pattern}; got {bad[:3]!r}.")
        if len(set(ids)) != len(ids):
            raise ValueError("Batch custom_ids must be unique.")
        entries = [{"custom_id": r.custom_id, "params": self.params(r)} for r in requests]
        batch = self._call(lambda: self._client.messages.batches.create(requests=entries))
        return batch.id

    def batch_done(self, batch_id: str) -> bool:
        batch = self._call(lambda: self._client.messages.batches.retrieve(batch_id))
        return batch.processing_status == "ended"

    def batch_results(self, batch_id: str) -> dict[str, JudgeReply | Exception]:
        """custom_id -> reply (billed at the batch rate) or the error that request ended with."""
        def read() -> dict[str, JudgeReply | Exception]:
            status = self._client.messages.batches.retrieve(batch_id).processing_status
            if status != "ended":
                raise AnthropicJudgeError(f"Batch {batch_id} has not ended yet (processing_status {status!r}).")
            # Line by line, not through the SDK's decoder: one malformed line would end its
            # iteration and lose every result after it. A bad line fails only its custom_id (if
            # it can be read at all); the caller treats a custom_id with no entry as missing.
            out: dict[str, JudgeReply | Exception] = {}
            decoder = self._client.messages.batches.results(batch_id)
            try:
                unreadable = []
                for number, line in enumerate(decoder.http_response.iter_lines(), start=1):
                    if line.strip():
                        custom_id, entry = self._batch_line(number, line)
                        if custom_id is not None:
                            out[custom_id] = entry
                        else:
                            unreadable.append(str(entry))
            finally:
                decoder.close()
            if unreadable:  # under UNREADABLE_LINES (no custom_id can be empty): why some may be missing
                out[UNREADABLE_LINES] = AnthropicJudgeError("; ".join(unreadable)[:500], error_type="invalid_response")
            return out

        return self._call(read)

    def _batch_line(self, number: int, line: str) -> tuple[str | None, JudgeReply | Exception]:
        """(custom_id, its reply or error) for one line of a results file; custom_id None when
        the line is too broken to say whose it is."""
        try:
            raw = json.loads(line)
        except ValueError as exc:
            return None, AnthropicJudgeError(f"results line {number} is not JSON ({exc})")
        custom_id = raw.get("custom_id") if isinstance(raw, dict) else None
        if not isinstance(custom_id, str):
            return None, AnthropicJudgeError(f"results line {number} has no custom_id")
        try:
            parsed = MessageBatchIndividualResponse.model_validate(raw)
        except ValueError as exc:
            return custom_id, AnthropicJudgeError(f"batch request {custom_id}: unreadable result line "
                                                  f"{number}: {_short(exc)[:160]}", error_type="invalid_response")
        return custom_id, self._batch_entry(custom_id, parsed.result)

    def _batch_entry(self, custom_id: str, result: Any) -> JudgeReply | Exception:
        kind = getattr(result, "type", None)
        if kind == "succeeded":
            try:
                return self._reply(result.message, batch=True)
            except AnthropicJudgeError as exc:
                return exc
        if kind == "errored":
            error = getattr(getattr(result, "error", None), "error", None)
            error_type = getattr(error, "type", None) or "error"
            return AnthropicJudgeError(
                f"batch request {custom_id} errored: {error_type}: {_short(getattr(error, 'message', ''))}",
                error_type=error_type)
        if kind in ("expired", "canceled"):
            return AnthropicJudgeError(f"batch request {custom_id} {kind} before it was processed", error_type=kind)
        return AnthropicJudgeError(f"batch request {custom_id}: unknown result type {kind!r}")

    # --- shared --------------------------------------------------------------------------------

    def _reply(self, message: Any, *, batch: bool) -> JudgeReply:
        if not isinstance(message, Message):
            # The SDK hands back the raw text when a 2xx answer is not declared as JSON.
            raise AnthropicJudgeError(f"The Anthropic API answered with something that is not a message: "
                                      f"{_short(message)[:120]}")
        structured: dict[str, Any] | None = None
        texts: list[str] = []
        for block in message.content or []:
            kind = getattr(block, "type", None)
            if kind == "tool_use" and getattr(block, "name", None) == TOOL_NAME and structured is None:
                value = getattr(block, "input", None)
                structured = dict(value) if isinstance(value, dict) else None
            elif kind == "text":
                texts.append(getattr(block, "text", "") or "")
        # With tool use the verdict is the tool input; without it (e.g. stop_reason "max_tokens"
        # before the tool call) the text is all there is, and verdict parsing decides what it is worth.
        text = json.dumps(structured, ensure_ascii=False) if structured is not None else "".join(texts)
        usage = getattr(message, "usage", None)
        input_tokens = getattr(usage, "input_tokens", None)
        output_tokens = getattr(usage, "output_tokens", None)
        model = getattr(message, "model", None) or self.model
        cost = cost_usd(model, input_tokens, output_tokens, batch=batch)
        if cost is None and model != self.model:
            cost = cost_usd(self.model, input_tokens, output_tokens, batch=batch)
        extra: dict[str, Any] = {"message_id": getattr(message, "id", None)}
        if batch:
            extra["batch"] = True
        return JudgeReply(text=text, structured=structured, model=model, input_tokens=input_tokens,
                          output_tokens=output_tokens, cost_usd=cost, stop_reason=message.stop_reason, extra=extra)

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one SDK call (its retries included); failures become AnthropicJudgeError.

        The new error is raised outside the `except` block, so it has neither __cause__ nor
        __context__: the SDK error, and the request (with its auth header) it points to, stay here.
        """
        try:
            return fn()
        except Exception as exc:  # translated below; re-raised as is if not ours to translate
            error = self._translate(exc)
            if error is None:
                raise
        raise error

    def _translate(self, exc: Exception) -> AnthropicJudgeError | None:
        retries = f"after {self.max_retries} retr{'y' if self.max_retries == 1 else 'ies'}"
        if isinstance(exc, anthropic.APIStatusError):
            error_type = exc.type if isinstance(exc.type, str) else None
            detail = exc.api_message or (exc.body if isinstance(exc.body, str) else "")
            return AnthropicJudgeError(
                f"Anthropic API error {exc.status_code}" + (f" ({error_type})" if error_type else "")
                + (f": {_short(detail)}" if detail else "")
                + (f" [{retries}]" if exc.status_code in (408, 409, 429) or exc.status_code >= 500 else ""),
                status_code=exc.status_code, error_type=error_type, request_id=exc.request_id)
        if isinstance(exc, anthropic.APITimeoutError):
            return AnthropicJudgeError(f"Anthropic API request timed out "
                                       f"({self.timeout_s:g} s per attempt, {retries}).",
                                       error_type="timeout")
        if isinstance(exc, anthropic.APIConnectionError):
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection error"
            return AnthropicJudgeError(f"Could not reach the Anthropic API at {self.base_url} ({cause}, {retries}).",
                                       error_type="connection")
        if isinstance(exc, anthropic.APIResponseValidationError):
            return AnthropicJudgeError(f"The Anthropic API answered with an unexpected body: {_short(exc.message)}",
                                       status_code=exc.status_code, error_type="invalid_response")
        if isinstance(exc, json.JSONDecodeError):
            return AnthropicJudgeError(f"The Anthropic API answered with a body that is not valid JSON "
                                       f"({exc.msg}; char {exc.pos}).", error_type="invalid_response")
        if isinstance(exc, anthropic.AnthropicError):  # e.g. batch results asked for before the batch ended
            return AnthropicJudgeError(f"Anthropic SDK error: {_short(exc)}")
        return None


def make_anthropic_backend(model: str | None = None, api_key: str | SecretStr | None = None,
                           base_url: str | None = None, max_retries: int | None = None,
                           timeout_s: float | None = None) -> AnthropicJudge:
    """The Anthropic judge. Defaults, read now: api_key from ANTHROPIC_API_KEY (settings), model
    from JUDGE_ANTHROPIC_MODEL or DEFAULT_MODEL, base_url from ANTHROPIC_BASE_URL or the API's,
    retries and timeout from JUDGE_MAX_RETRIES and JUDGE_TIMEOUT_S."""
    settings = get_settings()
    max_retries = settings.judge_max_retries if max_retries is None else max_retries
    timeout_s = settings.judge_timeout_s if timeout_s is None else timeout_s
    if api_key is None:
        api_key = settings.anthropic_api_key
    if isinstance(api_key, SecretStr):
        api_key = api_key.get_secret_value()
    if not api_key or not api_key.strip():
        raise UserError("ANTHROPIC_API_KEY is not set")
    model = model or settings.judge_anthropic_model.strip() or DEFAULT_MODEL
    return AnthropicJudge(model=model, api_key=api_key.strip(), base_url=base_url, max_retries=max_retries,
                          timeout_s=timeout_s)
