"""SimPO (simple preference optimisation, Meng et al. 2024) on prompt/chosen/rejected rows, with no
reference model: the implicit reward of a response is beta * its mean per-token log-probability
under the policy, and the loss is -log sigmoid(reward(chosen) - reward(rejected) - gamma), asking
for a margin of at least gamma. Length-normalising the reward counters DPO's drift to long answers.
With cpo_alpha > 0 an NLL term on the chosen response is added (CPO-SimPO), which keeps the policy
closer to the chosen texts.

Reference-free: a round's reference rule (base or parent) does not apply, no reference policy is
loaded, and the metrics say so (reference_model: None). TRL ships SimPO as a loss of its CPO trainer
under trl.experimental; experimental_trl.py is the one module that imports it.
"""
from __future__ import annotations

from dataclasses import dataclass

from feedback.config_fields import cfg_field
from feedback.errors import UserError
from training.stages import Stage
from training.stages.base import CommonConfig, StageInputs, StageResult


@dataclass
class SimPOStageConfig(CommonConfig):
    # Defaults: the SimPO paper's advice (beta 2.0 to 2.5, gamma 0.5 to 1.5; pure SimPO has no NLL term).
    beta: float = cfg_field(2.0, "Scale of the length-normalised reward (mean log-probability per token). The SimPO "
                                 "paper uses 2.0 to 2.5; much larger than DPO's beta, since the reward is per token. "
                                 "Not a KL strength: SimPO has no reference model.")
    gamma: float = cfg_field(1.0, "Target reward margin: how far the chosen reward should exceed the rejected one "
                                  "before a pair stops contributing (the paper uses 0.5 to 1.5; 0: none).")
    cpo_alpha: float = cfg_field(0.0, "Weight of an NLL term on the chosen response (0: pure SimPO; e.g. 0.05 to 1: "
                                      "CPO-SimPO, which stays closer to the chosen texts).")

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise UserError(f"simpo: beta must be > 0 (got {self.beta}).")
        if self.gamma < 0:
            raise UserError(f"simpo: gamma, the target margin, must be >= 0 (got {self.gamma}).")
        if self.cpo_alpha < 0:
            raise UserError(f"simpo: cpo_alpha must be >= 0 (got {self.cpo_alpha}).")


def main(cfg: SimPOStageConfig, inputs: StageInputs) -> StageResult:
    from training.stages.experimental_trl import run_simpo

    return run_simpo(cfg, inputs, name="simpo", beta=cfg.beta, gamma=cfg.gamma, cpo_alpha=cfg.cpo_alpha)


STAGE = Stage(config=SimPOStageConfig, main=main)
