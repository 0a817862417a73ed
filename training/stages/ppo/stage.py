"""The PPO stage: `main` is the training loop; each step's work is in the modules it calls (see
the package docstring for the five steps)."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from training.stages import Stage
from training.stages.base import StageInputs, StageResult, latest_checkpoint, on_cpu
from training.stages.ppo.callbacks import Callbacks
from training.stages.ppo.checkpoint import Progress, load_checkpoint_state, save_artifact, save_checkpoint
from training.stages.ppo.config import PPOConfig, check_inputs
from training.stages.ppo.model import PolicyAndValue, ValueHead, load_models
from training.stages.ppo.rewards import reward_sources, score_completions
from training.stages.ppo.rollout import PromptOrder, collect_rollout, sampling_config
from training.stages.ppo.update import advantages_and_returns, gather_step_logs, make_optimizer, ppo_update

log = logging.getLogger(__name__)


def make_accelerator(cfg: PPOConfig):
    import torch
    from accelerate import Accelerator

    bf16 = not on_cpu() and torch.cuda.is_bf16_supported()
    return Accelerator(cpu=on_cpu(), mixed_precision="bf16" if bf16 else "no",
                       gradient_accumulation_steps=cfg.gradient_accumulation_steps)


def main(cfg: PPOConfig, inputs: StageInputs) -> StageResult:
    from accelerate.utils import set_seed

    check_inputs(cfg, inputs)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    output_dir = Path(inputs.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    set_seed(cfg.seed)  # the same LoRA init on every process
    checkpoint = latest_checkpoint(output_dir) if inputs.resume else None
    policy, tokenizer, reference = load_models(cfg, inputs, checkpoint, device=device)
    model = PolicyAndValue(policy, ValueHead(policy.config.hidden_size))
    optimizer = make_optimizer(model, cfg)
    saved: dict[str, Any] = {}
    if checkpoint:
        saved = load_checkpoint_state(Path(checkpoint), value_head=model.value_head, optimizer=optimizer)
        log.info("resuming PPO from %s (step %d)", checkpoint, saved["global_step"])
    model, optimizer = accelerator.prepare(model, optimizer)
    rewards = reward_sources(cfg, inputs, device)
    generation_config, eos_ids = sampling_config(cfg=cfg, policy=policy, tokenizer=tokenizer, device=device)

    prompt_order = PromptOrder(inputs.train_rows, per_device=cfg.rollout_batch_size, seed=cfg.seed,
                               process_index=accelerator.process_index, num_processes=accelerator.num_processes)
    n_rows, global_batch = len(inputs.train_rows), prompt_order.global_batch
    max_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * n_rows / global_batch)
    callbacks = Callbacks.start(inputs.callbacks, cfg=cfg, output_dir=output_dir, max_steps=max_steps,
                                accelerator=accelerator, saved=saved)
    state = callbacks.state
    progress = Progress.resumed(saved, kl_coef=cfg.kl_coef)
    logs: dict[str, float] = dict(state.log_history[-1]) if state.log_history else {}
    callbacks.fire("on_train_begin", model=policy, processing_class=tokenizer)

    for step in range(state.global_step + 1, max_steps + 1):
        set_seed(cfg.seed + step, device_specific=True)  # a resumed run samples what the original would have
        rows = prompt_order.rows_for(step)
        rollout = collect_rollout(model=accelerator.unwrap_model(model), reference=reference, tokenizer=tokenizer,
                                  rows=rows, generation_config=generation_config, eos_ids=eos_ids, cfg=cfg,
                                  accelerator=accelerator)
        texts, completion_ids = rollout.completions(tokenizer)
        scores, by_source = score_completions(rows, texts, completion_ids, sources=rewards, trainer_state=state)
        scores = scores.to(device)
        advantages, returns, kl = advantages_and_returns(rollout=rollout, scores=scores, kl_coef=progress.kl_coef,
                                                         cfg=cfg)
        stats = ppo_update(model=model, optimizer=optimizer, accelerator=accelerator, rollout=rollout,
                           advantages=advantages, returns=returns, cfg=cfg)

        logs, progress.kl_coef = gather_step_logs(accelerator=accelerator, cfg=cfg, stats=stats, by_source=by_source,
                                                  scores=scores, kl=kl, mask=rollout.mask, kl_coef=progress.kl_coef,
                                                  global_batch=global_batch)
        progress.add_step(logs, n_losses=len(stats["loss"]))
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
            save_checkpoint(output_dir, step, accelerator=accelerator, model=model, tokenizer=tokenizer,
                            optimizer=optimizer, progress=progress, log_history=state.log_history)
            callbacks.fire("on_save", model=policy, processing_class=tokenizer)
        if callbacks.stop_requested(accelerator):
            log.info("ppo: stopped by a callback at step %d", step)
            break

    callbacks.fire("on_train_end", model=policy, processing_class=tokenizer)
    final_dir = save_artifact(output_dir, accelerator=accelerator, model=model, tokenizer=tokenizer,
                              use_lora=cfg.use_lora)
    metrics = round_metrics(state.global_step, progress, logs)
    if cfg.use_lora:
        return StageResult(adapter_dir=final_dir, metrics=metrics)
    return StageResult(model_dir=final_dir, metrics=metrics)


def round_metrics(global_step: int, progress: Progress, logs: dict[str, float]) -> dict[str, Any]:
    """What the round records: the reward's first and last value, the last step's losses and KL."""
    return {
        "global_step": global_step,
        "mean_reward_first": progress.mean_reward_first,
        "mean_reward_last": logs.get("reward"),
        "kl": logs.get("kl"),
        "kl_coef": progress.kl_coef,
        "policy_loss": logs.get("policy_loss"),
        "value_loss": logs.get("value_loss"),
        "entropy": logs.get("entropy"),
        "train_loss": progress.loss_sum / progress.loss_count if progress.loss_count else None,
    }


STAGE = Stage(config=PPOConfig, main=main)
