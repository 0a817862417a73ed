"""The OpenAI-compatible judge: a judge model behind `vllm serve`, llama.cpp's server, or any
server that speaks /v1/chat/completions.

JSON mode (`response_format={"type": "json_object"}`) is asked for while the server accepts it
(vLLM and llama.cpp do). A server that rejects the request with 400/422 is asked again without it;
if that works, this backend stops asking for JSON mode and relies on the prompt ("Reply with JSON
only") and on judges/verdict.py. Retries and timeouts are the openai SDK's own.
"""
from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from feedback.errors import UserError
from feedback.settings import get_settings
from judges.backends.base import JudgeReply, JudgeRequest

BASE_URL_ENV = "JUDGE_BASE_URL"  # e.g. http://127.0.0.1:8001/v1
MODEL_ENV = "JUDGE_MODEL"  # the model name the server serves
API_KEY_ENV = "JUDGE_API_KEY"  # optional; vLLM accepts any key unless started with --api-key
_MAX_MESSAGE_CHARS = 300


class OpenAIJudgeError(RuntimeError):
    """A judge request that failed for good. The message is short and never holds the API key."""

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


def _short(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "..."


def _parse_object(content: str) -> dict[str, Any] | None:
    try:
        value = json.loads(content)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class OpenAIJudge:
    name = "openai"
    answer_format = "json"  # JSON mode where the server has it, else the same instruction in prose
    price_per_mtok = None  # a self-hosted server has no price list: give one for a budget

    def __init__(self, *, model: str, base_url: str, api_key: str = "EMPTY", max_retries: int = 4,
                 timeout_s: float = 60.0, json_mode: bool | None = None):
        self.model = model
        self.base_url = base_url
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        # None: not known yet (ask, and learn from the answer); True/False: decided.
        self.json_mode = json_mode
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout_s)

    def __repr__(self) -> str:
        return (f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, "
                f"json_mode={self.json_mode}, max_retries={self.max_retries})")

    def complete(self, request: JudgeRequest) -> JudgeReply:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": request.system}, {"role": "user", "content": request.user}],
            "temperature": 0,
            "max_tokens": request.max_tokens,
        }
        response = None
        error: OpenAIJudgeError | None = None
        try:
            if self.json_mode is False:
                response = self._client.chat.completions.create(**kwargs)
            else:
                try:
                    response = self._client.chat.completions.create(**kwargs, response_format={"type": "json_object"})
                    self.json_mode = True
                except (openai.BadRequestError, openai.UnprocessableEntityError):
                    if self.json_mode is True:
                        raise
                    response = self._client.chat.completions.create(**kwargs)
                    self.json_mode = False  # the plain request worked: this server does not take JSON mode
        except Exception as exc:  # translated below; re-raised as is if not ours to translate
            error = self._translate(exc)
            if error is None:
                raise
        if error is not None:
            raise error  # outside `except`: no SDK error (nor its request headers) rides along
        return self._reply(response)

    def _reply(self, response: Any) -> JudgeReply:
        if not isinstance(response, ChatCompletion) or not response.choices:
            raise OpenAIJudgeError(f"The judge server at {self.base_url} answered without a completion: "
                                   f"{_short(response)[:120]}")
        choice = response.choices[0]
        content = (choice.message.content if choice.message else None) or ""
        usage = response.usage
        return JudgeReply(
            text=content, structured=_parse_object(content.strip()), model=response.model or self.model,
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            cost_usd=None,  # a self-hosted server has no price list
            stop_reason=choice.finish_reason, extra={"completion_id": response.id, "json_mode": self.json_mode},
        )

    def _translate(self, exc: Exception) -> OpenAIJudgeError | None:
        where = f"the judge server at {self.base_url}"
        if isinstance(exc, openai.APIStatusError):
            return OpenAIJudgeError(f"Error {exc.status_code} from {where}: {_short(exc.message)}",
                                    status_code=exc.status_code)
        if isinstance(exc, openai.APITimeoutError):
            return OpenAIJudgeError(f"Request to {where} timed out ({self.timeout_s:g} s per attempt, "
                                    f"{self.max_retries} retries).")
        if isinstance(exc, openai.APIConnectionError):
            return OpenAIJudgeError(f"Could not reach {where} ({self.max_retries} retries).")
        if isinstance(exc, json.JSONDecodeError):
            return OpenAIJudgeError(f"{where} answered with a body that is not valid JSON ({exc.msg}).")
        if isinstance(exc, openai.OpenAIError):
            return OpenAIJudgeError(f"Error from {where}: {_short(exc)}")
        return None


def make_openai_backend(model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                        max_retries: int | None = None, timeout_s: float | None = None,
                        json_mode: bool | None = None) -> OpenAIJudge:
    """Defaults read now from JUDGE_BASE_URL, JUDGE_MODEL, JUDGE_API_KEY (default "EMPTY"),
    JUDGE_MAX_RETRIES and JUDGE_TIMEOUT_S."""
    settings = get_settings()
    max_retries = settings.judge_max_retries if max_retries is None else max_retries
    timeout_s = settings.judge_timeout_s if timeout_s is None else timeout_s
    base_url = base_url or (settings.judge_base_url or "").strip()
    if not base_url:
        raise UserError(f"{BASE_URL_ENV} is not set: give the judge server's OpenAI-compatible URL, "
                        "e.g. http://127.0.0.1:8001/v1.")
    model = model or (settings.judge_model or "").strip()
    if not model:
        raise UserError(f"{MODEL_ENV} is not set: give the model name the judge server serves.")
    api_key = api_key or settings.judge_api_key.get_secret_value().strip() or "EMPTY"
    return OpenAIJudge(model=model, base_url=base_url, api_key=api_key, max_retries=max_retries,
                       timeout_s=timeout_s, json_mode=json_mode)
