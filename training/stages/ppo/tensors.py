"""PPO's pure tensor functions: masks, GAE, log-probs, entropy and the adaptive KL controller.
No model, no state: unit-tested on their own (tests/test_ppo.py)."""
from __future__ import annotations

import torch


def completion_mask(completion_ids: torch.Tensor, eos_ids: torch.Tensor) -> torch.Tensor:
    """True for the generated tokens up to and including the first EOS; what follows is padding
    (generate pads finished rows, and pad is often the EOS token itself)."""
    is_eos = torch.isin(completion_ids, eos_ids).long()
    return (is_eos.cumsum(dim=1) - is_eos) == 0


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    x = x.masked_fill(~mask, 0.0)  # where(), not *: a NaN in a padded slot must not leak in
    if dim is None:
        return x.sum() / mask.sum().clamp(min=1)
    return x.sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return ((x - mean) * torch.rsqrt(var + 1e-8)).masked_fill(~mask, 0.0)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over the completion tokens (B, T). Masked slots have zero
    reward and zero value, so the episode ends at each row's last real token."""
    rewards = rewards.masked_fill(~mask, 0.0)
    values = values.masked_fill(~mask, 0.0)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    returns = advantages + values
    return advantages.masked_fill(~mask, 0.0), returns


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids) under logits (B, T, V), without materialising a second (B, T, V) tensor."""
    return logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def adaptive_kl_update(kl_coef: float, current_kl: float, target_kl: float, n_samples: int, horizon: int) -> float:
    """Ziegler et al. (2019) proportional controller: nudge kl_coef so the observed KL drifts to
    the target. The error is clipped to +-20% so one odd batch cannot swing the coefficient."""
    error = min(max(current_kl / target_kl - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_samples / horizon)
