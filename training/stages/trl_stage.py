"""The one template every TRL stage (sft, reward, dpo, kto, grpo, rloo) runs on: check the rows,
load the model, build the TRL config and trainer, set up the reference policy, train (resuming
from the newest checkpoint when asked), save, and report the metrics. A stage module supplies only
what is its own: its config dataclass, its TRL settings, and anything special around them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback.errors import UserError
from training.stages.base import (
    CommonConfig,
    StageInputs,
    StageResult,
    latest_checkpoint,
    load_policy,
    load_reference,
    on_cpu,
)


@dataclass(frozen=True)
class KLReference:
    """A stage whose loss has a KL term to the round's reference policy (the base, or base + the
    round's reference adapter), and how its TRL trainer takes that reference."""

    # False when this round switched the term off (beta 0): no reference is set up, only TRL's
    # copy of a parent adapter is dropped (see use_reference_adapter).
    in_loss: bool = True
    # DPO and KTO accept a separate frozen ref_model, which a full fine-tune against base + adapter
    # needs; GRPO and RLOO do not, so they refuse that combination instead of silently using the base.
    trainer_takes_ref_model: bool = True


def training_arguments(cfg: CommonConfig, inputs: StageInputs) -> dict[str, Any]:
    """The TrainingArguments every TRL config shares. On CPU: no bf16, no gradient checkpointing."""
    import torch

    return {
        "output_dir": str(inputs.output_dir), "max_steps": cfg.max_steps, "num_train_epochs": cfg.num_train_epochs,
        "learning_rate": cfg.learning_rate, "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps, "logging_steps": cfg.logging_steps,
        "save_strategy": "steps", "save_steps": cfg.save_steps, "save_total_limit": 2, "seed": cfg.seed,
        "use_cpu": on_cpu(), "bf16": not on_cpu() and torch.cuda.is_bf16_supported(),
        "activation_checkpointing": False, "report_to": [], "disable_tqdm": True, "dataloader_num_workers": 0,
    }


def rows_dataset(rows: list[dict[str, Any]], required: set[str], stage_name: str):
    """A datasets.Dataset of a stage's rows, after checking they have the columns it trains on."""
    from datasets import Dataset

    if not rows:
        raise UserError(f"{stage_name}: no training rows.")
    missing = required - set(rows[0])
    if missing:
        raise UserError(f"{stage_name} rows need {', '.join(sorted(required))} (missing {', '.join(sorted(missing))}).")
    return Dataset.from_list(rows)


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


def run_trl_stage(cfg: CommonConfig, inputs: StageInputs, *, name: str, config_class: type, trainer_class: type,
                  columns: set[str], config_kwargs: dict[str, Any], log_keys: tuple[str, ...] = (),
                  reference: KLReference | None = None, trainer_kwargs: dict[str, Any] | None = None,
                  load_model: Callable[[Any, StageInputs], tuple[Any, Any, Any]] = load_policy,
                  save: Callable[[Any, StageInputs], StageResult] = save_policy) -> StageResult:
    """Train one round with a TRL trainer and return the artifact `save` wrote, with the training
    metrics (the last logged `log_keys` included) ahead of any metrics `save` reports.

    config_kwargs: the stage's own settings of `config_class`, next to training_arguments().
    reference: None for stages without a KL term (sft, reward).
    trainer_kwargs: other arguments of `trainer_class` (grpo/rloo: reward_funcs).
    load_model: (cfg, inputs) -> (model, tokenizer, peft_config for the trainer or None); the policy
        by default, the reward stage loads a sequence-classification model.
    save: (trainer, inputs) -> StageResult; the policy's adapter (or full model) by default.
    """
    dataset = rows_dataset(inputs.train_rows, columns, name)
    separate_reference = reference is not None and not cfg.use_lora and bool(inputs.reference_adapter)
    if separate_reference and reference.in_loss and not reference.trainer_takes_ref_model:
        raise UserError(f"{name}: a reference adapter needs use_lora (full fine-tuning uses the base as reference).")
    model, tokenizer, peft_config = load_model(cfg, inputs)
    extra = dict(trainer_kwargs or {})
    if reference is not None and reference.trainer_takes_ref_model:
        # LoRA: the reference is the policy with its adapters off, or the frozen "ref" adapter set up below.
        # Full fine-tuning: TRL loads the base itself unless a reference adapter asks for base + adapter.
        extra["ref_model"] = load_reference(inputs) if separate_reference else None
    args = config_class(**training_arguments(cfg, inputs), **config_kwargs)
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            callbacks=list(inputs.callbacks), peft_config=peft_config, **extra)
    if reference is not None:
        use_reference_adapter(trainer.accelerator.unwrap_model(trainer.model), inputs, needed=reference.in_loss)
    metrics = run_trainer(trainer, inputs, log_keys=log_keys)
    result = save(trainer, inputs)
    result.metrics = {**metrics, **result.metrics}
    return result
