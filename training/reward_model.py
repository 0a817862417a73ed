"""Scoring responses with a trained reward model (a sequence-classification head with one
output), shared by PPO and the online loop's reward labeler."""
from __future__ import annotations

from typing import Any

import torch


def is_conversational(prompt: Any) -> bool:
    return isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt)


class RewardModel:
    """A sequence-classification reward model: score(prompt, completion) = its single logit on the
    chat-formatted conversation."""

    def __init__(self, model_dir: str, device: torch.device, max_length: int):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.truncation_side = "left"  # keep the completion, which is what is being judged
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval().requires_grad_(False)
        self.device, self.max_length = device, max_length

    @torch.no_grad()
    def __call__(self, prompts: list[Any], completions: list[str]) -> list[float]:
        texts = []
        for prompt, completion in zip(prompts, completions):
            if is_conversational(prompt):
                texts.append(self.tokenizer.apply_chat_template(
                    [*prompt, {"role": "assistant", "content": completion}], tokenize=False))
            else:
                texts.append(prompt + completion)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             add_special_tokens=False, return_tensors="pt").to(self.device)
        return self.model(**enc).logits[:, 0].float().tolist()
