"""The embedded judge: an in-process causal LM (by default the policy's own base model).

A 135M model cannot reliably write JSON, so instead of generating it is asked for the verdict
and the answer is read from its next-token probabilities for "1", "2" and "tie" after the
assistant has begun `{"winner": "`. One forward pass per request: fast on CPU, weak but real.
"""
from __future__ import annotations

import json
import threading
from functools import lru_cache

import torch

from feedback.model_cache import resolve_model_dir
from feedback.settings import DEFAULT_MODEL_NAME, get_settings
from judges.backends.base import JudgeReply, JudgeRequest

ANSWER_PREFIX = '{"winner": "'
OPTIONS = ("1", "2", "tie")


@lru_cache(maxsize=1)
def _load(model_dir: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return tokenizer, model


class LocalJudge:
    name = "local"
    answer_format = "json"  # its answer is read after the start of a JSON object
    price_per_mtok = (0.0, 0.0)  # runs here: free

    def __init__(self, model: str | None = None):
        model = model or DEFAULT_MODEL_NAME
        self.model_dir = str(resolve_model_dir(model, cache_dir=get_settings().model_cache_dir))
        self.model = model
        self.tokenizer, self._model = _load(self.model_dir)
        # First token of each option: what the model would write next.
        self._option_ids = [self.tokenizer.encode(o, add_special_tokens=False)[0] for o in OPTIONS]
        self._lock = threading.Lock()  # one forward pass at a time: CPU threads are already busy

    @torch.inference_mode()
    def complete(self, request: JudgeRequest) -> JudgeReply:
        chat = [{"role": "system", "content": request.system}, {"role": "user", "content": request.user}]
        text = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) + ANSWER_PREFIX
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with self._lock:
            logits = self._model(input_ids=ids).logits[0, -1]
        probs = torch.softmax(logits[self._option_ids], dim=0).tolist()
        winner = OPTIONS[max(range(len(OPTIONS)), key=probs.__getitem__)]
        structured = {"winner": winner,
                      "reasoning": "next-token probabilities "
                                   + ", ".join(f"{o}={p:.3f}" for o, p in zip(OPTIONS, probs, strict=True))}
        return JudgeReply(text=json.dumps(structured), structured=structured, model=self.model,
                          input_tokens=int(ids.shape[1]), output_tokens=1, cost_usd=0.0, stop_reason="scored")


def make_local(model: str | None = None, **_ignored) -> LocalJudge:
    return LocalJudge(model=model)
