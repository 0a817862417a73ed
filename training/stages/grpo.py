"""GRPO (group relative policy optimisation) of a LoRA adapter against programmatic rewards:
graders scoring sampled answers against the prompts' reference answers (ReFT / RFT style),
and optionally a trained reward model. Rows: {prompt: chat messages, reference: str}.

Each prompt gets num_generations samples, generated in-process with transformers (no vLLM:
use_vllm stays off, so this runs on CPU); a sample's advantage is its reward relative to its
group. beta defaults to 0.0 as in TRL (DAPO / Dr. GRPO): with verifiable rewards the KL term
buys little, and without it no reference forward pass is paid per step. With beta > 0 the
reference is the base model, or base + the round's reference adapter (base.use_reference_adapter).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from feedback.errors import UserError
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
    use_reference_adapter,
)

LOG_KEYS = ("reward", "reward_std", "kl", "completions/mean_length", "frac_reward_zero_std")


@dataclass
class GRPOStageConfig(CommonConfig):
    num_generations: int = cfg_field(4, "Samples per prompt (the group); per_device_train_batch_size * "
                                        "gradient_accumulation_steps must be a multiple of it.")
    max_completion_length: int = cfg_field(64, "Longest sampled answer in tokens.")
    temperature: float = cfg_field(1.0, "Sampling temperature; the group needs diverse answers to learn from.")
    beta: float = cfg_field(0.0, "KL penalty towards the reference policy (0: none, and no reference pass).")

    def __post_init__(self) -> None:
        check_group_sizes(self, "grpo")


CONFIG = GRPOStageConfig


def check_group_sizes(cfg: Any, name: str) -> None:
    if cfg.num_generations < 2:
        raise UserError(f"{name}: num_generations must be >= 2 (advantages compare samples of one prompt).")
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if per_step % cfg.num_generations:
        raise UserError(f"{name}: per_device_train_batch_size * gradient_accumulation_steps ({per_step}) must be a "
                        f"multiple of num_generations ({cfg.num_generations}).")
    if cfg.temperature <= 0:
        raise UserError(f"{name}: temperature must be > 0 (sampling).")
    if cfg.beta < 0:
        raise UserError(f"{name}: beta must be >= 0.")


def reward_funcs(inputs: StageInputs, name: str) -> list[Callable[..., list[float]] | str]:
    """The round's reward functions (graders), plus its reward model directory if it has one
    (TRL loads it as a sequence-classification model)."""
    funcs: list[Callable[..., list[float]] | str] = list(inputs.reward_funcs)
    if inputs.reward_model_dir:
        funcs.append(str(inputs.reward_model_dir))
    if not funcs:
        raise UserError(f"{name} needs a reward: a grader (reward function) or a reward model.")
    return funcs


def main(cfg: GRPOStageConfig, inputs: StageInputs) -> StageResult:
    from trl import GRPOConfig, GRPOTrainer

    dataset = rows_dataset(inputs.train_rows, {"prompt"}, "grpo")
    rewards = reward_funcs(inputs, "grpo")
    model, tokenizer, peft_config = load_policy(cfg, inputs)
    if not cfg.use_lora and cfg.beta and inputs.reference_adapter:
        raise UserError("grpo: a reference adapter needs use_lora (full fine-tuning uses the base as reference).")
    args = GRPOConfig(**trainer_kwargs(cfg, inputs), num_generations=cfg.num_generations,
                      max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
                      use_vllm=False)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=list(inputs.callbacks), peft_config=peft_config)
    use_reference_adapter(trainer.accelerator.unwrap_model(trainer.model), inputs, needed=cfg.beta != 0.0)
    metrics = run_trainer(trainer, inputs, log_keys=LOG_KEYS)
    result = save_policy(trainer, inputs)
    result.metrics = metrics
    return result
