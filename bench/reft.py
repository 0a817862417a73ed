"""SFT vs ReFT vs the DPO loop at equal wall time (issue 15, part 7), on the arithmetic task of
bench/loop.py: the same prompts (bench/data/arith.jsonl, 200 train / 100 val), the same v0
(SmolLM2-135M-Instruct), the same held-out measurement (bench.loop.HeldOut: greedy answers to the
val prompts after the first 30, which the loop's gate uses, graded by `numeric`).

Three arms, each in a fresh SQLite database, each through the product's own jobs:
(a) sft   one 'train' round: SFT on the train prompts' reference answers (sft_source=reference);
(b) reft  one 'reft' job (training/reft.py): SFT on the references for --sft-share of the budget,
          then GRPO with the numeric grader from that SFT version for the rest;
(c) loop  the online DPO loop (training.loop, grader labeler, bench/loop.py's grader-task
          settings): rounds of sample K -> best-vs-worst -> DPO -> gate -> promote, while budget is left.

Equal wall time: each arm gets --minutes. Its training stops when the budget is spent: max_steps
comes from a timed warm-up of the stage on this machine (not counted in any arm), and a deadline
callback, added to every stage through the stage registry, ends training at the arm's deadline
whatever the estimate said. The loop starts another round only if half of its previous round
still fits in the budget (its last round's DPO is cut at the deadline like the others).

    .venv/bin/python -m bench.reft --minutes 8           # from the repo root
    .venv/bin/python bench/reft.py --minutes 2 --arms sft reft
"""
from __future__ import annotations

import sys
from pathlib import Path

# As in bench/loop.py: the repo root on the path, not the bench folder (bench/queue.py shadows `queue`).
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse
import copy
import math
import os
import time
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from bench.loop import TASKS, HeldOut, say, table, write_data
from bench.machine import load_line, run_benchmark
from feedback.actors import CLI, Actor

ARMS = ("sft", "reft", "loop")
GATE_PROMPTS = TASKS["grader"]["loop"]["gate"]["prompts"]  # val prompts the loop's gate decides on
# What every arm's trainer shares, as bench/loop.py's DPO rounds have it (LoRA r 8, short sequences).
COMMON = {"lora_r": 8, "lora_alpha": 16, "max_length": 128, "save_steps": 100000, "logging_steps": 5}
SFT = {**COMMON, "learning_rate": 2e-4, "per_device_train_batch_size": 8}
# Two prompts x 4 samples a step; numbers are short, so 16 new tokens leave room for "The answer is 42".
GRPO = {**COMMON, "learning_rate": 5e-5, "per_device_train_batch_size": 8, "num_generations": 4,
        "max_completion_length": 16, "temperature": 0.7, "beta": 0.0}
# The SFT'd policy answers in a few tokens where the base (warmed up on) writes 16: a GRPO step
# after SFT is faster than the warm-up says, so plan more steps and let the deadline cut them.
GRPO_PLAN_SLACK = 1.5


# --- the deadline, through the stage registry -----------------------------------------------------


class _Clock:
    """The arm's deadline (time.monotonic()), read by every stage's deadline callback, and earlier
    ones for single stages (ReFT's SFT may not eat into its GRPO's share)."""

    at: float = math.inf
    stage_at: dict[str, float] = {}
    hits: list[str] = []


def _with_deadline(name: str, stage):
    from transformers import TrainerCallback

    from training.stages import Stage

    class Deadline(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() >= _Clock.stage_at.get(name, _Clock.at):
                control.should_training_stop = True
                _Clock.hits.append(f"{name}@{state.global_step}")
            return control

    def main(cfg, inputs):
        inputs.callbacks = [*inputs.callbacks, Deadline()]
        return stage.main(cfg, inputs)

    return Stage(config=stage.config, main=main)


def seconds_per_step(name: str, settings: dict[str, Any], rows: list[dict[str, Any]], model_dir: Path,
                     out: Path, steps: int = 4) -> float:
    """The stage's time per optimizer step on this machine (after the first, which warms caches)."""
    from transformers import TrainerCallback

    from judges.graders import as_reward_func, parse_grader
    from training.stages import STAGES
    from training.stages.base import StageInputs

    ends: list[float] = []

    class Stopwatch(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    stage = STAGES.get(name)
    inputs = StageInputs(model_dir=str(model_dir), output_dir=out, train_rows=rows, callbacks=[Stopwatch()],
                         reward_funcs=[as_reward_func(parse_grader("numeric"))] if name == "grpo" else [])
    stage.main(stage.config(**{**settings, "max_steps": steps}), inputs)
    return (ends[-1] - ends[0]) / (len(ends) - 1)


# --- one arm ---------------------------------------------------------------------------------------


def workspace(armdir: Path, rows: list[dict[str, Any]]):
    """A fresh database with v0 and the task's prompts; settings (read at call time) point at it."""
    from db.engine import make_engine, session_scope
    from db.migrate import upgrade
    from feedback.policies import ensure_base_policy
    from feedback.prompts import import_prompt_rows
    from judges.constitutions import ensure_shipped

    armdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{armdir / 'bench.sqlite3'}"
    os.environ["DATABASE_URL"] = url
    os.environ["POLICIES_DIR"] = str(armdir / "policies")
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        ensure_base_policy(session=s, actor=Actor.process("bench"))
        import_prompt_rows(session=s, rows=((f"row {i}", r) for i, r in enumerate(rows)), source="bench-reft",
                           actor=CLI)
    return engine


def run_sft(engine, budget_s: float, plan: dict[str, int], args) -> dict[str, Any]:
    from db.engine import session_scope
    from feedback import jobs
    from training.rounds import RoundConfig, start_round

    config = RoundConfig(stage="sft", sft_source="reference", stage_config={**SFT, "max_steps": plan["sft"]},
                         evaluate=False)
    with session_scope(engine) as s:
        job = start_round(session=s, config=config, actor=CLI)
    done = jobs.run_job(engine=engine, job_id=job.id)
    if done.status != "succeeded":
        raise SystemExit(f"sft job {job.id} {done.status}: {done.error}")
    return {"final": done.result["policy_version"], "steps": {"sft": done.result["metrics"]["global_step"]}}


def run_reft(engine, budget_s: float, plan: dict[str, int], args) -> dict[str, Any]:
    from db.engine import session_scope
    from feedback import jobs
    from training.reft import ReftConfig, start_reft

    config = ReftConfig(sft={**SFT, "max_steps": plan["reft_sft"]}, rl={**GRPO, "max_steps": plan["reft_grpo"]},
                        grader="numeric", evaluate=False)
    with session_scope(engine) as s:
        job = start_reft(session=s, config=config, actor=CLI)
    _Clock.stage_at = {"sft": _Clock.at - budget_s * (1 - args.sft_share)}
    try:
        done = jobs.run_job(engine=engine, job_id=job.id)
    finally:
        _Clock.stage_at = {}
    if done.status != "succeeded":
        raise SystemExit(f"reft job {job.id} {done.status}: {done.error}")
    sft, rl = done.result["stages"]
    return {"final": done.result["policy_version"], "intermediate": sft["policy_version"],
            "steps": {"sft": sft["metrics"]["global_step"], "grpo": rl["metrics"]["global_step"]}}


def run_loop(engine, budget_s: float, plan: dict[str, int], args) -> dict[str, Any]:
    from sqlalchemy import select

    from db.engine import session_scope
    from db.models import Job
    from feedback import jobs
    from feedback.policies import active_policy
    from training.loop import LoopConfig

    config = LoopConfig(**{**copy.deepcopy(TASKS["grader"]["loop"]), "rounds": 1000, "seed": args.seed})
    start = time.monotonic()
    round_ends: list[float] = [start]
    stopped: list[int] = []
    with session_scope(engine) as s:
        job_id = jobs.create_job(session=s, kind="loop", config=asdict(config), actor=Actor.process("bench")).id

    def listener(done: int, total: int | None) -> None:
        # The loop reports done=r when round r ends (and r is also when round r + 1 starts).
        if done == 0 or stopped or len(round_ends) > done:
            return
        round_ends.append(time.monotonic())
        last_round = round_ends[-1] - round_ends[-2]
        if round_ends[-1] + last_round / 2 > _Clock.at:
            stopped.append(done)
            with session_scope(engine) as s:
                jobs.request_cancel(session=s, job_id=job_id, actor=CLI)  # before round done + 1 samples

    done = jobs.run_job(engine=engine, job_id=job_id, listener=listener)
    if done.status not in ("succeeded", "cancelled"):
        raise SystemExit(f"loop job {job_id} {done.status}: {done.error}")
    with session_scope(engine, read_only=True) as s:
        rounds = [j for j in s.scalars(select(Job).where(Job.kind == "train").order_by(Job.id))
                  if j.status == "succeeded"]
        final = active_policy(session=s).name
        steps = sum((j.result or {}).get("metrics", {}).get("global_step") or 0 for j in rounds)
        gates = [((j.result or {}).get("gate") or {}).get("decision") for j in rounds]
    return {"final": final, "steps": {"dpo": steps}, "rounds": len(rounds), "gates": gates}


RUNNERS = {"sft": run_sft, "reft": run_reft, "loop": run_loop}


# --- the benchmark ---------------------------------------------------------------------------------


def plan_steps(budget_s: float, rates: dict[str, float], sft_share: float) -> dict[str, int]:
    return {"sft": max(1, int(budget_s / rates["sft"])),
            "reft_sft": max(1, int(budget_s * sft_share / rates["sft"])),
            "reft_grpo": max(1, int(budget_s * (1 - sft_share) * GRPO_PLAN_SLACK / rates["grpo"]))}


def run_reft_bench(args, workdir: Path) -> dict[str, Any]:
    import torch

    from feedback.model_cache import resolve_model_dir
    from feedback.prompts import canonical_messages
    from feedback.settings import get_settings
    from training.stages import STAGES

    rows = write_data()[TASKS["grader"]["data"]]
    train = [r for r in rows if r["split"] == "train"]
    budget_s = args.minutes * 60
    settings = get_settings()  # the warm-up trains the model v0 is (POLICY_MODEL), as the arms do
    model_dir = resolve_model_dir(settings.policy_model, cache_dir=settings.model_cache_dir)

    rates: dict[str, float] = {}
    if {"sft", "reft"} & set(args.arms):
        t0 = time.perf_counter()
        sft_rows = [{"prompt": canonical_messages(r["prompt"], None),
                     "completion": [{"role": "assistant", "content": r["reference"]}]} for r in train]
        grpo_rows = [{"prompt": canonical_messages(r["prompt"], None), "reference": r["reference"]} for r in train]
        rates["sft"] = seconds_per_step("sft", SFT, sft_rows, model_dir, workdir / "warmup-sft")
        if "reft" in args.arms:
            rates["grpo"] = seconds_per_step("grpo", GRPO, grpo_rows, model_dir, workdir / "warmup-grpo")
        say(f"warm-up ({time.perf_counter() - t0:.0f} s, not counted): "
            + ", ".join(f"{k} {v:.2f} s/step" for k, v in rates.items()) + f"; {load_line()}")
    plan = plan_steps(budget_s, {"sft": 1.0, "grpo": 1.0, **rates}, args.sft_share)
    say(f"budget {budget_s:.0f} s per arm; planned max_steps {plan}")

    base: dict[str, Any] | None = None
    results = []
    with ExitStack() as stack:
        for name in ("sft", "grpo", "dpo"):
            stack.enter_context(STAGES.override(name, _with_deadline(name, STAGES.get(name))))
        for arm in args.arms:
            say(f"\n## arm {arm}  ({load_line()})")
            engine = workspace(workdir / arm, rows)
            heldout = HeldOut(engine, "grader", TASKS["grader"]["eval_max_new_tokens"], args.val_limit, args.seed,
                              skip=GATE_PROMPTS)
            if base is None:
                base = heldout.measure("v0")
                say(f"base v0 on {base['n']} held-out prompts: accuracy {base['accuracy']:.3f} "
                    f"[{base['gen_s']:.0f} s]")
            torch.manual_seed(args.seed)
            _Clock.hits = []
            start = time.monotonic()
            _Clock.at = start + budget_s
            out = RUNNERS[arm](engine, budget_s, plan, args)
            wall = time.monotonic() - start
            _Clock.at = math.inf
            measured = heldout.measure(out["final"])
            row = {"arm": arm, "wall_s": wall, **out, "deadline_hits": list(_Clock.hits),
                   "accuracy": measured["accuracy"], "mean_tokens": measured["mean_tokens"],
                   "examples": measured["examples"]}
            if out.get("intermediate"):
                row["intermediate_accuracy"] = heldout.measure(out["intermediate"])["accuracy"]
            say(f"arm {arm}: {wall:.0f} s, steps {out['steps']}, final {out['final']}, held-out accuracy "
                f"{row['accuracy']:.3f}" + (f" (after its SFT stage: {row['intermediate_accuracy']:.3f})"
                                            if "intermediate_accuracy" in row else "")
                + f"; deadline stopped: {row['deadline_hits'] or 'nothing'}; examples {row['examples']}")
            results.append(row)
            engine.dispose()
    result = {"minutes": args.minutes, "sft_share": args.sft_share, "rates": rates, "plan": plan,
              "base_accuracy": base["accuracy"] if base else None, "held_out": base["n"] if base else None,
              "arms": results}
    say("\n" + render(result))
    return result


def render(result: dict[str, Any]) -> str:
    base = result["base_accuracy"]
    body = [["base (v0)", "-", "-", f"{base:.3f}", "-"]]
    for r in result["arms"]:
        steps = " + ".join(f"{n} {k}" for k, n in r["steps"].items())
        if r["arm"] == "loop":
            steps += f" ({r['rounds']} rounds, gates {'/'.join(str(g) for g in r['gates']) or '-'})"
        accuracy = f"{r['accuracy']:.3f}"
        if "intermediate_accuracy" in r:
            accuracy += f" (after SFT: {r['intermediate_accuracy']:.3f})"
        body.append([r["arm"], f"{r['wall_s']:.0f}", steps, accuracy, f"{(r['accuracy'] - base) * 100:+.1f} pts"])
    return (table(["arm", "wall s", "steps", "held-out accuracy", "gain over base"], body)
            + f"\n\nBudget {result['minutes']:g} min per arm, {result['held_out']} held-out prompts "
              f"(one is {100 / result['held_out']:.1f} pts); ReFT's SFT share {result['sft_share']:g}.")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=8.0, help="wall-time budget of each arm")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--sft-share", type=float, default=0.5, help="share of ReFT's budget for its SFT stage")
    p.add_argument("--val-limit", type=int, default=None, help="measure on the first N held-out prompts only")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="databases and adapters (default: a temp dir)")
    p.add_argument("--json-out", type=Path, default=None, help="write all results as JSON here")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = make_parser().parse_args(argv)
    if not 0 < args.sft_share < 1:
        raise SystemExit("--sft-share is between 0 and 1.")
    return run_benchmark(title="SFT vs ReFT vs the DPO loop at equal wall time (issue 15)", args=args,
                         prefix="bench-reft-", argv=argv, body=lambda workdir: run_reft_bench(args, workdir))


if __name__ == "__main__":
    main()
