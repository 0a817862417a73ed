"""Direct preference optimisation of a LoRA adapter on prompt/chosen/rejected rows, with the
loss variants that suit human and AI-judge labels:

- sigmoid: the DPO paper's loss.
- ipo:     squared loss towards a fixed margin 1/(2*beta); does not overfit deterministic labels.
- hinge:   SLiC's hinge on the reward margin.
- robust:  DPO that assumes a share `label_smoothing` of the labels is flipped (noisy annotators).

`ld_alpha` (LD-DPO) down-weights the part of the longer response beyond the shorter one's length,
against DPO's bias towards longer answers. The reference policy is the base model, or base + the
round's reference adapter (see base.use_reference_adapter).
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

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")
LOG_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


@dataclass
class DPOStageConfig(CommonConfig):
    loss_type: str = cfg_field("sigmoid", "DPO variant: sigmoid (DPO), ipo (IPO), hinge (SLiC) or robust "
                                          "(robust DPO for noisy labels; set label_smoothing).")
    beta: float = cfg_field(0.1, "Strength of the pull towards the reference policy (higher: stay closer). "
                                 "For ipo it is the regulariser tau; the target log-ratio margin is 1/(2*beta).")
    label_smoothing: float = cfg_field(0.0, "robust only: the assumed probability that a label is flipped, in "
                                            "[0, 0.5); e.g. the annotators' disagreement rate. 0 for other losses.")
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
        if self.ld_alpha is not None and not 0.0 <= self.ld_alpha <= 1.0:
            raise UserError(f"dpo: ld_alpha must be in [0, 1] or None (got {self.ld_alpha}).")


CONFIG = DPOStageConfig


def main(cfg: DPOStageConfig, inputs: StageInputs) -> StageResult:
    from trl import DPOConfig, DPOTrainer

    dataset = rows_dataset(inputs.train_rows, {"prompt", "chosen", "rejected"}, "dpo")
    model, tokenizer, peft_config = load_policy(cfg, inputs)
    # LoRA: the reference is the policy with its adapters off, or the frozen "ref" adapter set up below.
    # Full fine-tuning: TRL loads the base itself unless a reference adapter asks for base + adapter.
    ref_model = load_reference(inputs) if not cfg.use_lora and inputs.reference_adapter else None
    args = DPOConfig(**trainer_kwargs(cfg, inputs), max_length=cfg.max_length, loss_type=[cfg.loss_type],
                     beta=cfg.beta, label_smoothing=cfg.label_smoothing, ld_alpha=cfg.ld_alpha)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=list(inputs.callbacks), peft_config=peft_config)
    use_reference_adapter(trainer.accelerator.unwrap_model(trainer.model), inputs)
    metrics = run_trainer(trainer, inputs, log_keys=LOG_KEYS)
    result = save_policy(trainer, inputs)
    result.metrics = metrics
    return result
