"""Every training stage trains the tiny random model for a few real steps on CPU: the trained
weights move, the loss moves, checkpoints are safetensors, a killed run resumes, and a round
continues from its parent's adapter against the reference it asked for."""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from feedback.errors import UserError
from judges.graders import as_reward_func, completion_text, parse_grader
from training.stages import STAGES
from training.stages.base import CommonConfig, StageInputs

TRL_STAGES = ("sft", "reward", "dpo", "kto", "grpo", "rloo")
# Small enough for a few seconds per step on 2 busy cores; lr high so 3-6 steps visibly move weights.
TINY = {"learning_rate": 1e-3, "per_device_train_batch_size": 2, "max_length": 64, "lora_r": 4, "lora_alpha": 8,
        "save_steps": 2}


# --- rows --------------------------------------------------------------------------------------


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def question(i: int) -> list[dict[str, str]]:
    return user(f"What is {i} + {i}?")


def good(i: int) -> str:
    return f"{2 * i}."


def bad(i: int) -> str:
    return f"Hmm, I am not sure. Maybe it is {2 * i + 1}, or not?"


def sft_rows(n: int = 8) -> list[dict]:
    return [{"prompt": question(i), "completion": assistant(good(i))} for i in range(n)]


def pair_rows(n: int = 8, start: int = 0) -> list[dict]:
    return [{"prompt": question(i), "chosen": assistant(good(i)), "rejected": assistant(bad(i))}
            for i in range(start, start + n)]


def kto_rows() -> list[dict]:
    # 6 thumbs up, 2 down: balance_labels weighs each thumbs-down 3x
    labels = [True, True, False, True, True, True, False, True]
    return [{"prompt": question(i), "completion": assistant(good(i) if up else bad(i)), "label": up}
            for i, up in enumerate(labels)]


def reference_rows(n: int = 4) -> list[dict]:
    return [{"prompt": question(i), "reference": "A"} for i in range(n)]


def length_reward(prompts, completions, **kwargs) -> list[float]:
    """Varies within a group even on a random model, so the policy gradient is never all zero."""
    return [len(completion_text(c)) / 100 for c in completions]


# --- helpers -----------------------------------------------------------------------------------


class Recorder(TrainerCallback):
    """Trainable weights when training starts and ends, and every log entry with its step."""

    def __init__(self) -> None:
        self.logs: list[tuple[int, dict]] = []
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        self.start_step: int | None = None
        self.adapters: list[str] = []
        self.ref: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start_step = state.global_step
        self.adapters = list(getattr(model, "peft_config", {}))
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.ref = {n: p.detach().clone() for n, p in model.named_parameters() if ".ref." in n}

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs or {})))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        params = dict(model.named_parameters())
        self.after = {n: params[n].detach().clone() for n in self.before}

    def losses(self) -> list[float]:
        return [entry["loss"] for _, entry in self.logs if "loss" in entry]

    def changed(self) -> list[str]:
        return [n for n in self.before if not torch.equal(self.before[n], self.after[n])]


def run(name: str, model_dir: Path, output_dir: Path, rows: list[dict], *, eval_rows=(), reward_funcs=(),
        parent=None, reference=None, resume=False, **overrides):
    config_cls, main = STAGES.get(name).config, STAGES.get(name).main
    cfg = config_cls(**{**TINY, "max_steps": 3, **overrides})
    recorder = Recorder()
    inputs = StageInputs(model_dir=str(model_dir), output_dir=output_dir, train_rows=rows, eval_rows=list(eval_rows),
                         reward_funcs=list(reward_funcs), parent_adapter=parent, reference_adapter=reference,
                         callbacks=[recorder], resume=resume)
    return main(cfg, inputs), recorder


def assert_trained(result, recorder, steps: int, *, loss_moves: bool = True) -> None:
    assert result.metrics["global_step"] == steps
    assert math.isfinite(result.metrics["train_loss"])
    assert recorder.before, "no trainable parameters"
    changed = recorder.changed()
    assert len(changed) == len(recorder.before), f"{len(recorder.before) - len(changed)} trainable tensors did not move"
    losses = recorder.losses()
    assert len(losses) == steps - (recorder.start_step or 0) and all(math.isfinite(x) for x in losses)
    if loss_moves:
        assert losses[0] != losses[-1], losses


def assert_adapter(result) -> dict[str, torch.Tensor]:
    """The saved adapter: safetensors only, default adapter only, every LoRA B moved off its zero init."""
    adapter_dir = Path(result.adapter_dir)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter_dir.iterdir()}
    assert not (adapter_dir / "adapter_model.bin").exists() and not (adapter_dir / "ref").exists()
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())
    return weights


def assert_safetensors_checkpoints(output_dir: Path, expected: list[int]) -> None:
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [int(p.name.split("-")[1]) for p in checkpoints] == expected
    for checkpoint in checkpoints:
        assert list(checkpoint.rglob("*.safetensors")), f"no safetensors weights in {checkpoint}"
        pickled = [p.name for p in checkpoint.rglob("*.bin") if p.name in ("pytorch_model.bin", "adapter_model.bin")]
        assert not pickled, f"pickled weights in {checkpoint}: {pickled}"


def as_parameter_name(key: str) -> str:
    """adapter file key -> parameter name of the trainable 'default' adapter."""
    return key.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny model gains nothing from intra-op threads; on a busy 2-core machine they only
    contend (measured: a KTO run took 35 s with 2 threads, 16 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def parent_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A trained adapter (3 SFT steps) to continue from."""
    result, _ = run("sft", tiny_model_dir, tmp_path_factory.mktemp("parent"), sft_rows(), save_steps=100)
    return Path(result.adapter_dir)


# --- registry and configs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", TRL_STAGES)
def test_every_stage_has_a_documented_config(name):
    config_cls, main = STAGES.get(name).config, STAGES.get(name).main
    assert issubclass(config_cls, CommonConfig) and callable(main)
    undocumented = [f.name for f in fields(config_cls) if not f.metadata.get("help")]
    assert not undocumented
    config_cls()  # the defaults are valid


@pytest.mark.parametrize("settings, match", [
    ({"loss_type": "kto"}, "loss_type"),
    ({"loss_type": "sigmoid", "label_smoothing": 0.1}, "label_smoothing"),
    ({"loss_type": "robust", "label_smoothing": 0.5}, "robust"),
    ({"ld_alpha": 1.5}, "ld_alpha"),
    ({"beta": 0.0}, "beta"),
    ({"smooth_by_confidence": True}, "use loss_type 'robust'"),
])
def test_dpo_rejects_bad_combinations(settings, match):
    with pytest.raises(UserError, match=match):
        STAGES.get("dpo").config(**settings)


def test_dpo_label_smoothing_from_the_rows_confidence():
    from training.stages.dpo import label_smoothing_for

    config = STAGES.get("dpo").config
    rows = [{"confidence": 0.9}, {"confidence": 0.7}, {"confidence": None}]
    assert label_smoothing_for(config(loss_type="robust", label_smoothing=0.2), rows) == 0.2  # as configured
    assert label_smoothing_for(config(loss_type="robust", smooth_by_confidence=True), rows) == 0.2  # (0.1 + 0.3) / 2
    assert label_smoothing_for(config(loss_type="robust", smooth_by_confidence=True), [{"confidence": 0.3}]) == 0.49
    with pytest.raises(UserError, match="rule 'reliability'"):
        label_smoothing_for(config(loss_type="robust", smooth_by_confidence=True), [{"prompt": []}])


@pytest.mark.train
def test_bad_settings_and_rows_are_user_errors(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="batch"):
        STAGES.get("kto").config(per_device_train_batch_size=1)
    with pytest.raises(UserError, match="multiple of num_generations"):
        STAGES.get("grpo").config(per_device_train_batch_size=3, num_generations=2)
    with pytest.raises(UserError, match="rejected"):
        run("dpo", tiny_model_dir, tmp_path, [{"prompt": question(1), "chosen": assistant("2.")}])
    with pytest.raises(UserError, match="no training rows"):
        run("sft", tiny_model_dir, tmp_path, [])
    with pytest.raises(UserError, match="reward"):
        run("grpo", tiny_model_dir, tmp_path, reference_rows(), per_device_train_batch_size=4)


# --- each stage trains -------------------------------------------------------------------------


@pytest.mark.train
def test_sft(tiny_model_dir, tmp_path):
    result, recorder = run("sft", tiny_model_dir, tmp_path, sft_rows())
    assert result.adapter_dir == tmp_path / "adapter" and result.model_dir is None
    assert_trained(result, recorder, 3)
    assert_adapter(result)
    assert_safetensors_checkpoints(tmp_path, [2, 3])
    assert result.metrics["resumed_from"] is None


@pytest.mark.train
def test_full_fine_tune_saves_a_model(tiny_model_dir, tmp_path):
    result, recorder = run("sft", tiny_model_dir, tmp_path, sft_rows(), use_lora=False, save_steps=100)
    assert result.adapter_dir is None and result.model_dir == tmp_path / "model"
    assert_trained(result, recorder, 3)
    assert "model.layers.0.self_attn.q_proj.weight" in recorder.before  # all weights trained, no LoRA
    files = {p.name for p in result.model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files and "pytorch_model.bin" not in files


@pytest.mark.train
@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora-merged"])
def test_reward_model(tiny_model_dir, tmp_path, use_lora):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    rows = [{**row, "margin": 0.5} for row in pair_rows(8)]
    result, recorder = run("reward", tiny_model_dir, tmp_path, rows, eval_rows=pair_rows(4, start=20),
                           use_lora=use_lora, max_steps=4)
    assert result.adapter_dir is None and result.model_dir == tmp_path / "reward_model"
    assert_trained(result, recorder, 4)
    assert result.metrics["eval_pairs"] == 4 and 0.0 <= result.metrics["eval_accuracy"] <= 1.0

    files = {p.name for p in result.model_dir.iterdir()}
    assert "model.safetensors" in files and not files & {"pytorch_model.bin", "adapter_model.safetensors"}
    reward_model = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert reward_model.config.num_labels == 1 and reward_model.config.pad_token_id is not None
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(reward_model.named_parameters())[name], dict(base.named_parameters())[name])
    assert_safetensors_checkpoints(tmp_path, [2, 4])


@pytest.mark.parametrize("settings", [
    {"loss_type": "sigmoid"},
    {"loss_type": "ipo"},
    {"loss_type": "hinge"},
    {"loss_type": "robust", "label_smoothing": 0.1},
    {"loss_type": "sigmoid", "ld_alpha": 0.5},
], ids=["sigmoid", "ipo", "hinge", "robust", "ld-dpo"])
@pytest.mark.train
def test_dpo_variants(tiny_model_dir, tmp_path, settings):
    result, recorder = run("dpo", tiny_model_dir, tmp_path, pair_rows(), **settings)
    assert_trained(result, recorder, 3)
    assert_adapter(result)
    for key in ("rewards/chosen", "rewards/margins", "rewards/accuracies"):
        assert math.isfinite(result.metrics[key])
    # a fresh adapter starts as the base, and the reference is the base: DPO's implicit rewards start at 0
    first = next(entry for _, entry in recorder.logs if "loss" in entry)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.train
def test_dpo_continues_from_parent_against_the_base(tiny_model_dir, tmp_path, parent_adapter):
    parent = load_file(parent_adapter / "adapter_model.safetensors")
    result, recorder = run("dpo", tiny_model_dir, tmp_path, pair_rows(), parent=str(parent_adapter))
    assert_trained(result, recorder, 3)
    start = {as_parameter_name(k): v for k, v in parent.items()}
    assert set(start) == set(recorder.before)
    assert all(torch.equal(start[n], recorder.before[n]) for n in start), "training did not start from the parent"
    trained = assert_adapter(result)
    assert any(not torch.equal(trained[k], parent[k]) for k in parent)
    # reference = the base (reference_adapter None), not TRL's copy of the parent: rewards start non-zero
    assert "ref" not in recorder.adapters
    first = next(entry for _, entry in recorder.logs if "loss" in entry)
    assert abs(first["rewards/chosen"]) > 1e-4


@pytest.mark.train
def test_dpo_reference_adapter(tiny_model_dir, tmp_path, parent_adapter):
    result, recorder = run("dpo", tiny_model_dir, tmp_path, pair_rows(), parent=str(parent_adapter),
                           reference=str(parent_adapter))
    assert_trained(result, recorder, 3)
    assert "ref" in recorder.adapters  # frozen copy of the reference adapter
    parent = {as_parameter_name(k).replace(".default.", ".ref."): v
              for k, v in load_file(parent_adapter / "adapter_model.safetensors").items()}
    assert parent.keys() == recorder.ref.keys() and all(torch.equal(parent[n], recorder.ref[n]) for n in parent)
    # policy == reference at the first step: DPO's implicit rewards start at 0
    first = next(entry for _, entry in recorder.logs if "loss" in entry)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.train
def test_resume_continues_from_the_newest_checkpoint(tiny_model_dir, tmp_path):
    first, _ = run("dpo", tiny_model_dir, tmp_path, pair_rows(), max_steps=4)
    assert first.metrics["global_step"] == 4
    assert_safetensors_checkpoints(tmp_path, [2, 4])
    at_step_4 = load_file(tmp_path / "checkpoint-4" / "adapter_model.safetensors")

    result, recorder = run("dpo", tiny_model_dir, tmp_path, pair_rows(), max_steps=6, resume=True)
    assert result.metrics["global_step"] == 6
    assert result.metrics["resumed_from"] == str(tmp_path / "checkpoint-4")
    assert recorder.start_step == 4  # the trainer state came back with the weights
    assert [step for step, entry in recorder.logs if "loss" in entry] == [5, 6]
    assert all(torch.equal(v, recorder.before[as_parameter_name(k)]) for k, v in at_step_4.items())
    assert_trained(result, recorder, 6)
    assert_adapter(result)
    assert_safetensors_checkpoints(tmp_path, [4, 6])


@pytest.mark.train
def test_kto(tiny_model_dir, tmp_path):
    result, recorder = run("kto", tiny_model_dir, tmp_path, kto_rows(), max_steps=4)
    assert_trained(result, recorder, 4)
    assert_adapter(result)
    assert (result.metrics["desirable_weight"], result.metrics["undesirable_weight"]) == (1.0, 3.0)
    assert_safetensors_checkpoints(tmp_path, [2, 4])


GRADER = as_reward_func(parse_grader("regex:^A"))
ONLINE = {"per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 8}


@pytest.mark.train
def test_grpo(tiny_model_dir, tmp_path):
    result, recorder = run("grpo", tiny_model_dir, tmp_path, reference_rows(), reward_funcs=[GRADER, length_reward],
                           **ONLINE)
    assert_trained(result, recorder, 3, loss_moves=False)  # a random model: only require that it learns something
    assert_adapter(result)
    assert math.isfinite(result.metrics["reward"])
    assert "rewards/grader_regex/mean" in recorder.logs[0][1]
    assert_safetensors_checkpoints(tmp_path, [2, 3])


@pytest.mark.train
def test_rloo_from_parent_with_kl_to_the_parent(tiny_model_dir, tmp_path, parent_adapter):
    result, recorder = run("rloo", tiny_model_dir, tmp_path, reference_rows(), reward_funcs=[GRADER, length_reward],
                           parent=str(parent_adapter), reference=str(parent_adapter), beta=0.05, **ONLINE)
    assert_trained(result, recorder, 3, loss_moves=False)
    assert_adapter(result)
    assert "ref" in recorder.adapters and math.isfinite(result.metrics["kl"])
    assert_safetensors_checkpoints(tmp_path, [2, 3])


@pytest.mark.train
def test_grpo_with_a_reward_model(tiny_model_dir, tmp_path):
    reward, _ = run("reward", tiny_model_dir, tmp_path / "reward", pair_rows(4), max_steps=2, save_steps=100)
    config_cls, main = STAGES.get("grpo").config, STAGES.get("grpo").main
    recorder = Recorder()
    result = main(config_cls(**{**TINY, **ONLINE, "max_steps": 2, "save_steps": 100}),
                  StageInputs(model_dir=str(tiny_model_dir), output_dir=tmp_path / "grpo", train_rows=reference_rows(),
                              reward_model_dir=str(reward.model_dir), callbacks=[recorder]))
    assert_trained(result, recorder, 2, loss_moves=False)
    assert "rewards/reward_model/mean" in recorder.logs[0][1]
