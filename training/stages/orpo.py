"""ORPO (odds-ratio preference optimisation, Hong et al. 2024) on prompt/chosen/rejected rows:
supervised fine-tuning on the chosen response and a preference term in one loss, with no
reference model. The loss is the NLL of the chosen response minus beta * log sigmoid(log odds of
chosen / odds of rejected), with each response's probability its mean per-token log-likelihood.

Reference-free: a round's reference rule (base or parent) does not apply, no reference policy is
loaded, and the metrics say so (reference_model: None). TRL ships ORPO under trl.experimental;
experimental_trl.py is the one module that imports it.
"""
from __future__ import annotations

from dataclasses import dataclass

from feedback.config_fields import cfg_field
from feedback.errors import UserError
from training.stages import Stage
from training.stages.base import CommonConfig, StageInputs, StageResult


@dataclass
class ORPOStageConfig(CommonConfig):
    beta: float = cfg_field(0.1, "Weight of the odds-ratio preference term against the NLL on the chosen response "
                                 "(lambda in the ORPO paper, which used 0.1 to 0.25; higher: more push away from "
                                 "rejected, less plain SFT). Not a KL strength: ORPO has no reference model.")

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise UserError(f"orpo: beta must be > 0 (got {self.beta}); with 0 ORPO is plain SFT on the chosen "
                            "responses (use the sft stage).")


def main(cfg: ORPOStageConfig, inputs: StageInputs) -> StageResult:
    from training.stages.experimental_trl import run_orpo

    return run_orpo(cfg, inputs, name="orpo", beta=cfg.beta)


STAGE = Stage(config=ORPOStageConfig, main=main)
