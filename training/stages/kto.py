"""KTO on binary labels (thumbs up/down on single responses): prompt/completion/label rows.

Thumbs are rarely balanced, so by default the minority label's weight is scaled up until both
labels carry the same total weight (the KTO paper's advice is desirable_weight * n_desirable /
(undesirable_weight * n_undesirable) in [1, 4/3]). The reference policy is chosen as in dpo.
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
    load_reference,
    rows_dataset,
    run_trainer,
    save_policy,
    trainer_kwargs,
    use_reference_adapter,
)

LOG_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "kl")


@dataclass
class KTOStageConfig(CommonConfig):
    beta: float = cfg_field(0.1, "Strength of the pull towards the reference policy (higher: stay closer).")
    desirable_weight: float = cfg_field(1.0, "Loss weight of thumbs-up examples.")
    undesirable_weight: float = cfg_field(1.0, "Loss weight of thumbs-down examples.")
    balance_labels: bool = cfg_field(True, "Multiply the minority label's weight by n_majority / n_minority so "
                                           "both labels weigh the same in total.")

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise UserError(f"kto: beta must be > 0 (got {self.beta}).")
        if self.desirable_weight <= 0 or self.undesirable_weight <= 0:
            raise UserError("kto: desirable_weight and undesirable_weight must be > 0.")
        if self.per_device_train_batch_size < 2:
            raise UserError("kto: per_device_train_batch_size must be >= 2 (KTO estimates its KL term from the "
                            "other examples in the batch).")


CONFIG = KTOStageConfig


def label_weights(cfg: KTOStageConfig, labels: list[bool]) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) for these labels."""
    desirable, undesirable = cfg.desirable_weight, cfg.undesirable_weight
    n_up, n_down = sum(labels), len(labels) - sum(labels)
    if cfg.balance_labels and n_up and n_down:
        if n_up < n_down:
            desirable *= n_down / n_up
        else:
            undesirable *= n_up / n_down
    return desirable, undesirable


def main(cfg: KTOStageConfig, inputs: StageInputs) -> StageResult:
    from trl import KTOConfig, KTOTrainer

    dataset = rows_dataset(inputs.train_rows, {"prompt", "completion", "label"}, "kto")
    desirable, undesirable = label_weights(cfg, [bool(label) for label in dataset["label"]])
    model, tokenizer, peft_config = load_policy(cfg, inputs)
    ref_model = load_reference(inputs) if not cfg.use_lora and inputs.reference_adapter else None
    args = KTOConfig(**trainer_kwargs(cfg, inputs), max_length=cfg.max_length, beta=cfg.beta,
                     desirable_weight=desirable, undesirable_weight=undesirable)
    trainer = KTOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=list(inputs.callbacks), peft_config=peft_config)
    use_reference_adapter(trainer.accelerator.unwrap_model(trainer.model), inputs)
    metrics = run_trainer(trainer, inputs, log_keys=LOG_KEYS)
    result = save_policy(trainer, inputs)
    result.metrics = {**metrics, "desirable_weight": desirable, "undesirable_weight": undesirable}
    return result
