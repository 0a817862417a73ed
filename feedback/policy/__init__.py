"""Policy clients: one interface, two implementations (in-process transformers, OpenAI-compatible
HTTP such as `vllm serve`). `client_for` picks one for a policy version."""
from feedback.policy.base import Completion, PolicyClient, SamplingParams
from feedback.policy.factory import client_for

__all__ = ["Completion", "PolicyClient", "SamplingParams", "client_for"]
