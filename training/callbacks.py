"""The bridge from a trainer to its job row: progress and ETA, logged metrics for the curves,
heartbeats, and cancellation (a cancel request stops training at the next step)."""
from __future__ import annotations

from transformers import TrainerCallback

from feedback.jobs import Cancelled, Reporter


class JobCallback(TrainerCallback):
    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self.cancelled = False

    def on_step_end(self, args, state, control, **kwargs):
        try:
            self.reporter.progress(state.global_step, state.max_steps or None)
        except Cancelled:
            self.cancelled = True
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            numbers = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            self.reporter.log_metrics({"step": state.global_step, **numbers})
        return control
