"""KTO on binary labels (thumbs up/down on single responses): prompt/completion/label rows.

Thumbs are rarely balanced, so by default the minority label's weight is scaled up until both
labels carry the same total weight (the KTO paper's advice is desirable_weight * n_desirable /
(undesirable_weight * n_undesirable) in [1, 4/3]). The reference policy is chosen as in dpo.
"""
from __future__ import annotations

from dataclasses import dataclass

from feedback.config_fields import cfg_field
from feedback.errors import UserError
from training.stages import Stage
from training.stages.base import CommonConfig, StageInputs, StageResult
from training.stages.trl_stage import KLReference, run_trl_stage

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

    # Read before run_trl_stage checks the rows: rows without a label column fail that check.
    desirable, undesirable = label_weights(cfg, [bool(row.get("label")) for row in inputs.train_rows])
    result = run_trl_stage(
        cfg, inputs, name="kto", config_class=KTOConfig, trainer_class=KTOTrainer,
        columns={"prompt", "completion", "label"}, log_keys=LOG_KEYS, reference=KLReference(),
        config_kwargs={"max_length": cfg.max_length, "beta": cfg.beta, "desirable_weight": desirable,
                       "undesirable_weight": undesirable})
    result.metrics.update(desirable_weight=desirable, undesirable_weight=undesirable)
    return result


STAGE = Stage(config=KTOStageConfig, main=main)
