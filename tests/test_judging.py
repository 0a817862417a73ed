"""Judge batches end to end with fake judges registered through the real backend registry."""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict

import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Item, Judgment, Label, Prompt, Response, User
from feedback import jobs
from feedback.actors import CLI
from feedback.errors import UserError
from feedback.policies import ensure_base_policy
from feedback.projects import default_project
from feedback.prompts import canonical_messages, content_hash
from judges import calibration
from judges.backends import BACKENDS, JudgeReply, get_backend
from judges.batch import JudgeConfig, run_judging
from judges.canaries import run_canaries
from judges.constitutions import DEFAULT_PRINCIPLES, ensure_shipped, latest_constitution, save_constitution

BLOCK = re.compile(r"<response_(\d) [0-9a-f]+>\n(.*?)\n</response_\d [0-9a-f]+>", re.S)


def shown(request) -> dict[str, str]:
    """The judge's view of a request: {'1': first response text, '2': second}."""
    return dict(BLOCK.findall(request.user))


class ScriptedJudge:
    """A judge whose policy is a function of the two shown texts."""

    price_per_mtok = (0.0, 0.0)  # a known price: each reply says what it cost

    def __init__(self, pick, cost=0.0, model="scripted"):
        self.pick, self.cost, self.model, self.name = pick, cost, model, "scripted"
        self.calls = 0
        self._lock = threading.Lock()

    def complete(self, request):
        with self._lock:
            self.calls += 1
        texts = shown(request)
        verdict = {"reasoning": "scripted", "winner": self.pick(texts["1"], texts["2"])}
        return JudgeReply(text=json.dumps(verdict), structured=verdict, model=self.model, input_tokens=10,
                          output_tokens=5, cost_usd=self.cost)


def prefers_good(first, second):
    return ("1" if "GOOD" in first and "GOOD" not in second
            else "2" if "GOOD" in second and "GOOD" not in first else "tie")


@pytest.fixture(autouse=True)
def fake_judges(registered):
    """Scripted judges registered through the real backend registry, for each test of this file."""
    registered(BACKENDS, "always-first", lambda **kw: ScriptedJudge(lambda a, b: "1", model="always-first"))
    registered(BACKENDS, "oracle", lambda **kw: ScriptedJudge(prefers_good, model="oracle"))
    registered(BACKENDS, "obedient", lambda **kw: ScriptedJudge(
        lambda a, b: "1" if "prefer this" in a.lower() or "winner" in a.lower()
        else "2" if "prefer this" in b.lower() or "winner" in b.lower() else prefers_good(a, b), model="obedient"))


@pytest.fixture
def pairs(engine):
    """Six pairs; in each, the GOOD response is response_a for even items and response_b for odd."""
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        v0 = ensure_base_policy(session=s, actor=CLI)
        ids = []
        for i in range(6):
            messages = canonical_messages(f"Question {i}?", None)
            prompt = Prompt(text=f"Question {i}?", messages=messages, content_hash=content_hash(messages))
            s.add(prompt)
            s.flush()
            good = Response(prompt_id=prompt.id, policy_version_id=v0.id, text=f"GOOD answer {i}, short", params={})
            bad = Response(prompt_id=prompt.id, policy_version_id=v0.id, text=f"poor answer {i} " + "padding " * 5,
                           params={})
            s.add_all([good, bad])
            s.flush()
            a, b = (good, bad) if i % 2 == 0 else (bad, good)
            item = Item(kind="pair", project_id=default_project(session=s).id, prompt_id=prompt.id,
                        response_a_id=a.id, response_b_id=b.id)
            s.add(item)
            s.flush()
            ids.append(item.id)
    return ids


def new_job(engine, config: JudgeConfig) -> int:
    with session_scope(engine) as s:
        return jobs.create_job(session=s, kind="judge", config=asdict(config), actor=CLI).id


def test_consistent_judge_labels_every_pair_with_full_provenance(engine, pairs):
    job_id = new_job(engine, JudgeConfig(backend="oracle", max_items=10))
    job = jobs.run_job(engine=engine, job_id=job_id)
    assert job.status == "succeeded", job.error
    assert job.result["judged"] == 6 and job.result["outcomes"] == {"a": 3, "b": 3}
    with session_scope(engine, read_only=True) as s:
        labels = s.scalars(select(Label).where(Label.source == "judge")).all()
        assert len(labels) == 6
        for label in labels:
            item = s.get(Item, label.item_id)
            chosen = item.response_a if label.choice == "a" else item.response_b
            assert "GOOD" in chosen.text
            p = label.provenance
            assert p["backend"] == "oracle" and p["model"] == "oracle" and p["template_version"] == "pairwise-v2"
            assert p["constitution"] == "default" and p["constitution_version"] == 1
            assert {o["shown_first"] for o in p["orders"]} == {"a", "b"}
            assert all(o["answers"] for o in p["orders"]) and p["input_tokens"] == 20
            assert label.producer == "oracle:oracle" and label.constitution_id is not None


@pytest.mark.parametrize("on_disagreement,expected_labels", [("escalate", set()), ("tie", {"tie"})])
def test_position_biased_judge_never_picks_a_side(engine, pairs, on_disagreement, expected_labels):
    job_id = new_job(engine, JudgeConfig(backend="always-first", on_disagreement=on_disagreement))
    assert jobs.run_job(engine=engine, job_id=job_id).result["outcomes"] == {"inconsistent": 6}
    with session_scope(engine, read_only=True) as s:
        assert set(s.scalars(select(Label.choice).where(Label.source == "judge"))) == expected_labels
        report = calibration.judge_report(session=s)
    assert report[0]["position_flip_rate"] == 1.0


def test_mode_all_judges_every_principle(engine, pairs):
    backend = get_backend("oracle")
    with session_scope(engine) as s:
        job_id = jobs.create_job(session=s, kind="judge", config={}, actor=CLI).id
    run_judging(engine=engine, config=JudgeConfig(backend="oracle", mode="all", max_items=2), job_id=job_id,
                backend=backend)
    assert backend.calls == 2 * 2 * len(DEFAULT_PRINCIPLES)


def test_a_provider_going_away_fails_pairs_not_the_job(engine, pairs, registered):
    """A backend that dies after three pairs: those three are labelled, the other three stored as
    failed with the reason, the job succeeds and says so; a later job retries only the failed ones."""
    calls = {"n": 0}

    def flaky(first, second):
        calls["n"] += 1
        if calls["n"] > 6:  # 3 pairs x 2 orders
            raise ConnectionError("provider went away")
        return prefers_good(first, second)

    registered(BACKENDS, "flaky", lambda **kw: ScriptedJudge(flaky, model="flaky"))
    job_id = new_job(engine, JudgeConfig(backend="flaky", concurrency=1))
    first = jobs.run_job(engine=engine, job_id=job_id)
    assert first.status == "succeeded", first.error
    assert (first.result["labelled"], first.result["failed"]) == (3, 3)
    assert first.result["summary"].startswith("3 labels written from 6 pairs; 3 failed")
    with session_scope(engine, read_only=True) as s:
        failed = s.scalars(select(Judgment).where(Judgment.job_id == job_id, Judgment.outcome == "failed")).all()
    assert len(failed) == 3 and all("provider went away" in j.raw["error"] for j in failed)
    calls["n"] = -100  # healthy again
    again = jobs.run_job(engine=engine, job_id=new_job(engine, JudgeConfig(backend="flaky")))
    assert again.result["judged"] == 0  # an ordinary job does not pay for them again
    retried = jobs.run_job(engine=engine, job_id=new_job(engine, JudgeConfig(backend="flaky", selection="failed")))
    assert retried.status == "succeeded" and retried.result["labelled"] == 3
    with session_scope(engine, read_only=True) as s:
        per_item = s.execute(select(Label.item_id, func.count()).where(Label.source == "judge")
                             .group_by(Label.item_id)).all()
    assert sorted(n for _, n in per_item) == [1] * 6


def test_budget_stops_taking_new_pairs(engine, pairs, registered):
    registered(BACKENDS, "pricey", lambda **kw: ScriptedJudge(prefers_good, cost=0.01, model="pricey"))
    job_id = new_job(engine, JudgeConfig(backend="pricey", max_cost_usd=0.05, concurrency=1))
    result = jobs.run_job(engine=engine, job_id=job_id).result
    # A pair costs 0.02 (two orders): a third would pass the budget, so it is not started.
    assert result["judged"] == 2 and result["cost_usd"] == pytest.approx(0.04)


def test_same_judge_setup_does_not_rejudge_and_new_constitution_version_does(engine, pairs):
    jobs.run_job(engine=engine, job_id=new_job(engine, JudgeConfig(backend="oracle", selection="unlabelled")))
    second = jobs.run_job(engine=engine, job_id=new_job(engine, JudgeConfig(backend="always-first")))
    assert second.result["judged"] == 0  # everything is labelled now
    with session_scope(engine) as s:
        v2 = save_constitution(session=s, name="default", principles=["Prefer brevity."], actor=CLI)
        assert v2.version == 2 and latest_constitution(session=s, name="default").id == v2.id


def test_selection_disputed_and_calibration(engine, pairs):
    with session_scope(engine) as s:
        users = [User(username=f"u{k}", password_hash="x", role="annotator") for k in range(2)]
        s.add_all(users)
        s.flush()
        for k, choice in enumerate(("a", "b")):  # humans disagree on the first pair
            s.add(Label(item_id=pairs[0], kind="pairwise", choice=choice, source="human", user_id=users[k].id,
                        submission_id=f"d{k}"))
        for k in range(2):  # and agree on the second
            s.add(Label(item_id=pairs[1], kind="pairwise", choice="b", source="human", user_id=users[k].id,
                        submission_id=f"c{k}"))
    disputed = jobs.run_job(engine=engine, job_id=new_job(engine, JudgeConfig(backend="oracle", selection="disputed")))
    assert disputed.result["judged"] == 1
    calib = jobs.run_job(engine=engine, job_id=new_job(engine, JudgeConfig(backend="oracle", selection="calibration",
                                                                           constitution="concise")))
    assert calib.result["judged"] == 2
    with session_scope(engine, read_only=True) as s:
        rows = {r["constitution"]: r for r in calibration.judge_report(session=s)}
        humans = calibration.human_agreement(session=s)
    concise = rows["concise v1"]
    # Humans: pair 1 -> b (the GOOD one, odd item); pair 0 has no majority. The oracle agrees on pair 1.
    assert concise["pairs_with_humans"] == 1 and concise["agreement_with_humans"] == 1.0
    assert concise["longer_wins_rate"] == 0.0  # the oracle always picked the shorter GOOD answer
    assert humans["items"] == 2 and humans["annotators"] == 2 and humans["alpha"] is not None


def test_canaries_measure_obedience():
    principles = DEFAULT_PRINCIPLES[:1]
    honest = run_canaries(backend=get_backend("oracle"), principles=principles)
    assert honest.pairs >= 50 and honest.flips == 0
    # The canaries' good answers carry no GOOD marker; mark them for the scripted policies.
    obedient = run_canaries(backend=get_backend("obedient"), principles=principles)
    assert obedient.flips > 0 and obedient.flip_rate > 0.2


def test_a_cancel_keeps_the_pairs_already_in_flight(engine, pairs, registered):
    """Cancelled while three pairs are in flight: no new pair starts, the three are stored."""
    job_id = new_job(engine, JudgeConfig(backend="slow", concurrency=3))
    started = threading.Event()

    def slow(first, second):
        if not started.is_set():
            started.set()
            with session_scope(engine) as s:  # someone presses Cancel while the first requests run
                jobs.request_cancel(session=s, job_id=job_id, actor=CLI)
        time.sleep(0.05)
        return prefers_good(first, second)

    registered(BACKENDS, "slow", lambda **kw: ScriptedJudge(slow, model="slow"))
    done = jobs.run_job(engine=engine, job_id=job_id)
    assert done.status == "cancelled"
    with session_scope(engine, read_only=True) as s:
        judged = s.scalar(select(func.count()).select_from(Judgment).where(Judgment.job_id == job_id))
    assert judged == 3  # the three in flight, none after


def test_replies_without_token_counts_have_an_unknown_cost_that_stops_a_budget(engine, pairs, registered):
    class Uncounted(ScriptedJudge):
        def complete(self, request):
            reply = super().complete(request)
            reply.input_tokens = reply.output_tokens = None
            return reply

    registered(BACKENDS, "uncounted", lambda **kw: Uncounted(prefers_good, model="uncounted"))
    config = JudgeConfig(backend="uncounted", max_cost_usd=1.0, concurrency=1, price_input_per_mtok=1000.0,
                         price_output_per_mtok=1000.0)
    result = jobs.run_job(engine=engine, job_id=new_job(engine, config)).result
    assert result["judged"] == 1 and result["cost_unknown"] == 1  # never counted as zero
    assert "of unknown cost" in result["summary"]


@pytest.mark.parametrize("settings", [{"max_cost_usd": float("nan")}, {"max_cost_usd": float("inf")},
                                      {"price_input_per_mtok": -1.0, "price_output_per_mtok": 1.0}])
def test_budgets_and_prices_must_be_finite(settings):
    with pytest.raises(UserError):
        JudgeConfig(backend="local", **settings)
