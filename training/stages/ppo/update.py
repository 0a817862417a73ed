"""Steps 3 to 5 of a PPO step: per-token rewards and advantages from a scored rollout, the
clipped policy + value updates on it, and the step's logs gathered across processes (built from
the pure functions in tensors.py)."""
from __future__ import annotations

from collections import defaultdict

import torch

from training.stages.ppo.config import PPOConfig
from training.stages.ppo.rollout import Rollout
from training.stages.ppo.tensors import (
    adaptive_kl_update,
    entropy_from_logits,
    gae,
    masked_mean,
    masked_whiten,
    token_logprobs,
)

# --- one step's update ---------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, cfg: PPOConfig) -> torch.optim.Optimizer:
    """AdamW on what trains: the LoRA weights (or all weights) and the value head. Weight decay 0:
    LoRA is small and starts at zero."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                             weight_decay=0.0)


def advantages_and_returns(*, rollout: Rollout, scores: torch.Tensor, kl_coef: float,
                           cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 3 and 4: (advantages, value targets, per-token KL in nats). Every token pays the KL
    penalty; the completion's score lands on its last real token."""
    mask = rollout.mask
    kl = (rollout.logprobs - rollout.ref_logprobs).masked_fill(~mask, 0.0)  # k1 estimator
    rewards = -kl_coef * kl
    last = mask.sum(1) - 1
    rewards[torch.arange(len(rewards), device=rewards.device), last] += scores
    advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    return advantages, returns, kl


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
                                              reduction="mean").tolist(), strict=True))
    logs.update({"reward": all_scores.mean().item(),
                 "reward_std": all_scores.std().item() if all_scores.numel() > 1 else 0.0,
                 "kl": seq_kl, "kl_coef": kl_coef, "completion_length": lengths.mean().item()})
    return logs, kl_coef
