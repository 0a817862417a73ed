"""The networks PPO trains and samples from: the policy with its value head as one module, and
loading the policy (fresh, from the parent, or from a checkpoint) with its reference."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from training.stages.base import StageInputs, load_policy, load_reference
from training.stages.ppo.config import PPOConfig


class ValueHead(nn.Module):
    """V(s): the return expected from this token on, read off the policy's last hidden state.
    Zero-initialised, so it predicts 0 until trained and cannot disturb the first rollouts."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.float()).squeeze(-1)


class PolicyAndValue(nn.Module):
    """One module for accelerate to prepare, so DDP averages the LoRA and value-head grads together."""

    def __init__(self, policy: nn.Module, value_head: ValueHead):
        super().__init__()
        self.policy = policy
        self.value_head = value_head

    def forward(self, input_ids, attention_mask, position_ids, n_completion: int):
        """Logits predicting each of the last `n_completion` tokens (B, T, V), and the value of the
        state before each of them (B, T)."""
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=True, use_cache=False, logits_to_keep=n_completion + 1)
        values = self.value_head(out.hidden_states[-1][:, -n_completion - 1:-1])
        return out.logits[:, :-1], values


def load_models(cfg: PPOConfig, inputs: StageInputs, checkpoint: str | None, *, device):
    """(policy, tokenizer, separate reference on `device` or None). A LoRA checkpoint is loaded as
    the parent adapter (trainable); a full-model checkpoint as the model directory."""
    load_from = inputs
    if checkpoint:
        load_from = (replace(inputs, parent_adapter=checkpoint) if cfg.use_lora
                     else replace(inputs, model_dir=checkpoint))
    policy, tokenizer, peft_config = load_policy(cfg, load_from)
    if peft_config is not None:
        from peft import get_peft_model

        policy = get_peft_model(policy, peft_config)
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts pad on the left
    tokenizer.truncation_side = "left"  # a long prompt keeps its end, next to the answer
    # With LoRA the reference is the same weights with the adapter off; a full fine-tune, or a
    # round that names a reference adapter, needs its own frozen copy.
    reference = load_reference(inputs) if (inputs.reference_adapter or not cfg.use_lora) else None
    return policy, tokenizer, (reference.to(device) if reference is not None else None)
