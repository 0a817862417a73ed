"""The fast paths of the local sampler (issue 14): the decode loop that replaced `generate`, and
the dtype choice with its bf16 check and fp32 fallback."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from feedback.policy import SamplingParams
from feedback.policy.cpu_dtype import choose_dtype, cpu_flags, greedy_agreement, has_native_bf16
from feedback.policy.decode import filtered_probs, sample
from feedback.policy.local import LocalPolicyClient

CHATS = [
    [{"role": "user", "content": "Hi."}],
    [{"role": "user", "content": "Write one long sentence about the history of the printing press in Europe."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Two plus two?"}],
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    # The tiny model's own greedy text is one token repeated; wider random weights make its greedy
    # continuations vary, so the comparisons below can tell tokens and positions apart.
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() > 1:
                torch.nn.init.normal_(weight, std=0.5)
    texts = tokenizer.apply_chat_template(CHATS, add_generation_prompt=True, tokenize=False)
    prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert len({len(p) for p in prompts}) == len(prompts)  # lengths differ, so the batch is padded
    return model, tokenizer, prompts


@torch.inference_mode()
def _greedy_generate(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=2)
    return out[0, len(prompt):].tolist()


def test_greedy_decode_of_a_padded_batch_equals_generate_one_prompt_at_a_time(tiny):
    model, _, prompts = tiny
    out = sample(model, prompts, n=2, max_new_tokens=12, temperature=0, top_p=1.0, eos_ids={-1}, seed=None)
    for prompt, samples in zip(prompts, out, strict=True):
        want = _greedy_generate(model, prompt, 12)
        assert [s.tokens for s in samples] == [want, want]
        assert [s.stopped for s in samples] == [False, False]


def test_rows_that_hit_eos_stop_there_and_the_others_run_to_the_limit(tiny):
    model, _, prompts = tiny
    # Declare a token that one prompt's greedy continuation first emits after k >= 1 tokens the
    # end of turn: that prompt's rows stop after those k tokens and leave the batch, the other
    # prompts' rows go on (and stop wherever they emit it).
    greedy = [_greedy_generate(model, prompt, 10) for prompt in prompts]
    stopper, k = next((p, k) for p, want in enumerate(greedy) for k in range(1, 10) if want[k] not in want[:k])
    eos = greedy[stopper][k]
    out = sample(model, prompts, n=2, max_new_tokens=10, temperature=0, top_p=1.0, eos_ids={eos}, seed=None)
    assert [(s.tokens, s.stopped) for s in out[stopper]] == [(greedy[stopper][:k], True)] * 2
    for want, samples in zip(greedy, out, strict=True):
        end = want.index(eos) if eos in want else None
        for s in samples:
            assert s.tokens == (want if end is None else want[:end])
            assert s.stopped == (end is not None)


@pytest.mark.parametrize("temperature,top_p", [(0.8, 0.95), (1.0, 0.5), (0.3, 1.0), (2.0, 0.9)])
def test_the_filtered_distribution_is_generates_temperature_top_k_top_p(temperature, top_p):
    torch.manual_seed(0)
    # Wide logits (a few dominant tokens) and flat ones, over a vocabulary the size of SmolLM2's.
    logits = torch.cat([torch.randn(3, 49152) * 6, torch.randn(3, 49152) * 0.5])
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopKLogitsWarper(50), TopPLogitsWarper(top_p)])
    want = warpers(None, logits.clone()).softmax(dim=-1)
    probs, indices = filtered_probs(logits, temperature=temperature, top_p=top_p)
    got = torch.zeros_like(want).scatter_(-1, indices, probs)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_the_fast_path_returns_n_completions_with_finish_reasons_and_counts(tiny_model_dir):
    client = LocalPolicyClient(tiny_model_dir, batch_size=2)
    assert client.fast_decode and client.dtype == torch.float32
    out = client.generate(CHATS, SamplingParams(n=3, max_new_tokens=6, seed=5, temperature=1.0))
    assert [len(c) for c in out] == [3, 3, 3]
    lengths = [len(p) for p in client.tokenizer(
        client.tokenizer.apply_chat_template(CHATS, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False)["input_ids"]]
    for completions, prompt_tokens in zip(out, lengths, strict=True):
        for c in completions:
            assert c.finish_reason in ("stop", "length")
            assert c.completion_tokens == 6 if c.finish_reason == "length" else 1 <= c.completion_tokens <= 6
            assert c.prompt_tokens == prompt_tokens and c.latency_ms > 0 and c.seed is not None
    again = client.generate(CHATS, SamplingParams(n=3, max_new_tokens=6, seed=5, temperature=1.0))
    assert [[c.text for c in cs] for cs in again] == [[c.text for c in cs] for cs in out]


def test_greedy_fast_path_and_generate_path_give_the_same_texts(tiny_model_dir):
    params = SamplingParams(n=2, max_new_tokens=8, temperature=0)
    fast = LocalPolicyClient(tiny_model_dir, batch_size=3).generate(CHATS, params)
    # The generate path pads the batch on the left, the fast path prefills each prompt alone: the
    # greedy tokens agree, so padding and positions are right in both.
    slow = LocalPolicyClient(tiny_model_dir, batch_size=3, fast_decode=False).generate(CHATS, params)
    assert [[(c.text, c.finish_reason) for c in cs] for cs in fast] == [[(c.text, c.finish_reason) for c in cs]
                                                                      for cs in slow]


def test_cpu_flags_come_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert {"avx512f", "avx512_bf16"} <= cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "missing") == set()
    assert has_native_bf16({"avx512f", "amx_bf16"}) and not has_native_bf16({"avx512f", "avx512_vnni"})


def test_auto_dtype_stays_fp32_without_native_bf16(tiny):
    model, tokenizer, _ = tiny
    chosen, dtype = choose_dtype("auto", model, tokenizer, flags={"avx2", "avx512f"})
    assert chosen is model and dtype == torch.float32
    assert choose_dtype("float32", model, tokenizer, flags={"avx512_bf16"}) == (model, torch.float32)
    with pytest.raises(ValueError, match="dtype must be one of"):
        choose_dtype("fp8", model, tokenizer)


def test_auto_dtype_takes_bf16_with_native_support_only_if_it_agrees_with_fp32(default_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()
    chosen, dtype = choose_dtype("auto", model, tokenizer, flags={"avx512_bf16"})
    assert dtype == torch.bfloat16 and next(chosen.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the fp32 model is left as it was
    # A check bf16 cannot pass (more than every token) falls back to the fp32 model.
    assert choose_dtype("auto", model, tokenizer, flags={"avx512_bf16"}, min_agreement=1.01) == (model, torch.float32)


def test_greedy_agreement_tells_a_different_model_apart(tiny, default_model_dir):
    model, tokenizer, prompts = tiny
    ids = torch.tensor([prompts[1]])
    assert greedy_agreement(model, model, ids, tokens=6) == 1.0
    other = AutoModelForCausalLM.from_config(model.config)  # same shape, other random weights
    torch.nn.init.normal_(other.lm_head.weight, std=1.0)
    assert greedy_agreement(model, other.eval(), ids, tokens=6) < 0.5
