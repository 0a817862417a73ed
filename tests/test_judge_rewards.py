"""The AI judge as a reward function (judges/judge_rewards.py): a 1-10 score and a pairwise verdict
against the reference, through the real Anthropic SDK against the local stub (testkit/anthropic_stub.py)
and the in-process local judge; cached per (prompt, response), under a budget that ends in None, never 0.
Also the round's reward spec (training/rewards.py) and as_reward_func passing prompts to score_model."""
from __future__ import annotations

import logging
import math
import re

import pytest

from db.engine import session_scope
from feedback.errors import UserError
from judges.constitutions import DEFAULT_PRINCIPLES, ensure_shipped
from judges.graders import as_reward_func, parse_grader
from judges.judge_rewards import JudgeScoreReward, build_judge_reward, parse_judge_reward
from testkit.anthropic_stub import MESSAGES, AnthropicStub, prefer_first, prefer_shorter, text_message
from training.rewards import parse_reward, parse_rewards, stage_weights

KEY = "sk-ant-test-" + "judgerewardkey" * 3
MODEL = "claude-sonnet-4-6"
PROMPT = [{"role": "user", "content": "What is 6 times 7?"}]


def _block(text: str, tag: str) -> str:
    found = re.search(rf"<{tag} ([0-9a-f]{{16}})>\n(.*?)\n</{tag} \1>", text, re.DOTALL)
    assert found, f"no {tag} block"
    return found.group(2)


def ten_point_judge(request):
    """9 for a response that says 42, else 3: in the reasoning, as the score template asks of the tool."""
    response = _block(request["messages"][0]["content"], "response")
    return {"reasoning": f"Checked. Score: {9 if '42' in response else 3}", "winner": "tie"}


@pytest.fixture
def stub(monkeypatch):
    with AnthropicStub(decide=ten_point_judge) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("JUDGE_MAX_RETRIES", "1")
        yield server


def score_reward(extra: str = "", rubric: str = "correctness") -> JudgeScoreReward:
    spec = parse_judge_reward(f"judge-score:backend=anthropic;model={MODEL}{extra};rubric={rubric}")
    return build_judge_reward(spec, session=None)  # a rubric needs no constitution, so no database


def completions(*texts: str) -> list[list[dict[str, str]]]:
    return [[{"role": "assistant", "content": t}] for t in texts]


# --- specs ----------------------------------------------------------------------------------------


def test_specs_are_canonical_and_keep_the_budget_out():
    spec = parse_judge_reward(f" judge-score: model={MODEL} ; backend=anthropic;max_cost_usd=2 ")
    assert spec.spec == f"judge-score:backend=anthropic;model={MODEL};constitution=default"
    assert spec.max_cost_usd == 2.0
    inline = parse_judge_reward("judge-score:backend=openai;model=m;rubric=Polite; terse; score=10 only if so")
    assert inline.rubric == "Polite; terse; score=10 only if so" and inline.constitution is None
    pairwise = parse_judge_reward("judge-pairwise:backend=local;model=tiny;constitution=concise;mode=all")
    assert pairwise.spec == "judge-pairwise:backend=local;model=tiny;constitution=concise;mode=all"


@pytest.mark.parametrize(("spec", "message"), [
    ("judge-score", "needs backend= and model="),
    ("judge-pairwise:backend=anthropic", "needs model="),
    ("judge-score:backend=local;model=m", "cannot write a score"),
    ("judge-score:backend=a;model=m;constitution=default;rubric=x", "not both"),
    ("judge-pairwise:backend=a;model=m;mode=some", "mode is"),
    ("judge-pairwise:backend=a;model=m;rubric=x", "unknown option"),
    ("judge-score:backend=a;model=m;max_cost_usd=0", "max_cost_usd must be"),
    ("judge-score:backend=a;model=m;price_input=1", "both price_input and price_output"),
    ("judge-vibes:backend=a;model=m", "Unknown judge reward"),
])
def test_bad_judge_specs_say_what_is_wrong(spec, message):
    with pytest.raises(UserError, match=message):
        parse_judge_reward(spec)


def test_a_key_in_a_spec_is_refused_without_being_echoed():
    with pytest.raises(UserError) as caught:
        parse_reward(f"judge-pairwise:backend=anthropic;model={MODEL};api_key={KEY}")
    assert KEY not in str(caught.value) and "ANTHROPIC_API_KEY" in str(caught.value)


def test_round_reward_entries_take_an_optional_leading_weight():
    sources = parse_rewards(["numeric:tol=0.01", f"0.5*judge-score:backend=anthropic;model={MODEL};max_cost_usd=2",
                             "2*regex:^a*b", "-0.25 * reward-model:7"])
    assert [(s.kind, s.weight) for s in sources] == [("grader", 1.0), ("judge", 0.5), ("grader", 2.0),
                                                     ("reward_model", -0.25)]
    assert sources[1].spec.endswith("max_cost_usd=2")  # the budget travels with the entry
    assert sources[3].job_id == 7
    assert stage_weights(sources) == {"reward_weights": [1.0, 0.5, 2.0], "reward_model_weight": -0.25}


@pytest.mark.parametrize(("entries", "message"), [
    (["nope:x"], "Unknown reward source 'nope'"),
    (["reward-model:latest"], "needs the id of the training job"),
    (["reward-model:1", "reward-model:2"], "at most one"),
    ([" "], "empty"),
    (["numeric:tol=-1"], "tol must be"),
    ("numeric", "is a list"),
])
def test_bad_round_rewards_are_user_errors(entries, message):
    with pytest.raises(UserError, match=message):
        parse_rewards(entries)


# --- the 1-10 score --------------------------------------------------------------------------------


def test_score_is_rescaled_and_cached_per_prompt_and_response(stub):
    reward = score_reward()
    assert reward([PROMPT, PROMPT], completions("It is 42.", "It is 41."), reference=["42", "42"]) == [
        pytest.approx(8 / 9), pytest.approx(2 / 9)]
    assert len(stub.requests_to(MESSAGES)) == 2
    body = stub.requests_to(MESSAGES)[0].json
    assert "from 1 (fails the rubric entirely) to 10" in body["system"]
    assert _block(body["messages"][0]["content"], "conversation").endswith("What is 6 times 7?")
    # The same (prompt, response) again: a cache hit, no request. Another prompt is another question.
    assert reward([PROMPT], completions("It is 42."), reference=["42"]) == [pytest.approx(8 / 9)]
    assert len(stub.requests_to(MESSAGES)) == 2
    reward([[{"role": "user", "content": "And 6 times 8?"}]], completions("It is 42."), reference=["48"])
    assert len(stub.requests_to(MESSAGES)) == 3
    stats = reward.stats()
    assert (stats["calls"], stats["cache_hits"], stats["failures"], stats["budget_exhausted"]) == (3, 1, 0, 0)
    assert stats["cost_usd"] > 0  # from the price table
    assert reward.__name__ == "judge_score"


def test_score_under_the_constitutions_principles(engine, stub):
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        reward = build_judge_reward(parse_judge_reward(f"judge-score:backend=anthropic;model={MODEL}"), session=s)
    reward([PROMPT], completions("42"), reference=[None])
    system = stub.requests_to(MESSAGES)[0].json["system"]
    assert all(principle in system for principle in DEFAULT_PRINCIPLES)
    assert "No reference answer is given." in stub.requests_to(MESSAGES)[0].json["messages"][0]["content"]


def test_an_unreadable_score_is_asked_again_once_then_none_and_not_paid_twice(stub, caplog):
    stub.enqueue(text_message("I would say eleven out of ten."), text_message('{"score": 11}'))
    reward = score_reward()
    with caplog.at_level(logging.WARNING, logger="judges.judge_rewards"):
        assert reward([PROMPT, PROMPT], completions("odd", "odd"), reference=["42", "42"]) == [None, None]
    assert len(stub.requests_to(MESSAGES)) == 2  # one retry, then the failure is cached
    assert reward.stats()["failures"] == 1 and "no score" in caplog.text


def test_budget_exhaustion_gives_none_not_zero_and_says_so(stub, caplog):
    # One request costs ~$0.0015 here: the first fits under $0.002, the second could not be paid for.
    reward = score_reward(";max_cost_usd=0.002")
    with caplog.at_level(logging.WARNING, logger="judges.judge_rewards"):
        got = reward([PROMPT] * 3, completions("It is 42.", "It is 41.", "It is 40."), reference=["42"] * 3)
    assert got == [pytest.approx(8 / 9), None, None]
    assert len(stub.requests_to(MESSAGES)) == 1
    stats = reward.stats()
    assert (stats["budget_exhausted"], stats["over_budget"], stats["calls"]) == (1, 2, 1)
    assert caplog.text.count("budget of $0.002 reached") == 1  # said once, not per completion
    # What was judged before the stop still counts (a cache hit); nothing new is asked.
    assert reward([PROMPT, PROMPT], completions("It is 42.", "new"), reference=["42", "42"]) == [
        pytest.approx(8 / 9), None]
    assert len(stub.requests_to(MESSAGES)) == 1


def test_score_model_through_as_reward_func_gets_the_prompt_and_a_spent_budget_is_none(stub):
    stub.decide = lambda request: {"reasoning": "fine. Score: 0.8", "winner": "tie"}
    grader = parse_grader(f"score_model:backend=anthropic;model={MODEL};max_cost_usd=0.002;rubric=correctness")
    reward = as_reward_func(grader)  # on_error 0.0 for odd answers, but a spent budget is None
    assert reward([PROMPT, PROMPT], completions("a", "b"), reference=["42", "42"]) == [0.8, None]
    content = stub.requests_to(MESSAGES)[0].json["messages"][0]["content"]
    assert _block(content, "conversation").endswith("What is 6 times 7?")  # the prompt reached the judge


# --- pairwise against the reference ----------------------------------------------------------------


@pytest.fixture
def constitution(engine):
    with session_scope(engine) as s:
        ensure_shipped(session=s)
    return engine


def pairwise(engine, spec_tail: str = ""):
    with session_scope(engine) as s:
        return build_judge_reward(
            parse_judge_reward(f"judge-pairwise:backend=anthropic;model={MODEL};constitution=concise{spec_tail}"),
            session=s)


def test_pairwise_against_the_reference_both_orders(constitution, stub):
    stub.decide = prefer_shorter
    reward = pairwise(constitution)
    got = reward([PROMPT] * 4, completions("42", "It is forty-two, I think.", "It is 42", "no ref"),
                 reference=["The answer is 42.", "The answer is 42.", "It is 24", None])
    assert got == [1.0, 0.0, 0.5, None]  # shorter wins, longer loses, same length ties, no reference: n/a
    assert len(stub.requests_to(MESSAGES)) == 6  # both orders for each of the three with a reference
    shown = [_block(r.json["messages"][0]["content"], "response_1") for r in stub.requests_to(MESSAGES)[:2]]
    assert shown == ["42", "The answer is 42."]  # the completion first, then the reference first
    assert reward.stats()["no_reference"] == 1 and reward.stats()["calls"] == 6


def test_a_judge_that_prefers_a_position_gives_half(constitution, stub):
    stub.decide = prefer_first
    assert pairwise(constitution)([PROMPT], completions("42"), reference=["42!"]) == [0.5]


def test_pairwise_budget_counts_pairs_and_stops_with_none(constitution, stub):
    stub.decide = prefer_shorter
    reward = pairwise(constitution, ";max_cost_usd=0.004")  # one pair (two requests) is ~$0.003
    got = reward([PROMPT] * 3, completions("4", "42", "420"), reference=["The answer is 42."] * 3)
    assert got == [1.0, None, None] and len(stub.requests_to(MESSAGES)) == 2
    assert reward.stats()["budget_exhausted"] == 1


def test_pairwise_with_the_local_judge(constitution, tiny_model_dir):
    """The in-process judge (next-token verdicts of the tiny model): no key, no network, no cost."""
    with session_scope(constitution) as s:
        reward = build_judge_reward(parse_judge_reward(
            f"judge-pairwise:backend=local;model={tiny_model_dir};max_cost_usd=1"), session=s)
    got = reward([PROMPT, PROMPT], completions("42", "42"), reference=["It is 42.", "It is 42."])
    assert got[0] in (0.0, 0.5, 1.0) and got[1] == got[0]
    stats = reward.stats()
    assert (stats["calls"], stats["cache_hits"], stats["cost_usd"]) == (2, 1, 0.0)
    assert not math.isnan(got[0])
