"""Supervised fine-tuning of a LoRA adapter on conversational prompt/completion rows (chosen
responses of a snapshot, or prompts' reference answers), with the loss on the completion."""
from __future__ import annotations

from dataclasses import dataclass

from training.stages.base import (
    CommonConfig,
    StageInputs,
    StageResult,
    cfg_field,
    load_policy,
    rows_dataset,
    run_trainer,
    save_policy,
    trainer_kwargs,
)


@dataclass
class SFTStageConfig(CommonConfig):
    learning_rate: float = cfg_field(2e-4, "Peak learning rate (LoRA SFT tolerates 1e-4..5e-4).")
    completion_only_loss: bool = cfg_field(True, "Train on the completion tokens only, not on the prompt.")


CONFIG = SFTStageConfig


def main(cfg: SFTStageConfig, inputs: StageInputs) -> StageResult:
    from trl import SFTConfig, SFTTrainer

    dataset = rows_dataset(inputs.train_rows, {"prompt", "completion"}, "sft")
    model, tokenizer, peft_config = load_policy(cfg, inputs)
    args = SFTConfig(**trainer_kwargs(cfg, inputs), max_length=cfg.max_length,
                     completion_only_loss=cfg.completion_only_loss)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=list(inputs.callbacks), peft_config=peft_config)
    metrics = run_trainer(trainer, inputs, log_keys=("mean_token_accuracy", "num_tokens"))
    result = save_policy(trainer, inputs)
    result.metrics = metrics
    return result
