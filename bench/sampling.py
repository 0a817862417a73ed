"""Sampling throughput on the real default model (issue 2).

Compares, on the same prompts, the same SamplingParams, the same seeds and the *same loaded
model and tokenizer*:

  (a) ours     LocalPolicyClient.generate(conversations, params)
  (b) bare     model.generate written directly with the same batching: the client's batch size,
               the same length-sorted batches, chat template, left padding,
               num_return_sequences=n, do_sample, same max_new_tokens (nothing else)
  (c) single   model.generate one prompt at a time (num_return_sequences=n, no batching
               across prompts)
  (d) llama.cpp llama_cpp.Llama on the shipped GGUF (the file the model was converted from), in
               process, n_threads = torch threads, one sequence at a time: each prompt through the
               same chat template, n completions one after another (the second reuses the prompt's
               KV, as llama-cpp-python does), same temperature/top_p/top_k=50 (generate's default;
               min_p off), max_tokens, one seed per sequence (issue 14)

The measure is generated tokens per second: only real completion tokens count (up to and
including the first EOS, never the padding after it), divided by the wall time of the whole
call. Sampled lengths differ between variants, so tokens/s, not wall time, is the fair number;
the table also shows each variant's completion lengths (mean, median) and finish reasons (EOS
or the length limit), so a faster variant that samples differently would show.
The variants are interleaved inside each repeat (a,b,c then c,b,a, ...) after one warm-up call
each, so load from other processes on the machine hits them alike; the table shows medians.

    .venv/bin/python bench/sampling.py [--prompts 16 --n 2 --max-new-tokens 64 --batch-size 8 --repeats 2]
        [--variants abcd --threads N --client-batch-size 16 --dtype auto --generate-path]
"""
from __future__ import annotations

import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
# Run as a script, sys.path[0] is bench/ itself, where a module such as bench/queue.py would
# shadow the stdlib module of that name (torch imports `queue`): put the repo root (for
# `feedback`) in its place.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable

import torch

from bench.machine import load_line, machine_line  # noqa: E402
from feedback.policy.base import Messages, SamplingParams

# Varied on purpose: one-liners next to long multi-paragraph prompts, so batches need padding
# and the length sort in the client has something to do.
PROMPTS: list[str] = [
    "Hi!",
    "What is the capital of France?",
    "Give me three names for a grey cat.",
    "Translate 'good morning' into Spanish.",
    "Write a haiku about autumn rain.",
    "Explain what a hash table is in two sentences.",
    "What is 17 times 23? Show your working.",
    "List five vegetables that grow well in shade.",
    (
        "My sourdough starter smells like nail polish remover and has a layer of grey liquid on top. "
        "I feed it once a day with equal weights of flour and water and keep it on the kitchen counter, "
        "which is quite warm in summer. Is it dead, and what should I change?"
    ),
    (
        "Summarise the following paragraph in one sentence: The city council met on Tuesday evening to "
        "discuss the proposed bicycle lanes on Main Street. Supporters argued that the lanes would "
        "reduce traffic accidents and encourage healthier commuting, while shop owners worried that "
        "removing parking spaces would drive customers away. After three hours of debate, the council "
        "voted to run a six-month trial on one section of the street and to collect data on both "
        "accidents and shop revenue before making a final decision."
    ),
    (
        "I am writing a cover letter for a junior data analyst job. I have a degree in biology, I taught "
        "myself SQL and Python over the last year, and I built a small dashboard that tracks bird "
        "sightings in my town using public data. Write an opening paragraph that makes the career "
        "change sound like a strength rather than a weakness."
    ),
    (
        "Here is a Python function:\n\ndef f(xs):\n    out = []\n    for x in xs:\n        if x not in out:\n"
        "            out.append(x)\n    return out\n\nWhat does it do, what is its time complexity, and how "
        "would you make it faster while keeping the order of the elements?"
    ),
    (
        "Compare renting and buying a home for someone who expects to move cities within four years. "
        "Consider transaction costs, maintenance, flexibility, and the risk of house prices falling. "
        "Finish with a short recommendation."
    ),
    (
        "A train leaves station A at 9:00 travelling at 80 km/h towards station B, 240 km away. Another "
        "train leaves B at 9:30 travelling at 100 km/h towards A. At what time do they meet, and how far "
        "from A? Explain each step."
    ),
    (
        "Write a short, friendly reminder email to a colleague who has not yet sent their part of the "
        "quarterly report. The deadline is Friday, the manager has already asked twice, and you do not "
        "want to sound annoyed. Keep it under 100 words."
    ),
    "Why is the sky blue?",
]


def conversations_for(count: int) -> list[Messages]:
    """`count` single-turn conversations from PROMPTS (cycled, and varied, past its end)."""
    out: list[Messages] = []
    for i in range(count):
        text = PROMPTS[i % len(PROMPTS)]
        if i >= len(PROMPTS):
            text = f"{text} (Variant {i // len(PROMPTS)}.)"
        out.append([{"role": "user", "content": text}])
    return out


# One entry per sampled sequence: (completion tokens up to and including the first EOS, whether
# it ended with EOS rather than at the length limit).
Outcomes = list[tuple[int, bool]]


def outcomes_of(generated: torch.Tensor, eos_ids: set[int]) -> Outcomes:
    """The outcome of each row of `generated` (new tokens only)."""
    out: Outcomes = []
    for row in generated.tolist():
        end = next((k for k, t in enumerate(row) if t in eos_ids), None)
        out.append((len(row), False) if end is None else (end + 1, True))
    return out


def eos_ids_of(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    out = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
    out.add(tokenizer.eos_token_id)
    return out


def run_ours(client, conversations: list[Messages], params: SamplingParams) -> Outcomes:
    results = client.generate(conversations, params)
    return [(c.completion_tokens or 0, c.finish_reason == "stop") for completions in results for c in completions]


@torch.inference_mode()
def run_bare_batched(model, tokenizer, conversations: list[Messages], params: SamplingParams,
                     batch_size: int, eos_ids: set[int]) -> Outcomes:
    # The client's batching before issue 14 (sorted by prompt length, `batch_size` prompts each,
    # seed per batch) with nothing but generate in it.
    texts = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    outcomes: Outcomes = []
    for chunk_no, start in enumerate(range(0, len(order), batch_size)):
        enc = tokenizer([texts[i] for i in order[start : start + batch_size]],
                        add_special_tokens=False, padding=True, return_tensors="pt")
        torch.manual_seed(params.seed + chunk_no)
        out = model.generate(
            **enc, do_sample=True, temperature=params.temperature, top_p=params.top_p,
            max_new_tokens=params.max_new_tokens, num_return_sequences=params.n,
            pad_token_id=tokenizer.pad_token_id,
        )
        outcomes += outcomes_of(out[:, enc["input_ids"].shape[1]:], eos_ids)
    return outcomes


@torch.inference_mode()
def run_one_at_a_time(model, tokenizer, conversations: list[Messages], params: SamplingParams,
                      eos_ids: set[int]) -> Outcomes:
    outcomes: Outcomes = []
    for i, conversation in enumerate(conversations):
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        torch.manual_seed(params.seed + i)
        out = model.generate(
            **enc, do_sample=True, temperature=params.temperature, top_p=params.top_p,
            max_new_tokens=params.max_new_tokens, num_return_sequences=params.n,
            pad_token_id=tokenizer.pad_token_id,
        )
        outcomes += outcomes_of(out[:, enc["input_ids"].shape[1]:], eos_ids)
    return outcomes


def load_llama_cpp(threads: int):
    """llama.cpp in process on the GGUF the default model was converted from."""
    from llama_cpp import Llama

    from feedback.model_cache import shipped_gguf_path

    return Llama(model_path=str(shipped_gguf_path()), n_threads=threads, n_threads_batch=threads,
                 n_ctx=1024, seed=0, verbose=False)


def run_llama_cpp(llm, tokenizer, conversations: list[Messages], params: SamplingParams) -> Outcomes:
    outcomes: Outcomes = []
    texts = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    for i, text in enumerate(texts):
        for k in range(params.n):
            out = llm.create_completion(
                text, max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                top_k=50, min_p=0.0, repeat_penalty=1.0, seed=params.seed + i * params.n + k,
            )
            stopped = out["choices"][0]["finish_reason"] == "stop"
            # llama-cpp-python leaves the EOS it sampled out of completion_tokens; count it as ours does.
            outcomes.append((out["usage"]["completion_tokens"] + int(stopped), stopped))
    return outcomes


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=16, help="number of prompts (default 16)")
    p.add_argument("--n", type=int, default=2, help="samples per prompt (default 2)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    p.add_argument("--batch-size", type=int, default=8,
                   help="prompts per generate call of the bare variant b (default 8, the client's before issue 14)")
    p.add_argument("--client-batch-size", type=int, default=None,
                   help="prompts per batch of the client (default: the client's own default)")
    p.add_argument("--dtype", default="auto", help="the client's dtype: auto, float32 or bfloat16 (default auto)")
    p.add_argument("--generate-path", action="store_true",
                   help="the client with fast_decode=False (transformers' generate)")
    p.add_argument("--variants", default="abcd", help="which of a, b, c, d to run (default abcd)")
    p.add_argument("--threads", type=int, default=None, help="torch and llama.cpp threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=2, help="timed rounds of all variants (default 2)")
    p.add_argument("--seed", type=int, default=1234, help="base seed (default 1234)")
    p.add_argument("--model-dir", default=None, help="model directory (default: the prepared default model)")
    return p


def _quality(outcomes: Outcomes) -> dict[str, float]:
    lengths = [t for t, _ in outcomes]
    return {"len_mean": statistics.mean(lengths), "len_median": statistics.median(lengths),
            "eos": sum(1 for _, stopped in outcomes if stopped), "length": sum(1 for _, s in outcomes if not s)}


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from feedback.policy.local import LocalPolicyClient

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        from feedback.model_cache import prepare_default_model

        model_dir = prepare_default_model()
    started = dt.datetime.now().astimezone()
    print(f"date: {started:%Y-%m-%d %H:%M %Z}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine_line()}")
    print(f"before: {load_line()}")
    print(f"model: {model_dir}")

    client_kwargs = {"dtype": args.dtype, "fast_decode": not args.generate_path}
    if args.client_batch_size:
        client_kwargs["batch_size"] = args.client_batch_size
    client = LocalPolicyClient(model_dir, **client_kwargs)
    print(f"client: batch_size={client.batch_size}, dtype={client.dtype}, fast_decode={client.fast_decode}")
    # The bare variants use the client's own model and tokenizer (same weights) when it runs fp32.
    tokenizer = client.tokenizer
    model = client.model if client.dtype == torch.float32 else LocalPolicyClient(model_dir, dtype="float32").model
    eos_ids = eos_ids_of(model, tokenizer)
    conversations = conversations_for(args.prompts)

    def params_for(seed: int, max_new_tokens: int | None = None) -> SamplingParams:
        return SamplingParams(temperature=0.8, top_p=0.95, n=args.n, seed=seed,
                              max_new_tokens=max_new_tokens or args.max_new_tokens)

    every: dict[str, Callable[[list[Messages], SamplingParams], Outcomes]] = {
        "a": lambda conv, prm: run_ours(client, conv, prm),
        "b": lambda conv, prm: run_bare_batched(model, tokenizer, conv, prm, args.batch_size, eos_ids),
        "c": lambda conv, prm: run_one_at_a_time(model, tokenizer, conv, prm, eos_ids),
    }
    if "d" in args.variants:
        llm = load_llama_cpp(torch.get_num_threads())
        every["d"] = lambda conv, prm: run_llama_cpp(llm, tokenizer, conv, prm)
    labels = {"a": "a ours (LocalPolicyClient)", "b": "b bare batched generate", "c": "c one prompt at a time",
              "d": "d llama.cpp, one sequence at a time"}
    names = [k for k in "abcd" if k in args.variants]

    # Warm-up: one short call per variant (first-call allocations, lazy imports), not timed.
    for name in names:
        every[name](conversations[: min(2, len(conversations))], params_for(args.seed, 8))

    runs: dict[str, list[tuple[Outcomes, float]]] = {name: [] for name in names}
    for r in range(args.repeats):
        # Same seed for every variant within a repeat; a new one per repeat.
        params = params_for(args.seed + 1000 * r)
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            outcomes = every[name](conversations, params)
            wall = time.perf_counter() - t0
            runs[name].append((outcomes, wall))
            tokens = sum(t for t, _ in outcomes)
            print(f"  repeat {r + 1}/{args.repeats} {labels[name]:<36} {tokens:6d} tokens {wall:8.2f} s "
                  f"{tokens / wall:8.1f} tok/s  ({load_line()})", flush=True)

    def tok_s(name: str, r: int) -> float:
        outcomes, wall = runs[name][r]
        return sum(t for t, _ in outcomes) / wall

    summary: dict[str, dict[str, float]] = {}
    for name in names:
        summary[name] = {
            "tok_s": statistics.median(tok_s(name, r) for r in range(args.repeats)),
            "tokens": sum(t for outcomes, _ in runs[name] for t, _ in outcomes),
            "wall": sum(w for _, w in runs[name]),
            **_quality([o for outcomes, _ in runs[name] for o in outcomes]),
        }
    after = load_line()

    print()
    print(f"{args.prompts} prompts x n={args.n}, max_new_tokens={args.max_new_tokens}, "
          f"bare batch_size={args.batch_size}, repeats={args.repeats}, temperature=0.8, top_p=0.95, top_k=50, "
          f"seed={args.seed}(+1000 per repeat)")
    print()
    print("| variant | median tokens/s | total tokens | total wall s | length mean | length median | EOS "
          "| length limit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        s = summary[name]
        print(f"| {labels[name]} | {s['tok_s']:.1f} | {s['tokens']:.0f} | {s['wall']:.1f} | {s['len_mean']:.1f} | "
              f"{s['len_median']:.1f} | {s['eos']:.0f} | {s['length']:.0f} |")
    print()
    goals = {"b": ("a/b", 0.9), "c": ("a/c", 2.0), "d": ("ours/llama.cpp", 1.5)}
    ratios: dict[str, float] = {}
    if "a" in names:
        for other in names[1:]:
            label, goal = goals[other]
            ratios[label] = summary["a"]["tok_s"] / summary[other]["tok_s"]
            # Per repeat, from the runs of that repeat only (adjacent in time): a check on the
            # medians when the machine's load changed between repeats.
            per_repeat = ", ".join(f"{tok_s('a', r) / tok_s(other, r):.2f}" for r in range(args.repeats))
            print(f"{label} = {ratios[label]:.2f}  (goal >= {goal}: {'met' if ratios[label] >= goal else 'NOT met'}; "
                  f"per repeat {per_repeat})")
    print(f"after: {after}")
    summary["ratios"] = ratios
    return summary


if __name__ == "__main__":
    main(make_parser().parse_args())
