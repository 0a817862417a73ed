"""Scoring responses with a trained reward model (a sequence-classification head with one output):
the one scorer behind PPO's reward-model reward, the online loop's reward labeler and the reward
stage's held-out accuracy.

One tokenization, the one TRL's RewardTrainer trains on: the chat template over prompt + answer
for chat messages, plain text + EOS otherwise, right-padded, the score read at the last non-pad
token. One truncation rule: a sequence longer than max_length keeps its last max_length tokens.
Why cut from the left instead of refusing to score (TRL drops over-long pairs from training): the
end holds the answer being judged and the tokens the score is read at, the cut removes the same
prompt start from every answer to one prompt (so a ranking of them stays fair), and every caller
gets a number: PPO's reward and the loop's best-vs-worst both need a float for every answer.
"""
from __future__ import annotations

from typing import Any

import torch


def is_conversational(prompt: Any) -> bool:
    return isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt)


def conversation(prompt: Any, completion: Any) -> Any:
    """prompt + completion as one conversation (chat messages) or one string. A completion may be
    text or assistant messages (TRL's conversational rows)."""
    if is_conversational(prompt):
        return prompt + (completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}])
    return prompt + completion


def token_ids(tokenizer, conversation: Any, max_length: int) -> list[int]:
    """The ids RewardTrainer builds for this conversation, cut to the last max_length tokens."""
    if isinstance(conversation, list):
        ids = list(tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"])
    else:
        text = conversation if conversation.endswith(tokenizer.eos_token) else conversation + tokenizer.eos_token
        ids = tokenizer(text)["input_ids"]
    return ids[-max_length:]


@torch.no_grad()
def reward_scores(model, tokenizer, prompts: list[Any], completions: list[Any], *, max_length: int,
                  batch_size: int = 8) -> list[float]:
    """The reward of each prompt + completion under `model` (in train or eval mode; left as it was)."""
    was_training = model.training
    model.eval()
    ids = [token_ids(tokenizer, conversation(p, c), max_length) for p, c in zip(prompts, completions, strict=True)]
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(ids), batch_size):
        # right padding with the pad token, as TRL's collator pads: the head finds the last non-pad token
        batch = tokenizer.pad({"input_ids": ids[start:start + batch_size]}, padding=True, padding_side="right",
                              return_tensors="pt")
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        scores.extend(logits[:, 0].float().tolist())
    model.train(was_training)
    return scores


class RewardModel:
    """A reward model loaded from its directory, frozen on `device`: scorer(prompts, completions)
    -> one float each (see the module docstring for how an over-long answer is scored)."""

    def __init__(self, model_dir: str, device: torch.device, max_length: int):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval().requires_grad_(False)
        self.max_length = max_length

    def __call__(self, prompts: list[Any], completions: list[Any]) -> list[float]:
        return reward_scores(self.model, self.tokenizer, prompts, completions, max_length=self.max_length)
