"""The judge backends over the wire: the REAL anthropic and openai SDKs pointed (base_url) at a
local stub server (testkit/anthropic_stub.py) that speaks the APIs' JSON, including 429/529/5xx,
malformed bodies, truncated answers, timeouts and the Message Batches endpoints.

Retries stay fast because the stub's error replies carry `retry-after-ms` (which the SDK obeys
exactly); without one, the SDK waits at least 0.375 s (0.5 s minus up to 25% jitter) per retry.
"""
from __future__ import annotations

import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from feedback.errors import UserError
from judges import pricing
from judges.backends.anthropic_backend import (
    DEFAULT_MODEL,
    TOOL_NAME,
    AnthropicJudge,
    AnthropicJudgeError,
    make_anthropic_backend,
)
from judges.backends.base import VERDICT_SCHEMA, JudgeRequest, get_backend
from judges.backends.openai_backend import OpenAIJudge, OpenAIJudgeError
from judges.verdict import parse_verdict
from testkit.anthropic_stub import (
    BATCHES,
    CHAT,
    MESSAGES,
    AnthropicStub,
    api_error,
    chat_reply,
    hang,
    malformed_json,
    not_json,
    overloaded,
    prefer_second,
    prefer_shorter,
    rate_limited,
    server_error,
    text_message,
    truncated,
)

API_KEY = "sk-ant-api03-TEST-SECRET-do-not-leak-7f3a9c"
FAST = 10  # retry-after-ms on scripted errors: keeps retries at ~10 ms
SDK_LOGGERS = ("anthropic", "openai", "httpx", "httpx2", "httpcore", "httpcore2")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Nothing from the machine's environment steers these clients: no real key, no other base
    URL, and no proxy between the SDK and the loopback stub."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS",
                 "ANTHROPIC_PROFILE", "JUDGE_ANTHROPIC_MODEL", "JUDGE_BASE_URL", "JUDGE_MODEL", "JUDGE_API_KEY",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def stub():
    with AnthropicStub(api_key=API_KEY) as server:
        yield server


def judge(stub: AnthropicStub, **options) -> AnthropicJudge:
    options = {"api_key": API_KEY, "base_url": stub.base_url, "max_retries": 2, "timeout_s": 10.0, **options}
    return get_backend("anthropic", **options)


def req(custom_id: str = "", user: str = "Which response is better?", max_tokens: int = 400) -> JudgeRequest:
    return JudgeRequest(system="You are an impartial judge.", user=user, custom_id=custom_id, max_tokens=max_tokens)


# --- one request -----------------------------------------------------------------------------------


def test_tool_use_verdict_comes_back_structured(stub):
    stub.decide = prefer_second
    reply = judge(stub).complete(req())

    assert reply.structured == {"reasoning": "This judge always prefers the second response.", "winner": "2"}
    assert json.loads(reply.text) == reply.structured
    assert reply.stop_reason == "tool_use"
    assert reply.model == DEFAULT_MODEL
    assert parse_verdict(reply.text, reply.structured) == "2"

    [sent] = stub.requests_to(MESSAGES)
    assert sent.json == {
        "model": DEFAULT_MODEL, "max_tokens": 400, "system": "You are an impartial judge.",
        "messages": [{"role": "user", "content": "Which response is better?"}],
        "tools": [{"name": TOOL_NAME, "description": sent.json["tools"][0]["description"],
                   "input_schema": VERDICT_SCHEMA}],
        "tool_choice": {"type": "tool", "name": TOOL_NAME},
    }
    assert sent.headers["anthropic-version"]
    # This SDK sends the key as a bearer token (older ones used x-api-key): either way it is on the wire.
    assert API_KEY in (sent.headers.get("x-api-key", ""), sent.headers.get("authorization", "").removeprefix("Bearer "))


def test_usage_and_cost_from_the_price_table(stub):
    reply = judge(stub, model="claude-haiku-4-5").complete(req())
    assert reply.input_tokens > 0 and reply.output_tokens > 0
    assert reply.cost_usd == pytest.approx((reply.input_tokens * 1.00 + reply.output_tokens * 5.00) / 1e6)

    unknown = judge(stub, model="claude-unreleased-9").complete(req())
    assert unknown.model == "claude-unreleased-9" and unknown.cost_usd is None


def test_pricing_table():
    assert pricing.cost_usd("claude-sonnet-4-6", 1_000_000, 1_000_000) == pytest.approx(18.0)
    assert pricing.cost_usd("claude-sonnet-4-6", 1_000_000, 1_000_000, batch=True) == pytest.approx(9.0)
    assert pricing.cost_usd("claude-haiku-4-5-20251001", 2_000, 400) == pytest.approx(0.004)  # dated snapshot
    assert pricing.cost_usd("claude-opus-4-20250514", 1_000_000, 0) == pytest.approx(15.0)
    assert pricing.cost_usd("some-local-model", 10, 10) is None
    assert pricing.cost_usd("claude-sonnet-4-6", None, 10) is None


def test_model_from_env_at_call_time(stub, monkeypatch):
    assert judge(stub).model == DEFAULT_MODEL
    monkeypatch.setenv("JUDGE_ANTHROPIC_MODEL", "claude-opus-4-6")
    backend = judge(stub)
    assert backend.model == "claude-opus-4-6"
    backend.complete(req())
    assert stub.requests_to(MESSAGES)[-1].json["model"] == "claude-opus-4-6"
    assert judge(stub, model="claude-haiku-4-5").model == "claude-haiku-4-5"  # an explicit option wins


def test_key_and_base_url_from_env(stub, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", stub.base_url)  # the SDK's own default honours it
    reply = get_backend("anthropic", max_retries=0).complete(req())
    assert reply.structured["winner"] == "1"


def test_missing_key_is_a_user_error(monkeypatch):
    with pytest.raises(UserError, match="^ANTHROPIC_API_KEY is not set$"):
        get_backend("anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "   ")
    with pytest.raises(UserError, match="^ANTHROPIC_API_KEY is not set$"):
        make_anthropic_backend()


def test_wrong_key_is_not_retried_and_not_echoed(stub):
    with pytest.raises(AnthropicJudgeError) as info:
        judge(stub, api_key="sk-ant-wrong-key-123").complete(req())
    assert info.value.status_code == 401 and info.value.error_type == "authentication_error"
    assert "sk-ant-wrong-key-123" not in str(info.value)
    assert len(stub.requests_to(MESSAGES)) == 1


# --- retries ---------------------------------------------------------------------------------------


def test_429_then_200_succeeds_and_honours_retry_after(stub):
    stub.enqueue(rate_limited(retry_after="0.3"))
    t0 = time.monotonic()
    reply = judge(stub).complete(req())
    elapsed = time.monotonic() - t0
    assert reply.structured["winner"] == "1"
    assert 0.3 <= elapsed < 2.0  # waited what the server asked, not the SDK's own backoff
    first, second = stub.requests_to(MESSAGES)
    assert (first.headers["x-stainless-retry-count"], second.headers["x-stainless-retry-count"]) == ("0", "1")
    assert first.json == second.json


def test_529_overloaded_then_200_succeeds(stub):
    stub.enqueue(overloaded(retry_after_ms=FAST), overloaded(retry_after_ms=FAST))
    reply = judge(stub, max_retries=2).complete(req())
    assert reply.structured["winner"] == "1"
    assert len(stub.requests_to(MESSAGES)) == 3


def test_always_500_raises_after_max_retries(stub):
    stub.fallback[MESSAGES] = server_error(retry_after_ms=FAST)
    with pytest.raises(AnthropicJudgeError, match=r"Anthropic API error 500 \(api_error\)") as info:
        judge(stub, max_retries=2).complete(req())
    assert info.value.status_code == 500
    assert "after 2 retries" in str(info.value)
    assert len(stub.requests_to(MESSAGES)) == 3  # the first attempt + max_retries


def test_sdk_backoff_without_retry_after(stub):
    """No retry-after header: the SDK's own backoff, 0.5 s x (0.75..1) for the first retry."""
    stub.enqueue(server_error(status=503))
    t0 = time.monotonic()
    judge(stub, max_retries=1).complete(req())
    assert 0.37 <= time.monotonic() - t0 < 2.0


def test_400_is_not_retried(stub):
    stub.enqueue(api_error(400, "invalid_request_error", "max_tokens: must be at most 64000"))
    with pytest.raises(AnthropicJudgeError,
                       match="400 \\(invalid_request_error\\): max_tokens: must be at most") as info:
        judge(stub).complete(req())
    assert "retries" not in str(info.value)
    assert len(stub.requests_to(MESSAGES)) == 1


def test_timeout_is_retried_then_raises(stub):
    stub.enqueue(hang(1.0), hang(1.0))
    with pytest.raises(AnthropicJudgeError, match="timed out") as info:
        judge(stub, timeout_s=0.2, max_retries=1).complete(req())
    assert info.value.error_type == "timeout"
    assert len(stub.requests_to(MESSAGES)) == 2


def test_unreachable_server_raises_clearly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    backend = get_backend("anthropic", api_key=API_KEY, base_url=f"http://127.0.0.1:{port}", max_retries=0)
    with pytest.raises(AnthropicJudgeError, match="Could not reach the Anthropic API"):
        backend.complete(req())


# --- odd answers -----------------------------------------------------------------------------------


def test_truncated_answer_without_tool_use(stub):
    stub.enqueue(truncated('{"reasoning": "Response 2 is more'))
    reply = judge(stub).complete(req(max_tokens=16))
    assert reply.structured is None
    assert reply.text == '{"reasoning": "Response 2 is more'
    assert reply.stop_reason == "max_tokens"
    assert reply.output_tokens == 16


def test_plain_text_answer_is_kept_as_text(stub):
    stub.enqueue(text_message('I prefer the first. {"reasoning": "clearer", "winner": "1"}'))
    reply = judge(stub).complete(req())
    assert reply.structured is None and reply.stop_reason == "end_turn"
    assert parse_verdict(reply.text, reply.structured) == "1"


def test_malformed_json_body_raises_a_clear_error(stub):
    stub.enqueue(malformed_json())
    with pytest.raises(AnthropicJudgeError, match="not valid JSON"):
        judge(stub).complete(req())


def test_non_json_body_raises_a_clear_error(stub):
    stub.enqueue(not_json())
    with pytest.raises(AnthropicJudgeError, match="not a message"):
        judge(stub).complete(req())


# --- Message Batches -------------------------------------------------------------------------------


def test_batch_submit_poll_and_results_by_custom_id(stub):
    stub.polls_until_ended = 3
    stub.batch_outcomes["item2-p0-ab"] = "errored"
    backend = judge(stub, model="claude-sonnet-4-6")
    requests = [req(custom_id=f"item{i}-p0-ab", user=f"pair {i}") for i in (1, 2, 3)]

    batch_id = backend.submit_batch(requests)
    polls = 1
    while not backend.batch_done(batch_id):
        polls += 1
        assert polls < 10
    results = backend.batch_results(batch_id)

    assert polls == 3
    assert set(results) == {"item1-p0-ab", "item2-p0-ab", "item3-p0-ab"}
    assert isinstance(results["item2-p0-ab"], AnthropicJudgeError)
    assert str(results["item2-p0-ab"]) == ("batch request item2-p0-ab errored: invalid_request_error: "
                                           "prompt is too long: 250000 tokens > 200000 maximum")
    for custom_id in ("item1-p0-ab", "item3-p0-ab"):
        reply = results[custom_id]
        assert reply.structured["winner"] == "1" and reply.stop_reason == "tool_use"
        assert reply.cost_usd == pytest.approx(
            pricing.cost_usd("claude-sonnet-4-6", reply.input_tokens, reply.output_tokens) / 2)

    [sent] = stub.requests_to(BATCHES)
    assert [e["custom_id"] for e in sent.json["requests"]] == [r.custom_id for r in requests]
    assert sent.json["requests"][0]["params"] == backend.params(requests[0])  # the same params as complete()


def test_batch_expired_and_canceled_entries_are_exceptions(stub):
    stub.batch_outcomes.update({"x": "expired", "y": "canceled"})
    backend = judge(stub)
    batch_id = backend.submit_batch([req("x"), req("y"), req("z")])
    assert backend.batch_done(batch_id)
    results = backend.batch_results(batch_id)
    assert str(results["x"]) == "batch request x expired before it was processed"
    assert str(results["y"]) == "batch request y canceled before it was processed"
    assert results["z"].structured["winner"] == "1"


def test_batch_results_before_the_batch_ended(stub):
    stub.polls_until_ended = 5
    backend = judge(stub)
    batch_id = backend.submit_batch([req("a")])
    assert not backend.batch_done(batch_id)
    with pytest.raises(AnthropicJudgeError, match="has not ended yet"):
        backend.batch_results(batch_id)


def test_batch_rejects_bad_custom_ids(stub):
    backend = judge(stub)
    with pytest.raises(ValueError, match="unique"):
        backend.submit_batch([req("a"), req("a")])
    with pytest.raises(ValueError, match="custom_ids must match"):
        backend.submit_batch([req("has space")])
    assert stub.requests_to(BATCHES) == []


# --- the secret stays secret -----------------------------------------------------------------------


def test_api_key_never_in_repr_errors_or_logs(stub, caplog):
    caplog.set_level(logging.DEBUG)  # root: every logger, the SDK's and httpx's debug output included
    for name in SDK_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    backend = judge(stub, max_retries=1)
    errors: list[BaseException] = []

    backend.complete(req())
    stub.enqueue(rate_limited(retry_after_ms=FAST))
    backend.complete(req())
    for failure in (server_error(retry_after_ms=FAST), malformed_json(), not_json(),
                    api_error(400, "invalid_request_error", "bad")):
        stub.fallback[MESSAGES] = failure
        with pytest.raises(AnthropicJudgeError) as info:
            backend.complete(req())
        errors.append(info.value)
    del stub.fallback[MESSAGES]
    stub.batch_outcomes["e"] = "errored"
    batch_id = backend.submit_batch([req("ok"), req("e")])
    backend.batch_done(batch_id)
    errors.extend(r for r in backend.batch_results(batch_id).values() if isinstance(r, Exception))
    with pytest.raises(UserError) as info:
        get_backend("anthropic", api_key="")
    errors.append(info.value)

    # It was on the wire, with every request...
    assert stub.requests and all(API_KEY in (r.headers.get("authorization", "") + r.headers.get("x-api-key", ""))
                                 for r in stub.requests)
    # ...and nowhere else.
    assert "DEBUG" in {r.levelname for r in caplog.records}  # the SDK did log, at length
    assert API_KEY not in caplog.text
    assert all(API_KEY not in str(r.args) for r in caplog.records)
    assert API_KEY not in repr(backend) and API_KEY not in str(backend)
    for error in errors:
        chain, seen = [], error
        while seen is not None:
            chain.append(seen)
            seen = seen.__cause__ or seen.__context__
        assert len(chain) == 1  # no SDK error (holding the request and its headers) rides along
        assert API_KEY not in str(error) and API_KEY not in repr(error) and API_KEY not in repr(vars(error))


# --- a judge policy through the real prompt, and concurrency ---------------------------------------


def test_prefer_shorter_policy_through_the_real_template(stub):
    from judges import template

    stub.decide = prefer_shorter
    backend = judge(stub)
    short, long = "Paris.", "The capital of France is Paris, which is also its largest city."
    for first, second, expected in ((short, long, "1"), (long, short, "2"), (short, short, "tie")):
        system, user = template.build(messages=[{"role": "user", "content": "Capital of France?"}],
                                      first=first, second=second, principles=["Be concise."],
                                      nonce=template.new_nonce())
        reply = backend.complete(JudgeRequest(system=system, user=user))
        assert parse_verdict(reply.text, reply.structured) == expected


def test_requests_run_concurrently_through_one_client(stub):
    stub.latency_s = 0.25
    backend = judge(stub)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(backend.complete, [req(user=f"pair {i}") for i in range(8)]))
    elapsed = time.monotonic() - t0
    assert all(r.structured["winner"] == "1" for r in replies)
    assert elapsed < 8 * 0.25 / 2  # overlapped, not one after another


# --- the OpenAI-compatible backend (the stub's /v1/chat/completions) --------------------------------


def openai_judge(stub: AnthropicStub, **options) -> OpenAIJudge:
    options = {"base_url": stub.openai_base_url, "model": "judge-model", "max_retries": 1, "timeout_s": 10.0,
               **options}
    return get_backend("openai", **options)


def test_openai_json_mode_is_parsed(stub):
    stub.decide = prefer_second
    reply = openai_judge(stub).complete(req())
    assert reply.structured == {"reasoning": "This judge always prefers the second response.", "winner": "2"}
    assert reply.model == "judge-model" and reply.stop_reason == "stop"
    assert reply.input_tokens > 0 and reply.cost_usd is None
    [sent] = stub.requests_to(CHAT)
    assert sent.json["response_format"] == {"type": "json_object"}
    assert sent.json["temperature"] == 0 and sent.json["max_tokens"] == 400
    assert sent.json["messages"] == [{"role": "system", "content": "You are an impartial judge."},
                                     {"role": "user", "content": "Which response is better?"}]


def test_openai_non_json_content_keeps_the_text(stub):
    stub.enqueue(chat_reply("Response 1 is better. [[A]]"), path=CHAT)
    reply = openai_judge(stub).complete(req())
    assert reply.structured is None and reply.text == "Response 1 is better. [[A]]"
    assert parse_verdict(reply.text, reply.structured) == "1"


def test_openai_server_without_json_mode_is_asked_again_without_it(stub):
    stub.enqueue(api_error(400, "invalid_request_error", "response_format is not supported"), path=CHAT)
    backend = openai_judge(stub)
    assert backend.complete(req()).structured["winner"] == "1"
    assert backend.json_mode is False
    backend.complete(req())  # remembered: no more JSON-mode attempts
    sent = stub.requests_to(CHAT)
    assert ["response_format" in r.json for r in sent] == [True, False, False]


def test_openai_defaults_from_env_at_call_time(stub, monkeypatch):
    with pytest.raises(UserError, match="JUDGE_BASE_URL"):
        get_backend("openai")
    monkeypatch.setenv("JUDGE_BASE_URL", stub.openai_base_url)
    with pytest.raises(UserError, match="JUDGE_MODEL"):
        get_backend("openai")
    monkeypatch.setenv("JUDGE_MODEL", "served-judge")
    monkeypatch.setenv("JUDGE_API_KEY", "judge-secret-key-42")
    backend = get_backend("openai", max_retries=0)
    assert backend.complete(req()).structured["winner"] == "1"
    sent = stub.requests_to(CHAT)[-1]
    assert sent.json["model"] == "served-judge"
    assert sent.headers["authorization"] == "Bearer judge-secret-key-42"
    assert "judge-secret-key-42" not in repr(backend)


def test_openai_errors_are_short_and_keyless(stub):
    stub.fallback[CHAT] = server_error(retry_after_ms=FAST)
    backend = openai_judge(stub, api_key="judge-secret-key-42", json_mode=True)
    with pytest.raises(OpenAIJudgeError) as info:
        backend.complete(req())
    assert info.value.status_code == 500 and info.value.__context__ is None
    assert "judge-secret-key-42" not in str(info.value)
    assert len(stub.requests_to(CHAT)) == 2  # max_retries=1
