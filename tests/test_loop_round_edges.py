"""Edges of a loop round (issue 15 review): a people round whose pairs cannot take the labels it
asked for, earlier rounds' pairs left at the head of the queue, a resumed round's train job
beside a reft job or left 'running' by a killed worker, and a scored round's snapshot.

Each test writes the loop's saved table as a stopped loop leaves it and runs the loop job for
real; the dpo stage is a fake that records its rows and stops (no model is trained)."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from db.engine import session_scope
from db.models import Item, Job, Label, Prompt, Response, User, utcnow
from feedback import jobs, queue
from feedback.actors import CLI, Actor
from feedback.errors import UserError
from feedback.policies import ensure_base_policy
from feedback.projects import default_project
from feedback.prompts import canonical_messages, content_hash
from testkit.factories import make_users, set_queue
from training.loop import FIRST_IN_QUEUE, LoopConfig, loop_rounds, pause_loop, start_loop
from training.reft import ReftConfig, start_reft
from training.rounds import RoundConfig, start_round
from training.stages import STAGES, Stage

STOP = "fake stage: stopped where training would start"


@pytest.fixture
def fake_dpo(registered, monkeypatch, tmp_path, engine):
    """The dpo stage records the rows it was given and stops; v0 is the active policy."""
    monkeypatch.setenv("POLICIES_DIR", str(tmp_path / "policies"))
    seen: list[list[dict]] = []

    def main(cfg, inputs):
        seen.append(inputs.train_rows)
        raise UserError(STOP)

    registered(STAGES, "dpo", Stage(config=STAGES.get("dpo").config, main=main))
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI).base_model = str(tmp_path)  # a directory: no download
    return seen


def _prompt(s) -> int:
    """A new train prompt whose reference answer is 2; its id."""
    messages = canonical_messages(f"prompt {uuid.uuid4().hex[:8]}", None)
    prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                    split="train", reference="2")
    s.add(prompt)
    s.flush()
    return prompt.id


def _pair(s, *, job_id: int | None, key: float = FIRST_IN_QUEUE) -> int:
    """A pair of two distinct v0 answers to a new prompt, in the default project."""
    prompt_id = _prompt(s)
    v0 = ensure_base_policy(session=s, actor=CLI)
    a, b = (Response(prompt_id=prompt_id, policy_version_id=v0.id, text=t, params={}, job_id=job_id)
            for t in ("2", "it is two"))
    s.add_all([a, b])
    s.flush()
    item = Item(kind="pair", project_id=default_project(session=s).id, prompt_id=prompt_id, response_a_id=a.id,
                response_b_id=b.id, job_id=job_id, queue_key=key)
    s.add(item)
    s.flush()
    return item.id


def _row(round_no: int, phase: str, *, after_item: int, last_item: int | None, **fields) -> dict:
    """One row of the loop's table as run_loop saves it."""
    return {"round": round_no, "phase": phase, "parent": "v0",
            "started": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(), "after_item": after_item,
            "after_response": 0, "last_item": last_item, "pairs": None, "labels": None, "labels_needed": None,
            "policy": None, "train_job": None, "win_rate": None, "win_rate_ci95": None, "accuracy": None,
            "parent_accuracy": None, "gate": None, "promoted": None, "kl": None, "mean_length": None,
            "mean_chars": None, **fields}


def _save_table(s, job_id: int, rows: list[dict]) -> None:
    job = s.get(Job, job_id)
    job.result = {"rounds": rows, "config": job.config}


def _label(engine, user_id: int, preferred: str) -> int:
    """The annotator takes the next item of the default project and answers it; its id."""
    with session_scope(engine) as s:
        user = s.get(User, user_id)
        claim = queue.claim_next(session=s, user=user, kind="pair")
        queue.submit_pairwise(session=s, user=user, assignment_id=claim.assignment_id,
                              submission_id=uuid.uuid4().hex, preferred=preferred)
        return claim.item_id


def _start(engine, job_id: int) -> threading.Thread:
    worker = threading.Thread(target=jobs.run_job, kwargs={"engine": engine, "job_id": job_id}, daemon=True)
    worker.start()
    return worker


def _finish(engine, job_id: int, worker: threading.Thread, seconds: float = 15.0) -> None:
    """Let the loop job end; one whose round still waits after `seconds` is paused first (so the
    test ends either way, and the assertions after this say what went wrong)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and worker.is_alive():
        with session_scope(engine, read_only=True) as s:
            if loop_rounds(session=s, job_id=job_id)[-1]["phase"] != "waiting":
                break
        time.sleep(0.1)
    else:
        if worker.is_alive():
            with session_scope(engine) as s:
                pause_loop(session=s, job_id=job_id, actor=CLI)
    worker.join(timeout=180)  # training's first import of transformers is slow on a busy machine
    assert not worker.is_alive()


PEOPLE = dict(labeler="people", poll_seconds=0.05, rounds=1)


@pytest.mark.parametrize("answers, trained_on", [(("left", "tie"), 1), (("tie", "both_bad"), 0)])
def test_a_people_round_stops_waiting_when_its_pairs_have_every_label_they_can_take(engine, fake_dpo, answers,
                                                                                     trained_on):
    """Two pairs, overlap 1, two labels asked for: a tie (or both bad) takes a pair's only slot
    without preferring a response, so the second label can never come. The round trains on the
    labels it has, or, with none, ends with a note rather than waiting for ever."""
    with session_scope(engine) as s:
        set_queue(s, overlap=1)
        annotators = make_users(s, 2)
        job_id = start_loop(session=s, config=LoopConfig(**PEOPLE, labels_per_round=2), actor=CLI).id
        items = [_pair(s, job_id=job_id) for _ in range(2)]
        _save_table(s, job_id, [_row(1, "waiting", after_item=0, last_item=items[-1], pairs=2, labels=0,
                                     labels_needed=2)])
    for user_id, preferred in zip(annotators, answers, strict=True):
        _label(engine, user_id, preferred)

    _finish(engine, job_id, _start(engine, job_id))

    with session_scope(engine, read_only=True) as s:
        job = s.get(Job, job_id)
        (row,) = loop_rounds(session=s, job_id=job_id)
    assert row["phase"] != "waiting", f"still {row['status']} with no slot left on its pairs"
    assert row["labels"] == trained_on
    if trained_on:  # it went on to train, on exactly the one label that prefers a response
        assert job.status == "failed" and STOP in job.error
        assert [len(rows) for rows in fake_dpo] == [1]
    else:
        assert job.status == "succeeded", job.error
        assert row["phase"] == "done" and row["note"] and fake_dpo == []


def test_a_waiting_round_takes_the_head_of_the_queue_from_earlier_rounds_pairs(engine, fake_dpo):
    """Round 1 was held back (no promotion), so round 2 samples the same policy: the pairs round 1
    did not need are in the same tier of the queue, with lower ids. They must not go out before
    round 2's, whose labels are the ones round 2 waits for."""
    with session_scope(engine) as s:
        set_queue(s, overlap=1)
        (annotator,) = make_users(s, 1)
        job_id = start_loop(session=s, config=LoopConfig(**PEOPLE | {"rounds": 2}, labels_per_round=1),
                            actor=CLI).id
        leftover = _pair(s, job_id=job_id)
        current = _pair(s, job_id=job_id)
        _save_table(s, job_id, [
            _row(1, "done", after_item=0, last_item=leftover, pairs=1, labels=1, labels_needed=1, promoted=False),
            _row(2, "waiting", after_item=leftover, last_item=current, pairs=1, labels=0, labels_needed=1)])
        assert s.get(Item, leftover).queue_key == s.get(Item, current).queue_key == FIRST_IN_QUEUE

    worker = _start(engine, job_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until round 2 has polled once (its log line is written before)
        with session_scope(engine, read_only=True) as s:
            if "waiting for 1 labels" in (s.get(Job, job_id).log_tail or ""):
                break
        time.sleep(0.05)
    time.sleep(0.5)  # several polls of 0.05 s
    handed_out = _label(engine, annotator, "left")
    _finish(engine, job_id, worker)

    assert handed_out == current, "the annotator got round 1's leftover pair before round 2's"
    with session_scope(engine, read_only=True) as s:
        rows = loop_rounds(session=s, job_id=job_id)
    assert rows[1]["labels"] == 1 and rows[1]["phase"] == "training"


def _scored_pair(s, job_id: int | None) -> int:
    item_id = _pair(s, job_id=job_id, key=0.0)
    s.add(Label(item_id=item_id, kind="pairwise", choice="a", source="grader", producer="grader:numeric",
                submission_id=uuid.uuid4().hex))
    return item_id


def _training_round(s, job_id: int, *, with_train_job: bool = False) -> int | None:
    """The loop's round 1 stopped in its training phase, its one scored pair made; with
    `with_train_job`, after it had started its train job (as _train does). That job's id."""
    item = _scored_pair(s, job_id)
    s.flush()
    train_job = None
    if with_train_job:
        config = RoundConfig(stage="dpo", parent="v0", evaluate=False,
                             snapshot={"sources": ["grader"], "items": [item]})
        train_job = start_round(session=s, config=config, actor=Actor.worker(job_id)).id
    _save_table(s, job_id, [_row(1, "training", after_item=0, last_item=item, pairs=1, labels=1, labels_needed=1,
                                 train_job=train_job)])
    return train_job


def test_a_scored_round_trains_on_its_own_pairs_only(engine, fake_dpo):
    """Grader labels on the parent's answers made since the round began, but on pairs that are
    not the loop's (a grading job running meanwhile), are not the round's to train on."""
    with session_scope(engine) as s:
        job_id = start_loop(session=s, config=LoopConfig(rounds=1), actor=CLI).id
        _training_round(s, job_id)
        _scored_pair(s, None)  # the same policy, source and time: someone else's pair

    done = jobs.run_job(engine=engine, job_id=job_id)

    assert done.status == "failed" and STOP in done.error
    assert [len(rows) for rows in fake_dpo] == [1]


def test_a_resumed_round_does_not_resume_its_train_job_beside_a_reft_job(engine, fake_dpo):
    """The round's train job was interrupted; meanwhile an admin queued a reft job. Resuming the
    train job would make two training jobs at once (the unique index covers kind 'train' only)."""
    with session_scope(engine) as s:
        job_id = start_loop(session=s, config=LoopConfig(rounds=1), actor=CLI).id
        train_id = _training_round(s, job_id, with_train_job=True)
        s.get(Job, train_id).status = "interrupted"
        reft_id = start_reft(session=s, config=ReftConfig(), actor=CLI).id

    done = jobs.run_job(engine=engine, job_id=job_id)

    assert done.status == "failed" and f"training job {reft_id} (reft) is queued" in done.error
    with session_scope(engine, read_only=True) as s:
        assert s.get(Job, train_id).status == "interrupted"  # left to resume once the reft job is done
    assert fake_dpo == []


def test_a_resumed_round_resumes_a_train_job_its_killed_worker_left_running(engine, fake_dpo):
    """A worker killed in training leaves the loop and its train job 'running'; their heartbeats
    stop a few seconds apart, so the loop can be resumed while its train job is not yet marked
    interrupted. The resumed round sees the train job is dead and resumes it."""
    with session_scope(engine) as s:
        job_id = start_loop(session=s, config=LoopConfig(rounds=1), actor=CLI).id
        train_id = _training_round(s, job_id, with_train_job=True)
    with session_scope(engine) as s:
        s.execute(update(Job).where(Job.id == train_id).values(
            status="running", heartbeat_at=utcnow() - 2 * jobs.STALE_AFTER))

    done = jobs.run_job(engine=engine, job_id=job_id)

    assert done.status == "failed" and STOP in done.error, done.error
    assert [len(rows) for rows in fake_dpo] == [1]



def test_a_resumed_sampling_phase_does_not_sample_its_prompts_again(engine, fake_dpo, tiny_model_dir):
    """The train split has fewer prompts than a round asks for. Round 1 stopped after sampling one
    of its two prompts; resumed, it samples the other, not the first one a second time."""
    with session_scope(engine) as s:
        v0 = ensure_base_policy(session=s, actor=CLI)
        v0.base_model = str(tiny_model_dir)
        job_id = start_loop(session=s, config=LoopConfig(rounds=1, prompts_per_round=4, samples_per_prompt=2,
                                                         max_new_tokens=4), actor=CLI).id
        sampled, unsampled = _prompt(s), _prompt(s)
        s.add_all([Response(prompt_id=sampled, policy_version_id=v0.id, text=t, params={}, job_id=job_id)
                   for t in ("2", "two")])
        _save_table(s, job_id, [_row(1, "sampling", after_item=0, last_item=None)])

    jobs.run_job(engine=engine, job_id=job_id)

    with session_scope(engine, read_only=True) as s:
        by_prompt = dict(s.execute(select(Response.prompt_id, func.count()).where(Response.job_id == job_id)
                                   .group_by(Response.prompt_id)).all())
    assert by_prompt == {sampled: 2, unsampled: 2}


def test_cancelling_a_loop_stops_its_rounds_training_at_the_next_step(engine, registered, fake_dpo):
    """Cancel means stop for good: the round's train job is cancelled at its next step, rather
    than trained to the end, and the loop ends cancelled too (not failed)."""
    from feedback.jobs import Cancelled

    steps: list[int] = []

    def main(cfg, inputs):
        callback = inputs.callbacks[0]
        with session_scope(engine) as s:  # the admin presses Cancel while the round trains
            jobs.request_cancel(session=s, job_id=job_id, actor=CLI)
        for step in range(1, 51):
            try:
                callback.reporter.progress(step, 50)
            except Cancelled:
                callback.cancelled = True
                return None
            steps.append(step)
        raise UserError(STOP)

    registered(STAGES, "dpo", Stage(config=STAGES.get("dpo").config, main=main))
    with session_scope(engine) as s:
        job_id = start_loop(session=s, config=LoopConfig(rounds=2), actor=CLI).id
        _training_round(s, job_id)

    done = jobs.run_job(engine=engine, job_id=job_id)

    assert done.status == "cancelled", done.error
    assert steps == []  # the first step saw the cancel
    with session_scope(engine, read_only=True) as s:
        train = s.scalar(select(Job).where(Job.kind == "train"))
        assert train.status == "cancelled"
