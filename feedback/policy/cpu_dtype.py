"""Which dtype the local policy runs in on this CPU (issue 14).

bf16 halves the weight traffic of every decode step, but only pays on a CPU that computes in
bf16 natively (AVX512-BF16 or AMX-BF16). Without those, oneDNN converts on the fly and bf16
was 1.5-2.5x *slower* than fp32 on the project's AVX-512 Xeon (bench/RESULTS.md, "Against
llama.cpp"). So "auto" means bf16 only with native support and only if bf16 still picks the
same greedy tokens as fp32 on a fixed input; fp32 otherwise.
"""
from __future__ import annotations

from pathlib import Path

import torch

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
DTYPE_CHOICES = ("auto", "float32", "bfloat16")
# The fixed input of the check: a chat-formatted question, so the greedy tokens are real text.
CHECK_PROMPT = [{"role": "user", "content": "Explain in two sentences why the sky is blue."}]
CHECK_TOKENS = 16
# Share of the fp32 greedy tokens bf16 must reproduce (teacher-forced on the fp32 ones, so one
# early difference does not count as all the rest).
MIN_AGREEMENT = 0.9


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def has_native_bf16(flags: set[str] | None = None) -> bool:
    return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


@torch.inference_mode()
def greedy_agreement(reference, candidate, input_ids: torch.Tensor, tokens: int = CHECK_TOKENS) -> float:
    """Share of `tokens` greedy steps of `reference` at which `candidate`, fed the same prefix,
    picks the same top-1 token."""
    ids = input_ids
    same = 0
    for _ in range(tokens):
        want = reference(input_ids=ids).logits[0, -1].argmax()
        got = candidate(input_ids=ids).logits[0, -1].argmax()
        same += int(want == got)
        ids = torch.cat([ids, want.view(1, 1)], dim=1)
    return same / tokens


def choose_dtype(choice: str, model_fp32, tokenizer, *, flags: set[str] | None = None,
                 min_agreement: float = MIN_AGREEMENT):
    """(model, dtype) for `choice`: "float32", "bfloat16" (as asked, unchecked) or "auto"."""
    if choice not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, not {choice!r}")
    if choice == "float32" or (choice == "auto" and not has_native_bf16(flags)):
        return model_fp32, torch.float32
    import copy

    candidate = copy.deepcopy(model_fp32).to(torch.bfloat16)
    if choice == "bfloat16":
        return candidate, torch.bfloat16
    ids = tokenizer.apply_chat_template([CHECK_PROMPT], add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    if greedy_agreement(model_fp32, candidate, ids) >= min_agreement:
        return candidate, torch.bfloat16
    return model_fp32, torch.float32
