"""PPO's hyper-parameters, with help text, and the checks on them and on a round's inputs."""
from __future__ import annotations

from dataclasses import dataclass

from feedback.config_fields import cfg_field
from feedback.errors import UserError
from training.stages.base import CommonConfig, StageInputs


@dataclass
class PPOConfig(CommonConfig):
    """PPO hyper-parameters. A step is one rollout: `max_steps` counts rollouts, not optimizer
    updates. per_device_train_batch_size is not used: rollout_batch_size and mini_batch_size set
    PPO's batch shapes (each optimizer update sees mini_batch_size * gradient_accumulation_steps
    samples per device)."""

    rollout_batch_size: int = cfg_field(
        8, "Prompts sampled per rollout on each device (one completion each); one rollout is one step.")
    ppo_epochs: int = cfg_field(
        4, "Passes over each rollout before sampling a fresh one (more = more sample-efficient, less on-policy).")
    mini_batch_size: int = cfg_field(
        4, "Samples per forward/backward pass on each device; must divide rollout_batch_size.")
    max_new_tokens: int = cfg_field(
        64, "Longest sampled completion in tokens; prompts are cut from the left to fit max_length.")
    temperature: float = cfg_field(
        0.7, "Sampling temperature; log-probs use the same temperature, so the updates stay on-policy.")
    top_p: float = cfg_field(
        1.0, "Nucleus sampling; below 1 the samples are slightly off-policy (the loss sees the full distribution).")
    gamma: float = cfg_field(1.0, "Discount per token; 1.0 because the reward is for the whole completion.")
    lam: float = cfg_field(
        0.95, "GAE lambda: 1.0 = Monte-Carlo returns (high variance), 0 = one-step TD (biased by the value head).")
    cliprange: float = cfg_field(
        0.2, "PPO ratio clip: an update may move a token's probability by at most this factor (+-20%).")
    cliprange_value: float = cfg_field(
        0.2, "Value clip: a new value estimate may move at most this far (in reward units) from the rollout's.")
    vf_coef: float = cfg_field(0.1, "Weight of the value loss next to the policy loss (they share the LoRA trunk).")
    kl_coef: float = cfg_field(
        0.05, "Initial weight of the per-token KL penalty to the reference (nats -> reward units).")
    adaptive_kl: bool = cfg_field(
        False, "Adapt kl_coef towards target_kl with Ziegler et al.'s proportional controller.")
    target_kl: float = cfg_field(
        6.0, "Adaptive KL target: KL(policy || reference) per completion, summed over tokens, in nats.")
    kl_horizon: int = cfg_field(10000, "Adaptive KL horizon in samples: larger = kl_coef moves more slowly.")
    whiten_advantages: bool = cfg_field(
        True, "Normalise advantages to mean 0 / std 1 within each rollout (steadier step sizes).")
    reward_weights: list[float] = cfg_field(  # noqa: RUF009 - cfg_field copies a list default per instance
        [], "One weight per reward function, in order (empty = 1.0 each); rewards are summed with these weights.")
    reward_model_weight: float = cfg_field(
        1.0, "Weight of the reward model's score when the round supplies a reward model.")
    max_grad_norm: float = cfg_field(1.0, "Clip the global gradient norm to this before every optimizer update.")

    def __post_init__(self) -> None:
        if self.rollout_batch_size % self.mini_batch_size:
            raise UserError(f"mini_batch_size {self.mini_batch_size} must divide "
                            f"rollout_batch_size {self.rollout_batch_size}.")
        if (self.rollout_batch_size // self.mini_batch_size) % self.gradient_accumulation_steps:
            raise UserError("gradient_accumulation_steps must divide rollout_batch_size / mini_batch_size.")
        if self.max_length <= self.max_new_tokens:
            raise UserError(f"max_length {self.max_length} leaves no room for a prompt next to "
                            f"max_new_tokens {self.max_new_tokens}.")
        if self.temperature <= 0:
            raise UserError("temperature must be > 0 (PPO needs sampling).")


def check_inputs(cfg: PPOConfig, inputs: StageInputs) -> None:
    """What a round must hand PPO: prompts, and at least one reward (weighted as configured)."""
    if not inputs.train_rows:
        raise UserError("PPO needs prompts to sample from (train_rows is empty).")
    if not inputs.reward_funcs and not inputs.reward_model_dir:
        raise UserError("PPO needs a reward: a grader/judge reward function or a trained reward model.")
    if cfg.reward_weights and len(cfg.reward_weights) != len(inputs.reward_funcs):
        raise UserError(f"reward_weights has {len(cfg.reward_weights)} entries for "
                        f"{len(inputs.reward_funcs)} reward functions.")
