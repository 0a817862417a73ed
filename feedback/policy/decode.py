"""The sampling loop LocalPolicyClient runs instead of transformers' `generate` (issue 14).

It draws from the same distribution as `generate(do_sample=True, temperature, top_p)` with
generate's default top_k=50 (temperature, then top-k, then top-p), but skips four costs that
dominate on CPU (figures in bench/RESULTS.md, "Against llama.cpp"):

- `num_return_sequences=n` copies each prompt n times *before* the prefill; here every prompt is
  prefilled once, alone (so without padding), and its KV cache is copied into its n rows;
- the dynamic KV cache concatenates, so copies, the whole cache at every step of every layer;
  here it is preallocated for the longest prompt plus max_new_tokens and written in place;
- top-p sorts the whole 49k vocabulary at every step; here top-k comes first and only those
  k logits are sorted (the same tokens survive: top-p after top-k only ever looks at those);
- rows that have ended keep being computed until the last row ends; here they leave the batch
  once they are a quarter of it (each removal copies the cache, so not for every single row).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

GENERATE_DEFAULT_TOP_K = 50  # what `generate` applies when sampling unless told otherwise


@dataclass
class Sampled:
    tokens: list[int]  # new tokens, without the end-of-turn token
    stopped: bool  # True: ended with an EOS token; False: hit max_new_tokens


class _PreallocatedLayer(DynamicLayer):
    """One layer's KV cache as a fixed buffer, filled left-padded, grown by writing in place."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self._key_buffer, self._value_buffer, self._length = keys, values, length
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._expose()

    def _expose(self) -> None:
        self.keys = self._key_buffer[:, :, : self._length]
        self.values = self._value_buffer[:, :, : self._length]

    def update(self, key_states, value_states, *args, **kwargs):
        step = key_states.shape[-2]
        self._key_buffer[:, :, self._length : self._length + step] = key_states
        self._value_buffer[:, :, self._length : self._length + step] = value_states
        self._length += step
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._key_buffer = self._key_buffer.index_select(0, indices)
        self._value_buffer = self._value_buffer.index_select(0, indices)
        self._expose()


def _prefill(model, prompt: list[int]):
    """Logits for the next token after `prompt` and its per-layer (keys, values)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model(input_ids=torch.tensor([prompt]), past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[0, -1], [(layer.keys, layer.values) for layer in cache.layers]


def _shared_prefix_cache(prefills, prompt_lengths: list[int], n: int, capacity: int) -> tuple[Cache, int]:
    """One cache holding every prompt's KV n times (rows prompt-major), left-padded to the
    longest prompt, with room for `capacity` positions in all."""
    width = max(prompt_lengths)
    layers = []
    for layer_no in range(len(prefills[0][1])):
        sample_keys = prefills[0][1][layer_no][0]
        batch, heads, _, dim = sample_keys.shape
        shape = (len(prefills) * n, heads, capacity, dim)
        keys = torch.zeros(shape, dtype=sample_keys.dtype)
        values = torch.zeros(shape, dtype=sample_keys.dtype)
        for p, (_, kv) in enumerate(prefills):
            length = prompt_lengths[p]
            rows = slice(p * n, (p + 1) * n)
            keys[rows, :, width - length : width] = kv[layer_no][0]
            values[rows, :, width - length : width] = kv[layer_no][1]
        layers.append(_PreallocatedLayer(keys, values, width))
    return Cache(layers=layers), width


def filtered_probs(logits: torch.Tensor, *, temperature: float, top_p: float,
                   top_k: int = GENERATE_DEFAULT_TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, token ids) of the tokens that survive temperature, top-k and top-p, in
    generate's order; the probabilities of the others are 0. Sorted, most likely first."""
    # topk returns its values sorted (largest first), which is the order top-p needs.
    values, indices = (logits.float() / temperature).topk(min(top_k, logits.shape[-1]), dim=-1)
    probs = values.softmax(dim=-1)
    if top_p < 1.0:
        # Keep a token while the mass of the tokens before it is below top_p (generate's rule,
        # which also always keeps the most likely token), then renormalise as its softmax does.
        before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs, indices


def _next_tokens(logits: torch.Tensor, *, temperature: float, top_p: float, top_k: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """One token per row; greedy when temperature is 0 (as generate with do_sample=False)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs, indices = filtered_probs(logits, temperature=temperature, top_p=top_p, top_k=top_k)
    choice = torch.multinomial(probs, 1, generator=generator)
    return indices.gather(-1, choice).squeeze(-1)


@torch.inference_mode()
def sample(model, prompts: list[list[int]], *, n: int, max_new_tokens: int, temperature: float,
           top_p: float, eos_ids: set[int], seed: int | None,
           top_k: int = GENERATE_DEFAULT_TOP_K) -> list[list[Sampled]]:
    """`n` continuations of each tokenised prompt, all decoded as one batch."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    prompt_lengths = [len(p) for p in prompts]
    prefills = [_prefill(model, prompt) for prompt in prompts]
    cache, width = _shared_prefix_cache(prefills, prompt_lengths, n, max(prompt_lengths) + max_new_tokens)

    rows = len(prompts) * n
    row_ids = torch.arange(rows)  # which output row each batch row is
    lengths = torch.tensor(prompt_lengths).repeat_interleave(n)  # real tokens per row so far
    # Left padding: row r's real context is the last `lengths[r]` positions of the cache.
    mask = (torch.arange(width) >= width - lengths[:, None]).long()
    mask = torch.cat([mask, torch.ones(rows, max_new_tokens, dtype=torch.long)], dim=1)
    logits = torch.stack([logits for logits, _ in prefills]).repeat_interleave(n, dim=0)
    eos = torch.tensor(sorted(eos_ids))

    generated: list[list[int]] = [[] for _ in range(rows)]
    stopped = [False] * rows
    active = torch.ones(rows, dtype=torch.bool)
    for step in range(max_new_tokens):
        tokens = _next_tokens(logits, temperature=temperature, top_p=top_p, top_k=top_k, generator=generator)
        ended = torch.isin(tokens, eos)
        for row, token, end in zip(row_ids.tolist(), tokens.tolist(), ended.tolist(), strict=True):
            if not stopped[row] and len(generated[row]) == step:
                if end:
                    stopped[row] = True
                else:
                    generated[row].append(token)
        active &= ~ended
        if step + 1 == max_new_tokens or not active.any():
            break
        if (~active).sum() * 4 >= len(active):
            keep = active.nonzero().squeeze(-1)
            for layer in cache.layers:
                layer.batch_select_indices(keep)
            row_ids, lengths, mask, tokens = row_ids[keep], lengths[keep], mask[keep], tokens[keep]
            active = active[keep]
        out = model(
            input_ids=tokens[:, None], attention_mask=mask[:, : width + step + 1],
            position_ids=(lengths + step)[:, None], past_key_values=cache, use_cache=True,
        )
        logits = out.logits[:, -1]

    return [[Sampled(generated[p * n + k], stopped[p * n + k]) for k in range(n)] for p in range(len(prompts))]
