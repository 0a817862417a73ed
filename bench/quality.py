"""Label-quality benchmark (issue 11): what noisy annotators cost a DPO round, and how much of it
the product's quality machinery (Dawid-Skene, gold checks that pause) wins back.

--part labels (the default): on the arithmetic task of bench/loop.py (bench/data/arith.jsonl), the
base policy's samples go into a pairwise project; a simulated pool labels every pair through the
real queue with overlap 5 (default pool `grader:6:noise=0.1,random:2,left:1,adversarial:1`, see
judges/simulated.py), and the `numeric` grader is the truth. Four arms, each frozen as its own
snapshot and trained as its own DPO 'train' job from the base (no gate: train and measure):

  clean        the grader's own labels on the same pairs (judges/grading.py; equal scores are ties)
  majority     the pool's labels, rule "majority" (feedback/rows.py)
  ds           the pool's labels, rule "reliability" (Dawid-Skene, feedback/reliability.py)
  ds+pausing   the same pairs labelled again by the same pool with gold on: attention checks
               (feedback/gold.py) served silently at the gold rate, annotators below the minimum
               accuracy paused; then rule "reliability". (The sampled pairs are copied, database file
               and all, before any labelling, so both labelling runs see exactly the same pairs.)

Per arm: pairs kept (the rows the snapshot trains on), their label accuracy against the grader
(pairs the grader scores equal have no truth and are counted apart), held-out greedy accuracy on
the 70 val prompts bench/loop.py measures on (val 31..100 by id), the gain over the base, and the
gain as a share of the clean arm's. The pool takes its turns in a fresh seeded order each turn
(run_simulation's own behaviour).

    .venv/bin/python bench/quality.py --workdir /tmp/quality
    .venv/bin/python bench/quality.py --prompts 96 --samples 8 --seed 1

A second part (label efficiency: reward-model accuracy after N labels chosen by uncertainty vs at
random) is bench/label_efficiency.py, which imports this module's helpers.
"""
from __future__ import annotations

import sys
from pathlib import Path

# As bench/loop.py: the repo root on the path, not the script's own folder.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse
import json
import os
import random
import sqlite3
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

from bench.loop import TASKS as LOOP_TASKS
from bench.loop import HeldOut, fmt, say, table, write_data
from bench.machine import load_line, run_benchmark
from feedback.actors import CLI, Actor

PROJECT = "quality"
DEFAULT_POOL = "grader:6:noise=0.1,random:2,left:1,adversarial:1"
GATE_PROMPTS = 30  # bench/loop.py's gate uses val prompts 1..30 by id; its held-out figures skip them
BENCH = Actor.process("bench")


def stage_config(override: dict[str, Any]) -> dict[str, Any]:
    """The DPO round of bench/loop.py's grader task (LoRA r 8, 16 steps, lr 3e-4, beta 0.1), plus overrides."""
    return {**LOOP_TASKS["grader"]["loop"]["stage_config"], **override}


# --- databases -------------------------------------------------------------------------------------


class Db:
    """One SQLite database of the benchmark, with its own policies directory (a train job's adapter
    goes to POLICIES_DIR/round-<job id>, and two copies of one database number their jobs alike)."""

    def __init__(self, path: Path):
        from db.engine import make_engine

        self.path = path
        self.url = f"sqlite:///{path}"
        self.policies = path.parent / f"{path.stem}-policies"
        self.engine = make_engine(self.url)

    def use(self) -> None:
        # Settings are read from the environment at call time: train jobs see these.
        os.environ["DATABASE_URL"] = self.url
        os.environ["POLICIES_DIR"] = str(self.policies)

    def copy_to(self, path: Path) -> Db:
        """A consistent copy (SQLite's backup API, WAL included) as a new Db."""
        self.engine.dispose()
        path.unlink(missing_ok=True)
        src, dst = sqlite3.connect(self.path), sqlite3.connect(path)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
        return Db(path)


def make_base(path: Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> tuple[Db, dict[str, Any]]:
    """Fresh database: prompts, v0, the pairwise project (overlap), and the base policy's samples in it."""
    from db.engine import session_scope
    from db.migrate import upgrade
    from feedback.policies import ensure_base_policy
    from feedback.projects import create_project
    from feedback.prompts import import_prompt_rows
    from feedback.queue import update_queue_settings
    from feedback.sampling import SamplingConfig, run_sampling
    from judges.constitutions import ensure_shipped

    path.unlink(missing_ok=True)
    db = Db(path)
    db.use()
    upgrade(db.url)
    with session_scope(db.engine) as s:
        ensure_shipped(session=s)
        ensure_base_policy(session=s, actor=BENCH)
        import_prompt_rows(session=s, rows=((f"row {i}", r) for i, r in enumerate(rows)), source="bench-quality",
                           actor=CLI)
        project = create_project(session=s, actor=CLI, name=PROJECT, task_type="pairwise",
                                 guidelines="Which answer to the sum is right? A tie when both are, or neither.")
        update_queue_settings(session=s, actor=CLI, project=project, overlap=args.overlap, lease_seconds=600,
                              prompt_tags=[], policy_version_ids=[], refill_below=0, refill_prompts=1)
    loop = LOOP_TASKS["grader"]["loop"]  # the loop's sampling settings, into a project of random pairs
    config = SamplingConfig(project=PROJECT, limit=args.prompts, n_per_prompt=args.samples,
                            temperature=loop["temperature"], top_p=1.0, max_new_tokens=loop["max_new_tokens"],
                            seed=args.seed)
    t0 = time.perf_counter()
    sampled = run_sampling(engine=db.engine, config=config)
    sampled["seconds"] = time.perf_counter() - t0
    return db, sampled


# --- labelling -------------------------------------------------------------------------------------


def grade(db: Db) -> dict[str, Any]:
    from judges.grading import run_grading

    return run_grading(engine=db.engine, spec="numeric", actor=BENCH)


def simulate_pool(db: Db, pool: str, seed: int, *, cap: int) -> dict[str, Any]:
    """The pool labels until nobody can be handed anything, through judges/simulated.py's
    run_simulation (which takes turns in a fresh seeded order each turn)."""
    from judges import simulated

    return simulated.run_simulation(engine=db.engine, project=PROJECT, pool=pool, labels=cap, actor=CLI, seed=seed)


def simulate(db: Db, args: argparse.Namespace, *, with_gold: bool) -> dict[str, Any]:
    """The pool labels every pair (overlap slots) through the queue; with gold, checks are made first
    and served silently at the gold rate."""
    from sqlalchemy import func, select

    from db.engine import session_scope
    from db.models import Item
    from feedback.gold import make_attention_checks, standings, update_gold_settings
    from feedback.projects import get_project

    db.use()
    gold_info: dict[str, Any] = {}
    with session_scope(db.engine) as s:
        project = get_project(session=s, name=PROJECT)
        n_items = s.scalar(select(func.count()).select_from(Item).where(Item.project_id == project.id))
        if with_gold:
            checks = make_attention_checks(session=s, actor=CLI, project=project, count=args.gold_checks,
                                           rng=random.Random(args.seed))
            update_gold_settings(session=s, actor=CLI, project=project, gold_rate=args.gold_rate,
                                 gold_min_accuracy=args.gold_min_accuracy, gold_min_answers=args.gold_min_answers)
            gold_info["checks"] = len(checks)
    t0 = time.perf_counter()
    # A cap well above every slot and gold claim: the run ends when nobody can be handed anything.
    result = simulate_pool(db, args.pool, args.seed, cap=10 * n_items * args.overlap)
    result["seconds"] = time.perf_counter() - t0
    if with_gold:
        with session_scope(db.engine, read_only=True) as s:
            gold_info["standings"] = [asdict(st) | {"counted_from": None}
                                      for st in standings(session=s, actor=CLI,
                                                          project=get_project(session=s, name=PROJECT))]
        gold_info["gold_labels"] = sum(st["gold_answers"] for st in gold_info["standings"])
    result["gold"] = gold_info
    return result


# --- arms ------------------------------------------------------------------------------------------


class Truth:
    """The grader's view of a training row: chosen better, worse, or no truth (scored equal)."""

    def __init__(self, db: Db):
        from sqlalchemy import select

        from db.engine import session_scope
        from db.models import Prompt
        from judges.graders import parse_grader

        self.grader = parse_grader("numeric")
        with session_scope(db.engine, read_only=True) as s:
            self.reference = {json.dumps(p.messages, sort_keys=True): p.reference for p in s.scalars(select(Prompt))}

    def verdict(self, row: dict[str, Any]) -> str:
        ref = self.reference[json.dumps(row["prompt"], sort_keys=True)]
        chosen = self.grader.grade(row["chosen"][0]["content"], ref)
        rejected = self.grader.grade(row["rejected"][0]["content"], ref)
        return "right" if chosen > rejected else "wrong" if chosen < rejected else "no_truth"


def informative_pairs(db: Db, truth: Truth) -> dict[str, int]:
    """The project's sampled pairs (attention checks aside), by whether the grader separates them."""
    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from db.engine import session_scope
    from db.models import Item, Project, Prompt, Response
    from feedback.decisions import attention_items

    ra, rb = aliased(Response), aliased(Response)
    with session_scope(db.engine, read_only=True) as s:
        rows = s.execute(select(Prompt.messages, ra.text, rb.text).select_from(Item)
                         .join(Prompt, Prompt.id == Item.prompt_id)
                         .join(ra, ra.id == Item.response_a_id).join(rb, rb.id == Item.response_b_id)
                         .join(Project, Project.id == Item.project_id)
                         .where(Project.name == PROJECT, Item.id.not_in(attention_items()))).all()
    counts = Counter(truth.verdict({"prompt": m, "chosen": [{"content": a}], "rejected": [{"content": b}]})
                     != "no_truth" for m, a, b in rows)
    return {"pairs": len(rows), "informative": counts[True], "no_truth": counts[False]}


def freeze_arm(db: Db, arm: str, snapshot: dict[str, Any], truth: Truth) -> dict[str, Any]:
    """The arm's snapshot (training/snapshot.py) and its DPO rows, each graded against the truth."""
    from db.engine import session_scope
    from training.snapshot import SnapshotFilter, create_snapshot, rows_for_stage

    db.use()
    with session_scope(db.engine) as s:
        snap = create_snapshot(session=s, filters=SnapshotFilter(project=PROJECT, **snapshot), actor=CLI)
        rows = rows_for_stage(session=s, snapshot=snap, stage="dpo")
        estimates = (snap.filters.get("estimates") or {}).get("pairwise", {}).get("annotators")
        snapshot_id = snap.id
    verdicts = Counter(truth.verdict(r) for r in rows)
    decided = verdicts["right"] + verdicts["wrong"]
    keys = {json.dumps([r["prompt"], r["chosen"], r["rejected"]], sort_keys=True) for r in rows}
    return {"arm": arm, "keys": keys, "snapshot_id": snapshot_id, "rows": len(rows), "right": verdicts["right"],
            "wrong": verdicts["wrong"], "no_truth": verdicts["no_truth"],
            "label_accuracy": verdicts["right"] / decided if decided else None,
            "annotator_reliability": estimates}


def train_arm(db: Db, arm: str, snapshot: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One DPO 'train' job from v0 on the arm's snapshot (start_round finds the one freeze_arm made)."""
    from db.engine import session_scope
    from feedback import jobs
    from training.rounds import RoundConfig, start_round

    db.use()
    config = RoundConfig(stage="dpo", stage_config=stage_config(json.loads(args.stage_config)),
                         snapshot={"project": PROJECT, **snapshot}, parent="v0", evaluate=False)
    with session_scope(db.engine) as s:
        job_id = start_round(session=s, config=config, actor=CLI).id
    t0 = time.perf_counter()
    done = jobs.run_job(engine=db.engine, job_id=job_id)
    if done.status != "succeeded":
        raise SystemExit(f"{arm}: train job {job_id} {done.status}: {done.error}")
    # The trainer's own runtime is in the job's metrics log (as bench/loop.py reads it).
    trainer_s = next((m["train_runtime"] for m in reversed(done.metrics or []) if "train_runtime" in m), None)
    return {"policy": done.result["policy_version"], "train_job": job_id, "snapshot_id": done.config["snapshot_id"],
            "train_s": time.perf_counter() - t0, "trainer_s": trainer_s}


# --- part: labels ----------------------------------------------------------------------------------


def run_labels(args: argparse.Namespace, workdir: Path, data: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    from sqlalchemy import func, select

    from db.engine import session_scope
    from db.models import Label

    t_part = time.perf_counter()
    say(f"\n## Part labels ({load_line()})")
    base, sampled = make_base(workdir / "base.sqlite3", data["arith.jsonl"], args)
    say(f"  sampled {sampled['prompts']} train prompts x {args.samples} from v0: {sampled['responses']} responses, "
        f"{sampled['items']} pairs ({sampled['prompts_without_item']} prompts without a pair) "
        f"[{sampled['seconds']:.0f} s]")
    plain = base.copy_to(workdir / "plain.sqlite3")  # clean, majority, ds
    gated = base.copy_to(workdir / "gated.sqlite3")  # ds+pausing
    truth = Truth(plain)
    pairs = informative_pairs(plain, truth)
    say(f"  pairs: {pairs['pairs']}, of which the grader separates {pairs['informative']} "
        f"({pairs['no_truth']} score equal: no truth)")

    graded = grade(plain)
    say(f"  grader labels: {graded['pairs']} pairs, {graded['ties']} ties")
    sim_plain = simulate(plain, args, with_gold=False)
    say(f"  pool, no gold: {sim_plain['summary']}; skipped {sim_plain['skipped']} [{sim_plain['seconds']:.0f} s]")
    sim_gated = simulate(gated, args, with_gold=True)
    gold = sim_gated["gold"]
    say(f"  pool, gold on ({gold['checks']} checks, rate {args.gold_rate}, min accuracy {args.gold_min_accuracy} "
        f"after {args.gold_min_answers}, paused after {2 * args.gold_min_answers}): {sim_gated['summary']} "
        f"[{sim_gated['seconds']:.0f} s]")
    say("  standings: " + ", ".join(f"{st['username']} {st['status']} {st['gold_correct']}/{st['gold_answers']}"
                                    for st in gold["standings"]))
    with session_scope(gated.engine, read_only=True) as s:
        non_gold = s.scalar(select(func.count()).select_from(Label).where(Label.source == "human"))
    sim_gated["item_labels"] = non_gold - gold["gold_labels"]

    human = {"sources": ["human"], "min_confidence": args.min_confidence}
    plans = [("clean", plain, {"sources": ["grader"], "rule": "majority"}),
             ("majority", plain, {**human, "rule": "majority"}),
             ("ds", plain, {**human, "rule": "reliability"}),
             ("ds+pausing", gated, {**human, "rule": "reliability"})]
    arms = []
    for arm, db, snapshot in plans:
        out = freeze_arm(db, arm, snapshot, truth)
        say(f"  [{arm}] snapshot {out['snapshot_id']}: {out['rows']} rows, {out['right']} right / {out['wrong']} "
            f"wrong / {out['no_truth']} without truth: label accuracy {fmt(out['label_accuracy'])}")
        if out["annotator_reliability"]:
            say("    Dawid-Skene reliability: " + ", ".join(
                f"{k.removeprefix('sim-')} {v:.2f}" for k, v in sorted(out["annotator_reliability"].items())))
        arms.append(out)
    for out in arms:  # how many of the rows the clean arm trains on, in the same direction
        out["shared_with_clean"] = len(out["keys"] & arms[0]["keys"])
    for out in arms:
        del out["keys"]

    base_m = None
    if not args.labels_only:
        t0 = time.perf_counter()
        heldout = {id(db): HeldOut(db.engine, "grader", LOOP_TASKS["grader"]["eval_max_new_tokens"], None,
                                   args.seed, skip=GATE_PROMPTS) for db in (plain, gated)}
        base_m = heldout[id(plain)].measure("v0")
        say(f"  base v0 on {base_m['n']} held-out val prompts: accuracy {base_m['accuracy']:.3f} "
            f"[{time.perf_counter() - t0:.0f} s]")
        for out, (arm, db, snapshot) in zip(arms, plans, strict=True):
            trained = train_arm(db, arm, snapshot, args)
            assert trained["snapshot_id"] == out["snapshot_id"], "the round froze another snapshot"
            # The same val prompts in both copies; each copy names its own policies (v1, ...).
            m = heldout[id(db)].measure(trained["policy"])
            out.update(trained, accuracy=m["accuracy"], gain_pts=(m["accuracy"] - base_m["accuracy"]) * 100,
                       mean_tokens=m["mean_tokens"], measure_s=m["gen_s"],
                       minutes=(time.perf_counter() - t_part) / 60)
            say(f"  [{arm}] {out['policy']}: held-out accuracy {m['accuracy']:.3f} ({out['gain_pts']:+.1f} pts; "
                f"train job {out['train_s']:.0f} s, measured in {m['gen_s']:.0f} s; {out['minutes']:.1f} min into "
                f"the part; {load_line()})")
    for engine in (plain.engine, gated.engine, base.engine):
        engine.dispose()
    clean_gain = arms[0].get("gain_pts")
    for out in arms:
        out["share_of_clean"] = out["gain_pts"] / clean_gain if clean_gain and clean_gain > 0 else None
    result = {"part": "labels", "pool": args.pool, "overlap": args.overlap, "sampled": sampled, "pairs": pairs,
              "graded": graded, "simulated": sim_plain, "simulated_gold": sim_gated,
              "base": {k: base_m[k] for k in ("accuracy", "n", "mean_tokens")} if base_m else None,
              "stage_config": stage_config(json.loads(args.stage_config)), "arms": arms,
              "minutes": (time.perf_counter() - t_part) / 60, "workdir": str(workdir)}
    say(render_labels(result))
    return result


def render_labels(result: dict[str, Any]) -> str:
    base = result["base"]
    headers = ["arm", "labels used", "pairs kept", "right / wrong / no truth", "label accuracy",
               "rows as clean's"]
    if base:
        headers += ["held-out accuracy", "gain vs base", "share of clean gain", "train job s"]
    body = [["base (v0)", "-", "-", "-", "-", "-"]
            + ([f"{base['accuracy']:.3f}", "+0.0 pts", "-", "-"] if base else [])]
    gold = result["simulated_gold"]
    labels_used = {"clean": f"{result['graded']['pairs']} (grader)",
                   "majority": str(result["simulated"]["labels"]), "ds": str(result["simulated"]["labels"]),
                   "ds+pausing": f"{gold['item_labels']} + {gold['gold']['gold_labels']} gold"}
    for a in result["arms"]:
        row = [a["arm"], labels_used[a["arm"]], a["rows"], f"{a['right']} / {a['wrong']} / {a['no_truth']}",
               fmt(a["label_accuracy"]), a["shared_with_clean"]]
        if base:
            row += [f"{a['accuracy']:.3f}", f"{a['gain_pts']:+.1f} pts",
                    "-" if a["share_of_clean"] is None else f"{a['share_of_clean']:.0%}", f"{a['train_s']:.0f}"]
        body.append(row)
    lines = [table(headers, body)]
    pairs = result["pairs"]
    lines.append(f"\n{pairs['pairs']} sampled pairs, {pairs['informative']} of them separated by the grader "
                 f"(the rest score equal: no truth).")
    if base:
        by = {a["arm"]: a for a in result["arms"]}
        clean = by["clean"]["gain_pts"]
        if clean <= 0:
            lines.append(f"The clean arm gained {clean:+.1f} points: nothing to recover, the goal cannot be judged.")
        else:
            for arm in ("ds", "ds+pausing"):
                a = by[arm]
                met = a["share_of_clean"] >= 0.9 and a["gain_pts"] > by["majority"]["gain_pts"]
                lines.append(f"Goal for {arm} (>= 90% of the clean gain and more than majority's "
                             f"{by['majority']['gain_pts']:+.1f} pts): {a['share_of_clean']:.0%} "
                             f"({a['gain_pts']:+.1f} of {clean:+.1f} pts) -> {'met' if met else 'NOT met'}.")
        lines.append(f"(One held-out prompt is {100 / base['n']:.1f} points.)")
    lines.append(f"Part wall time: {result['minutes']:.1f} min.")
    return "\n".join(lines)


# Parts: name -> runner(args, workdir, data). (Label efficiency is bench/label_efficiency.py.)
PARTS = {"labels": run_labels}


# --- entry point -----------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=tuple(PARTS), default="labels")
    p.add_argument("--prompts", type=int, default=64, help="train prompts sampled from the base policy")
    p.add_argument("--samples", type=int, default=8,
                   help="samples per prompt (disjoint pairs of distinct answers: up to samples/2 pairs a prompt)")
    p.add_argument("--pool", default=DEFAULT_POOL, help="the simulated pool (judges/simulated.py)")
    p.add_argument("--overlap", type=int, default=5, help="labels per pair (distinct annotators)")
    p.add_argument("--gold-checks", type=int, default=40, help="attention checks made for the ds+pausing arm")
    p.add_argument("--gold-rate", type=float, default=0.2, help="share of claims that are a gold item")
    p.add_argument("--gold-min-accuracy", type=float, default=0.7)
    p.add_argument("--gold-min-answers", type=int, default=4,
                   help="gold answers before a warning (a pause after twice as many)")
    p.add_argument("--min-confidence", type=float, default=0.6,
                   help="rule reliability: leave out pairs with a lower Dawid-Skene posterior")
    p.add_argument("--labels-only", action="store_true", help="label accuracy only: no training, no held-out runs")
    p.add_argument("--stage-config", default="{}", help="JSON overrides of the DPO stage config (bench/loop.py's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="databases and adapters (default: a temp dir)")
    p.add_argument("--json-out", type=Path, default=None, help="write all results as JSON here")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = make_parser().parse_args(argv)
    return run_benchmark(title="Label-quality benchmark (issue 11)", args=args, prefix="bench-quality-", argv=argv,
                         body=lambda workdir: PARTS[args.part](args, workdir, write_data()))


if __name__ == "__main__":
    main()
