"""PPO (training/stages/ppo/) on the tiny random model: it learns a grader's reward, checkpoints are
safetensors + JSON and resume exactly where they stopped, a callback can cancel, and the pure
pieces (adaptive KL, masks, GAE) do what the papers say."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from judges.graders import as_reward_func, parse_grader
from training.stages.base import StageInputs, latest_checkpoint
from training.stages.ppo.config import PPOConfig
from training.stages.ppo.stage import main
from training.stages.ppo.tensors import adaptive_kl_update, completion_mask, gae


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model gains nothing from threads, and on a busy 2-core machine two spinning
    OpenMP threads make every step several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rows(n: int = 32) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}], "reference": str(2 * i)}
            for i in range(n)]


# "The answer starts with a non-whitespace character", through the real grader path. Every
# prompt ends in "<|im_start|>assistant\n" and the random tiny model mostly copies its last
# token, so at temperature 0.07 it answers "\n..." ~95% of the time: reward ~0 at the start.
# Learning = pushing one token's logit down, which LoRA does in a few dozen updates. (At
# temperature 1 the random model is uniform over 49k tokens and nothing is learnable.)
STARTS_WITH_TEXT = as_reward_func(parse_grader(r"regex:^\S"))


def tiny_cfg(**overrides) -> PPOConfig:
    base = {"max_steps": 4, "learning_rate": 5e-3, "rollout_batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1,
            "max_new_tokens": 4, "temperature": 0.07, "kl_coef": 0.01, "save_steps": 0, "max_length": 128}
    return PPOConfig(**{**base, **overrides})


class Recorder(TrainerCallback):
    def __init__(self, stop_at: int | None = None):
        self.steps: list[int] = []
        self.logs: list[dict] = []
        self.stop_at = stop_at

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)
        if self.stop_at is not None and state.global_step >= self.stop_at:
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def run(model_dir: Path, output_dir: Path, cfg: PPOConfig, *, resume: bool = False, callbacks=(), **inputs):
    inputs.setdefault("reward_funcs", [STARTS_WITH_TEXT])
    return main(cfg, StageInputs(model_dir=str(model_dir), output_dir=output_dir, train_rows=rows(),
                                 callbacks=list(callbacks), resume=resume, **inputs))


@pytest.mark.train
def test_ppo_learns_a_grader_reward(tiny_model_dir, tmp_path):
    steps = 20
    recorder = Recorder()
    cfg = tiny_cfg(max_steps=steps, rollout_batch_size=16, mini_batch_size=8, ppo_epochs=2, max_new_tokens=8,
                   save_steps=steps)
    result = run(tiny_model_dir, tmp_path, cfg, callbacks=[recorder])

    curve = [log["reward"] for log in recorder.logs]
    print("reward curve:", [round(r, 3) for r in curve])
    first, last = sum(curve[:4]) / 4, sum(curve[-4:]) / 4
    assert last >= first + 0.3, curve
    assert result.metrics["global_step"] == steps
    assert result.metrics["mean_reward_first"] == curve[0] and result.metrics["mean_reward_last"] == curve[-1]
    for key in ("kl", "policy_loss", "value_loss", "train_loss"):
        assert isinstance(result.metrics[key], float), key
    assert {"loss", "entropy", "kl", "kl_coef", "clipfrac", "rewards/grader_regex"} <= set(recorder.logs[-1])

    # The artifact is a LoRA adapter in safetensors; LoRA B starts at zero, so non-zero = trained.
    adapter = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(t.abs().max() > 0 for t in lora_b)
    assert not any("lm_head" in name or "embed" in name for name in adapter)
    # The value head starts at zero too, and was trained with the policy.
    value_head = load_file(str(tmp_path / f"checkpoint-{steps}" / "value_head.safetensors"))
    assert value_head["summary.weight"].abs().max() > 0


@pytest.mark.train
def test_checkpoints_are_safetensors_and_resume_where_they_stopped(tiny_model_dir, tmp_path):
    # Uninterrupted: 4 steps, checkpoints at 2 and 4.
    straight = run(tiny_model_dir, tmp_path / "a", tiny_cfg(max_steps=4, save_steps=2))
    # Interrupted after step 2 (a fresh process would see the same), then resumed to step 4.
    run(tiny_model_dir, tmp_path / "b", tiny_cfg(max_steps=2, save_steps=2))
    assert latest_checkpoint(tmp_path / "b").endswith("checkpoint-2")
    recorder = Recorder()
    resumed = run(tiny_model_dir, tmp_path / "b", tiny_cfg(max_steps=4, save_steps=2), resume=True,
                  callbacks=[recorder])

    assert recorder.steps == [3, 4]  # continued from the saved step, did not redo 1-2
    assert resumed.metrics["global_step"] == 4
    assert resumed.metrics["mean_reward_first"] == straight.metrics["mean_reward_first"]  # carried over
    # Data order, sampling seeds, LoRA and Adam state all restored: the same weights as no interruption.
    a = load_file(str(straight.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)

    checkpoint = Path(latest_checkpoint(tmp_path / "b"))
    assert checkpoint.name == "checkpoint-4"
    names = {p.name for p in checkpoint.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "value_head.safetensors", "optimizer.safetensors",
            "optimizer.json", "trainer_state.json"} <= names
    # No pickles anywhere: weights and optimizer state are safetensors, the rest JSON.
    assert all(p.suffix in {".safetensors", ".json"} for p in checkpoint.iterdir()), names
    assert not [p for p in tmp_path.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 4
    assert len(list((tmp_path / "a").glob("checkpoint-*"))) == 2


@pytest.mark.train
def test_a_callback_cancels_the_run(tiny_model_dir, tmp_path):
    recorder = Recorder(stop_at=2)
    result = run(tiny_model_dir, tmp_path, tiny_cfg(max_steps=50), callbacks=[recorder])
    assert recorder.steps == [1, 2]
    assert result.metrics["global_step"] == 2
    assert (result.adapter_dir / "adapter_model.safetensors").exists()


@pytest.mark.train
def test_reward_model_and_weighted_reward_functions(tiny_model_dir, tmp_path):
    """A sequence-classification reward model and two reward functions, mixed with weights."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    rm_dir = tmp_path / "rm"
    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(rm_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(rm_dir)

    seen = {}

    def constant(prompts, completions, completion_ids, reference=None, **kwargs):
        seen.update(n=len(completions), reference=reference, ids=completion_ids)
        return [1.0] * len(completions)

    def not_applicable(prompts, completions, **kwargs):
        return [None] * len(completions)  # TRL's "does not apply": adds nothing

    recorder = Recorder()
    run(tiny_model_dir, tmp_path / "out", tiny_cfg(max_steps=1, reward_weights=[0.5, 2.0], reward_model_weight=0.0),
        reward_funcs=[constant, not_applicable], reward_model_dir=str(rm_dir), callbacks=[recorder])
    logs = recorder.logs[-1]
    assert logs["rewards/constant"] == 1.0 and logs["rewards/reward_model"] != 0.0
    assert logs["reward"] == pytest.approx(0.5)  # 0.5 * 1 + 2 * (nothing) + 0 * reward model
    assert seen["n"] == 4 and len(seen["reference"]) == 4 and all(isinstance(i, int) for i in seen["ids"][0])


@pytest.mark.train
def test_parent_adapter_and_reference_choice(tiny_model_dir, tmp_path):
    """Training continues from the parent's adapter; the KL is to the base (adapter disabled) by
    default, or to the named reference adapter."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from training.stages.base import lora_config

    parent = tmp_path / "parent"
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_config(tiny_cfg()))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # the parent policy differs from the base
    model.save_pretrained(parent)

    to_base, to_parent = Recorder(), Recorder()
    run(tiny_model_dir, tmp_path / "base-ref", tiny_cfg(max_steps=1), parent_adapter=str(parent), callbacks=[to_base])
    run(tiny_model_dir, tmp_path / "parent-ref", tiny_cfg(max_steps=1), parent_adapter=str(parent),
        reference_adapter=str(parent), callbacks=[to_parent])
    assert to_base.logs[0]["kl"] > 1.0  # sampled before any update: policy = parent != base
    assert abs(to_parent.logs[0]["kl"]) < 1e-2  # policy = parent = reference


def test_adaptive_kl_controller():
    # Ziegler et al.: kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_samples / horizon
    assert adaptive_kl_update(0.1, current_kl=6.0, target_kl=6.0, n_samples=64, horizon=10000) == 0.1
    up = adaptive_kl_update(0.1, current_kl=6.6, target_kl=6.0, n_samples=100, horizon=1000)
    assert up == pytest.approx(0.1 * (1 + 0.1 * 0.1))
    # The error is clipped to +-20%: a wild batch moves the coefficient no faster than that.
    far_over = adaptive_kl_update(0.1, current_kl=600.0, target_kl=6.0, n_samples=100, horizon=1000)
    far_under = adaptive_kl_update(0.1, current_kl=0.0, target_kl=6.0, n_samples=100, horizon=1000)
    assert far_over == pytest.approx(0.1 * 1.02) and far_under == pytest.approx(0.1 * 0.98)
    # Repeatedly over target: the coefficient keeps growing; under target: keeps shrinking.
    coef = 0.1
    for _ in range(10):
        coef = adaptive_kl_update(coef, current_kl=12.0, target_kl=6.0, n_samples=256, horizon=1000)
    assert coef > 0.1 * 1.5


def test_completion_mask_stops_after_the_first_eos():
    eos = torch.tensor([2])
    ids = torch.tensor([[5, 6, 2, 2, 2],  # EOS, then padding (pad == EOS in SmolLM2)
                        [5, 6, 7, 8, 9],  # hit max_new_tokens: no EOS
                        [2, 2, 2, 2, 2]])  # empty answer: the EOS itself is still an action
    assert completion_mask(ids, eos).int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_gae_with_lambda_one_is_return_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.2, 0.1, 9.0]])
    mask = torch.tensor([[True, True, True, False]])  # the 4th slot is padding: ignored entirely
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[0.5, 0.8, 0.9, 0.0]]))
    torch.testing.assert_close(returns[mask], torch.tensor([1.0, 1.0, 1.0]))
