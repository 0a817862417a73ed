"""A loop goes on in the round it stopped in: a worker killed in round 2 resumes in round 2 (from
the CLI's `loop --resume`), without resampling or retraining round 1; and the services the
Training page calls around it (start, pause, cancel, resume, the per-round table)."""
from __future__ import annotations

from dataclasses import asdict

import pytest
from sqlalchemy import func, select, update

from cli import main
from db.engine import session_scope
from db.models import Job, PolicyVersion, Prompt, Response, User, utcnow
from feedback import jobs
from feedback.actors import CLI, Actor
from feedback.errors import PermissionDenied, UserError
from feedback.policies import ensure_base_policy
from feedback.projects import create_project
from feedback.prompts import canonical_messages, content_hash
from judges.graders import GRADERS
from training.loop import LoopConfig, loop_rounds, pause_loop, resume_loop, start_loop
from training.stages import STAGES, Stage

TINY_ROUNDS = dict(max_new_tokens=6, temperature=1.5, promote="always",
                   stage_config={"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
                                 "max_length": 64})


class WorkerKilled(BaseException):
    """A SIGKILL as the code sees it: no `except Exception` catches it, so no job records an
    ending and both the loop and its train job are left 'running' with stopped heartbeats."""


class LengthGrader:
    """Random tiny-model texts differ in length, so every prompt gives a best-vs-worst pair."""

    name = spec = "longer"

    def grade(self, answer: str, reference: str) -> float:
        return min(1.0, len(answer) / 100)


def seed_prompts(engine, model_dir, n_train: int = 5) -> None:
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI).base_model = str(model_dir)
        for i in range(n_train + 1):
            messages = canonical_messages(f"What is {i} + 1?", None)
            s.add(Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                         reference=str(i + 1), split="val" if i == n_train else "train"))


def _count(s, model) -> int:
    return s.scalar(select(func.count()).select_from(model))


@pytest.mark.train
def test_worker_killed_in_round_two_resumes_in_round_two(engine, use_db, tiny_model_dir, monkeypatch, tmp_path,
                                                         registered):
    monkeypatch.setenv("POLICIES_DIR", str(tmp_path / "policies"))
    registered(GRADERS, "longer", lambda arg: LengthGrader())
    dpo = STAGES.get("dpo")
    trained = []

    def main_killed_in_round_two_once(cfg, inputs):
        trained.append(inputs.output_dir.name)
        if len(trained) == 2:
            raise WorkerKilled()
        return dpo.main(cfg, inputs)

    registered(STAGES, "dpo", Stage(config=dpo.config, main=main_killed_in_round_two_once))
    seed_prompts(engine, tiny_model_dir)
    config = LoopConfig(rounds=2, grader="longer", prompts_per_round=2, samples_per_prompt=3, **TINY_ROUNDS,
                        gate={"prompts": 1, "max_new_tokens": 4, "judge_model": tiny_model_dir.name})
    with session_scope(engine) as s:
        job_id = start_loop(session=s, config=config, actor=CLI).id
    with pytest.raises(WorkerKilled):
        jobs.run_job(engine=engine, job_id=job_id)

    with session_scope(engine) as s:
        assert s.get(Job, job_id).status == "running"  # as a killed worker leaves it
        before = loop_rounds(session=s, job_id=job_id)
        assert [(r["round"], r["phase"]) for r in before] == [(1, "done"), (2, "training")]
        assert before[1]["status"] == "training" and before[1]["parent"] == before[0]["policy"]
        responses, versions = _count(s, Response), _count(s, PolicyVersion)
        # Nobody heartbeats for longer than STALE_AFTER: mark_stale will call both jobs interrupted.
        s.execute(update(Job).where(Job.status == "running").values(heartbeat_at=utcnow() - 2 * jobs.STALE_AFTER))

    assert main(["loop", "--resume", str(job_id)]) == 0

    with session_scope(engine, read_only=True) as s:
        loop = s.get(Job, job_id)
        assert loop.status == "succeeded", loop.error
        after = loop_rounds(session=s, job_id=job_id)
        assert [(r["round"], r["phase"], r["status"]) for r in after] == [(1, "done", "done"), (2, "done", "done")]
        # round 1 kept its train job and samples; round 2's interrupted train job was resumed, not replaced
        assert [r["train_job"] for r in after] == [r["train_job"] for r in before]
        assert _count(s, Response) == responses
        assert s.scalar(select(func.count()).select_from(Job).where(Job.kind == "train")) == 2
        assert trained == [f"round-{before[0]['train_job']}"] + [f"round-{before[1]['train_job']}"] * 2
        assert _count(s, PolicyVersion) == versions + 1
        v2 = s.scalar(select(PolicyVersion).where(PolicyVersion.name == after[1]["policy"]))
        assert v2.parent.name == after[0]["policy"] and v2.status == "active"
        for row in after:
            assert row["labels"] == row["pairs"] > 0 and row["promoted"] is True
            assert row["mean_length"] > 0 and row["kl"] is None  # DPO logs no KL


def test_loop_services_pause_cancel_resume(engine):
    config = LoopConfig(rounds=2)
    with session_scope(engine) as s:
        first = start_loop(session=s, config=config, actor=CLI)
        assert first.status == "queued" and first.config == asdict(config)
    with session_scope(engine) as s, pytest.raises(UserError, match=f"Loop job {first.id} is queued"):
        start_loop(session=s, config=config, actor=CLI)

    with session_scope(engine) as s:
        pause_loop(session=s, job_id=first.id, actor=CLI)  # queued: paused at once
    with session_scope(engine) as s:
        assert s.get(Job, first.id).status == "paused"
        assert loop_rounds(session=s, job_id=first.id) == []
    with session_scope(engine) as s, pytest.raises(UserError, match="resume or cancel it"):
        start_loop(session=s, config=config, actor=CLI)
    with session_scope(engine) as s, pytest.raises(UserError, match="only a queued or running loop"):
        pause_loop(session=s, job_id=first.id, actor=CLI)

    with session_scope(engine) as s:
        assert resume_loop(session=s, job_id=first.id, actor=CLI).status == "queued"
    with session_scope(engine) as s:
        assert s.get(Job, first.id).pause_requested is False
        pause_loop(session=s, job_id=first.id, actor=CLI)
    with session_scope(engine) as s:  # a paused loop has no worker: a cancel ends it at once
        assert jobs.request_cancel(session=s, job_id=first.id, actor=CLI) is True
    with session_scope(engine) as s:
        assert s.get(Job, first.id).status == "cancelled"
    with session_scope(engine) as s, pytest.raises(UserError, match="only interrupted, failed or paused"):
        resume_loop(session=s, job_id=first.id, actor=CLI)

    with session_scope(engine) as s:
        second = start_loop(session=s, config=config, actor=CLI)  # the cancelled one is no longer in the way
        sample = jobs.create_job(session=s, kind="sample", config={}, actor=CLI)
    with session_scope(engine) as s, pytest.raises(UserError, match=f"No loop job {sample.id}"):
        pause_loop(session=s, job_id=sample.id, actor=CLI)
    with session_scope(engine) as s:
        annotator = User(username="ann", password_hash="x", role="annotator")
        s.add(annotator)
        s.flush()
        for call in (lambda: pause_loop(session=s, job_id=second.id, actor=Actor.signed_in(annotator)),
                     lambda: resume_loop(session=s, job_id=second.id, actor=Actor.signed_in(annotator)),
                     lambda: start_loop(session=s, config=config, actor=Actor.signed_in(annotator))):
            with pytest.raises(PermissionDenied):
                call()


def test_loop_settings_are_checked_before_a_job_exists(engine):
    with pytest.raises(UserError, match="stage is one of dpo, kto, orpo, simpo"):
        LoopConfig(stage="grpo")
    with pytest.raises(UserError, match="labels_per_round"):
        LoopConfig(labeler="people", labels_per_round=0)
    with pytest.raises(UserError, match="Unknown dpo setting"):
        LoopConfig(stage_config={"no_such_setting": 1})
    with session_scope(engine) as s:
        create_project(session=s, actor=CLI, name="thumbs", task_type="binary")
    with session_scope(engine) as s, pytest.raises(UserError, match="'thumbs' is a binary project"):
        start_loop(session=s, config=LoopConfig(labeler="people", project="thumbs"), actor=CLI)
    with session_scope(engine, read_only=True) as s:
        assert _count(s, Job) == 0


def test_cli_resume_takes_no_other_settings(engine, use_db, capsys):
    with session_scope(engine) as s:
        job_id = start_loop(session=s, config=LoopConfig(), actor=CLI).id
    assert main(["loop", "--resume", str(job_id), "--rounds", "2"]) == 2
    assert "--resume goes on with the loop's own settings" in capsys.readouterr().err
    assert main(["loop", "--resume", str(job_id)]) == 2  # queued, not stopped: nothing to resume
    assert f"Job {job_id} is queued; only interrupted, failed or paused" in capsys.readouterr().err
