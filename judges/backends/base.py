"""What every judge backend takes and returns, and the registry that names them.

A backend turns one request (system text, user text) into one reply: the raw text and, where the
API supports it, the structured verdict it was asked for (Anthropic tool use, JSON mode). The
parsing of verdicts is not the backend's job: judges/verdict.py does it, the same for all.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from feedback.errors import UserError

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

    def complete(self, request: JudgeRequest) -> JudgeReply:
        """One request, with the backend's own retries; raises on a final failure."""
        ...


# name -> module that registers it (imported on first use, so an unused SDK is never loaded)
_BACKEND_MODULES = {
    "anthropic": "judges.backends.anthropic_backend",
    "openai": "judges.backends.openai_backend",
    "local": "judges.backends.local_backend",
}
_FACTORIES: dict[str, Callable[..., JudgeBackend]] = {}


def register_backend(name: str):
    """Register a factory `(**options) -> JudgeBackend`; tests register fakes the same way."""
    def deco(factory):
        _FACTORIES[name] = factory
        return factory
    return deco


def backend_names() -> list[str]:
    return sorted(set(_BACKEND_MODULES) | set(_FACTORIES))


def get_backend(name: str, **options: Any) -> JudgeBackend:
    if name not in _FACTORIES and name in _BACKEND_MODULES:
        importlib.import_module(_BACKEND_MODULES[name])
    if name not in _FACTORIES:
        raise UserError(f"Unknown judge backend {name!r}; choose one of {', '.join(backend_names())}.")
    return _FACTORIES[name](**options)


class BatchJudgeBackend(JudgeBackend, Protocol):
    """A backend with a cheaper asynchronous bulk API (Anthropic's Message Batches)."""

    def submit_batch(self, requests: list[JudgeRequest]) -> str:
        """Submit all requests; return the batch id (kept in the job, so a restart polls it)."""
        ...

    def batch_done(self, batch_id: str) -> bool:
        ...

    def batch_results(self, batch_id: str) -> dict[str, JudgeReply | Exception]:
        """custom_id -> reply, or the error that request ended with."""
        ...
