"""Sampling throughput on the real default model (issue 2).

Compares, on the same prompts, the same SamplingParams, the same seeds and the *same loaded
model and tokenizer*:

  (a) ours     LocalPolicyClient.generate(conversations, params)
  (b) bare     model.generate written directly with the same batching: the client's batch size,
               the same length-sorted batches, chat template, left padding,
               num_return_sequences=n, do_sample, same max_new_tokens (nothing else)
  (c) single   model.generate one prompt at a time (num_return_sequences=n, no batching
               across prompts)

The measure is generated tokens per second: only real completion tokens count (up to and
including the first EOS, never the padding after it), divided by the wall time of the whole
call. Sampled lengths differ between variants, so tokens/s, not wall time, is the fair number.
The variants are interleaved inside each repeat (a,b,c then c,b,a, ...) after one warm-up call
each, so load from other processes on the machine hits them alike; the table shows medians.

    .venv/bin/python bench/sampling.py [--prompts 16 --n 2 --max-new-tokens 64 --batch-size 8 --repeats 2]
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


def count_real_tokens(generated: torch.Tensor, eos_ids: set[int]) -> int:
    """Completion tokens in the rows of `generated` (new tokens only): up to and including the
    first EOS of each row, all of the row if it never ended."""
    total = 0
    for row in generated.tolist():
        end = next((k for k, t in enumerate(row) if t in eos_ids), None)
        total += len(row) if end is None else end + 1
    return total


def eos_ids_of(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    out = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
    out.add(tokenizer.eos_token_id)
    return out


def run_ours(client, conversations: list[Messages], params: SamplingParams) -> int:
    results = client.generate(conversations, params)
    return sum(c.completion_tokens or 0 for completions in results for c in completions)


@torch.inference_mode()
def run_bare_batched(model, tokenizer, conversations: list[Messages], params: SamplingParams,
                     batch_size: int, eos_ids: set[int]) -> int:
    # Same batches as the client (sorted by prompt length, `batch_size` prompts each, seed per
    # batch), so the only difference left is the client's own bookkeeping.
    texts = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    tokens = 0
    for chunk_no, start in enumerate(range(0, len(order), batch_size)):
        enc = tokenizer([texts[i] for i in order[start : start + batch_size]],
                        add_special_tokens=False, padding=True, return_tensors="pt")
        torch.manual_seed(params.seed + chunk_no)
        out = model.generate(
            **enc, do_sample=True, temperature=params.temperature, top_p=params.top_p,
            max_new_tokens=params.max_new_tokens, num_return_sequences=params.n,
            pad_token_id=tokenizer.pad_token_id,
        )
        tokens += count_real_tokens(out[:, enc["input_ids"].shape[1]:], eos_ids)
    return tokens


@torch.inference_mode()
def run_one_at_a_time(model, tokenizer, conversations: list[Messages], params: SamplingParams,
                      eos_ids: set[int]) -> int:
    tokens = 0
    for i, conversation in enumerate(conversations):
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        torch.manual_seed(params.seed + i)
        out = model.generate(
            **enc, do_sample=True, temperature=params.temperature, top_p=params.top_p,
            max_new_tokens=params.max_new_tokens, num_return_sequences=params.n,
            pad_token_id=tokenizer.pad_token_id,
        )
        tokens += count_real_tokens(out[:, enc["input_ids"].shape[1]:], eos_ids)
    return tokens


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=16, help="number of prompts (default 16)")
    p.add_argument("--n", type=int, default=2, help="samples per prompt (default 2)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (default 8)")
    p.add_argument("--repeats", type=int, default=2, help="timed rounds of all three variants (default 2)")
    p.add_argument("--seed", type=int, default=1234, help="base seed (default 1234)")
    p.add_argument("--model-dir", default=None, help="model directory (default: the prepared default model)")
    return p


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from feedback.policy.local import LocalPolicyClient

    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        from feedback.model_cache import prepare_default_model

        model_dir = prepare_default_model()
    started = dt.datetime.now().astimezone()
    print(f"date: {started:%Y-%m-%d %H:%M %Z}")
    print(f"machine: {machine_line()}")
    print(f"before: {load_line()}")
    print(f"model: {model_dir}")

    # One load; the bare variants use the client's own model and tokenizer (same weights).
    client = LocalPolicyClient(model_dir, batch_size=args.batch_size)
    model, tokenizer = client.model, client.tokenizer
    eos_ids = eos_ids_of(model, tokenizer)
    conversations = conversations_for(args.prompts)

    def params_for(seed: int, max_new_tokens: int | None = None) -> SamplingParams:
        return SamplingParams(temperature=0.8, top_p=0.95, n=args.n, seed=seed,
                              max_new_tokens=max_new_tokens or args.max_new_tokens)

    variants: dict[str, Callable[[list[Messages], SamplingParams], int]] = {
        "a ours (LocalPolicyClient)": lambda conv, prm: run_ours(client, conv, prm),
        "b bare batched generate": lambda conv, prm: run_bare_batched(
            model, tokenizer, conv, prm, args.batch_size, eos_ids),
        "c one prompt at a time": lambda conv, prm: run_one_at_a_time(model, tokenizer, conv, prm, eos_ids),
    }
    names = list(variants)

    # Warm-up: one short call per variant (first-call allocations, lazy imports), not timed.
    for name in names:
        variants[name](conversations[: min(2, len(conversations))], params_for(args.seed, 8))

    runs: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    for r in range(args.repeats):
        # Same seed for every variant within a repeat; a new one per repeat.
        params = params_for(args.seed + 1000 * r)
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            tokens = variants[name](conversations, params)
            wall = time.perf_counter() - t0
            runs[name].append((tokens, wall))
            print(f"  repeat {r + 1}/{args.repeats} {name:<28} {tokens:6d} tokens {wall:8.2f} s "
                  f"{tokens / wall:8.1f} tok/s", flush=True)

    summary: dict[str, dict[str, float]] = {}
    for name in names:
        summary[name] = {
            "tok_s": statistics.median(t / w for t, w in runs[name]),
            "tokens": sum(t for t, _ in runs[name]),
            "wall": sum(w for _, w in runs[name]),
        }
    after = load_line()

    print()
    print(f"{args.prompts} prompts x n={args.n}, max_new_tokens={args.max_new_tokens}, "
          f"batch_size={args.batch_size}, repeats={args.repeats}, temperature=0.8, top_p=0.95, "
          f"seed={args.seed}(+1000 per repeat)")
    print()
    print("| variant | median tokens/s | total tokens | total wall s |")
    print("|---|---:|---:|---:|")
    for name in names:
        s = summary[name]
        print(f"| {name} | {s['tok_s']:.1f} | {s['tokens']:.0f} | {s['wall']:.1f} |")
    a, b, c = (summary[name]["tok_s"] for name in names)
    print()
    print(f"a/b = {a / b:.2f}  (goal >= 0.9: {'met' if a / b >= 0.9 else 'NOT met'})")
    print(f"a/c = {a / c:.2f}  (goal >= 2.0: {'met' if a / c >= 2.0 else 'NOT met'})")
    # Per repeat, from the runs of that repeat only (adjacent in time): a check on the medians
    # when the machine's load changed between repeats.
    per_repeat = [
        tuple((runs[names[0]][r][0] / runs[names[0]][r][1]) / (runs[x][r][0] / runs[x][r][1]) for x in names[1:])
        for r in range(args.repeats)
    ]
    print("per repeat a/b: " + ", ".join(f"{ab:.2f}" for ab, _ in per_repeat)
          + "; a/c: " + ", ".join(f"{ac:.2f}" for _, ac in per_repeat))
    print(f"after: {after}")
    summary["ratios"] = {"a/b": a / b, "a/c": a / c}
    return summary


if __name__ == "__main__":
    main(make_parser().parse_args())
