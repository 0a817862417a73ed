"""Closed-loop benchmark (issue 5): R rounds of sample -> label -> train -> redeploy from the real
SmolLM2-135M-Instruct, measured on HELD-OUT prompts after every round.

Every round is the product's own code path: `training.loop.run_loop` run as a 'loop' job through
`feedback.jobs.run_job` (K samples per train prompt from the active policy, best-vs-worst labels,
a DPO 'train' job on exactly those labels, the evaluation gate, promotion). This script only
builds a fresh SQLite database per task, imports the prompts, and measures the active policy on
the val split after each round (a job-progress listener), with greedy decoding.

(A) grader task: "What is a + b? Reply with only the number." (a, b in 1..25; 200 train and 100
    val prompts, val pairs {a, b} never seen in train; bench/data/arith.jsonl). Labeler: the
    `numeric` grader. Promotion by the gate (grader accuracy of candidate vs parent on the first 30
    val prompts: a dev set). Measure: greedy accuracy on the other 70 val prompts, which no
    decision ever looked at. Goal: >= +10 points over the base.
(B) judge task: general questions (40 topics x 4 templates; 10 topics held out = 40 val prompts;
    bench/data/general.jsonl). Labeler: the local judge (the 135M model itself, next-token
    probabilities) under the shipped "concise" constitution. Measure: win rate of each round's
    policy over the base on val prompts, judged by the same judge in both orders (a tie or an
    order-inconsistent verdict counts 0.5, bootstrap 95% CI), and a judge-free proxy: mean
    response length in tokens and words. Goal: win rate over base > 65%.

    .venv/bin/python -m bench.loop --task both --rounds 3        # from the repo root
    .venv/bin/python bench/loop.py --task grader --rounds 2 --grader '{"prompts_per_round": 32}'

--grader / --judge take JSON overrides of the task's LoopConfig (stage_config is merged key by key).
"""
from __future__ import annotations

import sys
from pathlib import Path

# Not the script's own folder (bench/queue.py would shadow the standard library's `queue`), but
# the repo root, for `db`, `feedback`, `judges` and `training`.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse
import copy
import json
import os
import random
import re
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from bench.machine import load_line, machine_line
from feedback.actors import CLI, Actor

DATA_DIR = _BENCH_DIR / "data"
ARITH_INSTRUCTION = "Reply with only the number."

# Per task: LoopConfig fields (the loop's own knobs) and what the held-out measurement uses.
TASKS: dict[str, dict[str, Any]] = {
    "grader": {
        "data": "arith.jsonl",
        "eval_max_new_tokens": 32,
        "loop": {
            "labeler": "grader", "grader": "numeric", "prompts_per_round": 64, "samples_per_prompt": 8,
            "temperature": 0.7, "max_new_tokens": 20,
            # A bounded update per round: 2 epochs at 5e-4 collapsed round 2 into bare (wrong) numbers.
            "stage_config": {"max_steps": 16, "learning_rate": 3e-4, "per_device_train_batch_size": 4, "beta": 0.1,
                             "lora_r": 8, "lora_alpha": 16, "max_length": 128, "save_steps": 1000},
            # The gate as a regression guard on a dev share of val (the first 30 val prompts), which the
            # held-out measurement never uses. The local judge carries no signal here (it answers "1"
            # whichever response is first, so the gate would be undecided): no judge, accuracy decides.
            "promote": "gate",
            "gate": {"prompts": 30, "max_new_tokens": 32, "judge_backend": None, "max_accuracy_drop": 0.0},
        },
    },
    "judge": {
        "data": "general.jsonl",
        "eval_max_new_tokens": 96,
        "loop": {
            "labeler": "judge", "judge_backend": "local", "constitution": "concise", "prompts_per_round": 32,
            "promote": "always",  # the local judge is order-inconsistent: its gate is undecided every round
            "samples_per_prompt": 2,  # the judge labeler compares two of the K samples: more would be wasted
            "temperature": 0.9, "max_new_tokens": 96,
            "stage_config": {"max_steps": -1, "num_train_epochs": 2.0, "learning_rate": 5e-4,
                             "per_device_train_batch_size": 4, "beta": 0.1, "lora_r": 8, "lora_alpha": 16,
                             "max_length": 256, "save_steps": 1000},
            "gate": {"prompts": 8, "max_new_tokens": 96, "constitution": "concise"},
        },
    },
}


# --- data ----------------------------------------------------------------------------------------


def arith_rows(seed: int = 5, n_train: int = 200, n_val: int = 100, high: int = 25) -> list[dict[str, Any]]:
    """Distinct unordered pairs {a, b} from 1..high, shuffled; the first n_val are val, so neither
    a val question nor its commuted twin is ever trained on."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in range(1, high + 1) for b in range(a, high + 1)]
    rng.shuffle(pairs)
    rows = []
    for k, (a, b) in enumerate(pairs[: n_val + n_train]):
        if rng.random() < 0.5:
            a, b = b, a
        rows.append({"prompt": f"What is {a} + {b}? {ARITH_INSTRUCTION}", "reference": str(a + b),
                     "split": "val" if k < n_val else "train", "tags": ["arith"], "source": "bench-loop"})
    return rows


TOPICS = [
    "photosynthesis", "the water cycle", "compound interest", "volcanoes", "the moon", "recycling", "black holes",
    "vaccines", "gravity", "the internet", "coffee", "honey bees", "rainbows", "democracy", "electric cars",
    "the Roman Empire", "earthquakes", "ocean tides", "DNA", "inflation", "solar panels", "sleep", "meditation",
    "chess", "the Olympic Games", "glaciers", "clouds", "baking bread", "composting", "jazz music",
    "the human heart", "batteries", "airplanes", "penguins", "the stock market", "public libraries", "green tea",
    "deserts", "coral reefs", "password security",
]
GENERAL_TEMPLATES = ["What is {t}?", "Explain {t} in simple terms.", "Tell me something interesting about {t}.",
                     "Why does {t} matter?"]


def general_rows(seed: int = 5, n_val_topics: int = 10) -> list[dict[str, Any]]:
    """Topic x template questions; whole topics are held out for val."""
    topics = list(TOPICS)
    random.Random(seed).shuffle(topics)
    val_topics = set(topics[:n_val_topics])
    return [{"prompt": template.format(t=topic), "split": "val" if topic in val_topics else "train",
             "tags": ["general"], "source": "bench-loop"}
            for topic in TOPICS for template in GENERAL_TEMPLATES]


def write_data() -> dict[str, list[dict[str, Any]]]:
    DATA_DIR.mkdir(exist_ok=True)
    out = {"arith.jsonl": arith_rows(), "general.jsonl": general_rows()}
    for name, rows in out.items():
        text = "".join(json.dumps(r) + "\n" for r in rows)
        path = DATA_DIR / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return out


# --- machine and output ----------------------------------------------------------------------------






def say(*parts: Any) -> None:
    print(*parts, flush=True)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


# --- the held-out measurement ----------------------------------------------------------------------


class HeldOut:
    """The val prompts of one task, answered greedily by a policy version; the base's answers are kept
    as the reference side of the win rate."""

    def __init__(self, engine, task: str, max_new_tokens: int, limit: int | None, seed: int, skip: int = 0):
        from sqlalchemy import select

        from db.engine import session_scope
        from db.models import Prompt

        self.engine, self.task, self.seed = engine, task, seed
        with session_scope(engine, read_only=True) as s:
            query = select(Prompt).where(Prompt.split == "val").order_by(Prompt.id)
            prompts = list(s.scalars(query.offset(skip).limit(limit) if limit else query.offset(skip)))
        self.messages = [p.messages for p in prompts]
        self.references = [p.reference for p in prompts]
        self.max_new_tokens = max_new_tokens
        self.base = None  # the base's completions
        self.cache: dict[str, dict[str, Any]] = {}  # policy name -> its measurement (a policy answers greedily once)
        if task == "grader":
            from judges.graders import parse_grader

            self.grader = parse_grader("numeric")
        else:
            from judges.backends import get_backend
            from judges.constitutions import CONCISE_PRINCIPLES

            self.judge = get_backend("local")
            self.principles = CONCISE_PRINCIPLES

    def answers(self, version_name: str):
        from db.engine import session_scope
        from feedback.policies import policy_by_name
        from feedback.policy import SamplingParams, client_for

        with session_scope(self.engine, read_only=True) as s:
            version = policy_by_name(session=s, name=version_name)
        params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=self.max_new_tokens, n=1, seed=self.seed)
        return [c[0] for c in client_for(version).generate(self.messages, params)]

    def measure(self, version_name: str) -> dict[str, Any]:
        """Accuracy (grader task) or win rate over the base (judge task) and lengths, of greedy answers."""
        if version_name in self.cache:  # the same policy again (a round that trained nothing, or held back)
            row = {**self.cache[version_name], "gen_s": 0.0, "judge_s": 0.0}
            if self.task == "judge" and "win_rate" not in row:  # v0 against itself: a check of the judge
                t1 = time.perf_counter()
                row.update(self.win_rate(self.cache[version_name]["texts"], [c.text for c in self.base]))
                row["judge_s"] = time.perf_counter() - t1
                self.cache[version_name] = {k: v for k, v in row.items() if k not in ("gen_s", "judge_s")}
            return row
        t0 = time.perf_counter()
        outs = self.answers(version_name)
        t_gen = time.perf_counter() - t0
        texts = [c.text for c in outs]
        row: dict[str, Any] = {
            "policy": version_name, "n": len(texts),
            "mean_tokens": sum(c.completion_tokens or 0 for c in outs) / len(outs),
            "mean_words": sum(len(t.split()) for t in texts) / len(texts),
            "truncated": sum(c.finish_reason == "length" for c in outs) / len(outs),
            "examples": texts[:3], "texts": texts,
        }
        if self.task == "grader":
            scores = [self.grader.grade(t, ref) for t, ref in zip(texts, self.references, strict=True)]
            row["accuracy"] = sum(s >= 0.5 for s in scores) / len(scores)
        t1 = time.perf_counter()
        if self.base is None:
            self.base = outs
        elif self.task == "judge":
            row.update(self.win_rate(texts, [c.text for c in self.base]))
        self.cache[version_name] = dict(row)
        row["gen_s"], row["judge_s"] = t_gen, time.perf_counter() - t1
        return row

    def win_rate(self, texts: list[str], base_texts: list[str]) -> dict[str, Any]:
        """The policy's answers (shown as a) against the base's (b), both orders per prompt."""
        from judges.pairwise import judge_pair
        from training.evaluate import bootstrap_interval

        judgments = [judge_pair(backend=self.judge, messages=m, text_a=a, text_b=b, principles=self.principles,
                                key=f"heldout{k}")
                     for k, (m, a, b) in enumerate(zip(self.messages, texts, base_texts, strict=True))]
        outcomes = [j.outcome for j in judgments]
        # Diagnostic only (not the product's verdict): the local judge's P("1") when the policy's answer is
        # shown first minus P("1") when the base's is, i.e. its preference with the position bias removed.
        debiased = [d for d in (position_debiased(j) for j in judgments) if d is not None]
        scores = [1.0 if o == "a" else 0.0 if o == "b" else 0.5 for o in outcomes]
        low, high = bootstrap_interval(scores, seed=self.seed)
        return {"win_rate": sum(scores) / len(scores), "win_rate_ci95": [low, high],
                "wins": outcomes.count("a"), "losses": outcomes.count("b"), "ties": outcomes.count("tie"),
                "inconsistent": len(outcomes) - outcomes.count("a") - outcomes.count("b") - outcomes.count("tie"),
                "identical": sum(a.strip() == b.strip() for a, b in zip(texts, base_texts, strict=True)),
                "p_first_mean": _mean_p_first(judgments),
                "debiased_win_rate": (sum((d > 0) + 0.5 * (d == 0) for d in debiased) / len(debiased)
                                      if debiased else None)}


_P1_RE = re.compile(r"\b1=([0-9.]+)")


def _p_first(order: dict[str, Any]) -> float | None:
    """P("1") (the response shown first wins) from a local-judge reply's reasoning text."""
    for answer in order.get("answers") or []:
        m = _P1_RE.search(answer)
        if m:
            return float(m.group(1))
    return None


def _mean_p_first(judgments) -> float | None:
    values = [v for j in judgments for v in (_p_first(o) for o in j.raw.get("orders", [])) if v is not None]
    return sum(values) / len(values) if values else None


def position_debiased(judgment) -> float | None:
    """P("1" | a shown first) - P("1" | b shown first): > 0 means the judge leans to a once position is removed."""
    p = {o.get("shown_first"): _p_first(o) for o in judgment.raw.get("orders", [])}
    return None if p.get("a") is None or p.get("b") is None else p["a"] - p["b"]


# --- one task ----------------------------------------------------------------------------------------


def merged_loop_config(task: str, override: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    config = copy.deepcopy(TASKS[task]["loop"])
    for key, value in override.items():
        if key in ("stage_config", "gate") and isinstance(value, dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    config.update(rounds=args.rounds, seed=args.seed, **({"promote": args.promote} if args.promote else {}))
    return config


def run_task(task: str, rows: list[dict[str, Any]], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from sqlalchemy import select

    from db.engine import make_engine, session_scope
    from db.migrate import upgrade
    from db.models import Job
    from feedback import jobs
    from feedback.policies import active_policy, ensure_base_policy
    from feedback.prompts import import_prompt_rows
    from judges.constitutions import ensure_shipped
    from training.evaluate import GateConfig
    from training.loop import LoopConfig

    t_task = time.perf_counter()
    say(f"\n## Task {task}  ({load_line()})")
    taskdir = workdir / task
    taskdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{taskdir / 'loop.sqlite3'}"
    # Settings are read from the environment at call time: the loop, its train jobs and the gate see these.
    os.environ["DATABASE_URL"] = url
    os.environ["POLICIES_DIR"] = str(taskdir / "policies")
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        ensure_base_policy(session=s, actor=Actor.process("bench"))
        report = import_prompt_rows(session=s, rows=((f"row {i}", r) for i, r in enumerate(rows)),
                                    source="bench-loop", actor=CLI)
    n_train = sum(r["split"] == "train" for r in rows)
    say(f"  database {url}: {report.inserted} prompts ({n_train} train, {len(rows) - n_train} val)")

    spec = TASKS[task]
    config = LoopConfig(**merged_loop_config(task, json.loads(getattr(args, task) or "{}"), args))
    say(f"  LoopConfig: {json.dumps(asdict(config))}")
    # With promote=gate the gate picks policies on its val prompts (the first gate.prompts by id, see
    # training/evaluate.py): measuring on those too would flatter the result, so they are left out.
    skip = GateConfig(**config.gate).prompts if config.promote == "gate" else 0
    heldout = HeldOut(engine, task, spec["eval_max_new_tokens"], args.val_limit, args.seed, skip=skip)

    t0 = time.perf_counter()
    measured: list[dict[str, Any]] = []
    base = heldout.measure("v0")
    base.update(round=0, pairs=None, minutes=(time.perf_counter() - t_task) / 60)
    measured.append(base)
    say(f"  base v0 on {base['n']} val prompts"
        + (f" (val prompts {skip + 1}.. by id; 1..{skip} are the gate's)" if skip else "")
        + ": " + describe(task, base) + f"  [{base['gen_s']:.0f} s]")
    say(f"  base examples: {base['examples']}")
    say(f"  base measurement: {time.perf_counter() - t0:.0f} s")

    marks_in: dict[int, float] = {}  # progress 'done' value -> wall time it was first reported (round end)
    marks: dict[int, float] = {}  # ... -> wall time after the measurement (the next round starts)

    def listener(done: int, total: int | None) -> None:
        # The loop reports done=r-1 when round r starts and done=r when it ends (a round without
        # informative pairs reports no end: the next round's start stands for it).
        if done in marks_in:
            return
        marks_in[done] = marks[done] = time.perf_counter()
        if done == 0:
            say(f"  round 1 starts ({load_line()})")
            return
        with session_scope(engine, read_only=True) as s:
            name = active_policy(session=s).name
        row = heldout.measure(name)
        row.update(round=done, minutes=(time.perf_counter() - t_task) / 60)
        measured.append(row)
        say(f"  after round {done}: active {name}: " + describe(task, row)
            + f"  [measured in {row['gen_s'] + row['judge_s']:.0f} s; {row['minutes']:.1f} min into the task; "
              f"{load_line()}]")
        marks[done] = time.perf_counter()  # the next round starts after the measurement

    with session_scope(engine) as s:
        job_id = jobs.create_job(session=s, kind="loop", config=asdict(config), actor=Actor.process("bench")).id
    done_job = jobs.run_job(engine=engine, job_id=job_id, listener=listener)
    if done_job.status != "succeeded":
        raise SystemExit(f"loop job {job_id} {done_job.status}: {done_job.error}")
    loop_rounds = done_job.result["rounds"]
    if config.rounds not in marks:  # a last round without informative pairs reports no end
        listener(config.rounds, config.rounds)

    # Per-phase timing from the job rows: sampling+labelling ends when the round's train job is queued.
    with session_scope(engine, read_only=True) as s:
        train_jobs = {j.id: j for j in s.scalars(select(Job).where(Job.kind == "train"))}
    for r in loop_rounds:
        j = train_jobs.get(r.get("train_job"))
        start, end = marks.get(r["round"] - 1), marks_in.get(r["round"])
        r["timing"] = {"round_s": end - start} if start is not None and end is not None else {}
        if j is None and "round_s" in r["timing"]:
            r["timing"]["sample_label_s"] = r["timing"]["round_s"]
        if j is not None and start is not None:
            created = j.created_at.replace(tzinfo=UTC) if j.created_at.tzinfo is None else j.created_at
            collect_end = time.perf_counter() - (datetime.now(UTC) - created).total_seconds()
            trainer_s = next((m["train_runtime"] for m in reversed(j.metrics or []) if "train_runtime" in m), None)
            r["timing"] |= {"sample_label_s": collect_end - start,
                           "train_job_s": (j.finished_at - j.started_at).total_seconds(),
                           "trainer_s": trainer_s, "train_metrics": (j.result or {}).get("metrics")}
    by_round = {m["round"]: m for m in measured}
    for r in loop_rounds:
        m = by_round.get(r["round"])
        if m is not None:
            m.update(pairs=r.get("pairs"), loop=r)
            if task == "grader" and r.get("train_job"):  # held-back candidates too: what 'always' would deploy
                m["candidate_accuracy"] = heldout.measure(r["policy"])["accuracy"]
    signal = None
    if task == "judge" and args.signal_pairs:
        signal = judge_signal(engine, job_id, heldout, args.signal_pairs)
    engine.dispose()
    result = {"task": task, "config": asdict(config), "rows": measured, "job_id": job_id, "judge_signal": signal,
              "minutes": (time.perf_counter() - t_task) / 60, "workdir": str(taskdir)}
    say(render(result))
    return result


def judge_signal(engine, job_id: int, heldout: HeldOut, limit: int) -> dict[str, Any]:
    """Why the judge labeler did or did not label: re-judge the first two samples of the loop's first
    `limit` prompts (what the labeler compared) and report the verdicts, the judge's P("first shown
    wins"), and whether its position-debiased preference picks the shorter answer."""
    from collections import Counter, defaultdict

    from sqlalchemy import select

    from db.engine import session_scope
    from db.models import Prompt, Response
    from judges.pairwise import judge_pair

    t0 = time.perf_counter()
    with session_scope(engine, read_only=True) as s:
        rows = s.execute(select(Response.prompt_id, Prompt.messages, Response.text)
                         .join(Prompt, Prompt.id == Response.prompt_id)
                         .where(Response.job_id == job_id).order_by(Response.id)).all()
    by_prompt: dict[int, list] = defaultdict(list)
    for prompt_id, messages, text in rows:
        by_prompt[prompt_id].append((messages, text))
    pairs = [(v[0][0], v[0][1], v[1][1]) for v in list(by_prompt.values())[:limit] if len(v) >= 2]
    outcomes, shorter_picked, decided = Counter(), 0, 0
    judgments = []
    for k, (messages, a, b) in enumerate(pairs):
        j = judge_pair(backend=heldout.judge, messages=messages, text_a=a, text_b=b, principles=heldout.principles,
                       key=f"signal{k}")
        judgments.append(j)
        outcomes[j.outcome] += 1
        d, la, lb = position_debiased(j), len(a.split()), len(b.split())
        if d is not None and d != 0 and abs(la - lb) >= 5:
            decided += 1
            shorter_picked += (d > 0) == (la < lb)
    return {"pairs": len(pairs), "outcomes": dict(outcomes), "p_first_mean": _mean_p_first(judgments),
            "length_pairs": decided, "debiased_picks_shorter": shorter_picked, "seconds": time.perf_counter() - t0}


def describe(task: str, row: dict[str, Any]) -> str:
    length = f"mean {row['mean_tokens']:.1f} tokens / {row['mean_words']:.1f} words, {row['truncated']:.0%} truncated"
    if task == "grader":
        return f"accuracy {row['accuracy']:.3f} ({length})"
    if "win_rate" not in row:
        return length
    lo, hi = row["win_rate_ci95"]
    return (f"{length}; win rate vs base {row['win_rate']:.3f} [{lo:.2f}, {hi:.2f}] "
            f"(W/L/T/I {row['wins']}/{row['losses']}/{row['ties']}/{row['inconsistent']}, "
            f"{row['identical']} identical; mean P(first shown wins) {fmt(row['p_first_mean'], '.2f')}, "
            f"position-debiased win rate {fmt(row['debiased_win_rate'], '.2f')})")


def render(result: dict[str, Any]) -> str:
    task, rows = result["task"], result["rows"]
    lines = []
    if task == "grader":
        headers = ["round", "candidate", "candidate acc", "active", "pairs", "held-out accuracy (active)", "vs base",
                   "mean tokens",
                   "gate acc (cand/parent)",
                   "gate win", "sample+label s", "train job s (trainer s)", "min elapsed"]
    else:
        headers = ["round", "candidate", "active", "pairs", "mean tokens", "mean words", "truncated",
                   "win rate vs base [95% CI]", "W/L/T/I", "debiased win (diag.)", "gate win", "sample+label s",
                   "train job s (trainer s)", "min elapsed"]
    body = []
    base = rows[0]
    for m in rows:
        loop = m.get("loop") or {}
        timing = loop.get("timing") or {}
        phase = [fmt(timing.get("sample_label_s"), ".0f"),
                 f"{fmt(timing.get('train_job_s'), '.0f')} ({fmt(timing.get('trainer_s'), '.0f')})" if timing else "-"]
        gate_win = fmt(loop.get("win_rate"), ".2f")
        candidate = ("-" if not loop.get("train_job") else
                     loop["policy"] + ("" if loop.get("promoted") else " (held back)"))
        if task == "grader":
            gate_acc = (f"{fmt(loop.get('accuracy'), '.2f')}/{fmt(loop.get('parent_accuracy'), '.2f')}"
                        if loop else "-")
            body.append([m["round"], candidate, fmt(m.get("candidate_accuracy")), m["policy"], fmt(m.get("pairs"), "d"),
                         f"{m['accuracy']:.3f}",
                         f"{(m['accuracy'] - base['accuracy']) * 100:+.1f} pts", f"{m['mean_tokens']:.1f}",
                         gate_acc, gate_win, *phase, f"{m['minutes']:.1f}"])
        else:
            win = (f"{m['win_rate']:.3f} [{m['win_rate_ci95'][0]:.2f}, {m['win_rate_ci95'][1]:.2f}]"
                   if "win_rate" in m else "-")
            wlti = f"{m['wins']}/{m['losses']}/{m['ties']}/{m['inconsistent']}" if "wins" in m else "-"
            body.append([m["round"], candidate, m["policy"], fmt(m.get("pairs"), "d"), f"{m['mean_tokens']:.1f}",
                         f"{m['mean_words']:.1f}", f"{m['truncated']:.0%}", win, wlti,
                         fmt(m.get("debiased_win_rate"), ".2f"), gate_win, *phase,
                         f"{m['minutes']:.1f}"])
    lines.append(table(headers, body))
    last = rows[-1]
    if task == "grader":
        gain = (last["accuracy"] - base["accuracy"]) * 100
        lines.append(f"\nGoal (>= +10 points of val accuracy over the base): {gain:+.1f} points -> "
                     f"{'met' if gain >= 10 else 'NOT met'}.")
    elif "win_rate" in last:
        lines.append(f"\nGoal (win rate of the final policy over the base > 65%): {last['win_rate']:.1%} -> "
                     f"{'met' if last['win_rate'] > 0.65 else 'NOT met'}. Length: {base['mean_tokens']:.1f} -> "
                     f"{last['mean_tokens']:.1f} tokens, {base['mean_words']:.1f} -> {last['mean_words']:.1f} words.")
    signal = result.get("judge_signal")
    if signal:
        lines.append(f"Judge signal on the loop's own sample pairs (first {signal['pairs']} prompts, re-judged, "
                     f"{signal['seconds']:.0f} s): outcomes {signal['outcomes']}; mean P(first shown wins) "
                     f"{fmt(signal['p_first_mean'], '.2f')}; position-debiased preference picks the shorter answer in "
                     f"{signal['debiased_picks_shorter']}/{signal['length_pairs']} pairs that differ by >= 5 words.")
    lines.append(f"Task wall time: {result['minutes']:.1f} min.")
    return "\n".join(lines)


# --- entry point -----------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("grader", "judge", "both"), default="both")
    p.add_argument("--rounds", type=int, default=3, help="loop rounds per task")
    p.add_argument("--promote", choices=("always", "gate"), default=None,
                   help="always: every round's policy is deployed (the gate is still run and reported); "
                        "gate: only when the gate passes; the held-out measurement then skips the gate's val "
                        "prompts (default: per task, gate for grader, always for judge)")
    p.add_argument("--grader", default=None, help="JSON overrides of the grader task's LoopConfig")
    p.add_argument("--judge", default=None, help="JSON overrides of the judge task's LoopConfig")
    p.add_argument("--val-limit", type=int, default=None, help="measure on the first N val prompts only")
    p.add_argument("--signal-pairs", type=int, default=32,
                   help="judge task: re-judge this many of the loop's sample pairs (the judge's signal; 0: skip)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the databases and adapters go (default: a temp dir)")
    p.add_argument("--json-out", type=Path, default=None, help="write all results as JSON here")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from cli import job_kinds

    job_kinds.install()  # as every entry point does: the table of job kinds lives in cli/
    args = make_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from feedback.model_cache import prepare_default_model

    t0 = time.perf_counter()
    data = write_data()
    say(f"# Loop benchmark (issue 5), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    say(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    say(f"machine: {machine_line()}; {load_line()}")
    prepare_default_model()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-loop-"))
    say(f"workdir: {workdir}")
    tasks = ["grader", "judge"] if args.task == "both" else [args.task]
    results = []
    for task in tasks:
        results.append(run_task(task, data[TASKS[task]["data"]], args, workdir))
    say(f"\nTotal wall time: {(time.perf_counter() - t0) / 60:.1f} min ({load_line()})")
    out = {"argv": sys.argv, "machine": machine_line(), "results": results}
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
