"""Sampling from any OpenAI-compatible chat server: `vllm serve` in production, llama.cpp's
server in the tests. Retries with exponential backoff and timeouts are the openai SDK's own
(exponential backoff with jitter on 408/409/429/5xx and connection errors, honouring a
non-zero Retry-After); we add bounded concurrency and top-ups for servers that
return fewer choices than `n` (llama.cpp ignores `n`, vLLM honours it).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI

from feedback.policy.base import Completion, Messages, SamplingParams


class OpenAIPolicyClient:
    def __init__(
        self, *, base_url: str, model: str, api_key: str = "EMPTY", max_concurrency: int = 8,
        timeout_s: float = 120.0, max_retries: int = 4,
    ):
        self.model = model
        self.max_concurrency = max_concurrency
        self.description = f"openai:{model}@{base_url}"
        self._client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def generate(self, conversations: list[Messages], params: SamplingParams) -> list[list[Completion]]:
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(lambda c: self._one(c, params), conversations))

    def _one(self, messages: Messages, params: SamplingParams) -> list[Completion]:
        completions: list[Completion] = []
        # A server that ignores `n` answers with one choice: ask again for the rest, with a
        # fresh seed each time so a seeded server does not repeat itself. Bounded: a server
        # that keeps answering with nothing gets `n` attempts in all.
        for attempt in range(params.n):
            missing = params.n - len(completions)
            if missing <= 0:
                break
            seed = None if params.seed is None else params.seed + attempt
            t0 = time.perf_counter()
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, n=missing, seed=seed,
                temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
            )
            latency_ms = (time.perf_counter() - t0) * 1000
            usage = response.usage
            single = len(response.choices) == 1
            for choice in response.choices[:missing]:
                completions.append(Completion(
                    text=(choice.message.content or "").strip(),
                    finish_reason=choice.finish_reason,
                    prompt_tokens=usage.prompt_tokens if usage else None,
                    # usage sums over choices; per-choice counts are only known for a single choice.
                    completion_tokens=usage.completion_tokens if usage and single else None,
                    latency_ms=latency_ms,
                    seed=seed,
                ))
        return completions
