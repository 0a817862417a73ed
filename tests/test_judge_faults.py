"""Judge jobs against a misbehaving Anthropic-speaking server (the real SDK, the local stub):
a pair whose requests keep failing, malformed and missing batch lines, an unknown price with a
budget, a budget that must hold, truncated answers. Every job finishes, every pair is labelled at
most once, and nothing already paid for is thrown away. SQLite and Postgres."""
from __future__ import annotations

from dataclasses import asdict

import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Item, Judgment, Label, Prompt, Response, User
from feedback import jobs, queue
from feedback.actors import CLI
from feedback.errors import UserError
from feedback.projects import default_project
from feedback.prompts import canonical_messages, content_hash
from judges import batch
from judges.batch import JudgeConfig
from testkit.anthropic_stub import AnthropicStub, prefer_shorter, request_text, server_error, truncated
from testkit.factories import seed_short_long_pairs

API_KEY = "sk-ant-test-" + "f4ult" * 6
BROKEN_PROMPT = "What is 3 + 3?"


@pytest.fixture
def stub(monkeypatch):
    with AnthropicStub(decide=prefer_shorter) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("JUDGE_MAX_RETRIES", "1")  # the SDK's backoff, once: fast, and still a retry
        monkeypatch.setattr(batch, "BATCH_POLL_S", 0.05)
        yield server


@pytest.fixture
def pairs(engine):
    seed_short_long_pairs(engine, 6)


def failing_for(marker: str):
    """A persistent 500 for every request about the pair whose prompt holds `marker`."""
    def reply(request, stub):
        return server_error(500) if marker in request_text(request) else stub.default_message_reply(request)
    reply.wants_stub = True
    return reply


def run(engine, **config):
    with session_scope(engine) as s:
        job = jobs.create_job(session=s, kind="judge", config=asdict(JudgeConfig(backend="anthropic", **config)),
                              actor=CLI)
    return jobs.run_job(engine=engine, job_id=job.id)


def judge_labels_per_item(engine) -> list[int]:
    with session_scope(engine, read_only=True) as s:
        return [n for _, n in s.execute(select(Label.item_id, func.count()).where(Label.source == "judge")
                                        .group_by(Label.item_id))]


def item_of(engine, prompt_text: str) -> int:
    with session_scope(engine, read_only=True) as s:
        return s.scalar(select(Item.id).join(Prompt).where(Prompt.text == prompt_text))


def test_a_pair_that_keeps_failing_fails_alone_and_goes_to_humans_first(engine, pairs, stub):
    stub.fallback["/v1/messages"] = failing_for(BROKEN_PROMPT)
    job = run(engine, concurrency=3)
    assert job.status == "succeeded", job.error
    assert (job.result["labelled"], job.result["failed"]) == (5, 1)
    assert job.result["summary"].startswith("5 labels written from 6 pairs; 1 failed")
    broken = item_of(engine, BROKEN_PROMPT)
    with session_scope(engine, read_only=True) as s:
        failed = s.scalar(select(Judgment).where(Judgment.outcome == "failed"))
        others = s.scalars(select(Judgment).where(Judgment.outcome != "failed")).all()
    assert failed.item_id == broken and "500" in failed.raw["error"]
    assert len(others) == 5 and all(j.cost_usd > 0 for j in others)  # what was paid for is kept

    with session_scope(engine) as s:  # the failed pair is the first a person is given
        annotator = User(username="ann", role="annotator", password_hash="!")
        s.add(annotator)
        s.flush()
        assert queue.claim_next(session=s, user=annotator, kind="pair").item_id == broken

    assert run(engine).result["judged"] == 0  # an ordinary job does not pay for it again
    stub.fallback.clear()  # the provider is healthy again
    retried = run(engine, selection="failed")
    assert retried.status == "succeeded" and retried.result["labelled"] == 1
    assert sorted(judge_labels_per_item(engine)) == [1] * 6
    with session_scope(engine, read_only=True) as s:  # labelled now: no longer ahead of everything else
        assert s.scalars(select(Item.id).where(queue._tiers(s)[0])).all() == []


def test_a_malformed_or_missing_batch_line_fails_only_its_pair(engine, pairs, stub):
    malformed, missing = item_of(engine, "What is 1 + 1?"), item_of(engine, "What is 4 + 4?")
    stub.batch_outcomes[f"item{malformed}-p0-ab"] = "malformed"
    stub.batch_outcomes[f"item{missing}-p0-ba"] = "missing"
    job = run(engine, batch_api=True)
    assert job.status == "succeeded", job.error
    assert (job.result["labelled"], job.result["failed"]) == (4, 2)
    with session_scope(engine, read_only=True) as s:
        errors = {j.item_id: j.raw["error"] for j in s.scalars(select(Judgment).where(Judgment.outcome == "failed"))}
    assert set(errors) == {malformed, missing}
    assert "not JSON" in errors[malformed] and "missing" in errors[missing]
    assert len(stub.requests_to("/v1/messages/batches")) == 1


def test_a_resumed_batch_job_fills_gaps_without_paying_again(engine, pairs, stub, monkeypatch):
    stored = {"n": 0}
    real_store = batch._Run.store

    def crash_after_three(self, item_id, result, *, batch):
        if stored["n"] == 3:
            raise RuntimeError("worker killed")
        stored["n"] += 1
        return real_store(self, item_id, result, batch=batch)

    monkeypatch.setattr(batch._Run, "store", crash_after_three)
    crashed = run(engine, batch_api=True)
    assert crashed.status == "failed" and crashed.result["batch_id"]
    with session_scope(engine) as s:  # a pair selected after the submission was never sent
        v0 = s.scalar(select(Response.policy_version_id))
        messages = canonical_messages("A late question?", None)
        prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages))
        s.add(prompt)
        s.flush()
        a = Response(prompt_id=prompt.id, policy_version_id=v0, text="short", params={})
        b = Response(prompt_id=prompt.id, policy_version_id=v0, text="a much longer answer", params={})
        s.add_all([a, b])
        s.flush()
        late = Item(kind="pair", project_id=default_project(session=s).id, prompt_id=prompt.id,
                    response_a_id=a.id, response_b_id=b.id)
        s.add(late)
        s.flush()
        late_id = late.id
        jobs.resume(session=s, job_id=crashed.id, actor=CLI)
    monkeypatch.setattr(batch._Run, "store", real_store)
    done = jobs.run_job(engine=engine, job_id=crashed.id)
    assert done.status == "succeeded", done.error
    assert done.result["judged"] == 6 and done.result["labelled"] == 6
    assert len(stub.requests_to("/v1/messages/batches")) == 1  # the batch was paid for once
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(Judgment).where(Judgment.item_id == late_id)) is None  # left alone
    assert sorted(judge_labels_per_item(engine)) == [1] * 6


def test_an_unknown_price_refuses_a_budget_and_a_given_price_keeps_it(engine, pairs, stub):
    with pytest.raises(UserError, match="No price is known"):
        JudgeConfig(backend="anthropic", model="claude-unknown-9", max_cost_usd=0.01)
    with pytest.raises(UserError, match="No price is known"):
        JudgeConfig(backend="openai", max_cost_usd=0.01)
    # The stub counts ~4 characters a token: a pair costs about 1.7 cents at these prices.
    job = run(engine, model="claude-unknown-9", max_cost_usd=0.03, concurrency=1, price_input_per_mtok=15.0,
              price_output_per_mtok=75.0)
    assert job.status == "succeeded", job.error
    with session_scope(engine, read_only=True) as s:
        costs = list(s.scalars(select(Judgment.cost_usd)))
        tokens = s.execute(select(func.sum(Judgment.input_tokens), func.sum(Judgment.output_tokens))).one()
    assert 0 < len(costs) < 6 and None not in costs
    assert sum(costs) == pytest.approx((tokens[0] * 15.0 + tokens[1] * 75.0) / 1e6)
    assert sum(costs) <= 0.03  # one pair at a time: the budget is never passed


@pytest.mark.parametrize("concurrency", [1, 3])
def test_spend_stays_within_the_budget_and_the_in_flight_margin(engine, pairs, stub, concurrency):
    budget = 0.012
    job = run(engine, max_cost_usd=budget, concurrency=concurrency)
    assert job.status == "succeeded", job.error
    with session_scope(engine, read_only=True) as s:
        costs = list(s.scalars(select(Judgment.cost_usd)))
    assert 0 < len(costs) < 6
    # Documented: at most `concurrency` pairs in flight past the budget, and only before a cost is known.
    assert sum(costs) <= budget + (concurrency - 1) * max(costs)
    assert "cost $" in job.result["summary"]


def test_the_batch_path_submits_only_what_the_budget_allows(engine, pairs, stub):
    job = run(engine, batch_api=True, max_cost_usd=0.01)
    assert job.status == "succeeded", job.error
    submitted = stub.requests_to("/v1/messages/batches")[0].json["requests"]
    assert 0 < len(submitted) < 12 and len(submitted) % 2 == 0  # whole pairs, both orders
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(func.sum(Judgment.cost_usd))) <= 0.01


def test_a_truncated_answer_is_asked_again_with_a_larger_limit(engine, pairs, stub):
    stub.enqueue(truncated())
    job = run(engine, max_items=1, concurrency=1)
    assert job.status == "succeeded", job.error
    sent = stub.requests_to("/v1/messages")
    assert [r.json["max_tokens"] for r in sent[:2]] == [400, 800]
    with session_scope(engine, read_only=True) as s:
        judgment = s.scalar(select(Judgment))
    first = judgment.raw["orders"][0]
    assert first["stop_reasons"] == ["max_tokens", "tool_use"] and all(first["message_ids"])
    assert judgment.outcome in ("a", "b")


def test_each_backend_gets_one_consistent_instruction(stub):
    from judges.backends import get_backend
    from judges.pairwise import judge_pair

    anthropic = get_backend("anthropic")
    judge_pair(backend=anthropic, messages=[{"role": "user", "content": "q"}], text_a="x", text_b="yy",
               principles=["Be brief."])
    user_text = stub.requests_to("/v1/messages")[-1].json["messages"][0]["content"]
    assert "record_verdict tool" in user_text and "JSON only" not in user_text
    openai = get_backend("openai", base_url=stub.openai_base_url, model="judge")
    judge_pair(backend=openai, messages=[{"role": "user", "content": "q"}], text_a="x", text_b="yy",
               principles=["Be brief."])
    chat = stub.requests_to("/v1/chat/completions")[-1].json["messages"][-1]["content"]
    assert "JSON only" in chat and "record_verdict" not in chat
