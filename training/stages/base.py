"""What every training stage shares, PPO included: common hyper-parameters (with help text), the
inputs a round hands a stage, what a stage returns, the LoRA set-up, loading the policy and its
reference, and finding the checkpoint to resume from. Running a TRL trainer is trl_stage.py's.

A stage is a config dataclass + `main(cfg, inputs) -> StageResult`. It knows nothing about the
database: training/rounds.py builds its inputs from a snapshot and stores what it returns. That
keeps every stage runnable by itself, and unchanged under `accelerate launch`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from feedback.config_fields import cfg_field


@dataclass
class CommonConfig:
    """Hyper-parameters every stage has. CPU defaults finish a small round on the 135M model in minutes."""

    max_steps: int = cfg_field(30, "Optimizer steps in this round (-1: use num_train_epochs).")
    num_train_epochs: float = cfg_field(1.0, "Epochs over the snapshot when max_steps is -1.")
    learning_rate: float = cfg_field(5e-5, "Peak learning rate (LoRA tolerates larger values than full fine-tuning).")
    per_device_train_batch_size: int = cfg_field(4, "Examples per device per step.")
    gradient_accumulation_steps: int = cfg_field(1, "Steps to accumulate before an optimizer update.")
    max_length: int = cfg_field(384, "Longest prompt+completion in tokens; longer examples are truncated.")
    lora_r: int = cfg_field(8, "LoRA rank; keep it <= the vLLM server's --max-lora-rank (default 16).")
    lora_alpha: int = cfg_field(16, "LoRA scaling numerator (effective scale = alpha / r).")
    lora_dropout: float = cfg_field(0.0, "Dropout on the LoRA branch.")
    use_lora: bool = cfg_field(True, "Train a LoRA adapter (what vLLM hot-loads) instead of all weights.")
    save_steps: int = cfg_field(10, "Checkpoint every N steps, so a killed run resumes close to where it died.")
    logging_steps: int = cfg_field(1, "Log loss and metrics every N steps (the admin page plots them).")
    seed: int = cfg_field(0, "Random seed for data order and initialisation.")

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


@dataclass
class StageInputs:
    model_dir: str  # the base model (a full HF directory)
    output_dir: Path  # checkpoints and the final artifact go here (a new directory per round)
    parent_adapter: str | None = None  # the parent policy's adapter: training continues from it
    reference_adapter: str | None = None  # the reference policy = base + this adapter (None: the base)
    train_rows: list[dict[str, Any]] = field(default_factory=list)
    eval_rows: list[dict[str, Any]] = field(default_factory=list)
    reward_funcs: list[Callable[..., list[float]]] = field(default_factory=list)  # grpo / rloo / ppo
    reward_model_dir: str | None = None  # a trained reward model (ppo, online dpo)
    callbacks: list[Any] = field(default_factory=list)  # transformers TrainerCallbacks
    resume: bool = False  # continue from the newest checkpoint in output_dir


@dataclass
class StageResult:
    adapter_dir: Path | None = None  # a LoRA adapter relative to the base model (policy stages)
    model_dir: Path | None = None  # a full model (the reward model, or a full fine-tune)
    metrics: dict[str, Any] = field(default_factory=dict)


def on_cpu() -> bool:
    import torch  # here, not at the top: the CLI lists stages without loading torch

    return not torch.cuda.is_available()


def lora_config(cfg: CommonConfig, task_type: str = "CAUSAL_LM"):
    """LoRA on the attention and MLP projections: no bias, no DoRA, no embeddings or lm_head
    (what vLLM's LoRA loader supports)."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      use_dora=False, task_type=task_type)


def load_policy(cfg: CommonConfig, inputs: StageInputs):
    """(model, tokenizer, peft_config_for_trainer): the base model, with the parent's adapter loaded
    trainable when there is one (so every round's adapter stays relative to the base model, which
    is what vLLM needs), else a fresh LoRA config for the trainer to apply."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(inputs.model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(inputs.model_dir, dtype=torch.float32)
    if cfg.use_lora and inputs.parent_adapter:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, inputs.parent_adapter, is_trainable=True), tokenizer, None
    return model, tokenizer, (lora_config(cfg) if cfg.use_lora else None)


def load_reference(inputs: StageInputs):
    """The frozen reference policy for KL terms: the base, or base + reference adapter merged."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(inputs.model_dir, dtype=torch.float32)
    if inputs.reference_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, inputs.reference_adapter).merge_and_unload()
    return model.eval().requires_grad_(False)


def latest_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint. transformers writes trainer_state.json last (and our PPO
    renames a finished directory into place), so a worker killed mid-save leaves a directory
    without it, which is skipped rather than resumed from."""
    complete = [p for p in Path(output_dir).glob("checkpoint-*")
                if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None
