"""The round's transformers TrainerCallbacks (job progress, cancel, tests' recorders) driven from
PPO's own loop: the subset of transformers' CallbackHandler a round relies on."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from training.stages.ppo.config import PPOConfig


class Callbacks:
    """Calls TrainerCallback hooks the way Trainer does: (args, state, control, **kwargs), and a
    returned TrainerControl replaces ours. Hooks a callback lacks are skipped."""

    def __init__(self, callbacks: list[Any], args: Any, state, control):
        self.callbacks, self.args, self.state, self.control = callbacks, args, state, control

    @classmethod
    def start(cls, callbacks: list[Any], *, cfg: PPOConfig, output_dir: Path, max_steps: int, accelerator,
              saved: dict[str, Any]) -> Callbacks:
        """Hooks with a TrainerState at the checkpoint's step and log history (or a fresh one), and
        the few TrainingArguments fields callbacks read."""
        from transformers import TrainerControl, TrainerState

        args = SimpleNamespace(output_dir=str(output_dir), max_steps=max_steps, logging_steps=cfg.logging_steps,
                               save_steps=cfg.save_steps, learning_rate=cfg.learning_rate, seed=cfg.seed,
                               num_train_epochs=cfg.num_train_epochs)
        state = TrainerState(max_steps=max_steps, logging_steps=cfg.logging_steps, save_steps=cfg.save_steps,
                             train_batch_size=cfg.rollout_batch_size,
                             is_local_process_zero=accelerator.is_local_main_process,
                             is_world_process_zero=accelerator.is_main_process)
        state.global_step = saved.get("global_step", 0)
        state.log_history = saved.get("log_history", [])
        return cls(callbacks, args, state, TrainerControl())

    def fire(self, event: str, **kwargs: Any) -> None:
        for callback in self.callbacks:
            hook = getattr(callback, event, None)
            if hook is None:
                continue
            result = hook(self.args, self.state, self.control, **kwargs)
            if result is not None:
                self.control = result

    def stop_requested(self, accelerator) -> bool:
        """Whether a callback on any process asked to stop: all processes then stop at the same
        step (one stopping alone would hang DDP)."""
        stop = torch.tensor(float(self.control.should_training_stop), device=accelerator.device)
        return accelerator.reduce(stop, reduction="sum").item() > 0
