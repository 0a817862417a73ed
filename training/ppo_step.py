"""One PPO step's two heavy halves, for training/ppo.py: sampling and scoring a rollout (step 1
of that module's docstring) and the clipped updates on it (step 5), plus the step's logs
gathered across processes. The tensor math they use is in training/ppo_core.py."""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from training.ppo_core import (
    PolicyAndValue,
    adaptive_kl_update,
    completion_mask,
    entropy_from_logits,
    masked_mean,
    token_logprobs,
)
from training.reward_model import is_conversational

if TYPE_CHECKING:
    from training.ppo import PPOConfig


@contextmanager
def only_these_sampling_settings(model, generation_config):
    """generate() fills every setting we leave unset from the model's own generation_config
    (a shipped repetition_penalty, top_k=50, min_p, ...), which would sample from a different
    distribution than the one the loss computes. Swap in ours for the call, so only it and
    transformers' neutral defaults apply; the saved model keeps its own."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    original = base.generation_config
    base.generation_config = generation_config
    try:
        yield
    finally:
        base.generation_config = original


@dataclass(frozen=True)
class Rollout:
    """One step's samples, scored once before any update: the PPO epochs take their ratios and
    value clips relative to these, so they must not change while the epochs run. Token tensors
    are (B, T) over the completion, sequence tensors (B, prompt + T)."""

    sequences: torch.Tensor  # prompt (left-padded) + completion ids
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_ids: torch.Tensor
    mask: torch.Tensor  # True up to and including each completion's first EOS
    logprobs: torch.Tensor  # under the policy that sampled them (the "old" policy)
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    T: int


def _encode_prompts(*, tokenizer, rows: list[dict[str, Any]], max_prompt_length: int, device):
    texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
             if is_conversational(r["prompt"]) else str(r["prompt"]) for r in rows]
    return tokenizer(texts, padding=True, truncation=True, max_length=max_prompt_length,
                     add_special_tokens=False, return_tensors="pt").to(device)


def collect_rollout(*, model: PolicyAndValue, reference, tokenizer, rows: list[dict[str, Any]], generation_config,
                    eos_ids: torch.Tensor, cfg: PPOConfig, accelerator) -> Rollout:
    """Step 1: sample one completion per prompt, then score every sampled token under the policy,
    the reference and the value head. `model` is the unwrapped module: DDP's wrapper has no
    .policy to generate with, and nothing here needs gradients to sync."""
    with torch.no_grad(), accelerator.autocast():
        prompt = _encode_prompts(tokenizer=tokenizer, rows=rows, device=accelerator.device,
                                 max_prompt_length=cfg.max_length - cfg.max_new_tokens)
        model.eval()
        with only_these_sampling_settings(model.policy, generation_config):
            sequences = model.policy.generate(**prompt, generation_config=generation_config)
        n_prompt = prompt["input_ids"].shape[1]
        completion_ids = sequences[:, n_prompt:]
        mask = completion_mask(completion_ids, eos_ids)
        attention_mask = torch.cat([prompt["attention_mask"].bool(), mask], dim=1).long()
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)  # left padding: count real tokens only
        T = completion_ids.shape[1]
        logits, values = model(sequences, attention_mask, position_ids, T)
        values = values.float()
        logprobs = token_logprobs(logits.float() / cfg.temperature, completion_ids)
        del logits  # (B, T, vocab): free it before the reference's own
        ref_kwargs = {"input_ids": sequences, "attention_mask": attention_mask, "position_ids": position_ids,
                      "use_cache": False, "logits_to_keep": T + 1}
        if reference is None:  # the same weights with the LoRA branch switched off
            with model.policy.disable_adapter():
                ref_logits = model.policy(**ref_kwargs).logits
        else:
            ref_logits = reference(**ref_kwargs).logits
        ref_logprobs = token_logprobs(ref_logits[:, :-1].float() / cfg.temperature, completion_ids)
    return Rollout(sequences=sequences, attention_mask=attention_mask, position_ids=position_ids,
                   completion_ids=completion_ids, mask=mask, logprobs=logprobs, ref_logprobs=ref_logprobs,
                   values=values, T=T)


def ppo_update(*, model, optimizer, accelerator, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor,
               cfg: PPOConfig) -> dict[str, list[float]]:
    """Step 5: `ppo_epochs` shuffled passes of clipped policy + value updates over the rollout.
    `model` is the prepared (DDP) module, so gradients average across processes. Returns each
    mini-batch's losses and diagnostics, per name."""
    old_logprobs, old_values = rollout.logprobs, rollout.values
    model.train()
    stats = defaultdict(list)
    for _ in range(cfg.ppo_epochs):
        for idx in torch.randperm(len(rollout.sequences), device=accelerator.device).split(cfg.mini_batch_size):
            with accelerator.accumulate(model):
                mb_mask = rollout.mask[idx]
                new_logits, vpred = model(rollout.sequences[idx], rollout.attention_mask[idx],
                                          rollout.position_ids[idx], rollout.T)
                new_logits = new_logits.float() / cfg.temperature
                new_logprobs = token_logprobs(new_logits, rollout.completion_ids[idx])
                ratio = torch.exp(new_logprobs - old_logprobs[idx])
                pg_losses = torch.max(-advantages[idx] * ratio,
                                      -advantages[idx] * ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange))
                pg_loss = masked_mean(pg_losses, mb_mask)
                vpred = vpred.float()
                v_clipped = old_values[idx] + (vpred - old_values[idx]).clamp(-cfg.cliprange_value, cfg.cliprange_value)
                vf_losses = torch.max((vpred - returns[idx]) ** 2, (v_clipped - returns[idx]) ** 2)
                vf_loss = 0.5 * masked_mean(vf_losses, mb_mask)
                loss = pg_loss + cfg.vf_coef * vf_loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            with torch.no_grad():
                stats["policy_loss"].append(pg_loss.item())
                stats["value_loss"].append(vf_loss.item())
                stats["loss"].append(loss.item())
                stats["entropy"].append(masked_mean(entropy_from_logits(new_logits), mb_mask).item())
                stats["approx_kl"].append(masked_mean(0.5 * (new_logprobs - old_logprobs[idx]) ** 2, mb_mask).item())
                stats["clipfrac"].append(masked_mean(((ratio - 1).abs() > cfg.cliprange).float(), mb_mask).item())
            del new_logits
    return stats


def gather_step_logs(*, accelerator, cfg: PPOConfig, stats: dict[str, list[float]], by_source: dict[str, float],
                     scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float,
                     global_batch: int) -> tuple[dict[str, float], float]:
    """The step's logs averaged over all processes, and the next kl_coef. Logging and the KL
    controller use all processes' samples, so every process agrees (and logs the same)."""
    all_scores = accelerator.gather(scores.float())
    seq_kl = accelerator.gather(kl.sum(1).float()).mean().item()  # nats per completion
    lengths = accelerator.gather(mask.sum(1).float())
    if cfg.adaptive_kl:
        kl_coef = adaptive_kl_update(kl_coef, seq_kl, cfg.target_kl, global_batch, cfg.kl_horizon)
    local = {**{k: sum(v) / len(v) for k, v in stats.items()}, **{f"rewards/{k}": v for k, v in by_source.items()}}
    keys = sorted(local)
    logs = dict(zip(keys, accelerator.reduce(torch.tensor([local[k] for k in keys], device=accelerator.device),
                                              reduction="mean").tolist()))
    logs.update({"reward": all_scores.mean().item(),
                 "reward_std": all_scores.std().item() if all_scores.numel() > 1 else 0.0,
                 "kl": seq_kl, "kl_coef": kl_coef, "completion_length": lengths.mean().item()})
    return logs, kl_coef
