"""PPO's checkpoints and final artifact: safetensors + JSON, never pickle, so resuming from a
directory cannot execute code. A checkpoint holds the policy (LoRA adapter or full model), the
value head, the optimizer state and trainer_state.json: the step, the log history and the
running Progress, so a resumed run continues the same curves from the same state."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from training.stages.safe_checkpoints import load_state, save_state

SAVE_TOTAL_LIMIT = 2  # checkpoints kept on disk, as training_arguments() sets for the TRL stages


@dataclass
class Progress:
    """What the loop carries from step to step besides transformers' TrainerState."""

    kl_coef: float  # the adaptive controller moves it
    mean_reward_first: float | None = None  # the first step's reward, for the round's metrics
    loss_sum: float = 0.0  # over every mini-batch so far: train_loss is their mean
    loss_count: int = 0

    @classmethod
    def resumed(cls, saved: dict[str, Any], *, kl_coef: float) -> Progress:
        """From a checkpoint's trainer_state (or, empty, a fresh run starting at `kl_coef`)."""
        return cls(kl_coef=saved.get("kl_coef", kl_coef), mean_reward_first=saved.get("mean_reward_first"),
                   loss_sum=saved.get("loss_sum", 0.0), loss_count=saved.get("loss_count", 0))

    def add_step(self, logs: dict[str, float], n_losses: int) -> None:
        if self.mean_reward_first is None:
            self.mean_reward_first = logs["reward"]
        self.loss_sum += logs["loss"] * n_losses
        self.loss_count += n_losses


def save_checkpoint(output_dir: Path, step: int, *, accelerator, model, tokenizer, optimizer, progress: Progress,
                    log_history: list[dict[str, Any]]) -> None:
    """output_dir/checkpoint-<step>, written by the main process once every process finished the
    step, keeping the newest SAVE_TOTAL_LIMIT."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        _write(output_dir / f"checkpoint-{step}", policy=unwrapped.policy, tokenizer=tokenizer,
               value_head=unwrapped.value_head, optimizer=optimizer,
               trainer_state={"global_step": step, **asdict(progress), "log_history": log_history})
    accelerator.wait_for_everyone()


def _write(path: Path, *, policy, tokenizer, value_head: nn.Module, optimizer, trainer_state: dict) -> None:
    """Write into tmp-<name> and rename, so a run killed mid-save never leaves a checkpoint-N
    that resume would pick up half-written."""
    from safetensors.torch import save_file

    tmp = path.with_name("tmp-" + path.name)
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp)  # LoRA: adapter_model.safetensors + adapter_config.json; else the full model
    (tmp / "README.md").unlink(missing_ok=True)  # PEFT's empty model card: a checkpoint is weights + JSON
    if not hasattr(policy, "peft_config"):
        tokenizer.save_pretrained(tmp)  # a full model checkpoint must load on its own
    save_file({k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()},
              str(tmp / "value_head.safetensors"))
    save_state(optimizer.state_dict(), str(tmp), "optimizer.safetensors", "optimizer.json")
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    # Keep the newest SAVE_TOTAL_LIMIT; older ones only cost disk.
    ckpts = sorted(path.parent.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    for old in ckpts[:-SAVE_TOTAL_LIMIT]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint_state(path: Path, *, value_head: nn.Module, optimizer) -> dict[str, Any]:
    """Load the value head and optimizer state in place (the policy is loaded as the model, see
    model.load_models); return the trainer_state."""
    from safetensors.torch import load_file

    value_head.load_state_dict(load_file(str(path / "value_head.safetensors")))
    optimizer.load_state_dict(load_state(str(path), "optimizer.safetensors", "optimizer.json"))
    return json.loads((path / "trainer_state.json").read_text())


def save_artifact(output_dir: Path, *, accelerator, model, tokenizer, use_lora: bool) -> Path:
    """The trained policy as safetensors, what vLLM hot-loads: output_dir/adapter (LoRA), or the
    full model with its tokenizer in output_dir/model."""
    accelerator.wait_for_everyone()
    final_dir = output_dir / ("adapter" if use_lora else "model")
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).policy.save_pretrained(final_dir)
        if not use_lora:
            tokenizer.save_pretrained(final_dir)
    accelerator.wait_for_everyone()
    return final_dir
