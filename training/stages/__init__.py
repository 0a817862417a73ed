"""Training stages. Each stage module (PPO's: ppo/stage.py) defines its config dataclass and
`main(cfg, inputs) -> StageResult`, and exports them as `STAGE`; this registry names them, in the
order pages list them, and imports a stage only when it is asked for (so listing stages never
loads torch). The TRL stages all run on trl_stage.run_trl_stage."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from feedback.registry import Registry


@dataclass(frozen=True)
class Stage:
    config: type  # the stage's config dataclass; its fields (with help) draw the CLI flags and page forms
    main: Callable[[Any, Any], Any]  # main(cfg, inputs: StageInputs) -> StageResult


STAGES: Registry[Stage] = Registry("stage", lazy={
    "sft": "training.stages.sft:STAGE",
    "reward": "training.stages.reward:STAGE",
    "dpo": "training.stages.dpo:STAGE",
    "kto": "training.stages.kto:STAGE",
    "orpo": "training.stages.orpo:STAGE",
    "simpo": "training.stages.simpo:STAGE",
    "grpo": "training.stages.grpo:STAGE",
    "rloo": "training.stages.rloo:STAGE",
    "ppo": "training.stages.ppo.stage:STAGE",
})
