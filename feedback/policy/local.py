"""In-process sampling with transformers on CPU (the embedded default).

Prompts are batched together and each prompt's `n` samples are decoded in the same batch, which is
where the speed comes from on CPU. The batch runs through feedback/policy/decode.py, a sampling
loop that draws from the same distribution as `generate` at about twice its speed (issue 14, see
bench/RESULTS.md "Against llama.cpp"); `fast_decode=False` keeps transformers' `generate`.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from feedback.policy.base import Completion, Messages, SamplingParams
from feedback.policy.cpu_dtype import choose_dtype
from feedback.policy.decode import Sampled, sample


class LocalPolicyClient:
    def __init__(self, model_dir: str | Path, *, adapter_dir: str | Path | None = None, batch_size: int = 16,
                 dtype: str = "auto", fast_decode: bool = True):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = str(model_dir)
        self.adapter_dir = str(adapter_dir) if adapter_dir else None
        self.batch_size = batch_size
        self.fast_decode = fast_decode
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
        self.model, self.dtype = choose_dtype(dtype, model.eval(), self.tokenizer)
        # torch's RNG is process-global: one generate at a time keeps seeds meaningful.
        self._lock = threading.Lock()

    def generate(self, conversations: list[Messages], params: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in conversations]
        texts = self.tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
        # The chat template already wrote the special tokens.
        prompts = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        # Similar lengths in one batch waste less compute on padding.
        order = sorted(range(len(texts)), key=lambda i: len(prompts[i]))
        for chunk_no, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            seed = None if params.seed is None else params.seed + chunk_no
            run = self._sample_batch if self.fast_decode else self._generate_batch
            for i, completions in zip(idx, run([prompts[i] for i in idx], params, seed), strict=True):
                results[i] = completions
        return results

    def _sample_batch(self, prompts: list[list[int]], params: SamplingParams, seed: int | None):
        with self._lock:
            t0 = time.perf_counter()
            sampled = sample(self.model, prompts, n=params.n, max_new_tokens=params.max_new_tokens,
                             temperature=params.temperature, top_p=params.top_p, eos_ids=self._eos_ids(), seed=seed)
            latency_ms = (time.perf_counter() - t0) * 1000
        return [[self._completion(s, len(prompt), latency_ms, seed) for s in samples]
                for prompt, samples in zip(prompts, sampled, strict=True)]

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, seed: int | None):
        enc = self.tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
        sample_ = params.temperature > 0
        kwargs = dict(temperature=params.temperature, top_p=params.top_p) if sample_ else {}
        with self._lock:
            if seed is not None:
                torch.manual_seed(seed)
            t0 = time.perf_counter()
            out = self.model.generate(
                **enc, do_sample=sample_, max_new_tokens=params.max_new_tokens,
                # generate refuses n > 1 when greedy: the n greedy rows are one row repeated.
                num_return_sequences=params.n if sample_ else 1, pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
            if not sample_:
                out = out.repeat_interleave(params.n, dim=0)
            latency_ms = (time.perf_counter() - t0) * 1000
        eos_ids = self._eos_ids()
        batch: list[list[Completion]] = []
        for row, generated in enumerate(out[:, enc["input_ids"].shape[1]:]):
            tokens = generated.tolist()
            end = next((k for k, t in enumerate(tokens) if t in eos_ids), None)
            sampled = Sampled(tokens if end is None else tokens[:end], stopped=end is not None)
            if row % params.n == 0:
                batch.append([])
            batch[-1].append(self._completion(sampled, len(prompts[row // params.n]), latency_ms, seed))
        return batch

    def _completion(self, sampled: Sampled, prompt_tokens: int, latency_ms: float, seed: int | None) -> Completion:
        return Completion(
            text=self.tokenizer.decode(sampled.tokens, skip_special_tokens=True).strip(),
            finish_reason="stop" if sampled.stopped else "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(sampled.tokens) + int(sampled.stopped),
            latency_ms=latency_ms,
            seed=seed,
        )

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
        ids.add(self.tokenizer.eos_token_id)
        return ids
