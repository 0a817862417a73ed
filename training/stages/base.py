"""What every training stage shares: common hyper-parameters (with help text), the inputs a
round hands a stage, what a stage returns, the LoRA set-up, and the stage registry.

A stage is a config dataclass + `main(cfg, inputs) -> StageResult`. It knows nothing about the
database: training/rounds.py builds its inputs from a snapshot and stores what it returns. That
keeps every stage runnable by itself, and unchanged under `accelerate launch`.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def cfg_field(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - "help" as in argparse/HfArgumentParser
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


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


def trainer_kwargs(cfg: CommonConfig, inputs: StageInputs) -> dict[str, Any]:
    """The TrainingArguments every TRL config shares. On CPU: no bf16, no gradient checkpointing."""
    import torch

    return dict(
        output_dir=str(inputs.output_dir), max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs,
        learning_rate=cfg.learning_rate, per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed,
        use_cpu=on_cpu(), bf16=not on_cpu() and torch.cuda.is_bf16_supported(),
        activation_checkpointing=False, report_to=[], disable_tqdm=True, dataloader_num_workers=0,
    )


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


def use_reference_adapter(model, inputs: StageInputs, *, needed: bool = True) -> None:
    """Give a PEFT policy the reference `inputs` asks for; call it once the TRL trainer is built.

    TRL's DPO/KTO/GRPO/RLOO trainers take reference log-probs from an adapter named "ref" when the
    model has one, else with all adapters disabled (the base). Handed a PeftModel (a parent adapter)
    they add "ref" as a copy of it, which would make the parent the reference even when the round
    asked for the base. So: drop that copy, and load the reference adapter, frozen, under that name.
    needed=False (no KL term) only drops it.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    if needed and inputs.reference_adapter:
        model.load_adapter(inputs.reference_adapter, adapter_name="ref", is_trainable=False)


def rows_dataset(rows: list[dict[str, Any]], required: set[str], stage_name: str):
    """A datasets.Dataset of a stage's rows, after checking they have the columns it trains on."""
    from datasets import Dataset

    from feedback.errors import UserError

    if not rows:
        raise UserError(f"{stage_name}: no training rows.")
    missing = required - set(rows[0])
    if missing:
        raise UserError(f"{stage_name} rows need {', '.join(sorted(required))} (missing {', '.join(sorted(missing))}).")
    return Dataset.from_list(rows)


def run_trainer(trainer, inputs: StageInputs, log_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train (from the newest checkpoint when resuming) and return the metrics every stage reports,
    plus `log_keys` from the last logged training step."""
    from training.stages.safe_checkpoints import without_pickle

    checkpoint = latest_checkpoint(inputs.output_dir) if inputs.resume else None
    output = without_pickle(trainer).train(resume_from_checkpoint=checkpoint)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    last = logged[-1] if logged else {}
    return {"train_loss": output.training_loss, "global_step": trainer.state.global_step,
            "resumed_from": checkpoint, "first_loss": logged[0]["loss"] if logged else None,
            "last_loss": last.get("loss"), **{key: last[key] for key in log_keys if key in last}}


def save_policy(trainer, inputs: StageInputs) -> StageResult:
    """The trained policy as safetensors: the LoRA adapter in output_dir/adapter (without TRL's
    "ref" copy), or with use_lora off the full model in output_dir/model."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        adapter_dir = Path(inputs.output_dir) / "adapter"
        model.save_pretrained(adapter_dir, selected_adapters=["default"])
        return StageResult(adapter_dir=adapter_dir)
    model_dir = Path(inputs.output_dir) / "model"
    model.save_pretrained(model_dir)
    trainer.processing_class.save_pretrained(model_dir)
    return StageResult(model_dir=model_dir)


# stage name -> module defining CONFIG (a dataclass) and main(cfg, inputs)
STAGE_MODULES = {
    "sft": "training.stages.sft",
    "reward": "training.stages.reward",
    "dpo": "training.stages.dpo",
    "kto": "training.stages.kto",
    "grpo": "training.stages.grpo",
    "rloo": "training.stages.rloo",
    "ppo": "training.ppo",
}


def stage(name: str):
    """(config class, main) of a stage."""
    from feedback.errors import UserError

    if name not in STAGE_MODULES:
        raise UserError(f"Unknown stage {name!r}; choose one of {', '.join(STAGE_MODULES)}.")
    module = importlib.import_module(STAGE_MODULES[name])
    return module.CONFIG, module.main
