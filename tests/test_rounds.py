"""Training rounds end to end on a tiny real model: lineage, one run at a time, kill + resume
from the checkpoint, immutable snapshots, deploy to a vLLM-style server, promote and roll back."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select, update

from db.engine import session_scope
from db.models import Item, Job, Label, PolicyVersion, Prompt, Response, SnapshotLabel, User, utcnow
from feedback import jobs
from feedback.actors import CLI
from feedback.deploy import deploy
from feedback.errors import UserError
from feedback.policies import ensure_base_policy, promote
from feedback.projects import default_project
from feedback.prompts import canonical_messages, content_hash
from judges.constitutions import ensure_shipped
from training.rounds import RoundConfig, start_round
from training.stages.base import latest_checkpoint

pytestmark = pytest.mark.train

TINY_GATE = {"prompts": 2, "max_new_tokens": 4, "grader": "numeric", "judge_model": "tiny-smollm2-test"}


@pytest.fixture
def labelled(engine, tiny_model_dir, monkeypatch, tmp_path):
    """v0 = the tiny model; 8 prompts (2 val) with a labelled pair each."""
    monkeypatch.setenv("POLICIES_DIR", str(tmp_path / "policies"))  # read at call time, by workers too
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        v0 = ensure_base_policy(session=s, actor=CLI)
        v0.base_model = str(tiny_model_dir)
        user = User(username="ann", password_hash="x", role="annotator")
        s.add(user)
        s.flush()
        for i in range(8):
            messages = canonical_messages(f"What is {i} plus {i}?", None)
            prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                            reference=str(2 * i), split="val" if i >= 6 else "train")
            s.add(prompt)
            s.flush()
            good = Response(prompt_id=prompt.id, policy_version_id=v0.id, text=f"#### {2 * i}", params={})
            bad = Response(prompt_id=prompt.id, policy_version_id=v0.id, text="I do not know, sorry.", params={})
            s.add_all([good, bad])
            s.flush()
            item = Item(kind="pair", project_id=default_project(session=s).id,
                        prompt_id=prompt.id, response_a_id=good.id, response_b_id=bad.id)
            s.add(item)
            s.flush()
            s.add(Label(item_id=item.id, kind="pairwise", choice="a", source="human", user_id=user.id,
                        submission_id=f"s{i}"))
    return engine


def dpo_round(**stage_config) -> RoundConfig:
    return RoundConfig(stage="dpo", stage_config={"max_steps": 4, "learning_rate": 1e-3,
                                                  "per_device_train_batch_size": 2, "save_steps": 2,
                                                  "max_length": 64, **stage_config},
                       gate=TINY_GATE, snapshot={"sources": ["human"]})


def test_dpo_round_makes_a_candidate_with_lineage_and_gate(labelled):
    with session_scope(labelled) as s:
        job = start_round(session=s, config=dpo_round(), actor=CLI)
    done = jobs.run_job(engine=labelled, job_id=job.id)
    assert done.status == "succeeded", done.error
    assert done.result["policy_version"] == "v1" and done.result["parent"] == "v0"
    with session_scope(labelled, read_only=True) as s:
        v1 = s.scalar(select(PolicyVersion).where(PolicyVersion.name == "v1"))
        assert v1.status == "candidate" and v1.stage == "dpo" and v1.job_id == job.id
        assert v1.parent.name == "v0" and v1.snapshot_id == done.config["snapshot_id"]
        assert v1.train_config["stage_config"]["loss_type"] == "sigmoid" and "train_loss" in v1.metrics
        assert (v1.adapter_path and os.path.exists(os.path.join(v1.adapter_path, "adapter_model.safetensors")))
        gate = v1.evaluation
        # Two val prompts are too few for either verdict: the gate is undecided, which does not pass.
        assert gate["prompts"] == 2 and gate["decisive"] <= 2 and gate["win_verdict"] == "undecided"
        assert gate["graded_prompts"] == 2 and gate["accuracy_verdict"] is None
        assert gate["decision"] == "undecided" and gate["passed"] is False
        assert done.result["gate"]["decision"] == "undecided"
        metrics = s.get(Job, job.id).metrics
        assert [m["step"] for m in metrics if "loss" in m][:2] == [1, 2]


def test_two_concurrent_starts_give_one_run(labelled):
    outcomes = []

    def start():
        try:
            with session_scope(labelled) as s:
                outcomes.append(start_round(session=s, config=dpo_round(), actor=CLI).id)
        except UserError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(o, int) for o in outcomes) == 1
    assert any("one round at a time" in str(o) for o in outcomes)
    with session_scope(labelled, read_only=True) as s:
        assert len(s.scalars(select(Job).where(Job.kind == "train")).all()) == 1


def test_snapshot_is_frozen_when_the_round_starts(labelled):
    with session_scope(labelled) as s:
        job = start_round(session=s, config=dpo_round(), actor=CLI)
        frozen = set(s.scalars(select(SnapshotLabel.label_id)
                               .where(SnapshotLabel.snapshot_id == job.config["snapshot_id"])))
        late = Label(item_id=s.scalar(select(Item.id)), kind="pairwise", choice="b", source="judge",
                     submission_id="late")
        s.add(late)
        s.flush()
    assert late.id not in frozen and len(frozen) == 6  # the two val prompts' labels are never frozen


def _wait(engine, job_id, condition, seconds=240):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with session_scope(engine, read_only=True) as s:
            job = s.get(Job, job_id)
            if condition(job):
                return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} timed out in {job.status} at step {job.progress_done}")


def test_killed_round_resumes_from_its_checkpoint(labelled, db_url, tmp_path, monkeypatch):
    config = dpo_round(max_steps=10, save_steps=2, learning_rate=1e-4)
    config.evaluate = False
    with session_scope(labelled) as s:
        job = start_round(session=s, config=config, actor=CLI)
    round_dir = tmp_path / "policies" / f"round-{job.id}"
    jobs.start_detached(job=job, database_url=db_url, log_dir=tmp_path)
    running = _wait(labelled, job.id, lambda j: (round_dir / "checkpoint-4").exists() or j.status not in jobs.ACTIVE)
    assert running.status == "running", (tmp_path / f"job-{job.id}.log").read_text()
    os.kill(running.pid, signal.SIGKILL)
    killed_at = int(Path(latest_checkpoint(round_dir)).name.split("-")[1])  # the newest complete one
    with session_scope(labelled, read_only=True) as s:
        logged_before = len(s.get(Job, job.id).metrics)
    with session_scope(labelled) as s:
        s.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    with session_scope(labelled) as s:
        resumed = jobs.resume(session=s, job_id=job.id, actor=CLI)
    jobs.start_detached(job=resumed, database_url=db_url, log_dir=tmp_path)
    done = _wait(labelled, job.id, lambda j: j.status not in jobs.ACTIVE)
    log = (tmp_path / f"job-{job.id}.log").read_text()
    assert done.status == "succeeded", log
    assert "resuming from a checkpoint" in done.log_tail
    # After the resume, training picks up after the checkpoint's step instead of starting at 1 again.
    steps_after = [m["step"] for m in done.metrics[logged_before:] if "loss" in m]
    assert steps_after[0] == killed_at + 1 and steps_after[-1] == 10
    # Checkpoints load through safetensors (+ JSON) only: nothing pickled (.bin / .pt / .pth / .pkl).
    pickled = [p for p in round_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert (pickled == [] and list(round_dir.rglob("optimizer.safetensors"))
            and list(round_dir.rglob("rng_state.safetensors")))


class _VLLMStub(BaseHTTPRequestHandler):
    calls: list = []
    status = 200

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _VLLMStub.calls.append((self.path, body))
        self.send_response(_VLLMStub.status)
        self.end_headers()
        self.wfile.write(b"ok" if _VLLMStub.status == 200 else b'{"error": "rank too large"}')

    def log_message(self, *args):
        pass


def test_deploy_to_vllm_then_promote_and_roll_back(labelled, monkeypatch, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VLLMStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("POLICY_BACKEND", "openai")
    monkeypatch.setenv("POLICY_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with session_scope(labelled) as s:
        v0 = s.scalar(select(PolicyVersion).where(PolicyVersion.name == "v0"))
        s.add(PolicyVersion(name="v1", base_model=v0.base_model, adapter_path=str(adapter), served_name="v1",
                            parent_id=v0.id, status="candidate"))
    try:
        with session_scope(labelled) as s:
            v1 = s.scalar(select(PolicyVersion).where(PolicyVersion.name == "v1"))
            assert deploy(version=v1).startswith("loaded v1")
            promote(session=s, name="v1", actor=CLI, override_reason="never evaluated: testing the deploy path")
        assert _VLLMStub.calls[-1] == ("/v1/load_lora_adapter",
                                       {"lora_name": "v1", "lora_path": str(adapter.resolve())})
        _VLLMStub.status = 400
        with session_scope(labelled) as s, pytest.raises(UserError, match="refused the adapter"):
            deploy(version=s.scalar(select(PolicyVersion).where(PolicyVersion.name == "v1")))
        with session_scope(labelled) as s:
            promote(session=s, name="v0", actor=CLI)  # roll back
        with session_scope(labelled, read_only=True) as s:
            status = dict(s.execute(select(PolicyVersion.name, PolicyVersion.status)).all())
        assert status == {"v0": "active", "v1": "retired"}
    finally:
        _VLLMStub.status = 200
        server.shutdown()


@pytest.mark.parametrize("stage_name", ["ppo", "grpo"])
def test_grader_rounds_make_versions(labelled, stage_name):
    """ReFT-style rounds: prompts with references, the numeric grader as the reward."""
    stage_config = {"max_steps": 2, "learning_rate": 1e-3, "max_length": 64}
    stage_config.update({"rollout_batch_size": 2, "mini_batch_size": 2, "max_new_tokens": 4, "ppo_epochs": 1}
                        if stage_name == "ppo" else
                        {"num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 4})
    with session_scope(labelled) as s:
        job = start_round(session=s, config=RoundConfig(stage=stage_name, stage_config=stage_config, grader="numeric",
                                                        evaluate=False), actor=CLI)
    done = jobs.run_job(engine=labelled, job_id=job.id)
    assert done.status == "succeeded", done.error
    with session_scope(labelled, read_only=True) as s:
        version = s.scalar(select(PolicyVersion).where(PolicyVersion.name == done.result["policy_version"]))
        assert version.stage == stage_name and version.snapshot_id is None and version.parent.name == "v0"
        assert version.metrics["global_step"] == 2


@pytest.mark.parametrize("stage_name,task", [("reward", "rank"), ("sft", "edit"), ("dpo", "rating")])
def test_rounds_train_on_a_projects_rank_edit_and_rating_labels(labelled, stage_name, task):
    """A round limited to one project trains on its conversions: a reward model on rank
    expansions, SFT on rewrites, DPO on rating pairs; the snapshot holds only that project's labels."""
    from feedback.projects import create_project
    from testkit.factories import make_project_items

    with session_scope(labelled) as s:
        project = create_project(session=s, actor=CLI, name=f"p-{task}", task_type=task,
                                 k=3 if task != "edit" else None, aspects=["helpfulness"] if task == "rating" else None)
        annotator = s.scalar(select(User).where(User.username == "ann"))
        for n, item_id in enumerate(make_project_items(s, project=project, count=4)):
            values = {"rank": {"ranking": [1, 2, 3]},
                      "rating": {"ratings": [{"scores": {"helpfulness": v}, "rationales": {}} for v in (5, 3, 1)]},
                      "edit": {"edited_text": f"a better answer {n}", "edit_distance": 9}}[task]
            s.add(Label(item_id=item_id, kind=task, source="human", user_id=annotator.id, submission_id=f"p{n}",
                        **values))
        config = RoundConfig(stage=stage_name, evaluate=False, snapshot={"project": project.name},
                             stage_config={"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 2,
                                           "max_length": 64})
        job = start_round(session=s, config=config, actor=CLI)
    done = jobs.run_job(engine=labelled, job_id=job.id)
    assert done.status == "succeeded", done.error
    with session_scope(labelled, read_only=True) as s:
        frozen = s.scalars(select(Label.kind).join(SnapshotLabel, SnapshotLabel.label_id == Label.id)
                           .where(SnapshotLabel.snapshot_id == done.config["snapshot_id"])).all()
        assert frozen == [task] * 4  # the default project's pairwise labels stay out
        version = s.scalar(select(PolicyVersion).where(PolicyVersion.job_id == job.id))
    if stage_name == "reward":  # a reward model, not a policy version
        assert version is None and Path(done.result["reward_model_dir"]).is_dir()
    else:
        assert version.stage == stage_name and version.metrics["global_step"] == 2
