"""AI-judge jobs over the real Anthropic SDK against the local stub: interactive and batch APIs,
a worker killed mid-run and resumed, and the API key kept out of everything it must not reach."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict
from datetime import timedelta

import pytest
from sqlalchemy import func, inspect, select, text, update
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Item, Job, Judgment, Label, utcnow
from feedback import jobs
from feedback.actors import CLI
from feedback.settings import PROJECT_ROOT
from feedback.users import create_user
from judges import batch
from judges.batch import JudgeConfig
from testkit.anthropic_stub import AnthropicStub, overloaded, prefer_shorter, rate_limited
from testkit.factories import seed_short_long_pairs

API_KEY = "sk-ant-test-" + "k3y" * 10


@pytest.fixture
def stub(monkeypatch):
    with AnthropicStub(decide=prefer_shorter) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        yield server


@pytest.fixture
def pairs(engine):
    seed_short_long_pairs(engine, 6)


def judge_job(engine, **config) -> int:
    with session_scope(engine) as s:
        return jobs.create_job(session=s, kind="judge", config=asdict(JudgeConfig(backend="anthropic", **config)),
                               actor=CLI).id


def assert_shorter_chosen_once_each(engine):
    with session_scope(engine, read_only=True) as s:
        labels = s.scalars(select(Label).where(Label.source == "judge")).all()
        assert sorted(lab.item_id for lab in labels) == sorted(set(s.scalars(select(Item.id))))
        for label in labels:
            item = s.get(Item, label.item_id)
            chosen, other = ((item.response_a, item.response_b) if label.choice == "a"
                             else (item.response_b, item.response_a))
            assert len(chosen.text) < len(other.text)
            assert label.provenance["model"] == "claude-sonnet-4-6" and label.provenance["cost_usd"] > 0


def test_interactive_judging_survives_429_and_529(engine, pairs, stub):
    stub.enqueue(rate_limited(retry_after=0), overloaded())
    job = jobs.run_job(engine=engine, job_id=judge_job(engine, concurrency=2))
    assert job.status == "succeeded", job.error
    assert job.result["outcomes"] == {"a": 3, "b": 3}
    assert_shorter_chosen_once_each(engine)
    sent = stub.requests_to("/v1/messages")
    assert len(sent) == 6 * 2 + 2  # both orders per pair, plus the two retried answers
    assert all(r.json["tool_choice"]["name"] == "record_verdict" for r in sent)


def test_batch_api_judging(engine, pairs, stub, monkeypatch):
    monkeypatch.setattr(batch, "BATCH_POLL_S", 0.05)
    stub.polls_until_ended = 3
    job = jobs.run_job(engine=engine, job_id=judge_job(engine, batch_api=True))
    assert job.status == "succeeded", job.error
    assert len(stub.requests_to("/v1/messages/batches")) == 1  # one batch for all 12 requests
    assert_shorter_chosen_once_each(engine)
    with session_scope(engine, read_only=True) as s:
        cost = s.scalar(select(func.sum(Judgment.cost_usd)))
    assert cost > 0


def _wait_for(engine, job_id, condition, seconds=90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with session_scope(engine, read_only=True) as s:
            job = s.get(Job, job_id)
            n = s.scalar(select(func.count()).select_from(Judgment).where(Judgment.job_id == job_id))
            if condition(job, n):
                return job, n
        time.sleep(0.2)
    raise AssertionError(f"timed out: job {job_id} is {job.status} with {n} judgments")


def test_worker_killed_then_resumed_labels_each_pair_once(engine, db_url, pairs, stub, tmp_path):
    stub.latency_s = 0.3  # slow enough to kill the worker half way
    job_id = judge_job(engine, concurrency=1)
    with session_scope(engine, read_only=True) as s:
        job = s.get(Job, job_id)
    jobs.start_detached(job=job, database_url=db_url, log_dir=tmp_path)
    job, judged = _wait_for(engine, job_id, lambda j, n: n >= 2)
    os.kill(job.pid, signal.SIGKILL)
    time.sleep(0.5)
    with session_scope(engine) as s:  # as if the heartbeat had gone quiet for a while
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    with session_scope(engine) as s:
        resumed = jobs.resume(session=s, job_id=job_id, actor=CLI)  # marks it interrupted first, then queues it
    jobs.start_detached(job=resumed, database_url=db_url, log_dir=tmp_path)
    job, judged = _wait_for(engine, job_id, lambda j, n: j.status not in jobs.ACTIVE)
    assert job.status == "succeeded", (tmp_path / f"job-{job_id}.log").read_text()
    assert judged == 6
    assert_shorter_chosen_once_each(engine)
    log = (tmp_path / f"job-{job_id}.log").read_text()
    assert API_KEY not in log


def _all_text_in_database(engine) -> str:
    chunks = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                chunks.append(repr(tuple(row)))
    return "\n".join(chunks)


def test_api_key_reaches_only_the_judge(engine, use_db, pairs, stub, caplog):
    caplog.set_level("DEBUG")
    jobs.run_job(engine=engine, job_id=judge_job(engine))
    assert all(r.headers.get("authorization") == f"Bearer {API_KEY}" or r.headers.get("x-api-key") == API_KEY
               for r in stub.requests_to("/v1/messages"))  # it did reach the API ...
    assert API_KEY not in _all_text_in_database(engine)  # ... and nowhere else
    assert API_KEY not in caplog.text
    assert "ANTHROPIC_API_KEY" not in jobs.child_env("sample")
    assert "ANTHROPIC_API_KEY" not in jobs.child_env("grade")
    assert "ANTHROPIC_API_KEY" not in jobs.child_env("grade", {"spec": "numeric"})
    # A grading job whose grader asks a judge model (score_model) gets the judges' keys, only it.
    model_grader = {"spec": "score_model:backend=anthropic;model=claude-sonnet-4-5;rubric=correctness"}
    assert jobs.child_env("grade", model_grader)["ANTHROPIC_API_KEY"] == API_KEY
    with session_scope(engine) as s:
        create_user(session=s, username="root", role="admin", password="admin-password", actor=CLI)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    at.text_input[0].input("root")
    at.text_input[1].input("admin-password")
    at.button[0].click().run()
    at.switch_page("pages/judge.py").run()
    assert not at.exception
    assert API_KEY not in repr(at._tree)
