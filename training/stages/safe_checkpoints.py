"""Checkpoints without pickle. transformers' Trainer saves the optimizer, scheduler and RNG
states with torch.save (pickle) and the training arguments as training_args.bin; resuming reads
them back through torch.load. This mixin writes the same states as safetensors (tensors) + JSON
(everything else) and reads them back the same way, and drops training_args.bin (never read on
resume). Model and adapter weights are safetensors already.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
SCHEDULER_STATE = "scheduler.json"
RNG_TENSORS = "rng_state.safetensors"
RNG_META = "rng_state.json"


def _split(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of `value` with every tensor moved into `tensors` under a dotted key."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(value, dict):
        return {"__dict__": [[_split(k, f"{prefix}.k{i}", tensors), _split(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, (list, tuple)):
        return {"__tuple__" if isinstance(value, tuple) else "__list__":
                [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__} without pickle")


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__dict__" in value:
            return {_join(k, tensors): _join(v, tensors) for k, v in value["__dict__"]}
        if "__tuple__" in value:
            return tuple(_join(v, tensors) for v in value["__tuple__"])
        if "__list__" in value:
            return [_join(v, tensors) for v in value["__list__"]]
    return value


def save_state(state: Any, directory: str, tensors_name: str, meta_name: str) -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta = _split(state, "s", tensors)
    save_file(tensors, os.path.join(directory, tensors_name))
    Path(directory, meta_name).write_text(json.dumps(meta))


def load_state(directory: str, tensors_name: str, meta_name: str) -> Any:
    tensors = load_file(os.path.join(directory, tensors_name))
    return _join(json.loads(Path(directory, meta_name).read_text()), tensors)


class SafetensorsCheckpoints:
    """Mix in before a transformers/TRL Trainer class."""

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        save_state(self.optimizer.state_dict(), output_dir, OPTIMIZER_TENSORS, OPTIMIZER_META)
        if self.lr_scheduler is not None:
            save_state(self.lr_scheduler.state_dict(), output_dir, "scheduler.safetensors", SCHEDULER_STATE)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not os.path.exists(os.path.join(checkpoint, OPTIMIZER_META)):
            return
        self.optimizer.load_state_dict(load_state(checkpoint, OPTIMIZER_TENSORS, OPTIMIZER_META))
        if self.lr_scheduler is not None and os.path.exists(os.path.join(checkpoint, SCHEDULER_STATE)):
            self.lr_scheduler.load_state_dict(load_state(checkpoint, "scheduler.safetensors", SCHEDULER_STATE))

    def _save_rng_state(self, output_dir: str) -> None:
        state = {"python": random.getstate(), "numpy": list(np.random.get_state()), "cpu": torch.get_rng_state()}
        state["numpy"][1] = torch.from_numpy(state["numpy"][1].astype(np.int64))
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        save_state(state, output_dir, RNG_TENSORS, RNG_META)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None or not os.path.exists(os.path.join(checkpoint, RNG_META)):
            return
        state = load_state(checkpoint, RNG_TENSORS, RNG_META)
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        # The pickled TrainingArguments are for humans to inspect, never read on resume: drop them.
        args_file = Path(output_dir or self.args.output_dir) / "training_args.bin"
        args_file.unlink(missing_ok=True)


def without_pickle(trainer):
    """Switch an existing Trainer instance to pickle-free checkpoints (works for any TRL trainer,
    which all inherit the checkpoint methods from transformers.Trainer)."""
    cls = type(trainer)
    if not issubclass(cls, SafetensorsCheckpoints):
        trainer.__class__ = type(f"Safe{cls.__name__}", (SafetensorsCheckpoints, cls), {})
    return trainer
