"""The online iterative DPO loop on the tiny model: every round's data and lineage land in the
database, and the loop promotes what it trained."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import Item, Label, PolicyVersion, Prompt
from feedback import jobs
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.prompts import canonical_messages, content_hash
from feedback.settings import PROJECT_ROOT
from judges.constitutions import ensure_shipped
from judges.graders import GRADERS
from training.loop import LoopConfig


class LengthGrader:
    """A fake grader through the real registry: random tiny-model texts differ in length, so every
    prompt yields a best-vs-worst pair."""

    name = spec = "longer"

    def grade(self, answer: str, reference: str) -> float:
        return min(1.0, len(answer) / 100)


@pytest.mark.train
def test_two_rounds_with_a_grader(engine, tiny_model_dir, monkeypatch, tmp_path, registered):
    monkeypatch.setenv("POLICIES_DIR", str(tmp_path / "policies"))
    registered(GRADERS, "longer", lambda arg: LengthGrader())
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        ensure_base_policy(session=s, actor=CLI).base_model = str(tiny_model_dir)
        for i in range(6):
            messages = canonical_messages(f"What is {i} + 1?", None)
            s.add(Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                         reference=str(i + 1), split="val" if i == 5 else "train"))
    config = LoopConfig(rounds=2, grader="longer", prompts_per_round=4, samples_per_prompt=3,
                        max_new_tokens=6, temperature=1.5, promote="always",
                        stage_config={"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
                                      "max_length": 64},
                        gate={"prompts": 1, "max_new_tokens": 4, "judge_model": tiny_model_dir.name})
    from dataclasses import asdict

    with session_scope(engine) as s:
        job_id = jobs.create_job(session=s, kind="loop", config=asdict(config), actor=CLI).id
    done = jobs.run_job(engine=engine, job_id=job_id)
    assert done.status == "succeeded", done.error
    rounds = done.result["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    with session_scope(engine, read_only=True) as s:
        versions = {v.name: v for v in s.scalars(select(PolicyVersion))}
        trained = [r for r in rounds if r["pairs"] > 0]
        assert len(trained) == 2
        for r in trained:
            v = versions[r["policy"]]
            assert v.parent.name == r["parent"] and v.stage == "dpo" and v.snapshot_id is not None
        assert versions[trained[-1]["policy"]].status == "active"
        labels = s.scalars(select(Label).where(Label.source == "grader")).all()
        assert labels and all(lab.provenance["loop_job"] == job_id for lab in labels)
        items = s.scalars(select(Item).where(Item.job_id == job_id)).all()
        assert len(items) == len(labels)


@pytest.mark.train
def test_run_stage_under_accelerate_launch(tiny_model_dir, tmp_path):
    """The multi-GPU entry point, run by `accelerate launch` as one CPU process."""
    rows = tmp_path / "dpo.jsonl"
    rows.write_text("\n".join(json.dumps({
        "prompt": [{"role": "user", "content": f"Say {i}"}],
        "chosen": [{"role": "assistant", "content": f"{i}"}],
        "rejected": [{"role": "assistant", "content": "no"}]}) for i in range(4)))
    config = json.dumps({"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_length": 128})
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "training.run_stage", "--stage", "dpo",
         "--rows", str(rows), "--model-dir", str(tiny_model_dir), "--output-dir", str(tmp_path / "out"),
         "--config", config],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["metrics"]["global_step"] == 2
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()


def test_reward_model_labeler_scores_with_the_trained_model(engine, tiny_model_dir, tmp_path):
    """The reward labeler loads the reward model a 'reward' round left on its job and ranks K answers."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from db.models import Job
    from training.loop import _Scorer

    model_dir = tmp_path / "reward_model"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(model_dir)
    with session_scope(engine) as s:
        job = Job(kind="train", config={}, status="succeeded", result={"reward_model_dir": str(model_dir)})
        s.add(job)
    scorer = _Scorer(engine, LoopConfig(labeler="reward", reward_job=job.id))
    texts = ["short", "a somewhat longer answer", "the longest answer of the three, by some way"]
    best, worst, evidence = scorer.best_and_worst([{"role": "user", "content": "hi"}], None, texts)
    scores = evidence["scores"]
    assert len(scores) == 3 and scores[best] == max(scores) and scores[worst] == min(scores) and best != worst
    assert scorer.source == "grader" and scorer.producer == f"reward-model:job-{job.id}"
