"""In-process sampling with transformers on CPU (the embedded default).

Prompts are batched together and each prompt's `n` samples come from the same generate call
(num_return_sequences), which is where the speed comes from on CPU: see bench/sampling.py.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from feedback.policy.base import Completion, Messages, SamplingParams


class LocalPolicyClient:
    def __init__(self, model_dir: str | Path, *, adapter_dir: str | Path | None = None, batch_size: int = 8):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = str(model_dir)
        self.adapter_dir = str(adapter_dir) if adapter_dir else None
        self.batch_size = batch_size
        self.description = f"local:{self.adapter_dir or self.model_dir}"
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.tokenizer.padding_side = "left"  # decoder-only: pad on the left so generation continues the prompt
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        if self.adapter_dir:
            from peft import PeftModel

            # Merged once at load: generation then costs the same as the base model.
            model = PeftModel.from_pretrained(model, self.adapter_dir).merge_and_unload()
        self.model = model.eval()
        # torch's RNG is process-global: one generate at a time keeps seeds meaningful.
        self._lock = threading.Lock()

    def generate(self, conversations: list[Messages], params: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in conversations]
        texts = self.tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
        # Similar lengths in one batch waste less compute on padding.
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        for chunk_no, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            seed = None if params.seed is None else params.seed + chunk_no
            for i, completions in zip(idx, self._generate_batch([texts[i] for i in idx], params, seed), strict=True):
                results[i] = completions
        return results

    @torch.inference_mode()
    def _generate_batch(self, texts: list[str], params: SamplingParams, seed: int | None):
        # The chat template already wrote the special tokens.
        enc = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        sample = params.temperature > 0
        kwargs = dict(temperature=params.temperature, top_p=params.top_p) if sample else {}
        with self._lock:
            if seed is not None:
                torch.manual_seed(seed)
            t0 = time.perf_counter()
            out = self.model.generate(
                **enc, do_sample=sample, max_new_tokens=params.max_new_tokens,
                num_return_sequences=params.n, pad_token_id=self.tokenizer.pad_token_id, **kwargs,
            )
            latency_ms = (time.perf_counter() - t0) * 1000
        prompt_len = enc["input_ids"].shape[1]
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        eos_ids = self._eos_ids()
        batch: list[list[Completion]] = []
        for row, generated in enumerate(out[:, prompt_len:]):
            tokens = generated.tolist()
            end = next((k for k, t in enumerate(tokens) if t in eos_ids), None)
            kept = tokens if end is None else tokens[:end]
            completion = Completion(
                text=self.tokenizer.decode(kept, skip_special_tokens=True).strip(),
                finish_reason="length" if end is None else "stop",
                prompt_tokens=int(prompt_tokens[row // params.n]),
                completion_tokens=len(kept) + (0 if end is None else 1),
                latency_ms=latency_ms,
                seed=seed,
            )
            if row % params.n == 0:
                batch.append([])
            batch[-1].append(completion)
        return batch

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
        ids.add(self.tokenizer.eos_token_id)
        return ids
