"""Supervised fine-tuning of a LoRA adapter on conversational prompt/completion rows (chosen
responses of a snapshot, or prompts' reference answers), with the loss on the completion."""
from __future__ import annotations

from dataclasses import dataclass

from feedback.config_fields import cfg_field
from training.stages import Stage
from training.stages.base import CommonConfig, StageInputs, StageResult
from training.stages.trl_stage import run_trl_stage

LOG_KEYS = ("mean_token_accuracy", "num_tokens")


@dataclass
class SFTStageConfig(CommonConfig):
    learning_rate: float = cfg_field(2e-4, "Peak learning rate (LoRA SFT tolerates 1e-4..5e-4).")
    completion_only_loss: bool = cfg_field(True, "Train on the completion tokens only, not on the prompt.")


def main(cfg: SFTStageConfig, inputs: StageInputs) -> StageResult:
    from trl import SFTConfig, SFTTrainer

    return run_trl_stage(
        cfg, inputs, name="sft", config_class=SFTConfig, trainer_class=SFTTrainer,
        columns={"prompt", "completion"}, log_keys=LOG_KEYS,
        config_kwargs={"max_length": cfg.max_length, "completion_only_loss": cfg.completion_only_loss})


STAGE = Stage(config=SFTStageConfig, main=main)
