"""RLOO (REINFORCE leave-one-out) of a LoRA adapter against programmatic rewards (graders, the AI
judge, a reward model, weighted): like grpo, but a sample's baseline is the mean reward of the
other samples of its prompt, and the KL penalty (beta, 0.05 as in TRL) is on by default.
Rows: {prompt: chat messages, reference: str}.
"""
from __future__ import annotations

from dataclasses import dataclass

from feedback.config_fields import cfg_field
from training.stages import Stage
from training.stages.base import CommonConfig, StageInputs, StageResult
from training.stages.grpo import LOG_KEYS, check_group_sizes, reward_funcs, reward_provenance, trl_reward_weights
from training.stages.trl_stage import KLReference, run_trl_stage


@dataclass
class RLOOStageConfig(CommonConfig):
    num_generations: int = cfg_field(4, "Samples per prompt; per_device_train_batch_size * "
                                        "gradient_accumulation_steps must be a multiple of it.")
    max_completion_length: int = cfg_field(64, "Longest sampled answer in tokens.")
    temperature: float = cfg_field(1.0, "Sampling temperature; the leave-one-out baseline needs diverse answers.")
    beta: float = cfg_field(0.05, "KL penalty towards the reference policy (0: none, and no reference pass).")
    normalize_advantages: bool = cfg_field(False, "Scale advantages to mean 0 / std 1 per generation batch.")
    reward_weights: list[float] = cfg_field(  # noqa: RUF009 - cfg_field copies a list default per instance
        [], "One weight per reward function, in order (empty = 1.0 each); rewards are summed with these weights.")
    reward_model_weight: float = cfg_field(
        1.0, "Weight of the reward model's score when the round supplies a reward model.")

    def __post_init__(self) -> None:
        check_group_sizes(self, "rloo")


def main(cfg: RLOOStageConfig, inputs: StageInputs) -> StageResult:
    from trl import RLOOConfig, RLOOTrainer

    result = run_trl_stage(
        cfg, inputs, name="rloo", config_class=RLOOConfig, trainer_class=RLOOTrainer, columns={"prompt"},
        log_keys=LOG_KEYS, reference=KLReference(in_loss=cfg.beta != 0.0, trainer_takes_ref_model=False),
        trainer_kwargs={"reward_funcs": reward_funcs(inputs, "rloo")},
        config_kwargs={"num_generations": cfg.num_generations, "max_completion_length": cfg.max_completion_length,
                       "temperature": cfg.temperature, "beta": cfg.beta,
                       "normalize_advantages": cfg.normalize_advantages, "use_vllm": False,
                       "reward_weights": trl_reward_weights(cfg, inputs, "rloo")})
    result.metrics.update(reward_provenance(inputs.reward_funcs))
    return result


STAGE = Stage(config=RLOOStageConfig, main=main)
