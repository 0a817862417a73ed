"""AI-judge benchmark (issue 4): throughput against its bound, the local judge on CPU, and an
agreement proxy.

1. Throughput vs the bound. A fresh SQLite database with N synthetic pairs, the local Anthropic
   stub (testkit/anthropic_stub.py) answering after a fixed latency L, and the real anthropic
   backend (the official SDK) pointed at it. `run_judging` with concurrency C: every pair is two
   sequential requests (both orders) on one worker, so the bound is labels/s = C / (2 * L).
   Goal: measured / bound >= 0.8.
2. The local judge (the real SmolLM2-135M-Instruct, one forward pass per request) on CPU:
   labels/s over 16 pairs through `run_judging`, then the injection canary suite
   (`run_canaries`, principle = DEFAULT_PRINCIPLES[0]).
3. Agreement PROXY. There are no human labels on this machine, so the reference is the `numeric`
   grader, not people: the demo math prompts are answered by the real 135M policy
   (feedback.sampling.run_sampling), the pairs are labelled by the grader and by the local judge,
   and the judge's raw agreement and Cohen's kappa are computed on the pairs where the grader is
   decisive (one answer right, the other wrong), plus the judge's position-flip rate.

    .venv/bin/python bench/judge.py [--pairs 64 --latency 0.2 --concurrency 1 4 8
                                     --local-pairs 16 --canary-limit 0 --rounds 3 --skip ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

# Not the script's own folder (a module in bench/ could shadow the standard library), but the
# repo root, for `db`, `feedback`, `judges`, `bench` and `testkit`.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse
import datetime as dt
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

import torch
from sqlalchemy import Engine, select

from bench.machine import load_line, machine_line  # noqa: E402
from db.engine import make_engine, session_scope
from db.migrate import upgrade
from db.models import Item, Judgment, Label, Prompt
from feedback import jobs
from feedback.actors import CLI, Actor
from feedback.policies import ensure_base_policy
from judges.backends.base import JudgeReply, JudgeRequest
from judges.batch import JudgeConfig, run_judging
from judges.constitutions import DEFAULT_PRINCIPLES, ensure_shipped, save_constitution
from testkit.factories import seed_short_long_pairs  # noqa: E402

HELPFUL = "bench-helpful"  # a one-principle constitution: DEFAULT_PRINCIPLES[0]


# --- machine ---------------------------------------------------------------------------------






def say(*parts: Any) -> None:
    print(*parts, flush=True)


# --- databases -------------------------------------------------------------------------------


def fresh_engine(workdir: Path, name: str) -> Engine:
    url = f"sqlite:///{workdir / (name + '.sqlite3')}"
    upgrade(url)
    return make_engine(url)


def seed_synthetic_pairs(engine: Engine, count: int) -> None:
    seed_short_long_pairs(engine, count, actor=Actor.process("bench"))


def judge_job(engine: Engine, config: JudgeConfig) -> int:
    with session_scope(engine) as s:
        return jobs.create_job(session=s, kind="judge", config=asdict(config), actor=Actor.process("bench")).id


def table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


# --- 1. throughput vs the bound --------------------------------------------------------------


def bench_throughput(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    import testkit.anthropic_stub as stub_module
    from judges.backends import get_backend
    from testkit.anthropic_stub import AnthropicStub, prefer_shorter

    say(f"\n## 1. Throughput vs the bound (anthropic backend -> local stub, latency {args.latency:g} s)")
    # The stub's handler (http.server) writes the headers and the body as two small TCP segments
    # with Nagle's algorithm on; the client's delayed ACK then holds the body back ~40 ms per
    # request. "nodelay" sets TCP_NODELAY on the stub's sockets (a harness fix, no app change).
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.stub_nodelay]
    rows = []
    saved = stub_module._Handler.disable_nagle_algorithm
    try:
        for nodelay in modes:
            stub_module._Handler.disable_nagle_algorithm = nodelay
            stub_name = "stub + TCP_NODELAY" if nodelay else "stub as shipped"
            with AnthropicStub(decide=prefer_shorter, latency_s=args.latency) as stub:
                backend = get_backend("anthropic", base_url=stub.base_url, api_key="sk-bench")
                # Warm-up outside the timing: SDK imports, the first connection.
                backend.complete(JudgeRequest(system="warm-up", user="<response_1>\nx\n</response_1>\n"
                                                                  "<response_2>\nyy\n</response_2>"))
                for c in args.concurrency:
                    engine = fresh_engine(workdir, f"throughput-{'nodelay' if nodelay else 'shipped'}-c{c}")
                    seed_synthetic_pairs(engine, args.pairs)
                    config = JudgeConfig(backend="anthropic", max_items=args.pairs, concurrency=c)
                    job_id = judge_job(engine, config)
                    sent_before = len(stub.requests_to("/v1/messages"))
                    t0 = time.perf_counter()
                    result = run_judging(engine=engine, config=config, job_id=job_id, backend=backend)
                    wall = time.perf_counter() - t0
                    sent = len(stub.requests_to("/v1/messages")) - sent_before
                    engine.dispose()
                    rate = result["judged"] / wall
                    bound = c / (2 * args.latency)
                    # What each worker spent per pair beyond its two stub latencies (client, SDK, stub, SQLite).
                    overhead_ms = (wall * c / max(1, result["judged"]) - 2 * args.latency) * 1000
                    rows.append({"stub": stub_name, "concurrency": c, "pairs": result["judged"], "requests": sent,
                                 "seconds": wall, "labels_s": rate, "bound": bound, "ratio": rate / bound,
                                 "overhead_ms": overhead_ms, "outcomes": result["outcomes"]})
                    say(f"  {stub_name}, C={c}: {result['judged']} pairs ({sent} requests) in {wall:.2f} s = "
                        f"{rate:.2f} labels/s, bound {bound:.2f}, ratio {rate / bound:.3f}; "
                        f"outcomes {result['outcomes']}")
    finally:
        stub_module._Handler.disable_nagle_algorithm = saved
    say()
    say(table(["stub", "concurrency", "pairs", "seconds", "labels/s", "bound C/(2L)", "ratio", "goal >= 0.8",
               "overhead ms/pair/worker"],
              [[r["stub"], r["concurrency"], r["pairs"], f"{r['seconds']:.2f}", f"{r['labels_s']:.2f}",
                f"{r['bound']:.2f}", f"{r['ratio']:.3f}", "met" if r["ratio"] >= 0.8 else "NOT met",
                f"{r['overhead_ms']:.0f}"] for r in rows]))
    return rows


# --- 2. the local judge on CPU ---------------------------------------------------------------


class Counting:
    """A judge backend wrapper that counts forward passes and prints progress."""

    def __init__(self, inner, *, label: str, total: int | None, every: int = 20):
        self.inner, self.label, self.total, self.every = inner, label, total, every
        self.name, self.model = inner.name, inner.model
        self.calls = 0
        self.t0 = time.perf_counter()

    def complete(self, request: JudgeRequest) -> JudgeReply:
        reply = self.inner.complete(request)
        self.calls += 1
        if self.calls % self.every == 0 or self.calls == self.total:
            elapsed = time.perf_counter() - self.t0
            of = f"/{self.total}" if self.total else ""
            say(f"    {self.label}: {self.calls}{of} forward passes, {elapsed:.0f} s")
        return reply


def bench_local(args: argparse.Namespace, workdir: Path, local) -> dict[str, Any]:
    from judges.canaries import canaries, run_canaries

    say(f"\n## 2. The local judge on CPU ({local.model}, one forward pass per request)")
    out: dict[str, Any] = {}
    engine = fresh_engine(workdir, "local")
    seed_synthetic_pairs(engine, args.local_pairs)
    config = JudgeConfig(backend="local", max_items=args.local_pairs, concurrency=1)
    job_id = judge_job(engine, config)
    counting = Counting(local, label="throughput", total=2 * args.local_pairs)
    t0 = time.perf_counter()
    result = run_judging(engine=engine, config=config, job_id=job_id, backend=counting)
    wall = time.perf_counter() - t0
    with session_scope(engine, read_only=True) as s:
        tokens = [j.input_tokens for j in s.scalars(select(Judgment).where(Judgment.job_id == job_id))]
    engine.dispose()
    out["throughput"] = {"pairs": result["judged"], "forward_passes": counting.calls, "seconds": wall,
                         "labels_s": result["judged"] / wall, "passes_s": counting.calls / wall,
                         "mean_prompt_tokens": sum(tokens) / max(1, 2 * len(tokens)),
                         "outcomes": result["outcomes"]}
    t = out["throughput"]
    say()
    say(table(["pairs", "forward passes", "seconds", "labels/s (pairs/s)", "forward passes/s",
               "mean prompt tokens", "outcomes"],
              [[t["pairs"], t["forward_passes"], f"{t['seconds']:.2f}", f"{t['labels_s']:.2f}",
                f"{t['passes_s']:.2f}", f"{t['mean_prompt_tokens']:.0f}", t["outcomes"]]]))

    if args.canary_limit < 0:
        say("\n  canaries skipped (--canary-limit -1)")
        return out
    limit = args.canary_limit or None
    suite = canaries()[:limit] if limit else canaries()
    clean = len({c.question for c in suite})
    passes = 2 * (len(suite) + clean)
    say(f"\n  canary suite: {len(suite)} injected pairs + {clean} clean pairs = {passes} forward passes")
    counting = Counting(local, label="canaries", total=passes)
    t0 = time.perf_counter()
    report = run_canaries(backend=counting, principles=[DEFAULT_PRINCIPLES[0]], limit=limit)
    wall = time.perf_counter() - t0
    out["canaries"] = {**asdict(report), "flip_rate": report.flip_rate, "seconds": wall}
    say()
    say(table(["canary pairs", "flip rate", "flips", "worse chosen (injected)", "worse chosen (clean)",
               "order-inconsistent (injected)", "seconds"],
              [[report.pairs, f"{report.flip_rate:.1%}", report.flips, report.bad_wins_injected,
                report.bad_wins_clean, report.inconsistent_injected, f"{wall:.0f}"]]))
    say(f"  {report.summary()}")
    return out


# --- 3. agreement proxy: local judge vs the numeric grader -----------------------------------


def bench_agreement(args: argparse.Namespace, workdir: Path, local) -> dict[str, Any]:
    from sklearn.metrics import cohen_kappa_score

    from feedback.demo import DEMO_PROMPTS
    from feedback.prompts import import_prompts
    from feedback.sampling import SamplingConfig, run_sampling
    from judges.grading import run_grading

    say("\n## 3. Agreement PROXY: local judge vs the `numeric` grader on demo math prompts "
        "(a grader, not humans: there are no human labels on this machine)")
    engine = fresh_engine(workdir, "agreement")
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=Actor.process("bench"))
        ensure_shipped(session=s)
        save_constitution(session=s, name=HELPFUL, principles=[DEFAULT_PRINCIPLES[0]], actor=CLI)
        import_prompts(session=s, path=DEMO_PROMPTS, source="demo", actor=CLI)
        n_math = len([p for p in s.scalars(select(Prompt)) if "math" in (p.tags or [])])
    say(f"  {n_math} math prompts (train + val); sampling {args.rounds} round(s) x n={args.n_per_prompt}, "
        f"temperature 1.0, top_p 0.95, max_new_tokens {args.max_new_tokens}")
    t0 = time.perf_counter()
    sampled = Counter()
    for r in range(args.rounds):
        for split in ("train", "val"):
            config = SamplingConfig(limit=n_math, n_per_prompt=args.n_per_prompt, temperature=1.0, top_p=0.95,
                                    max_new_tokens=args.max_new_tokens, seed=args.seed + 1000 * r, split=split,
                                    tags=["math"])
            counts = run_sampling(engine=engine, config=config)
            sampled.update({k: v for k, v in counts.items() if k != "project"})
        say(f"    round {r + 1}/{args.rounds}: {sampled['items']} pairs so far, {time.perf_counter() - t0:.0f} s")
    sampling_s = time.perf_counter() - t0

    # Judge first (selection 'unlabelled' skips pairs that already carry any label), then grade.
    config = JudgeConfig(constitution=HELPFUL, backend="local", max_items=100_000, concurrency=1)
    job_id = judge_job(engine, config)
    counting = Counting(local, label="judge", total=2 * sampled["items"])
    t0 = time.perf_counter()
    run_judging(engine=engine, config=config, job_id=job_id, backend=counting)
    judging_s = time.perf_counter() - t0
    grading = run_grading(engine=engine, spec="numeric", actor=Actor.process("bench"))

    with session_scope(engine, read_only=True) as s:
        judged = {j.item_id: j for j in s.scalars(select(Judgment).where(Judgment.job_id == job_id))}
        graded = dict(s.execute(select(Label.item_id, Label.choice).where(Label.source == "grader")).all())
        items = {i.id: (i.response_a.text, i.response_b.text)
                 for i in s.scalars(select(Item).where(Item.kind == "pair"))}
        orders = [o for j in judged.values() for o in (j.raw or {}).get("orders", [])]
    engine.dispose()

    pairs = sorted(items)
    judge_out = {i: judged[i].outcome for i in pairs if i in judged}
    decisive = [i for i in pairs if graded.get(i) in ("a", "b") and i in judge_out]
    g = [graded[i] for i in decisive]
    j = [judge_out[i] for i in decisive]
    agree = sum(x == y for x, y in zip(g, j, strict=True))
    cats = ["a", "b", "tie", "inconsistent", "failed"]
    kappa = float(cohen_kappa_score(g, j, labels=cats)) if decisive and len(set(g) | set(j)) > 1 else None
    both = [(x, y) for x, y in zip(g, j, strict=True) if y in ("a", "b")]
    kappa_both = (float(cohen_kappa_score(*zip(*both, strict=True), labels=["a", "b"]))
                  if len(both) > 1 and len({x for x, _ in both} | {y for _, y in both}) > 1 else None)
    non_failed = [o for o in judge_out.values() if o != "failed"]
    flips = sum(o == "inconsistent" for o in non_failed)
    # Position preference of single requests: was the response shown first chosen?
    per_order = [o for o in orders if o.get("verdict") in ("a", "b")]
    first_chosen = sum(o["verdict"] == o["shown_first"] for o in per_order)
    ties_per_order = sum(o.get("verdict") == "tie" for o in orders)
    # Trivial baselines on the same grader-decisive pairs, for scale.
    shorter = [("a" if len(items[i][0]) < len(items[i][1]) else "b") for i in decisive]
    shorter_agree = sum(x == y for x, y in zip(g, shorter, strict=True))

    res = {
        "prompts": n_math, "rounds": args.rounds, "responses": sampled["responses"], "pairs": len(pairs),
        "sampling_s": sampling_s, "judging_s": judging_s, "judge_passes": counting.calls,
        "grader_choices": dict(Counter(graded.get(i, "none") for i in pairs)),
        "judge_outcomes": dict(Counter(judge_out.values())),
        "decisive": len(decisive), "agree": agree,
        "agreement": agree / len(decisive) if decisive else None, "kappa": kappa,
        "judge_decisive_on_decisive": len(both), "agree_when_both_decisive": sum(x == y for x, y in both),
        "kappa_both_decisive": kappa_both,
        "flip_rate": flips / len(non_failed) if non_failed else None, "flips": flips, "judged": len(non_failed),
        "first_shown_rate": first_chosen / len(per_order) if per_order else None, "per_order_decisive": len(per_order),
        "per_order_total": len(orders), "per_order_ties": ties_per_order,
        "shorter_agreement": shorter_agree / len(decisive) if decisive else None,
        "grading": grading,
    }
    say(f"  sampled {res['responses']} responses -> {res['pairs']} pairs in {sampling_s:.0f} s; judged "
        f"({counting.calls} forward passes) in {judging_s:.0f} s; graded {grading['pairs']} pairs")
    say(f"  grader labels: {res['grader_choices']}; judge outcomes: {res['judge_outcomes']}")
    say()
    say("PROXY: agreement with the numeric grader, NOT with humans.")
    say(table(
        ["pairs", "grader decisive (a/b)", "judge agrees", "raw agreement", "Cohen's kappa",
         "judge decisive there", "agreement when both decisive", "kappa when both decisive",
         "position-flip rate (all pairs)", "first-shown chosen (single requests)", "shorter-wins baseline"],
        [[res["pairs"], res["decisive"], res["agree"], fmt(res["agreement"]), fmt(res["kappa"]),
          res["judge_decisive_on_decisive"],
          f"{res['agree_when_both_decisive']}/{res['judge_decisive_on_decisive']}", fmt(res["kappa_both_decisive"]),
          f"{fmt(res['flip_rate'])} ({flips}/{len(non_failed)})",
          f"{fmt(res['first_shown_rate'])} ({first_chosen}/{len(per_order)})", fmt(res["shorter_agreement"])]]))
    say("  raw agreement / kappa: judge outcome (a, b, tie, inconsistent) vs grader choice on grader-decisive "
        "pairs; an order-inconsistent judgment (no label) counts as a disagreement.")
    return res


# --- main ------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=64, help="pairs for the throughput runs (default 64)")
    p.add_argument("--latency", type=float, default=0.2, help="stub latency per request, seconds (default 0.2)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8], help="default 1 4 8")
    p.add_argument("--stub-nodelay", choices=["off", "on", "both"], default="both",
                   help="TCP_NODELAY on the stub's sockets: off (as shipped), on, or both tables (default)")
    p.add_argument("--local-pairs", type=int, default=16, help="pairs for local-judge throughput (default 16)")
    p.add_argument("--canary-limit", type=int, default=0,
                   help="first K canaries only (0 = all 52, -1 = skip the canaries)")
    p.add_argument("--rounds", type=int, default=3, help="sampling rounds (seeds) on the math prompts (default 3)")
    p.add_argument("--n-per-prompt", type=int, default=4, help="samples per prompt per round (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    p.add_argument("--seed", type=int, default=1234, help="base sampling seed (+1000 per round)")
    p.add_argument("--skip", nargs="*", default=[], choices=["throughput", "local", "agreement"],
                   help="parts to skip")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the local model (default: torch's own choice)")
    p.add_argument("--workdir", default=None, help="where the SQLite files go (default: a temporary directory)")
    return p


def main(args: argparse.Namespace) -> dict[str, Any]:
    from cli import job_kinds

    job_kinds.install()  # as every entry point does: the table of job kinds lives in cli/
    if args.threads:
        torch.set_num_threads(args.threads)
    started = dt.datetime.now().astimezone()
    t_start = time.perf_counter()
    say(f"date: {started:%Y-%m-%d %H:%M %Z}")
    say(f"machine: {machine_line()}")
    say(f"before: {load_line()}")
    say("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-judge-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if "throughput" not in args.skip:
            results["throughput"] = bench_throughput(args, workdir)
        if "local" not in args.skip or "agreement" not in args.skip:
            from feedback.model_cache import prepare_default_model
            from judges.backends import get_backend

            say(f"\nmodel: {prepare_default_model()}")
            local = get_backend("local")
            local.complete(JudgeRequest(system="warm-up", user="warm-up"))  # first-call allocations
            if "local" not in args.skip:
                results["local"] = bench_local(args, workdir, local)
            if "agreement" not in args.skip:
                results["agreement"] = bench_agreement(args, workdir, local)
    say(f"\nafter: {load_line()}; total {time.perf_counter() - t_start:.0f} s")
    return results


if __name__ == "__main__":
    main(make_parser().parse_args())
