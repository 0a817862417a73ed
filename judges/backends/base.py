"""What every judge backend takes and returns, and the registry that names them.

A backend turns one request (system text, user text) into one reply: the raw text and, where the
API supports it, the structured verdict it was asked for (Anthropic tool use, JSON mode). The
parsing of verdicts is not the backend's job: judges/verdict.py does it, the same for all.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from feedback.registry import Registry

# The verdict every backend is asked to produce (tool input schema / JSON mode).
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "description": "One or two sentences comparing the responses."},
        "winner": {"type": "string", "enum": ["1", "2", "tie"]},
    },
    "required": ["reasoning", "winner"],
}


@dataclass(frozen=True)
class JudgeRequest:
    system: str
    user: str
    custom_id: str = ""  # names the request inside a batch
    max_tokens: int = 400


@dataclass
class JudgeReply:
    text: str  # what the model wrote (for tool use: the tool input as JSON)
    structured: dict[str, Any] | None = None  # the tool input / parsed JSON mode object, if any
    model: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    stop_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JudgeBackend(Protocol):
    name: str
    model: str
    # How the verdict comes back, which decides the prompt's last instruction: "tool" (a forced
    # tool call) or "json" (JSON mode, or JSON asked for in prose). A backend without it: "json".
    answer_format: str
    # (input, output) USD per million tokens, or None when unknown (then a budget needs a price
    # given with the job). A backend without it: unknown.
    price_per_mtok: tuple[float, float] | None

    def complete(self, request: JudgeRequest) -> JudgeReply:
        """One request, with the backend's own retries; raises on a final failure."""
        ...


# name -> factory `(**options) -> JudgeBackend`; each is imported on first use, so an unused
# provider SDK is never loaded. Plugins and test fakes register through BACKENDS.register.
BACKENDS: Registry[Callable[..., JudgeBackend]] = Registry("judge backend", lazy={
    "anthropic": "judges.backends.anthropic_backend:make_anthropic_backend",
    "openai": "judges.backends.openai_backend:make_openai_backend",
    "local": "judges.backends.local_backend:make_local",
})


def get_backend(name: str, **options: Any) -> JudgeBackend:
    return BACKENDS.get(name)(**options)


class BatchJudgeBackend(JudgeBackend, Protocol):
    """A backend with a cheaper asynchronous bulk API (Anthropic's Message Batches)."""

    def submit_batch(self, requests: list[JudgeRequest]) -> str:
        """Submit all requests; return the batch id (kept in the job, so a restart polls it)."""
        ...

    def batch_done(self, batch_id: str) -> bool:
        ...

    def batch_results(self, batch_id: str) -> dict[str, JudgeReply | Exception]:
        """custom_id -> reply, or the error that request ended with; under the key "" (never a
        custom_id) the error of lines too broken to say whose they are."""
        ...
