"""Rounds that mix rewards by weight: GRPO with the numeric grader and the AI judge's 1-10 score,
PPO with the grader, the judge's pairwise verdict against the reference and a trained reward
model. The judge is the real Anthropic SDK against the local stub (testkit/anthropic_stub.py); the
policy is the tiny test model. Also: a judge budget spent mid-run leaves None, not 0, in training."""
from __future__ import annotations

import json
import logging
import math
import re

import pytest
import torch
from sqlalchemy import select
from transformers import TrainerCallback

from db.engine import session_scope
from db.models import Job, PolicyVersion, Prompt
from feedback import jobs
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.prompts import canonical_messages, content_hash
from judges.constitutions import ensure_shipped
from judges.judge_rewards import build_judge_reward, parse_judge_reward
from testkit.anthropic_stub import MESSAGES, AnthropicStub, prefer_shorter
from training.rounds import RoundConfig, start_round
from training.stages import STAGES
from training.stages.base import StageInputs

pytestmark = pytest.mark.train

KEY = "sk-ant-test-" + "roundrewardkey" * 3
MODEL = "claude-sonnet-4-6"
_BLOCK = re.compile(r"<(conversation|response) ([0-9a-f]{16})>\n(.*?)\n</\1 \2>", re.DOTALL)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two spinning OpenMP threads make every step of the tiny model slower on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def length_judge(request):
    """A 1-10 score that varies with the response, so a GRPO group has something to learn from."""
    blocks = {tag: text for tag, _, text in _BLOCK.findall(request["messages"][0]["content"])}
    if "response" not in blocks:  # a pairwise request
        return prefer_shorter(request)
    return {"reasoning": f"Scored. Score: {2 + len(blocks['response']) % 9}", "winner": "tie"}


@pytest.fixture
def stub(monkeypatch):
    with AnthropicStub(decide=length_judge) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("JUDGE_MAX_RETRIES", "1")
        yield server


@pytest.fixture
def world(engine, tiny_model_dir, monkeypatch, tmp_path):
    """v0 = the tiny model; 4 arithmetic prompts with reference answers; the shipped constitutions."""
    monkeypatch.setenv("POLICIES_DIR", str(tmp_path / "policies"))
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        ensure_base_policy(session=s, actor=CLI).base_model = str(tiny_model_dir)
        for i in range(4):
            messages = canonical_messages(f"What is {i} plus {i}?", None)
            s.add(Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                         reference=str(2 * i), split="train"))
    return engine


def run_round(engine, config: RoundConfig) -> tuple[Job, PolicyVersion]:
    with session_scope(engine) as s:
        job = start_round(session=s, config=config, actor=CLI)
    done = jobs.run_job(engine=engine, job_id=job.id)
    assert done.status == "succeeded", done.error
    with session_scope(engine, read_only=True) as s:
        version = s.scalar(select(PolicyVersion).where(PolicyVersion.name == done.result["policy_version"]))
        s.expunge(version)
    return done, version


def judged_pairs(stub) -> list[tuple[str, str]]:
    """(conversation, response) of every scoring request the stub received."""
    out = []
    for request in stub.requests_to(MESSAGES):
        blocks = {tag: text for tag, _, text in _BLOCK.findall(request.json["messages"][0]["content"])}
        out.append((blocks["conversation"], blocks["response"]))
    return out


def assert_no_key_anywhere(job: Job, caplog) -> None:
    row = json.dumps({"config": job.config, "result": job.result, "metrics": job.metrics, "log": job.log_tail,
                      "error": job.error}, default=str)
    assert KEY not in row and KEY not in caplog.text


def test_grpo_round_mixes_the_grader_and_the_judge_score(world, stub, caplog):
    rewards = ["numeric", f"0.5*judge-score:backend=anthropic;model={MODEL};rubric=correctness"]
    config = RoundConfig(stage="grpo", rewards=rewards, evaluate=False,
                         stage_config={"max_steps": 2, "learning_rate": 1e-3, "max_length": 64, "num_generations": 2,
                                       "per_device_train_batch_size": 2, "max_completion_length": 4})
    # The worker of this round would be handed the judge's key (and nothing logs it).
    assert jobs.child_env("train", {})["ANTHROPIC_API_KEY"] == KEY
    with caplog.at_level(logging.INFO):
        job, version = run_round(world, config)

    assert version.train_config["rewards"] == rewards
    assert version.train_config["stage_config"]["reward_weights"] == [1.0, 0.5]
    steps = [m for m in job.metrics if "rewards/judge_score/mean" in m]
    assert len(steps) == 2
    for m in steps:  # TRL summed the two with our weights; the judge moved the reward off the grader's
        assert m["reward"] == pytest.approx(m["rewards/grader_numeric/mean"] + 0.5 * m["rewards/judge_score/mean"],
                                            abs=1e-5)
        assert m["rewards/judge_score/mean"] > 0 and m["reward"] > m["rewards/grader_numeric/mean"]
        assert "judge_score/calls" in m  # the judge's counts, logged next to the rewards
    # Every request was a new (prompt, response): repeats were cache hits, never sent again.
    pairs = judged_pairs(stub)
    assert pairs and len(set(pairs)) == len(pairs)
    assert version.metrics["judge_score/calls"] == len(pairs)
    assert version.metrics["judge_score/cost_usd"] > 0 and version.metrics["judge_score/budget_exhausted"] == 0
    assert_no_key_anywhere(job, caplog)


def test_ppo_round_mixes_grader_pairwise_judge_and_reward_model(world, stub, tiny_model_dir, tmp_path, caplog):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    rm_dir = tmp_path / "reward-model"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(
        AutoConfig.from_pretrained(tiny_model_dir, num_labels=1)).save_pretrained(rm_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(rm_dir)
    with session_scope(world) as s:
        reward_job = Job(kind="train", status="succeeded", config={}, result={"reward_model_dir": str(rm_dir)})
        s.add(reward_job)
        s.flush()
        reward_job_id = reward_job.id

    rewards = ["numeric", f"0.5*judge-pairwise:backend=anthropic;model={MODEL};constitution=concise",
               f"0.25*reward-model:{reward_job_id}"]
    config = RoundConfig(stage="ppo", rewards=rewards, evaluate=False,
                         stage_config={"max_steps": 2, "learning_rate": 1e-3, "max_length": 64,
                                       "rollout_batch_size": 2, "mini_batch_size": 2, "max_new_tokens": 4,
                                       "ppo_epochs": 1})
    with caplog.at_level(logging.INFO):
        job, version = run_round(world, config)

    stage_config = version.train_config["stage_config"]
    assert (stage_config["reward_weights"], stage_config["reward_model_weight"]) == ([1.0, 0.5], 0.25)
    steps = [m for m in job.metrics if "rewards/judge_pairwise" in m]
    assert len(steps) == 2
    for m in steps:
        expected = (m["rewards/grader_numeric"] + 0.5 * m["rewards/judge_pairwise"]
                    + 0.25 * m["rewards/reward_model"])
        assert m["reward"] == pytest.approx(expected, abs=1e-5)
        assert m["rewards/reward_model"] != 0.0
    # Both orders of every judged completion against its reference answer.
    assert steps[-1]["rewards/judge_pairwise/calls"] == len(stub.requests_to(MESSAGES)) > 0
    assert len(stub.requests_to(MESSAGES)) % 2 == 0
    assert_no_key_anywhere(job, caplog)


class LogRecorder(TrainerCallback):
    def __init__(self):
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self.logs.append(dict(logs))


def test_a_budget_spent_mid_run_leaves_the_judge_out_not_zero(tiny_model_dir, tmp_path, stub, caplog):
    """GRPO on its own (no database): $0.002 pays for one scoring, then the judge says None."""
    judge = build_judge_reward(parse_judge_reward(
        f"judge-score:backend=anthropic;model={MODEL};max_cost_usd=0.002;rubric=correctness"), session=None)
    from judges.graders import as_reward_func, parse_grader

    numeric = as_reward_func(parse_grader("numeric"))
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}], "reference": str(2 * i)}
            for i in range(4)]
    stage = STAGES.get("grpo")
    cfg = stage.config(max_steps=2, learning_rate=1e-3, max_length=64, num_generations=2,
                       per_device_train_batch_size=2, max_completion_length=4, save_steps=100,
                       reward_weights=[1.0, 0.5])
    recorder = LogRecorder()
    with caplog.at_level(logging.WARNING, logger="judges.judge_rewards"):
        result = stage.main(cfg, StageInputs(model_dir=str(tiny_model_dir), output_dir=tmp_path / "grpo",
                                             train_rows=rows, reward_funcs=[numeric, judge], callbacks=[recorder]))
    assert result.metrics["judge_score/calls"] == 1 and result.metrics["judge_score/budget_exhausted"] == 1
    assert result.metrics["judge_score/over_budget"] >= 1
    assert "budget of $0.002 reached" in caplog.text
    # After the stop the judge's column is None (TRL's NaN, logged as None), not 0; the grader still rewards.
    judge_mean = recorder.logs[-1]["rewards/judge_score/mean"]
    assert judge_mean is None or math.isnan(judge_mean)
    assert recorder.logs[-1]["reward"] == pytest.approx(recorder.logs[-1]["rewards/grader_numeric/mean"])
