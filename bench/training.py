"""Training overhead against bare TRL (issue 14, part 2).

A DPO round as the product runs it, on the real SmolLM2-135M-Instruct: a fresh SQLite database
with pairwise human labels, `training.rounds.start_round` (freezes the snapshot, queues the job)
and `feedback.jobs.run_job` in this process. Then TRL's `DPOTrainer` run directly on exactly the
rows `training.snapshot.rows_for_stage` gave that round, with the same model directory, LoRA and
DPOConfig (checked field by field against what our stage built, at run time).

The measure is the wall time of `trainer.train()` in both (ours: the stage's `run_trainer`, i.e.
with the job callback, the pickle-free checkpoints and the resume check). The round's other
costs are timed by wrapping, for the duration of our run only, the functions the round looks up
at call time (the snapshot, the stage's dataset/config/trainer steps, the gate): timing only,
each wrapper calls straight through. Worker start comes from a real detached worker (`python -m
feedback jobs work ID`, as the Training page starts it) on a round that is cancelled once claimed.

Runs interleave (ours, bare, bare, ours with --repeats 2) so load from other processes hits both
alike; the first round of ours runs the gate, later ones skip it (not part of the ratio).

    .venv/bin/python bench/training.py [--steps 20 --repeats 2 --pairs 120]
"""
from __future__ import annotations

import sys
from pathlib import Path

# Not the script's own folder (bench/training.py would shadow the `training` package), but the
# repo root, for `db`, `feedback`, `judges` and `training`.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse
import contextlib
import gc
import importlib
import json
import os
import random
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.machine import load_line, run_benchmark
from feedback.actors import Actor

BENCH = Actor.process("bench")
GOAL = 1.10  # ours / bare TRL trainer time, issue 14

# --- data --------------------------------------------------------------------------------------

TOPICS = [
    "photosynthesis", "the water cycle", "compound interest", "volcanoes", "the moon", "recycling", "black holes",
    "vaccines", "gravity", "the internet", "coffee", "honey bees", "rainbows", "democracy", "electric cars",
    "earthquakes", "ocean tides", "DNA", "inflation", "solar panels", "sleep", "chess", "glaciers", "clouds",
    "baking bread", "composting", "jazz music", "batteries", "airplanes", "penguins", "coral reefs",
    "password security", "the stock market", "green tea", "deserts", "public libraries", "the human heart",
    "meditation", "the Olympic Games", "the Roman Empire",
]
TEMPLATES = ["What is {t}?", "Explain {t} in simple terms.", "Tell me something interesting about {t}.",
             "Why does {t} matter?"]
# Responses are assembled from these (no model in the seed): what matters for the timing is the
# token count, which the output reports, not what the sentences say.
SENTENCES = [
    "{T} is something most people meet in everyday life, often without noticing it.",
    "The key idea behind {t} is simple once you see a concrete example.",
    "Scientists and historians still debate some of the finer details of {t}.",
    "A good way to learn about {t} is to start with the basics and build up from there.",
    "In short, {t} matters more than it first seems, because so much depends on it.",
    "It connects to many other subjects, which is part of why it is taught so widely.",
    "Some of the history of {t} is surprising, and it changed how people thought about the world.",
    "There are plenty of books, videos and museum exhibits that explain {t} well.",
    "Let me explain this carefully and at length, step by step, so nothing is left out.",
]


def question(k: int) -> str:
    topic, template = TOPICS[k % len(TOPICS)], TEMPLATES[(k // len(TOPICS)) % len(TEMPLATES)]
    text = template.format(t=topic)
    rounds_of_all = k // (len(TOPICS) * len(TEMPLATES))
    return text if rounds_of_all == 0 else f"{text} (asked again, {rounds_of_all})"


def answer(rng: random.Random, k: int, sentences: int) -> str:
    topic = TOPICS[k % len(TOPICS)]
    return " ".join(rng.choice(SENTENCES).format(t=topic, T=topic[0].upper() + topic[1:]) for _ in range(sentences))


def seed_labelled_pairs(engine, *, pairs: int, val_prompts: int = 16, base_model: str | None = None,
                        seed: int = 0) -> None:
    """`pairs` train prompts, each with a concise and a long-winded response in an item of the
    default pairwise project and one human label preferring the concise one (shown as a or b at
    random), and `val_prompts` val prompts for the gate. `base_model`: v0's model (default: the
    product's default model)."""
    from db.engine import session_scope
    from db.models import Item, Label, Prompt, Response, User
    from feedback.policies import ensure_base_policy
    from feedback.projects import default_project
    from feedback.prompts import canonical_messages, content_hash
    from judges.constitutions import ensure_shipped

    rng = random.Random(seed)
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        v0 = ensure_base_policy(session=s, actor=BENCH)
        if base_model:
            v0.base_model = base_model
        annotator = User(username="bench-annotator", role="annotator", password_hash="!")
        s.add(annotator)
        s.flush()
        project_id = default_project(session=s).id
        for k in range(pairs + val_prompts):
            messages = canonical_messages(question(k), None)
            prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                            split="train" if k < pairs else "val", source="bench-training")
            s.add(prompt)
            s.flush()
            if k >= pairs:
                continue
            concise = Response(prompt_id=prompt.id, policy_version_id=v0.id, text=answer(rng, k, rng.randint(2, 4)),
                               params={})
            verbose = Response(prompt_id=prompt.id, policy_version_id=v0.id,
                               text=answer(rng, k, rng.randint(6, 12)), params={})
            s.add_all([concise, verbose])
            s.flush()
            a, b, choice = (concise, verbose, "a") if rng.random() < 0.5 else (verbose, concise, "b")
            item = Item(kind="pair", project_id=project_id, prompt_id=prompt.id, response_a_id=a.id,
                        response_b_id=b.id)
            s.add(item)
            s.flush()
            s.add(Label(item_id=item.id, kind="pairwise", choice=choice, source="human", user_id=annotator.id,
                        submission_id=uuid.uuid4().hex))


def round_config(*, steps: int, stage_config: dict[str, Any] | None = None, gate: dict[str, Any] | None = None,
                 evaluate: bool = True):
    """The round: the DPO stage's defaults except max_steps (and any overrides), human labels."""
    from training.rounds import RoundConfig

    return RoundConfig(stage="dpo", stage_config={"max_steps": steps, **(stage_config or {})},
                       snapshot={"sources": ["human"]}, gate=dict(gate or {}), evaluate=evaluate)


# --- timing our round --------------------------------------------------------------------------


@dataclass
class Call:
    start: float
    end: float
    args: tuple
    result: Any


@contextlib.contextmanager
def timed_calls(targets: list[tuple[Any, str]]) -> Iterator[dict[str, list[Call]]]:
    """For the duration of the block, every call of module.attr (looked up at call time by the
    code under test) is recorded as a Call under "module.attr"; each wrapper calls straight through."""
    calls: dict[str, list[Call]] = {}
    originals = []
    for module, attr in targets:
        original = getattr(module, attr)
        key = f"{module.__name__.rsplit('.', 1)[-1]}.{attr}"

        def wrapper(*args, _original=original, _key=key, **kwargs):
            start = time.perf_counter()
            result = _original(*args, **kwargs)
            calls.setdefault(_key, []).append(Call(start, time.perf_counter(), args, result))
            return result

        setattr(module, attr, wrapper)
        originals.append((module, attr, original))
    try:
        yield calls
    finally:
        for module, attr, original in originals:
            setattr(module, attr, original)


# Differences between two trainers' arguments that are not configuration: where they write.
NOT_CONFIG = {"output_dir", "logging_dir"}


def trainer_settings(trainer) -> dict[str, Any]:
    """What a DPO trainer was configured with: its DPOConfig as a dict, and its LoRA config."""
    lora = trainer.model.peft_config["default"]
    args = {k: v for k, v in trainer.args.to_dict().items() if k not in NOT_CONFIG}
    return {"args": args, "lora": {"r": lora.r, "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout,
                                   "target_modules": sorted(lora.target_modules), "bias": lora.bias,
                                   "use_dora": lora.use_dora}}


def settings_differences(ours: dict[str, Any], bare: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """key -> (ours, bare) for every setting that differs ("lora.r", "args.beta", ...)."""
    out = {}
    for part in ("args", "lora"):
        for key in sorted(set(ours[part]) | set(bare[part])):
            mine, theirs = ours[part].get(key), bare[part].get(key)
            if mine != theirs:
                out[f"{part}.{key}"] = (mine, theirs)
    return out


@dataclass
class OursRun:
    job_id: int
    status: str
    rows: list[dict[str, Any]]
    phases: dict[str, float]  # phase -> seconds, in round order
    train_s: float
    train_runtime: float | None  # transformers' own measure (inside train())
    steps: int
    step_s: list[float]  # wall time per optimizer step (progress reports between steps)
    settings: dict[str, Any]
    rows_for_stage_s: float
    result: dict[str, Any] = field(default_factory=dict)


def run_ours(engine, config) -> OursRun:
    """Start a round and run it here, timing each phase."""
    from db.engine import session_scope
    from feedback import jobs
    from training import rounds
    from training.stages import dpo, trl_stage

    progress: list[tuple[float, int, int | None]] = []
    targets = [(rounds, "rows_for_stage"), (rounds, "evaluate"), (dpo, "run_trl_stage"),
               (trl_stage, "rows_dataset"), (trl_stage, "training_arguments"), (trl_stage, "use_reference_adapter"),
               (trl_stage, "run_trainer")]
    with timed_calls(targets) as calls:
        t0 = time.perf_counter()
        with session_scope(engine) as s:
            job_id = rounds.start_round(session=s, config=config, actor=BENCH).id
        t_queued = time.perf_counter()
        done = jobs.run_job(engine=engine, job_id=job_id,
                            listener=lambda d, t: progress.append((time.perf_counter(), d, t)))
        t_end = time.perf_counter()
    if done.status != "succeeded":
        raise SystemExit(f"round job {job_id} {done.status}: {done.error}")

    def one(key: str) -> Call:
        return calls[key][0]

    trainer_call, stage_call = one("trl_stage.run_trainer"), one("dpo.run_trl_stage")
    gate = calls.get("rounds.evaluate")
    stage_start = one("trl_stage.rows_dataset").start
    phases = {
        "snapshot (start_round: freeze the labels, queue the job)": t_queued - t0,
        "claim + round inputs (rows_for_stage)": stage_start - t_queued,
        "model load (rows as a Dataset, policy + tokenizer)": one("trl_stage.training_arguments").start - stage_start,
        "trainer build (DPOConfig, DPOTrainer init: tokenize, LoRA)":
            one("trl_stage.use_reference_adapter").end - one("trl_stage.training_arguments").start,
        "trainer.train()": trainer_call.end - trainer_call.start,
        "adapter save": stage_call.end - trainer_call.end,
        "register the version": (gate[0].start if gate else t_end) - stage_call.end,
        "gate (evaluate)": gate[0].end - gate[0].start if gate else 0.0,
        "job end (status, webhooks)": t_end - (gate[0].end if gate else t_end),
    }
    trainer = trainer_call.args[0]
    step_marks = [t for t, d, total in progress if total is not None and d > 0]
    step_marks = [trainer_call.start, *step_marks]
    history = trainer.state.log_history
    runtime = next((e["train_runtime"] for e in reversed(history) if "train_runtime" in e), None)
    run = OursRun(job_id=job_id, status=done.status, rows=one("rounds.rows_for_stage").result, phases=phases,
                  train_s=phases["trainer.train()"], train_runtime=runtime, steps=trainer.state.global_step,
                  step_s=[b - a for a, b in zip(step_marks, step_marks[1:], strict=False)],
                  settings=trainer_settings(trainer),
                  rows_for_stage_s=one("rounds.rows_for_stage").end - one("rounds.rows_for_stage").start,
                  result=done.result or {})
    return run


# --- bare TRL ----------------------------------------------------------------------------------


def bare_dpo_arguments(cfg, output_dir: Path) -> dict[str, Any]:
    """The DPOConfig a user would write by hand for the same run on CPU, spelled out (not taken
    from our stage: the run compares the two configs and reports any difference)."""
    return {
        "output_dir": str(output_dir), "max_steps": cfg.max_steps, "num_train_epochs": cfg.num_train_epochs,
        "learning_rate": cfg.learning_rate, "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps, "logging_steps": cfg.logging_steps,
        "save_strategy": "steps", "save_steps": cfg.save_steps, "save_total_limit": 2, "seed": cfg.seed,
        "use_cpu": True, "bf16": False, "activation_checkpointing": False, "report_to": [], "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_length": cfg.max_length, "loss_type": [cfg.loss_type], "beta": cfg.beta,
        "label_smoothing": cfg.label_smoothing, "ld_alpha": cfg.ld_alpha,
    }


@dataclass
class BareRun:
    phases: dict[str, float]
    train_s: float
    train_runtime: float | None
    steps: int
    settings: dict[str, Any]


def run_bare(*, model_dir: str, rows: list[dict[str, Any]], cfg, output_dir: Path) -> BareRun:
    """TRL's DPOTrainer on `rows`, LoRA from a PEFT config, as its documentation shows."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    t1 = time.perf_counter()
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=DPOConfig(**bare_dpo_arguments(cfg, output_dir)),
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=lora)
    t2 = time.perf_counter()
    output = trainer.train()
    t3 = time.perf_counter()
    trainer.model.save_pretrained(output_dir / "adapter")
    t4 = time.perf_counter()
    run = BareRun(phases={"model load (policy + tokenizer)": t1 - t0, "trainer build": t2 - t1,
                          "trainer.train()": t3 - t2, "adapter save": t4 - t3},
                  train_s=t3 - t2, train_runtime=output.metrics.get("train_runtime"), steps=trainer.state.global_step,
                  settings=trainer_settings(trainer))
    del trainer, model
    gc.collect()
    return run


# --- worker start ------------------------------------------------------------------------------


def time_worker_start(engine, *, database_url: str, config, log_dir: Path, poll_s: float = 0.02,
                      timeout_s: float = 120) -> dict[str, float]:
    """A real detached worker on a real round, cancelled as soon as it has claimed the job (so it
    stops at its first progress report, once the round's inputs are ready): spawn -> claimed,
    and claimed -> inputs ready (its cold imports of the training code included)."""
    import psutil

    from db.engine import session_scope
    from db.models import Job
    from feedback import jobs
    from training.rounds import start_round

    with session_scope(engine) as s:
        job = start_round(session=s, config=config, actor=BENCH)
    t0 = time.perf_counter()
    pid = jobs.start_detached(job=job, database_url=database_url, log_dir=log_dir)  # after the commit
    job_id = job.id
    claimed = ended = None
    deadline = time.monotonic() + timeout_s
    while ended is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"the detached worker for job {job_id} did not finish in {timeout_s:.0f} s")
        with session_scope(engine, read_only=True) as s:
            status = s.get(Job, job_id).status
        now = time.perf_counter()
        if status == "running" and claimed is None:
            claimed = now
            with session_scope(engine) as s:
                jobs.request_cancel(session=s, job_id=job_id, actor=BENCH)
        elif status not in jobs.ACTIVE:
            claimed = claimed or now
            ended = now
        time.sleep(poll_s)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        psutil.Process(pid).wait(timeout=30)
    return {"spawn_to_claim_s": claimed - t0, "claim_to_ready_s": ended - claimed, "job_id": job_id,
            "status": status}


def time_cold_trl_import() -> float:
    """What the worker still imports after its inputs are ready (the stage imports TRL when it
    starts): measured in a fresh interpreter that has imported what the worker had by then."""
    code = ("import time, training.rounds, training.callbacks; t = time.perf_counter(); "
            "from trl import DPOConfig, DPOTrainer; import peft; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=_BENCH_DIR.parent, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(_BENCH_DIR.parent)})
    return float(out.stdout.strip().splitlines()[-1])


# --- report ------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def round_phases(in_process: dict[str, float], worker: dict[str, float] | None,
                 trl_import_s: float | None) -> dict[str, float]:
    """The round as a detached worker runs it: the in-process phases, with the worker's own start
    (spawn, claim, cold imports, inputs) in place of the in-process claim + inputs. A negative
    value is shown but not summed."""
    phases = dict(in_process)
    if worker is not None:
        in_process = phases.pop("claim + round inputs (rows_for_stage)")
        start = {"worker start (detached: spawn -> claim)": worker["spawn_to_claim_s"],
                 "worker: cold imports + round inputs (claim -> ready)": worker["claim_to_ready_s"]}
        if trl_import_s is not None:
            start["worker: cold TRL import (in the model-load step)"] = trl_import_s
        items = list(phases.items())
        phases = dict(items[:1] + list(start.items()) + items[1:])
        phases["(in-process claim + inputs, warm: not in the sum)"] = -in_process  # shown, not summed
    return phases


def render_phases(phases: dict[str, float]) -> str:
    counted = {k: v for k, v in phases.items() if v >= 0}
    total = sum(counted.values())
    rows = [[k, f"{v:.2f}", f"{v / total:.1%}"] for k, v in counted.items()]
    rows += [[k, f"{-v:.2f}", "-"] for k, v in phases.items() if v < 0]
    rows.append(["**round wall time**", f"**{total:.1f}**", "100%"])
    return table(["phase", "seconds", "share of the round"], rows)


def ratio_line(ours: list[float], bare: list[float]) -> str:
    r = statistics.mean(ours) / statistics.mean(bare)
    return f"ours/bare TRL = {r:.3f}"


def token_stats(rows: list[dict[str, Any]], model_dir: str) -> dict[str, float]:
    """Mean prompt and response lengths in tokens (chat template applied to the prompt)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    prompt = [len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True)) for r in rows]
    chosen = [len(tok(r["chosen"][0]["content"])["input_ids"]) for r in rows]
    rejected = [len(tok(r["rejected"][0]["content"])["input_ids"]) for r in rows]
    return {"prompt": statistics.mean(prompt), "chosen": statistics.mean(chosen),
            "rejected": statistics.mean(rejected)}


# --- entry point -------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="DPO optimizer steps per run (stage default: 30)")
    p.add_argument("--pairs", type=int, default=120, help="labelled pairs in the database")
    p.add_argument("--repeats", type=int, default=2,
                   help="1: ours, bare. 2: ours, bare, bare, ours (interleaved against load drift)")
    p.add_argument("--stage-config", default="{}", help="JSON overrides of the DPO stage's defaults")
    p.add_argument("--gate", default="{}", help="JSON GateConfig overrides (the first round of ours runs the gate)")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="another model directory for v0, bare TRL and the gate's judge (default: the default model); "
                        "a tiny model makes the per-step overhead stand out")
    p.add_argument("--no-worker", action="store_true", help="skip the detached worker's start-up measurement")
    p.add_argument("--profile", type=Path, default=None,
                   help="cProfile the first round of ours into this file and print its top entries")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json-out", type=Path, default=None)
    return p


def body(args, workdir: Path) -> dict[str, Any]:
    import cProfile
    import pstats

    from db.engine import make_engine
    from db.migrate import upgrade
    from feedback.model_cache import prepare_default_model
    from training.stages.dpo import DPOStageConfig

    # Warm: the in-process phases measure the round's work, not first imports (the worker row has those).
    importlib.import_module("trl").DPOTrainer  # noqa: B018

    url = f"sqlite:///{workdir / 'training.sqlite3'}"
    os.environ["DATABASE_URL"] = url  # read at call time: the round, its gate and the worker see these
    os.environ["POLICIES_DIR"] = str(workdir / "policies")
    upgrade(url)
    engine = make_engine(url)
    seed_labelled_pairs(engine, pairs=args.pairs, base_model=str(args.model_dir) if args.model_dir else None)
    stage_overrides = json.loads(args.stage_config)
    gate = json.loads(args.gate)
    if args.model_dir:
        gate = {"judge_model": str(args.model_dir), **gate}
    cfg = DPOStageConfig(**{"max_steps": args.steps, **stage_overrides})
    model_dir = str(args.model_dir or prepare_default_model())
    print(f"database {url}: {args.pairs} labelled pairs; DPO stage config {cfg}", flush=True)

    worker = trl_import_s = None
    if not args.no_worker:
        worker = time_worker_start(engine, database_url=url, log_dir=workdir / "jobs",
                                   config=round_config(steps=args.steps, stage_config=stage_overrides, gate=gate))
        trl_import_s = time_cold_trl_import()
        print(f"detached worker: spawn -> claim {worker['spawn_to_claim_s']:.2f} s, claim -> inputs ready "
              f"{worker['claim_to_ready_s']:.2f} s ({worker['status']}); cold TRL import {trl_import_s:.2f} s "
              f"({load_line()})", flush=True)

    order = ["ours", "bare"] if args.repeats == 1 else ["ours", "bare", "bare", "ours"] * (args.repeats // 2)
    ours_runs: list[OursRun] = []
    bare_runs: list[BareRun] = []
    loads = []
    for k, which in enumerate(order):
        loads.append(os.getloadavg()[0])
        if which == "ours":
            config = round_config(steps=args.steps, stage_config=stage_overrides, gate=gate, evaluate=not ours_runs)
            profiler = cProfile.Profile() if args.profile and not ours_runs else None
            if profiler:
                profiler.enable()
            run = run_ours(engine, config)
            gc.collect()  # the round's trainer and models, before the next run
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
                pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(r"(training|feedback|db)/", 25)
            ours_runs.append(run)
            print(f"[{k + 1}/{len(order)}] ours (job {run.job_id}): trainer.train() {run.train_s:.2f} s "
                  f"(train_runtime {run.train_runtime:.2f} s, {run.steps} steps) ({load_line()})", flush=True)
        else:
            rows = ours_runs[0].rows
            run = run_bare(model_dir=model_dir, rows=rows, cfg=cfg, output_dir=workdir / f"bare-{k}")
            bare_runs.append(run)
            print(f"[{k + 1}/{len(order)}] bare TRL: trainer.train() {run.train_s:.2f} s "
                  f"(train_runtime {run.train_runtime:.2f} s, {run.steps} steps) ({load_line()})", flush=True)
    engine.dispose()

    first = ours_runs[0]
    differences = settings_differences(first.settings, bare_runs[0].settings)
    tokens = token_stats(first.rows, model_dir)
    ours_t, bare_t = [r.train_s for r in ours_runs], [r.train_s for r in bare_runs]
    phases = round_phases(first.phases, worker, trl_import_s)

    print(f"\nRows: {len(first.rows)} from rows_for_stage ({first.rows_for_stage_s:.3f} s); mean tokens: prompt "
          f"(chat template) {tokens['prompt']:.0f}, chosen {tokens['chosen']:.0f}, rejected {tokens['rejected']:.0f}")
    print("Config check (ours vs bare DPOConfig and LoRA): "
          + ("identical" if not differences else f"DIFFERENT: {differences}"))
    print("\n" + table(["run", "order", "trainer.train() s", "train_runtime s", "s/step", "load avg (1 min)"],
                       [[f"{which} {order[:k + 1].count(which)}", k + 1,
                         f"{run.train_s:.2f}", f"{run.train_runtime:.2f}", f"{run.train_s / run.steps:.3f}",
                         f"{loads[k]:.2f}"]
                        for k, (which, run) in enumerate(zip(order, _in_order(order, ours_runs, bare_runs),
                                                             strict=True))]))
    line = ratio_line(ours_t, bare_t)
    ratio = statistics.mean(ours_t) / statistics.mean(bare_t)
    print(f"\n{line}  (mean of {len(ours_t)} vs {len(bare_t)}; goal <= {GOAL:.2f}: "
          f"{'met' if ratio <= GOAL else 'NOT met'})")
    runtime_ratio = (statistics.mean(r.train_runtime for r in ours_runs)
                     / statistics.mean(r.train_runtime for r in bare_runs))
    print(f"(by transformers' train_runtime: {runtime_ratio:.3f})")
    print(f"\nThe round's costs (first round of ours, with the gate {gate or 'defaults'}):\n" + render_phases(phases))
    bare_phases = bare_runs[0].phases
    print("\nBare TRL, first run: " + ", ".join(f"{k} {v:.2f} s" for k, v in bare_phases.items()))
    return {"ratio": ratio, "ratio_train_runtime": runtime_ratio, "ours_train_s": ours_t, "bare_train_s": bare_t,
            "order": order, "load_1min": loads, "phases": phases, "bare_phases": bare_phases, "worker": worker,
            "trl_import_s": trl_import_s, "differences": {k: list(v) for k, v in differences.items()},
            "tokens": tokens, "rows": len(first.rows), "gate": first.result.get("gate"),
            "ours_step_s": [r.step_s for r in ours_runs], "stage_config": cfg.__dict__}


def _in_order(order: list[str], ours: list, bare: list) -> list:
    iters = {"ours": iter(ours), "bare": iter(bare)}
    return [next(iters[which]) for which in order]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = make_parser().parse_args(argv)
    return run_benchmark(title="Training overhead vs bare TRL (issue 14)", args=args, prefix="bench-training-",
                         body=lambda workdir: body(args, workdir), argv=argv)


if __name__ == "__main__":
    main()
