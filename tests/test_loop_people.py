"""People in the loop: a round puts on-policy pairs at the head of the project's queue, waits
(through a pause and a resume) until N human labels on them have arrived, trains on exactly
those, promotes and samples again from the new policy. Simulated annotators
(judges/simulated.py) label through the real queue; the loop runs as a real job in a thread."""
from __future__ import annotations

import hashlib
import threading
import time

import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Item, Job, Label, PolicyVersion, Prompt, Response, Snapshot, SnapshotLabel
from feedback import jobs
from feedback.actors import CLI
from feedback.policies import active_policy
from feedback.policy import Completion
from feedback.projects import default_project
from feedback.sampling import store_responses
from judges.graders import GRADERS
from judges.simulated import run_simulation
from tests.test_loop_resume import TINY_ROUNDS, seed_prompts
from training.loop import FIRST_IN_QUEUE, LoopConfig, loop_rounds, pause_loop, resume_loop, start_loop

LABELS_PER_ROUND = 3


class HashGrader:
    """Distinct texts get distinct scores, so a simulated annotator never ties."""

    name = spec = "hashed"

    def grade(self, answer: str, reference: str) -> float:
        return int(hashlib.sha256(answer.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _wait_for(engine, job_id: int, predicate, what: str, timeout: float = 240.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(engine, read_only=True) as s:
            job = s.get(Job, job_id)
            rows = loop_rounds(session=s, job_id=job_id)
            if predicate(job, rows):
                return rows
            assert job.status not in ("failed", "cancelled"), job.error
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {job.status} {rows}")


def _run_in_thread(engine, job_id: int) -> threading.Thread:
    worker = threading.Thread(target=jobs.run_job, kwargs={"engine": engine, "job_id": job_id}, daemon=True)
    worker.start()
    return worker


def _waiting_in(round_no: int):
    return lambda job, rows: len(rows) == round_no and rows[-1]["phase"] == "waiting"


@pytest.mark.train
def test_a_people_round_waits_for_its_labels_and_trains_on_them(engine, tiny_model_dir, monkeypatch, tmp_path,
                                                                 registered):
    monkeypatch.setenv("POLICIES_DIR", str(tmp_path / "policies"))
    registered(GRADERS, "hashed", lambda arg: HashGrader())
    seed_prompts(engine, tiny_model_dir)
    with session_scope(engine) as s:  # an item already in the queue, of the same (active) policy, with a lower id
        first = s.scalar(select(Prompt).where(Prompt.split == "train").order_by(Prompt.id))
        older = store_responses(session=s, prompt=first, version=active_policy(session=s), params={},
                                completions=[Completion(text=t, finish_reason="stop", prompt_tokens=None,
                                                        completion_tokens=None, latency_ms=0.0, seed=None)
                                             for t in ("two", "it is 2")])
        s.add(Item(kind="pair", project_id=default_project(session=s).id, prompt_id=first.id,
                   response_a_id=older[0].id, response_b_id=older[1].id, queue_key=0.0))
    config = LoopConfig(labeler="people", labels_per_round=LABELS_PER_ROUND, poll_seconds=0.1, rounds=2,
                        prompts_per_round=3, samples_per_prompt=4, **TINY_ROUNDS,
                        gate={"prompts": 1, "max_new_tokens": 4, "judge_model": tiny_model_dir.name})
    with session_scope(engine) as s:
        job_id = start_loop(session=s, config=config, actor=CLI).id
    worker = _run_in_thread(engine, job_id)
    rows = _wait_for(engine, job_id, _waiting_in(1), "round 1 to wait for labels")
    assert rows[0]["status"] == f"waiting for labels (0 of {LABELS_PER_ROUND})" and rows[0]["pairs"] >= 3
    with session_scope(engine, read_only=True) as s:
        mine = s.scalars(select(Item).where(Item.job_id == job_id)).all()
        assert len(mine) == rows[0]["pairs"] and {i.queue_key for i in mine} == {FIRST_IN_QUEUE}
        responses = s.scalar(select(func.count()).select_from(Response))

    # The wait survives a stop: paused, then resumed, it waits on without sampling again.
    with session_scope(engine) as s:
        pause_loop(session=s, job_id=job_id, actor=CLI)
    worker.join(timeout=60)
    assert not worker.is_alive()
    with session_scope(engine) as s:
        assert s.get(Job, job_id).status == "paused"
        resume_loop(session=s, job_id=job_id, actor=CLI)
    worker = _run_in_thread(engine, job_id)
    _wait_for(engine, job_id, lambda job, rows: job.status == "running" and _waiting_in(1)(job, rows),
              "the resumed loop to wait again")
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Response)) == responses

    for round_no in (1, 2):
        labelled = run_simulation(engine=engine, project="default", pool="grader:2:grader=hashed",
                                  labels=LABELS_PER_ROUND, actor=CLI, seed=round_no)
        assert labelled["labels"] == LABELS_PER_ROUND and not labelled["skipped"]
        if round_no == 1:
            rows = _wait_for(engine, job_id, _waiting_in(2), "round 2 to wait for labels")
    worker.join(timeout=240)
    assert not worker.is_alive()

    with session_scope(engine, read_only=True) as s:
        loop = s.get(Job, job_id)
        assert loop.status == "succeeded", loop.error
        rows = loop_rounds(session=s, job_id=job_id)
        assert [(r["round"], r["status"], r["labels"]) for r in rows] == [(1, "done", 3), (2, "done", 3)]
        assert rows[1]["parent"] == rows[0]["policy"]  # round 2 sampled from the policy round 1 promoted
        human = s.scalars(select(Label).where(Label.source == "human")).all()
        assert len(human) == 2 * LABELS_PER_ROUND
        loop_items = {i.id for i in s.scalars(select(Item).where(Item.job_id == job_id))}
        assert {label.item_id for label in human} <= loop_items  # annotators got the loop's pairs first
        for row in rows:
            train = s.get(Job, row["train_job"])
            snapshot = s.get(Snapshot, train.config["snapshot_id"])
            trained_on = set(s.scalars(select(SnapshotLabel.label_id).where(SnapshotLabel.snapshot_id == snapshot.id)))
            round_items = set(snapshot.filters["items"])
            assert trained_on == {label.id for label in human if label.item_id in round_items}
            assert len(trained_on) == LABELS_PER_ROUND
            version = s.scalar(select(PolicyVersion).where(PolicyVersion.name == row["policy"]))
            assert version.parent.name == row["parent"] and version.stage == "dpo"
            sampled_by = {r.policy_version.name for r in s.scalars(
                select(Response).join(Item, Item.response_a_id == Response.id).where(Item.id.in_(round_items)))}
            assert sampled_by == {row["parent"]}  # on-policy pairs
