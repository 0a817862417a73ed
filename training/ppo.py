"""PPO for language models, the project's own: TRL removed PPOTrainer in 1.13, so this file is the
whole algorithm on torch + transformers + peft + accelerate (Ouyang et al. 2022 / Ziegler et al.
2019 style, as the old TRL PPOTrainer did it).

One step = one rollout followed by a few epochs of clipped updates on it:

    1. sample completions for `rollout_batch_size` prompts from the current policy
    2. score them: reward functions (graders, judges) and/or a trained reward model -> one scalar each
    3. per-token reward = -kl_coef * (logp - ref_logp), plus the scalar at the completion's last token
    4. GAE over the completion tokens with the value head's estimates -> advantages and returns
    5. `ppo_epochs` passes of mini-batches: clipped policy loss + vf_coef * clipped value loss

`collect_rollout` is step 1 and `ppo_update` step 5 (both in training/ppo_step.py); `main` does
2-4 between them, plus what a training loop keeps track of (prompt order, logs, the KL
coefficient, checkpoints, callbacks).

The policy is the base model with a LoRA adapter (what vLLM hot-loads); the value head is a single
Linear on the policy's last hidden state, trained jointly. The reference is the same network with
the adapter switched off, so it costs no extra memory, unless the round names a reference adapter.

Everything runs through `accelerate.Accelerator`, so `accelerate launch -m ...` on N GPUs runs N
copies that each sample their own share of prompts and average gradients (DDP). Batch sizes below
are per device. Checkpoints are safetensors + JSON only: nothing is pickled, so a checkpoint from
an untrusted directory cannot execute code on resume.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from feedback.errors import UserError
from training.ppo_core import (
    PolicyAndValue,
    ValueHead,
    gae,
    masked_whiten,
)
from training.ppo_step import collect_rollout, gather_step_logs, ppo_update
from training.reward_model import RewardModel, is_conversational
from training.stages.base import (
    CommonConfig,
    StageInputs,
    StageResult,
    cfg_field,
    latest_checkpoint,
    load_policy,
    load_reference,
    on_cpu,
)
from training.stages.safe_checkpoints import load_state, save_state

log = logging.getLogger(__name__)

SAVE_TOTAL_LIMIT = 2  # checkpoints kept on disk, as trainer_kwargs() sets for the TRL stages


@dataclass
class PPOConfig(CommonConfig):
    """PPO hyper-parameters. A step is one rollout: `max_steps` counts rollouts, not optimizer
    updates. per_device_train_batch_size is not used: rollout_batch_size and mini_batch_size set
    PPO's batch shapes (each optimizer update sees mini_batch_size * gradient_accumulation_steps
    samples per device)."""

    rollout_batch_size: int = cfg_field(
        8, "Prompts sampled per rollout on each device (one completion each); one rollout is one step.")
    ppo_epochs: int = cfg_field(
        4, "Passes over each rollout before sampling a fresh one (more = more sample-efficient, less on-policy).")
    mini_batch_size: int = cfg_field(
        4, "Samples per forward/backward pass on each device; must divide rollout_batch_size.")
    max_new_tokens: int = cfg_field(
        64, "Longest sampled completion in tokens; prompts are cut from the left to fit max_length.")
    temperature: float = cfg_field(
        0.7, "Sampling temperature; log-probs use the same temperature, so the updates stay on-policy.")
    top_p: float = cfg_field(
        1.0, "Nucleus sampling; below 1 the samples are slightly off-policy (the loss sees the full distribution).")
    gamma: float = cfg_field(1.0, "Discount per token; 1.0 because the reward is for the whole completion.")
    lam: float = cfg_field(
        0.95, "GAE lambda: 1.0 = Monte-Carlo returns (high variance), 0 = one-step TD (biased by the value head).")
    cliprange: float = cfg_field(
        0.2, "PPO ratio clip: an update may move a token's probability by at most this factor (+-20%).")
    cliprange_value: float = cfg_field(
        0.2, "Value clip: a new value estimate may move at most this far (in reward units) from the rollout's.")
    vf_coef: float = cfg_field(0.1, "Weight of the value loss next to the policy loss (they share the LoRA trunk).")
    kl_coef: float = cfg_field(
        0.05, "Initial weight of the per-token KL penalty to the reference (nats -> reward units).")
    adaptive_kl: bool = cfg_field(
        False, "Adapt kl_coef towards target_kl with Ziegler et al.'s proportional controller.")
    target_kl: float = cfg_field(
        6.0, "Adaptive KL target: KL(policy || reference) per completion, summed over tokens, in nats.")
    kl_horizon: int = cfg_field(10000, "Adaptive KL horizon in samples: larger = kl_coef moves more slowly.")
    whiten_advantages: bool = cfg_field(
        True, "Normalise advantages to mean 0 / std 1 within each rollout (steadier step sizes).")
    reward_weights: list[float] = cfg_field(  # noqa: RUF009 - cfg_field copies a list default per instance
        [], "One weight per reward function, in order (empty = 1.0 each); rewards are summed with these weights.")
    reward_model_weight: float = cfg_field(
        1.0, "Weight of the reward model's score when the round supplies a reward model.")
    max_grad_norm: float = cfg_field(1.0, "Clip the global gradient norm to this before every optimizer update.")


CONFIG = PPOConfig


# --- checkpoints: safetensors + JSON, never pickle -----------------------------------------------


def save_checkpoint(path: Path, *, policy, tokenizer, value_head: nn.Module, optimizer, trainer_state: dict) -> None:
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


def load_checkpoint_state(path: Path, *, value_head: nn.Module, optimizer) -> dict:
    from safetensors.torch import load_file

    value_head.load_state_dict(load_file(str(path / "value_head.safetensors")))
    optimizer.load_state_dict(load_state(str(path), "optimizer.safetensors", "optimizer.json"))
    return json.loads((path / "trainer_state.json").read_text())


# --- callbacks: the subset of transformers' CallbackHandler a round relies on --------------------


class Callbacks:
    """Calls TrainerCallback hooks the way Trainer does: (args, state, control, **kwargs), and a
    returned TrainerControl replaces ours. Hooks a callback lacks are skipped."""

    def __init__(self, callbacks: list[Any], args: Any, state, control):
        self.callbacks, self.args, self.state, self.control = callbacks, args, state, control

    def fire(self, event: str, **kwargs: Any) -> None:
        for callback in self.callbacks:
            hook = getattr(callback, event, None)
            if hook is None:
                continue
            result = hook(self.args, self.state, self.control, **kwargs)
            if result is not None:
                self.control = result


# --- rewards ---------------------------------------------------------------------------------------


def score_completions(rows: list[dict[str, Any]], texts: list[str], completion_ids: list[list[int]],
                      reward_funcs: list[Callable[..., list[float]]], weights: list[float],
                      reward_model: RewardModel | None, reward_model_weight: float,
                      trainer_state) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum of all reward sources per completion, and each source's mean for the logs.
    Reward functions get TRL's signature: prompts, completions (messages when the prompt is
    messages), completion_ids, and every other column of the rows as a list keyword."""
    prompts = [row["prompt"] for row in rows]
    completions = [[{"role": "assistant", "content": t}] if is_conversational(p) else t for p, t in zip(prompts, texts)]
    columns = sorted({k for row in rows for k in row} - {"prompt", "completion", "completion_ids"})
    extra = {k: [row.get(k) for row in rows] for k in columns}
    total = torch.zeros(len(rows))
    by_source: dict[str, float] = {}
    for func, weight in zip(reward_funcs, weights):
        raw = func(prompts=prompts, completions=completions, completion_ids=completion_ids,
                   trainer_state=trainer_state, **extra)
        if len(raw) != len(rows):
            raise UserError(f"{getattr(func, '__name__', func)} returned {len(raw)} rewards for {len(rows)} completions.")
        # None = "not applicable" (TRL's convention): that source adds nothing for this sample.
        scores = torch.tensor([math.nan if s is None else float(s) for s in raw])
        total += weight * torch.nan_to_num(scores, nan=0.0)
        name = getattr(func, "__name__", "reward_func")
        by_source[name] = float(scores.nanmean()) if scores.isfinite().any() else 0.0
    if reward_model is not None:
        scores = torch.tensor(reward_model(prompts, texts))
        total += reward_model_weight * scores
        by_source["reward_model"] = float(scores.mean())
    return total, by_source


# --- the stage -----------------------------------------------------------------------------------


def _validate(cfg: PPOConfig, inputs: StageInputs) -> None:
    if not inputs.train_rows:
        raise UserError("PPO needs prompts to sample from (train_rows is empty).")
    if not inputs.reward_funcs and not inputs.reward_model_dir:
        raise UserError("PPO needs a reward: a grader/judge reward function or a trained reward model.")
    if cfg.reward_weights and len(cfg.reward_weights) != len(inputs.reward_funcs):
        raise UserError(f"reward_weights has {len(cfg.reward_weights)} entries for "
                        f"{len(inputs.reward_funcs)} reward functions.")
    if cfg.rollout_batch_size % cfg.mini_batch_size:
        raise UserError(f"mini_batch_size {cfg.mini_batch_size} must divide "
                        f"rollout_batch_size {cfg.rollout_batch_size}.")
    if (cfg.rollout_batch_size // cfg.mini_batch_size) % cfg.gradient_accumulation_steps:
        raise UserError("gradient_accumulation_steps must divide rollout_batch_size / mini_batch_size.")
    if cfg.max_length <= cfg.max_new_tokens:
        raise UserError(f"max_length {cfg.max_length} leaves no room for a prompt next to "
                        f"max_new_tokens {cfg.max_new_tokens}.")
    if cfg.temperature <= 0:
        raise UserError("temperature must be > 0 (PPO needs sampling).")


def _load_models(cfg: PPOConfig, inputs: StageInputs, checkpoint: str | None):
    """(policy, tokenizer, separate reference or None). A LoRA checkpoint is loaded as the parent
    adapter (trainable); a full-model checkpoint as the model directory."""
    load_from = inputs
    if checkpoint:
        load_from = (replace(inputs, parent_adapter=checkpoint) if cfg.use_lora
                     else replace(inputs, model_dir=checkpoint))
    policy, tokenizer, peft_config = load_policy(cfg, load_from)
    if peft_config is not None:
        from peft import get_peft_model

        policy = get_peft_model(policy, peft_config)
    # With LoRA the reference is the same weights with the adapter off; a full fine-tune, or a
    # round that names a reference adapter, needs its own frozen copy.
    reference = load_reference(inputs) if (inputs.reference_adapter or not cfg.use_lora) else None
    return policy, tokenizer, reference


def _sampling_config(*, cfg: PPOConfig, policy, tokenizer, device) -> tuple[Any, torch.Tensor]:
    """The GenerationConfig every rollout samples with, and its stop tokens as a tensor for the
    completion masks. Stop at the tokenizer's EOS and at any the model's own generation_config
    lists (an instruct model may end its turn with a token the tokenizer does not call EOS)."""
    from transformers import GenerationConfig

    eos_ids = {tokenizer.eos_token_id}
    gen_eos = policy.generation_config.eos_token_id
    eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
    generation_config = GenerationConfig(
        do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0, max_new_tokens=cfg.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos_ids), use_cache=True,
    )
    return generation_config, torch.tensor(sorted(eos_ids), device=device)


class PromptOrder:
    """Which prompts a step samples: one shuffle per epoch, seeded, indexed by step, so a resumed
    run sees exactly the prompts it would have seen; each process takes its own slice of the
    global batch."""

    def __init__(self, rows: list[dict[str, Any]], *, per_device: int, process_index: int, num_processes: int,
                 seed: int):
        self.rows, self.per_device, self.process_index, self.seed = rows, per_device, process_index, seed
        self.global_batch = per_device * num_processes
        self.permutations: dict[int, list[int]] = {}

    def rows_for(self, step: int) -> list[dict[str, Any]]:
        picked = []
        start = (step - 1) * self.global_batch + self.process_index * self.per_device
        for pos in range(start, start + self.per_device):
            epoch, i = divmod(pos, len(self.rows))
            if epoch not in self.permutations:
                generator = torch.Generator().manual_seed(self.seed + epoch)
                self.permutations[epoch] = torch.randperm(len(self.rows), generator=generator).tolist()
            picked.append(self.rows[self.permutations[epoch][i]])
        return picked


def main(cfg: PPOConfig, inputs: StageInputs) -> StageResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import TrainerControl, TrainerState

    _validate(cfg, inputs)
    bf16 = not on_cpu() and torch.cuda.is_bf16_supported()
    accelerator = Accelerator(cpu=on_cpu(), mixed_precision="bf16" if bf16 else "no",
                              gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    device = accelerator.device
    output_dir = Path(inputs.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    set_seed(cfg.seed)  # the same LoRA init on every process
    checkpoint = latest_checkpoint(output_dir) if inputs.resume else None
    policy, tokenizer, reference = _load_models(cfg, inputs, checkpoint)
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts pad on the left
    tokenizer.truncation_side = "left"  # a long prompt keeps its end, next to the answer
    value_head = ValueHead(policy.config.hidden_size)
    model = PolicyAndValue(policy, value_head)
    # LoRA weights and the value head; weight decay 0: LoRA is small and starts at zero.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=0.0)
    saved: dict[str, Any] = {}
    if checkpoint:
        saved = load_checkpoint_state(Path(checkpoint), value_head=value_head, optimizer=optimizer)
        log.info("resuming PPO from %s (step %d)", checkpoint, saved["global_step"])
    model, optimizer = accelerator.prepare(model, optimizer)
    if reference is not None:
        reference.to(device)
    reward_model = RewardModel(inputs.reward_model_dir, device, cfg.max_length) if inputs.reward_model_dir else None
    weights = [float(w) for w in cfg.reward_weights] or [1.0] * len(inputs.reward_funcs)
    generation_config, eos_ids = _sampling_config(cfg=cfg, policy=policy, tokenizer=tokenizer, device=device)

    prompt_order = PromptOrder(inputs.train_rows, per_device=cfg.rollout_batch_size, seed=cfg.seed,
                               process_index=accelerator.process_index, num_processes=accelerator.num_processes)
    n_rows, global_batch = len(inputs.train_rows), prompt_order.global_batch
    max_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * n_rows / global_batch)

    args = SimpleNamespace(output_dir=str(output_dir), max_steps=max_steps, logging_steps=cfg.logging_steps,
                           save_steps=cfg.save_steps, learning_rate=cfg.learning_rate, seed=cfg.seed,
                           num_train_epochs=cfg.num_train_epochs)
    state = TrainerState(max_steps=max_steps, logging_steps=cfg.logging_steps, save_steps=cfg.save_steps,
                         train_batch_size=cfg.rollout_batch_size,
                         is_local_process_zero=accelerator.is_local_main_process,
                         is_world_process_zero=accelerator.is_main_process)
    state.global_step = saved.get("global_step", 0)
    state.log_history = saved.get("log_history", [])
    callbacks = Callbacks(inputs.callbacks, args, state, TrainerControl())
    kl_coef = saved.get("kl_coef", cfg.kl_coef)
    reward_first = saved.get("mean_reward_first")
    loss_sum, loss_count = saved.get("loss_sum", 0.0), saved.get("loss_count", 0)
    logs: dict[str, float] = dict(state.log_history[-1]) if state.log_history else {}
    callbacks.fire("on_train_begin", model=policy, processing_class=tokenizer)

    for step in range(state.global_step + 1, max_steps + 1):
        set_seed(cfg.seed + step, device_specific=True)  # a resumed run samples what the original would have
        rows = prompt_order.rows_for(step)

        # 1. rollout: sample, then score every sampled token under policy, reference and value head
        rollout = collect_rollout(model=accelerator.unwrap_model(model), reference=reference, tokenizer=tokenizer,
                                  rows=rows, generation_config=generation_config, eos_ids=eos_ids, cfg=cfg,
                                  accelerator=accelerator)
        completion_ids, mask = rollout.completion_ids, rollout.mask

        # 2. rewards: one scalar per completion from every source, weighted
        kept_ids = [ids[m].tolist() for ids, m in zip(completion_ids, mask)]
        texts = tokenizer.batch_decode([ids[m] for ids, m in zip(completion_ids, mask)], skip_special_tokens=True)
        scores, by_source = score_completions(rows, texts, kept_ids, inputs.reward_funcs, weights, reward_model,
                                              cfg.reward_model_weight, state)
        scores = scores.to(device)

        # 3. per-token rewards: the KL penalty on every token, the score on the last real one
        kl = (rollout.logprobs - rollout.ref_logprobs).masked_fill(~mask, 0.0)  # nats per token (k1 estimator)
        rewards = -kl_coef * kl
        last = mask.sum(1) - 1
        rewards[torch.arange(len(rows), device=device), last] += scores

        # 4. advantages and value targets
        advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

        # 5. clipped PPO updates on mini-batches of this rollout
        stats = ppo_update(model=model, optimizer=optimizer, accelerator=accelerator, rollout=rollout,
                           advantages=advantages, returns=returns, cfg=cfg)

        logs, kl_coef = gather_step_logs(accelerator=accelerator, cfg=cfg, stats=stats, by_source=by_source,
                                         scores=scores, kl=kl, mask=mask, kl_coef=kl_coef, global_batch=global_batch)
        reward_first = logs["reward"] if reward_first is None else reward_first
        loss_sum += logs["loss"] * len(stats["loss"])
        loss_count += len(stats["loss"])
        logs.update({"learning_rate": optimizer.param_groups[0]["lr"], "epoch": step * global_batch / n_rows})

        state.global_step = step
        state.epoch = logs["epoch"]
        callbacks.fire("on_step_end", model=policy, processing_class=tokenizer)
        if step % cfg.logging_steps == 0 or step == max_steps:
            state.log_history.append({**logs, "step": step})
            callbacks.fire("on_log", logs=logs, model=policy, processing_class=tokenizer)
            if accelerator.is_main_process:
                log.info("ppo step %d/%d: reward %.3f kl %.3f loss %.4f",
                         step, max_steps, logs["reward"], logs["kl"], logs["loss"])
        if cfg.save_steps > 0 and step % cfg.save_steps == 0:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                unwrapped = accelerator.unwrap_model(model)
                save_checkpoint(output_dir / f"checkpoint-{step}", policy=unwrapped.policy, tokenizer=tokenizer,
                                value_head=unwrapped.value_head, optimizer=optimizer, trainer_state={
                                    "global_step": step, "kl_coef": kl_coef, "mean_reward_first": reward_first,
                                    "loss_sum": loss_sum, "loss_count": loss_count, "log_history": state.log_history})
            accelerator.wait_for_everyone()
            callbacks.fire("on_save", model=policy, processing_class=tokenizer)
        # A cancel seen by any process stops them all at the same step (else DDP would hang).
        stop = torch.tensor(float(callbacks.control.should_training_stop), device=device)
        if accelerator.reduce(stop, reduction="sum").item() > 0:
            log.info("ppo: stopped by a callback at step %d", step)
            break

    callbacks.fire("on_train_end", model=policy, processing_class=tokenizer)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    final_dir = output_dir / ("adapter" if cfg.use_lora else "model")
    if accelerator.is_main_process:
        unwrapped.policy.save_pretrained(final_dir)  # safetensors: what vLLM hot-loads
        if not cfg.use_lora:
            tokenizer.save_pretrained(final_dir)
    accelerator.wait_for_everyone()

    metrics = {
        "global_step": state.global_step,
        "mean_reward_first": reward_first,
        "mean_reward_last": logs.get("reward"),
        "kl": logs.get("kl"),
        "kl_coef": kl_coef,
        "policy_loss": logs.get("policy_loss"),
        "value_loss": logs.get("value_loss"),
        "entropy": logs.get("entropy"),
        "train_loss": loss_sum / loss_count if loss_count else None,
    }
    if cfg.use_lora:
        return StageResult(adapter_dir=final_dir, metrics=metrics)
    return StageResult(model_dir=final_dir, metrics=metrics)
