"""Direct preference optimisation of a LoRA adapter on prompt/chosen/rejected rows, with the
loss variants that suit human and AI-judge labels:

- sigmoid: the DPO paper's loss.
- ipo:     squared loss towards a fixed margin 1/(2*beta); does not overfit deterministic labels.
- hinge:   SLiC's hinge on the reward margin.
- robust:  DPO that assumes a share `label_smoothing` of the labels is flipped (noisy annotators);
           with `smooth_by_confidence` that share is read off the rows themselves: the mean of
           1 - confidence, where confidence is Dawid-Skene's posterior for each row's label (rows of a
           snapshot under rule `reliability`, feedback/rows.py). TRL's losses take one smoothing for the
           whole dataset, not one per row, so this is the snapshot's expected flip rate.

`ld_alpha` (LD-DPO) down-weights the part of the longer response beyond the shorter one's length,
against DPO's bias towards longer answers. The reference policy is the base model, or base + the
round's reference adapter (see trl_stage.use_reference_adapter).
"""
from __future__ import annotations

from dataclasses import dataclass

from feedback.config_fields import cfg_field
from feedback.errors import UserError
from training.stages import Stage
from training.stages.base import CommonConfig, StageInputs, StageResult
from training.stages.trl_stage import KLReference, run_trl_stage

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")
LOG_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


@dataclass
class DPOStageConfig(CommonConfig):
    loss_type: str = cfg_field("sigmoid", "DPO variant: sigmoid (DPO), ipo (IPO), hinge (SLiC) or robust "
                                          "(robust DPO for noisy labels; set label_smoothing).", choices=LOSS_TYPES)
    beta: float = cfg_field(0.1, "Strength of the pull towards the reference policy (higher: stay closer). "
                                 "For ipo it is the regulariser tau; the target log-ratio margin is 1/(2*beta).")
    label_smoothing: float = cfg_field(0.0, "robust only: the assumed probability that a label is flipped, in "
                                            "[0, 0.5); e.g. the annotators' disagreement rate. 0 for other losses.")
    smooth_by_confidence: bool = cfg_field(False, "robust only: set label_smoothing to the rows' mean 1 - "
                                                  "confidence (Dawid-Skene; snapshot rule reliability).")
    ld_alpha: float | None = cfg_field(None, "LD-DPO length desensitisation in [0, 1]: weight of the tokens of the "
                                             "longer response beyond the shorter one's length (None: off, plain DPO; "
                                             "1.0 equals off; 0.0 ignores them).")

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise UserError(f"dpo: unknown loss_type {self.loss_type!r}; choose one of {', '.join(LOSS_TYPES)}.")
        if self.beta <= 0:
            raise UserError(f"dpo: beta must be > 0 (got {self.beta}).")
        if self.loss_type == "robust" and not 0.0 <= self.label_smoothing < 0.5:
            raise UserError(f"dpo: robust needs label_smoothing in [0, 0.5) (got {self.label_smoothing}).")
        if self.loss_type != "robust" and self.label_smoothing != 0.0:
            raise UserError(f"dpo: label_smoothing only applies to loss_type 'robust' (got {self.loss_type!r} "
                            f"with label_smoothing={self.label_smoothing}); set it to 0 or use robust.")
        if self.smooth_by_confidence and self.loss_type != "robust":
            raise UserError("dpo: smooth_by_confidence sets robust DPO's label_smoothing; use loss_type 'robust'.")
        if self.ld_alpha is not None and not 0.0 <= self.ld_alpha <= 1.0:
            raise UserError(f"dpo: ld_alpha must be in [0, 1] or None (got {self.ld_alpha}).")


MAX_SMOOTHING = 0.49  # robust DPO divides by 1 - 2 * label_smoothing


def label_smoothing_for(cfg: DPOStageConfig, rows: list[dict]) -> float:
    """The label smoothing to train with: the configured one, or the rows' mean 1 - confidence."""
    if not cfg.smooth_by_confidence:
        return cfg.label_smoothing
    confidences = [row["confidence"] for row in rows if row.get("confidence") is not None]
    if not confidences:
        raise UserError("dpo: smooth_by_confidence needs rows with a confidence: train on a snapshot made with "
                        "rule 'reliability'.")
    return round(min(MAX_SMOOTHING, max(0.0, sum(1 - c for c in confidences) / len(confidences))), 4)


def main(cfg: DPOStageConfig, inputs: StageInputs) -> StageResult:
    from trl import DPOConfig, DPOTrainer

    smoothing = label_smoothing_for(cfg, inputs.train_rows)
    result = run_trl_stage(
        cfg, inputs, name="dpo", config_class=DPOConfig, trainer_class=DPOTrainer,
        columns={"prompt", "chosen", "rejected"}, log_keys=LOG_KEYS, reference=KLReference(),
        config_kwargs={"max_length": cfg.max_length, "loss_type": [cfg.loss_type], "beta": cfg.beta,
                       "label_smoothing": smoothing, "ld_alpha": cfg.ld_alpha})
    result.metrics["label_smoothing"] = smoothing
    return result


STAGE = Stage(config=DPOStageConfig, main=main)
