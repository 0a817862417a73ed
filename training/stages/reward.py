"""A Bradley-Terry reward model from preference pairs: prompt/chosen/rejected(/margin) rows.

The model is the base policy with a one-output score head (AutoModelForSequenceClassification,
num_labels=1). By default all weights are trained: for the small default model a full fine-tune
is cheap, learns more than a low-rank update, and gives a plain model directory that PPO and
GRPO/RLOO load without PEFT. With use_lora on, a LoRA (task SEQ_CLS, which also trains the score
head) is trained and merged before saving. Either way the artifact is a full model directory.

Held-out pairwise accuracy is measured here, with the trained model and the scorer PPO and the
online loop use (training/reward_model.py): the share of eval pairs whose chosen response scores
higher than the rejected one.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from feedback.config_fields import cfg_field
from training.reward_model import reward_scores
from training.stages import Stage
from training.stages.base import CommonConfig, StageInputs, StageResult, lora_config
from training.stages.trl_stage import run_trl_stage

LOG_KEYS = ("accuracy", "margin", "mean_reward")


@dataclass
class RewardStageConfig(CommonConfig):
    use_lora: bool = cfg_field(False, "Train a LoRA (merged before saving) instead of all weights; a full "
                                      "fine-tune suits small reward models.")
    learning_rate: float = cfg_field(1e-5, "Peak learning rate (full fine-tuning wants ~1e-5; LoRA ~1e-4).")
    center_rewards_coefficient: float | None = cfg_field(
        0.01, "Weight of a penalty on the squared mean reward, keeping rewards centred on zero so they can be "
              "used without normalisation (0.01 as in the paper; None: off).")
    eval_batch_size: int = cfg_field(8, "Pairs scored at a time for the held-out accuracy.")


def pairwise_accuracy(model, tokenizer, rows: list[dict[str, Any]], *, batch_size: int,
                      max_length: int) -> tuple[float | None, int]:
    """(share of pairs with reward(chosen) > reward(rejected), number of pairs scored)."""
    if not rows:
        return None, 0
    prompts = [row["prompt"] for row in rows]
    chosen = reward_scores(model, tokenizer, prompts, [row["chosen"] for row in rows], max_length=max_length,
                           batch_size=batch_size)
    rejected = reward_scores(model, tokenizer, prompts, [row["rejected"] for row in rows], max_length=max_length,
                             batch_size=batch_size)
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows), len(rows)


def load_reward_model(cfg: RewardStageConfig, inputs: StageInputs):
    """(model, tokenizer, peft_config): the base model with a fresh one-output score head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(cfg.seed)  # the score head is initialised randomly
    tokenizer = AutoTokenizer.from_pretrained(inputs.model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(inputs.model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return model, tokenizer, (lora_config(cfg, task_type="SEQ_CLS") if cfg.use_lora else None)


def save_reward_model(trainer, inputs: StageInputs, *, cfg: RewardStageConfig) -> StageResult:
    """The trained model (a LoRA merged in) as a full safetensors directory, and its held-out accuracy."""
    from peft import PeftModel

    trained = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(trained, PeftModel):
        trained = trained.merge_and_unload()
    model_dir = Path(inputs.output_dir) / "reward_model"
    trained.save_pretrained(model_dir)
    trainer.processing_class.save_pretrained(model_dir)
    accuracy, pairs = pairwise_accuracy(trained, trainer.processing_class, inputs.eval_rows,
                                        batch_size=cfg.eval_batch_size, max_length=cfg.max_length)
    return StageResult(model_dir=model_dir, metrics={"eval_accuracy": accuracy, "eval_pairs": pairs})


def main(cfg: RewardStageConfig, inputs: StageInputs) -> StageResult:
    from trl import RewardConfig, RewardTrainer

    return run_trl_stage(
        cfg, inputs, name="reward", config_class=RewardConfig, trainer_class=RewardTrainer,
        columns={"prompt", "chosen", "rejected"}, log_keys=LOG_KEYS,
        config_kwargs={"max_length": cfg.max_length, "center_rewards_coefficient": cfg.center_rewards_coefficient},
        load_model=load_reward_model, save=partial(save_reward_model, cfg=cfg))


STAGE = Stage(config=RewardStageConfig, main=main)
