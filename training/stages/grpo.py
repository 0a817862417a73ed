"""GRPO (group relative policy optimisation) of a LoRA adapter against programmatic rewards:
graders scoring sampled answers against the prompts' reference answers (ReFT / RFT style), the
AI judge (judges/judge_rewards.py), and optionally a trained reward model, summed with
reward_weights. Rows: {prompt: chat messages, reference: str}.

Each prompt gets num_generations samples, generated in-process with transformers (no vLLM:
use_vllm stays off, so this runs on CPU); a sample's advantage is its reward relative to its
group. beta defaults to 0.0 as in TRL (DAPO / Dr. GRPO): with verifiable rewards the KL term
buys little, and without it no reference forward pass is paid per step. With beta > 0 the
reference is the base model, or base + the round's reference adapter (trl_stage.use_reference_adapter).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from feedback.config_fields import cfg_field
from feedback.errors import UserError
from training.stages import Stage
from training.stages.base import CommonConfig, StageInputs, StageResult
from training.stages.trl_stage import KLReference, run_trl_stage

LOG_KEYS = ("reward", "reward_std", "kl", "completions/mean_length", "frac_reward_zero_std")


@dataclass
class GRPOStageConfig(CommonConfig):
    num_generations: int = cfg_field(4, "Samples per prompt (the group); per_device_train_batch_size * "
                                        "gradient_accumulation_steps must be a multiple of it.")
    max_completion_length: int = cfg_field(64, "Longest sampled answer in tokens.")
    temperature: float = cfg_field(1.0, "Sampling temperature; the group needs diverse answers to learn from.")
    beta: float = cfg_field(0.0, "KL penalty towards the reference policy (0: none, and no reference pass).")
    reward_weights: list[float] = cfg_field(  # noqa: RUF009 - cfg_field copies a list default per instance
        [], "One weight per reward function, in order (empty = 1.0 each); rewards are summed with these weights.")
    reward_model_weight: float = cfg_field(
        1.0, "Weight of the reward model's score when the round supplies a reward model.")

    def __post_init__(self) -> None:
        check_group_sizes(self, "grpo")


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
    """The round's reward functions (graders, judges), plus its reward model directory if it has
    one, last (TRL loads it as a sequence-classification model)."""
    funcs: list[Callable[..., list[float]] | str] = list(inputs.reward_funcs)
    if inputs.reward_model_dir:
        funcs.append(str(inputs.reward_model_dir))
    if not funcs:
        raise UserError(f"{name} needs a reward: a grader or judge (reward function) or a reward model.")
    return funcs


def trl_reward_weights(cfg: Any, inputs: StageInputs, name: str) -> list[float] | None:
    """TRL's reward_weights, aligned with reward_funcs(): one per function, then the reward model's.
    None when every weight is 1 (TRL's own default)."""
    if cfg.reward_weights and len(cfg.reward_weights) != len(inputs.reward_funcs):
        raise UserError(f"{name}: reward_weights has {len(cfg.reward_weights)} entries for "
                        f"{len(inputs.reward_funcs)} reward functions.")
    weights = [float(w) for w in cfg.reward_weights] or [1.0] * len(inputs.reward_funcs)
    if inputs.reward_model_dir:
        weights.append(float(cfg.reward_model_weight))
    return None if all(w == 1.0 for w in weights) else weights


def reward_provenance(funcs: list[Any]) -> dict[str, float]:
    """The judges' counts for the round's metrics (requests, cost, cache hits, budget), by name."""
    return {f"{func.__name__}/{key}": value for func in funcs if callable(getattr(func, "stats", None))
            for key, value in func.stats().items()}


def main(cfg: GRPOStageConfig, inputs: StageInputs) -> StageResult:
    from trl import GRPOConfig, GRPOTrainer

    result = run_trl_stage(
        cfg, inputs, name="grpo", config_class=GRPOConfig, trainer_class=GRPOTrainer, columns={"prompt"},
        log_keys=LOG_KEYS, reference=KLReference(in_loss=cfg.beta != 0.0, trainer_takes_ref_model=False),
        trainer_kwargs={"reward_funcs": reward_funcs(inputs, "grpo")},
        config_kwargs={"num_generations": cfg.num_generations, "max_completion_length": cfg.max_completion_length,
                       "temperature": cfg.temperature, "beta": cfg.beta, "use_vllm": False,
                       "reward_weights": trl_reward_weights(cfg, inputs, "grpo")})
    result.metrics.update(reward_provenance(inputs.reward_funcs))
    return result


STAGE = Stage(config=GRPOStageConfig, main=main)
