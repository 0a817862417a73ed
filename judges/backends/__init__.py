"""Judge backends behind one registry: anthropic, openai (any OpenAI-compatible server, e.g. a
judge model under `vllm serve`), and local (the in-process policy-sized model)."""
from judges.backends.base import BACKENDS, JudgeBackend, JudgeReply, JudgeRequest, get_backend

__all__ = ["BACKENDS", "JudgeBackend", "JudgeReply", "JudgeRequest", "get_backend"]
