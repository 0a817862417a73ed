"""The policy-client interface shared by the local and OpenAI-compatible backends."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 128
    n: int = 2  # samples per prompt
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.temperature <= 5:
            raise ValueError("temperature must be between 0 and 5")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not 1 <= self.max_new_tokens <= 8192:
            raise ValueError("max_new_tokens must be between 1 and 8192")
        if not 1 <= self.n <= 64:
            raise ValueError("n must be between 1 and 64")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Completion:
    text: str
    finish_reason: str | None  # "stop" (end of turn) or "length" (hit max_new_tokens)
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float  # wall time of the call that produced it (shared by its batch)
    seed: int | None  # the seed of that call, when one was set


class PolicyClient(Protocol):
    #: What produced the text, recorded with every response ("local:/path", "openai:model@url").
    description: str

    def generate(self, conversations: list[Messages], params: SamplingParams) -> list[list[Completion]]:
        """`params.n` completions for each conversation, in order. A backend that cannot return
        `n` (after retrying) returns fewer for that conversation rather than failing the batch."""
        ...
