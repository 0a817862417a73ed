"""Step 1 of a PPO step: which prompts it samples, how it samples, and the rollout it collects,
every sampled token scored once under the policy, the reference and the value head."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from training.reward_model import is_conversational
from training.stages.ppo.config import PPOConfig
from training.stages.ppo.model import PolicyAndValue
from training.stages.ppo.tensors import completion_mask, token_logprobs


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


def sampling_config(*, cfg: PPOConfig, policy, tokenizer, device) -> tuple[Any, torch.Tensor]:
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

    def completions(self, tokenizer) -> tuple[list[str], list[list[int]]]:
        """Each completion up to its first EOS, as text (for the rewards) and as token ids."""
        kept = [ids[m] for ids, m in zip(self.completion_ids, self.mask, strict=True)]
        return tokenizer.batch_decode(kept, skip_special_tokens=True), [ids.tolist() for ids in kept]


def encode_prompts(*, tokenizer, rows: list[dict[str, Any]], max_prompt_length: int, device):
    """The rows' prompts as the policy sees them: chat template with the generation prompt (or the
    plain text), left-padded and cut from the left to max_prompt_length (see load_models)."""
    texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
             if is_conversational(r["prompt"]) else str(r["prompt"]) for r in rows]
    return tokenizer(texts, padding=True, truncation=True, max_length=max_prompt_length,
                     add_special_tokens=False, return_tensors="pt").to(device)


def collect_rollout(*, model: PolicyAndValue, reference, tokenizer, rows: list[dict[str, Any]], generation_config,
                    eos_ids: torch.Tensor, cfg: PPOConfig, accelerator) -> Rollout:
    """Sample one completion per prompt, then score every sampled token under the policy, the
    reference and the value head. `model` is the unwrapped module: DDP's wrapper has no .policy
    to generate with, and nothing here needs gradients to sync."""
    with torch.no_grad(), accelerator.autocast():
        prompt = encode_prompts(tokenizer=tokenizer, rows=rows, device=accelerator.device,
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
