"""The reft recipe on the tiny real model: one job, SFT on references then GRPO with a grader
reward, two policy versions with their lineage, the gate on the second against the starting
policy, a worker killed between the stages resumes without redoing the SFT, and one training job
at a time across 'train' and 'reft'."""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict
from datetime import timedelta

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import func, select, update

from cli import main
from db.engine import session_scope
from db.models import Job, PolicyVersion, Prompt, utcnow
from feedback import jobs
from feedback.actors import CLI
from feedback.errors import UserError
from feedback.launchers import LAUNCHERS
from feedback.policies import ensure_base_policy
from feedback.prompts import canonical_messages, content_hash
from judges.constitutions import ensure_shipped
from judges.graders import GRADERS
from training.reft import ReftConfig, start_reft
from training.rounds import RoundConfig, start_round

TINY = {"learning_rate": 1e-3, "per_device_train_batch_size": 4, "max_length": 64, "lora_r": 4, "lora_alpha": 8,
        "save_steps": 2}
class LengthGrader:
    """Longer answers score higher: a random model's samples of one prompt then differ in reward
    (against references, numeric gives them all 0), so GRPO has advantages to learn from."""

    name = spec = "chars"

    def grade(self, answer: str, reference: str) -> float:
        return min(1.0, len(answer) / 40)


GRADED = "chars"
NO_JUDGE_GATE = {"prompts": 2, "max_new_tokens": 4, "judge_backend": None, "min_graded": 1}


@pytest.fixture
def references(engine, tiny_model_dir, monkeypatch, tmp_path):
    """v0 = the tiny model; 8 arithmetic prompts with reference answers (2 of them val)."""
    monkeypatch.setenv("POLICIES_DIR", str(tmp_path / "policies"))  # read at call time, by workers too
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        ensure_base_policy(session=s, actor=CLI).base_model = str(tiny_model_dir)
        for i in range(8):
            messages = canonical_messages(f"What is {i} plus {i}?", None)
            s.add(Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                         reference=str(2 * i), split="val" if i >= 6 else "train"))
    return engine


def reft_config(*, sft_steps: int = 4, rl_steps: int = 4, grader: str = "numeric") -> ReftConfig:
    return ReftConfig(sft={**TINY, "max_steps": sft_steps},
                      rl={**TINY, "max_steps": rl_steps, "num_generations": 4, "max_completion_length": 8},
                      grader=grader, gate=NO_JUDGE_GATE)


def versions(engine) -> dict[str, PolicyVersion]:
    with session_scope(engine, read_only=True) as s:
        rows = s.scalars(select(PolicyVersion).order_by(PolicyVersion.id)).all()
        return {v.name: (v.stage, v.parent.name if v.parent else None, v.job_id, v.train_config, v.metrics,
                         v.evaluation, v.adapter_path) for v in rows}


@pytest.mark.train
def test_reft_job_makes_two_versions_then_gates_the_second(references, registered):
    registered(GRADERS, GRADED, lambda arg: LengthGrader())
    with session_scope(references) as s:
        job = start_reft(session=s, config=reft_config(grader=GRADED), actor=CLI)
    done = jobs.run_job(engine=references, job_id=job.id)
    assert done.status == "succeeded", done.error
    assert (done.result["sft_version"], done.result["policy_version"], done.result["parent"]) == ("v1", "v2", "v0")

    made = versions(references)
    sft_stage, sft_parent, sft_job, sft_config, sft_metrics, sft_gate, sft_adapter = made["v1"]
    rl_stage, rl_parent, rl_job, rl_config, rl_metrics, rl_gate, rl_adapter = made["v2"]
    assert (sft_stage, sft_parent, sft_job) == ("sft", "v0", job.id)
    assert (rl_stage, rl_parent, rl_job) == ("grpo", "v1", job.id)
    assert sft_config["sft_source"] == "reference" and sft_config["stage_config"]["max_steps"] == 4
    assert rl_config["grader"] == GRADED and rl_config["reference"] == "parent"
    assert rl_config["stage_config"]["num_generations"] == 4
    assert [c["recipe"]["step"] for c in (sft_config, rl_config)] == [1, 2]
    assert sft_adapter != rl_adapter and all(os.path.exists(p) for p in (sft_adapter, rl_adapter))
    # Each stage trained. SFT's loss moved over its steps; GRPO's loss is 0 on-policy by construction
    # (group-normalised advantages, ratio 1), so its gradient and weights show that it learned.
    assert sft_metrics["global_step"] == rl_metrics["global_step"] == 4
    assert sft_metrics["first_loss"] != sft_metrics["last_loss"], sft_metrics
    sft_weights, rl_weights = (load_file(os.path.join(path, "adapter_model.safetensors"))
                               for path in (sft_adapter, rl_adapter))
    assert sft_weights.keys() == rl_weights.keys()  # the RL stage continued the SFT adapter
    assert any(not torch.equal(sft_weights[k], rl_weights[k]) for k in sft_weights)
    # The gate ran once, on the RL version against the starting policy (not against the SFT version).
    assert sft_gate is None
    assert rl_gate["candidate"] == "v2" and rl_gate["baseline"] == "v0" and rl_gate["graded_prompts"] == 2
    assert done.result["gate"]["decision"] == rl_gate["decision"]
    # The job's metric history says which stage each logged step belongs to.
    with session_scope(references, read_only=True) as s:
        history = s.get(Job, job.id).metrics
    for stage in ("sft", "grpo"):
        assert [m["step"] for m in history if m.get("stage") == stage and "loss" in m] == [1, 2, 3, 4]
    assert any(m["grad_norm"] > 0 for m in history if m.get("stage") == "grpo" and "grad_norm" in m)


def _wait(engine, job_id, condition, seconds=300):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with session_scope(engine, read_only=True) as s:
            job = s.get(Job, job_id)
            made = s.scalar(select(func.count()).select_from(PolicyVersion).where(PolicyVersion.job_id == job_id))
            if condition(job, made):
                return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} timed out in {job.status}")


@pytest.mark.train
def test_a_job_killed_between_the_stages_resumes_without_redoing_the_sft(references, db_url, tmp_path):
    # Killed as soon as the SFT version exists: the worker is then loading the model for GRPO, whose
    # 4 steps take several seconds (so it cannot have finished in the moment it takes to notice).
    with session_scope(references) as s:
        job = start_reft(session=s, config=reft_config(sft_steps=2), actor=CLI)
    jobs.start_detached(job=job, database_url=db_url, log_dir=tmp_path)
    running = _wait(references, job.id, lambda j, made: made == 1 or j.status not in jobs.ACTIVE)
    assert running.status == "running", (tmp_path / f"job-{job.id}.log").read_text()
    os.kill(running.pid, signal.SIGKILL)
    with session_scope(references) as s:  # as mark_stale finds it a minute later
        s.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    with session_scope(references) as s:
        sft_logged = sum(m.get("stage") == "sft" for m in s.get(Job, job.id).metrics)
        assert jobs.resume(session=s, job_id=job.id, actor=CLI).status == "queued"
    done = jobs.run_job(engine=references, job_id=job.id)
    assert done.status == "succeeded", done.error

    made = versions(references)
    assert [(name, v[0], v[1]) for name, v in made.items()] == [("v0", "base", None), ("v1", "sft", "v0"),
                                                                ("v2", "grpo", "v1")]
    assert done.result["stages"][0]["skipped_on_resume"] is True and "skipped_on_resume" not in done.result["stages"][1]
    assert "(sft): made v1 before the interruption, skipped" in done.log_tail
    # No SFT step was trained again after the resume.
    assert sum(m.get("stage") == "sft" for m in done.metrics) == sft_logged


def test_one_training_job_at_a_time_across_train_and_reft(references):
    with session_scope(references) as s:
        reft = start_reft(session=s, config=reft_config(), actor=CLI)
    with pytest.raises(UserError, match=f"Training job {reft.id} is already queued"):
        with session_scope(references) as s:
            start_round(session=s, config=RoundConfig(stage="sft", sft_source="reference"), actor=CLI)
    with pytest.raises(UserError, match=f"Training job {reft.id} \\(reft\\) is already queued"):
        with session_scope(references) as s:
            start_reft(session=s, config=reft_config(), actor=CLI)
    with session_scope(references) as s:
        jobs.request_cancel(session=s, job_id=reft.id, actor=CLI)
        train = start_round(session=s, config=RoundConfig(stage="sft", sft_source="reference"), actor=CLI)
    with pytest.raises(UserError, match=f"Training job {train.id} \\(train\\) is already queued"):
        with session_scope(references) as s:
            start_reft(session=s, config=reft_config(), actor=CLI)
    # A reft job queued next to a round (two requests at once) refuses to train when its worker
    # starts, before touching a model, and can be resumed later.
    with session_scope(references) as s:
        racing = jobs.create_job(session=s, kind="reft", config={**asdict(reft_config()), "parent": "v0"}, actor=CLI)
    done = jobs.run_job(engine=references, job_id=racing.id)
    assert done.status == "failed" and f"Training job {train.id} (train) is queued" in done.error


@pytest.mark.parametrize("settings, match", [
    ({"rl_stage": "dpo"}, "rl_stage is grpo or ppo"),
    ({"reference": "parent"}, "reference is 'sft' or 'base'"),
    ({"sft": {"beta": 0.1}}, "Unknown sft setting"),
    ({"rl": {"num_generations": 3}}, "multiple of num_generations"),
    ({"rl_round": {"stage": "ppo"}}, "rl_round cannot set stage"),
    ({"rl_round": {"nonsense": 1}}, "rl_round cannot set nonsense"),
    ({"gate": {"prompts": 0}}, "at least 1"),
])
def test_bad_reft_settings_are_refused(settings, match):
    with pytest.raises(UserError, match=match):
        ReftConfig(**settings)


def test_reft_command_queues_one_job_from_its_flags_and_config(references, use_db, registered, monkeypatch, tmp_path,
                                                               capsys):
    launched = []

    class Recording:
        def launch(self, *, job_id, **_):
            launched.append(job_id)
            return "recorded"

    registered(LAUNCHERS, "recording", Recording)
    monkeypatch.setenv("JOB_LAUNCHER", "recording")
    config = tmp_path / "reft.json"
    config.write_text(json.dumps({"sft": {"max_steps": 3}, "rl": {"max_steps": 5}, "grader": "exact"}))
    assert main(["reft", "--config", str(config), "--rl-stage", "ppo", "--grader", "numeric", "--no-evaluate",
                 "--detach"]) == 0
    with session_scope(references, read_only=True) as s:
        job = s.scalar(select(Job).where(Job.kind == "reft"))
    assert launched == [job.id]
    assert {k: job.config[k] for k in ("parent", "rl_stage", "grader", "evaluate", "sft", "rl")} == {
        "parent": "v0", "rl_stage": "ppo", "grader": "numeric", "evaluate": False, "sft": {"max_steps": 3},
        "rl": {"max_steps": 5}}
    assert main(["reft", "--rl-stage", "grpo"]) == 2  # a second one while the first is queued
    assert "one at a time" in capsys.readouterr().err
