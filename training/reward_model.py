"""Scoring responses with a trained reward model (a sequence-classification head, one output)."""
from __future__ import annotations

import torch


class RewardScorer:
    def __init__(self, model_dir: str, *, batch_size: int = 8):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def score(self, messages: list[dict[str, str]], texts: list[str]) -> list[float]:
        """The reward of each response to the conversation `messages`."""
        chats = [self.tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": t}], tokenize=False)
                 for t in texts]
        scores: list[float] = []
        for start in range(0, len(chats), self.batch_size):
            enc = self.tokenizer(chats[start:start + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=True, max_length=1024, add_special_tokens=False)
            scores += self.model(**enc).logits[:, 0].tolist()
        return scores
