"""Judge backends behind one small registry: anthropic, openai (any OpenAI-compatible server,
e.g. a judge model under `vllm serve`), and local (the in-process policy-sized model)."""
from judges.backends.base import JudgeBackend, JudgeReply, JudgeRequest, backend_names, get_backend, register_backend

__all__ = ["JudgeBackend", "JudgeReply", "JudgeRequest", "backend_names", "get_backend", "register_backend"]
