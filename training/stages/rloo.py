"""RLOO (REINFORCE leave-one-out) of a LoRA adapter against programmatic rewards: like grpo, but a
sample's baseline is the mean reward of the other samples of its prompt, and the KL penalty
(beta, 0.05 as in TRL) is on by default. Rows: {prompt: chat messages, reference: str}.
"""
from __future__ import annotations

from dataclasses import dataclass

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
from training.stages.grpo import check_group_sizes, reward_funcs

LOG_KEYS = ("reward", "reward_std", "kl", "completions/mean_length", "frac_reward_zero_std")


@dataclass
class RLOOStageConfig(CommonConfig):
    num_generations: int = cfg_field(4, "Samples per prompt; per_device_train_batch_size * "
                                        "gradient_accumulation_steps must be a multiple of it.")
    max_completion_length: int = cfg_field(64, "Longest sampled answer in tokens.")
    temperature: float = cfg_field(1.0, "Sampling temperature; the leave-one-out baseline needs diverse answers.")
    beta: float = cfg_field(0.05, "KL penalty towards the reference policy (0: none, and no reference pass).")
    normalize_advantages: bool = cfg_field(False, "Scale advantages to mean 0 / std 1 per generation batch.")

    def __post_init__(self) -> None:
        check_group_sizes(self, "rloo")


CONFIG = RLOOStageConfig


def main(cfg: RLOOStageConfig, inputs: StageInputs) -> StageResult:
    from trl import RLOOConfig, RLOOTrainer

    dataset = rows_dataset(inputs.train_rows, {"prompt"}, "rloo")
    rewards = reward_funcs(inputs, "rloo")
    model, tokenizer, peft_config = load_policy(cfg, inputs)
    if not cfg.use_lora and cfg.beta and inputs.reference_adapter:
        raise UserError("rloo: a reference adapter needs use_lora (full fine-tuning uses the base as reference).")
    args = RLOOConfig(**trainer_kwargs(cfg, inputs), num_generations=cfg.num_generations,
                      max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
                      normalize_advantages=cfg.normalize_advantages, use_vllm=False)
    trainer = RLOOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=list(inputs.callbacks), peft_config=peft_config)
    use_reference_adapter(trainer.accelerator.unwrap_model(trainer.model), inputs, needed=cfg.beta != 0.0)
    metrics = run_trainer(trainer, inputs, log_keys=LOG_KEYS)
    result = save_policy(trainer, inputs)
    result.metrics = metrics
    return result
