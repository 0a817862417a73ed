"""The one module that touches `trl.experimental`: the reference-free preference trainers (ORPO, and
CPO, whose `simpo` loss is SimPO) that TRL 1.16 ships there, adapted to run_trl_stage. TRL may move
or change anything under `trl.experimental` in any release; when it does, only this file changes,
and orpo.py / simpo.py keep speaking our stage interface.

Neither trainer has a reference model (that is the point of both methods): they take no ref_model,
never copy a parent adapter as "ref", and run_trl_stage is called with reference=None, so no
reference policy is loaded or set up.
"""
from __future__ import annotations

import os
from typing import Any

from feedback.errors import UserError
from training.stages.base import CommonConfig, StageInputs, StageResult
from training.stages.trl_stage import run_trl_stage

PAIR_COLUMNS = {"prompt", "chosen", "rejected"}
# What both trainers log each step next to the loss (the "rewards" are beta-scaled log-probabilities
# of the policy alone: there is no reference to take a ratio against).
PREFERENCE_LOG_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "nll_loss")
ORPO_LOG_KEYS = (*PREFERENCE_LOG_KEYS, "log_odds_ratio")


def _experimental(module: str, *names: str) -> tuple[Any, ...]:
    """`names` from trl.experimental.<module>, without TRL's import-time "experimental" warning in every
    round's log, and a UserError naming the installed TRL when they are no longer there."""
    import importlib

    import trl

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        imported = importlib.import_module(f"trl.experimental.{module}")
        return tuple(getattr(imported, name) for name in names)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"trl.experimental.{module} ({', '.join(names)}) is not available in the installed TRL "
                        f"{trl.__version__} ({exc}); training/stages/experimental_trl.py was written against "
                        "TRL 1.16.") from exc


def _reference_free(result: StageResult) -> StageResult:
    # Said in the metrics so a round's lineage shows that no reference policy took part,
    # whatever reference rule the round was started with.
    result.metrics["reference_model"] = None
    return result


def run_orpo(cfg: CommonConfig, inputs: StageInputs, *, name: str, beta: float) -> StageResult:
    """ORPO (Hong et al. 2024): SFT's NLL on the chosen response plus beta * the log odds-ratio loss
    of chosen over rejected."""
    config_class, trainer_class = _experimental("orpo", "ORPOConfig", "ORPOTrainer")
    return _reference_free(run_trl_stage(
        cfg, inputs, name=name, config_class=config_class, trainer_class=trainer_class, columns=PAIR_COLUMNS,
        log_keys=ORPO_LOG_KEYS, reference=None, config_kwargs={"max_length": cfg.max_length, "beta": beta}))


def run_simpo(cfg: CommonConfig, inputs: StageInputs, *, name: str, beta: float, gamma: float,
              cpo_alpha: float) -> StageResult:
    """SimPO (Meng et al. 2024) as TRL's CPO trainer with loss_type "simpo": the loss is
    -log sigmoid(beta * (mean log p(chosen) - mean log p(rejected)) - gamma), plus cpo_alpha * the NLL
    on the chosen response (0: pure SimPO; > 0: CPO-SimPO)."""
    config_class, trainer_class = _experimental("cpo", "CPOConfig", "CPOTrainer")
    return _reference_free(run_trl_stage(
        cfg, inputs, name=name, config_class=config_class, trainer_class=trainer_class, columns=PAIR_COLUMNS,
        log_keys=PREFERENCE_LOG_KEYS, reference=None,
        config_kwargs={"max_length": cfg.max_length, "loss_type": "simpo", "beta": beta, "simpo_gamma": gamma,
                       "cpo_alpha": cpo_alpha}))
