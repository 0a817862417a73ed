"""Label efficiency (issue 11, part 7): reward-model pairwise accuracy after N labels chosen by
uncertainty (feedback/priority.py, a small reward-model ensemble) against N labels chosen at random.

On the arithmetic task of bench/loop.py (bench/data/arith.jsonl, `numeric` grader as the truth):

1. Pool: the base policy's samples of train prompts, as pairs in a pairwise project (bench/quality.py's
   `make_base`, overlap 1). Pairs the grader scores equal have no truth: with `--no-truth drop` (the
   default) they are moved out of the project before anything is labelled, so neither arm can spend a
   label on them (with `keep` they stay, and labels on them are mostly ties that train nothing).
   Held-out set: the base policy's samples of the val prompts, in a project nobody labels; its pairs
   the grader separates are the evaluation (reward of the grader-preferred answer higher).
2. Seed round: the queue in random order (`reorder_queue`), a simulated pool of noisy grader
   annotators (judges/simulated.py, default `grader:3:noise=0.1`) labels N0 pairs through the real
   queue; an ensemble of M reward models ('train' jobs, stage 'reward', full fine-tune as the stage's
   default; members differ by seed: score-head initialisation and data order) trains on those labels.
3. Two arms from the same seed state (a copy of the SQLite file each): `random` reorders at random,
   `uncertainty` reorders by the ensemble's scores of the open pairs (`ensemble_scores` ->
   `reorder_queue(model_scores=...)`); the pool labels N1 more, in the queue's order. One reward model
   per arm and budget, trained on N0 + N1 labels with the same config and seed as ensemble member 0
   (the "seed" row is that member: the same config on N0 alone). With several budgets an arm labels up
   to the first, trains, labels on to the next (the ensemble scores the pool once, after the seed round:
   batch acquisition, no re-scoring between budgets).

Reported per arm and budget: held-out pairwise accuracy, the rows trained on (the reward stage holds
back 20% of a snapshot's rows for its own eval, training/rounds.py), the labels' accuracy against the
grader, and the share of the pool's ensemble uncertainty (sum of u over the open pool after the seed
round, u as feedback/priority.py computes it from the members' P(a better)) that the arm's new labels
covered. Repeats (`--repeats`) rerun steps 2-3 on the same pool with seeds seed, seed+1, ... (from
seed + `--repeat-offset`).

    .venv/bin/python bench/label_efficiency.py --workdir /tmp/efficiency
    .venv/bin/python bench/label_efficiency.py --pool-prompts 128 --seed-labels 32 --budgets 32 64 --members 3

Meant to join bench/quality.py as `--part efficiency`: `add_arguments(parser)` adds this part's
options (none clash with that script's) and `run_efficiency(args, workdir, data)` is the part's runner.
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
import random
import shutil
import time
from datetime import UTC, datetime
from statistics import mean
from typing import Any

from bench.loop import TASKS as LOOP_TASKS
from bench.loop import fmt, say, table, write_data
from bench.machine import load_line, run_benchmark
from bench.quality import PROJECT, Db, Truth, make_base
from feedback.actors import CLI

EVAL_PROJECT = "quality-eval"  # the held-out pairs (val prompts): sampled, never labelled
ASIDE_PROJECT = "quality-no-truth"  # --no-truth drop: the pool's pairs the grader scores equal
ARMS = ("random", "uncertainty")
DEFAULT_ANNOTATORS = "grader:3:noise=0.1"
# The reward stage's CPU-friendly settings for this task: short answers (max_length 128 covers
# prompt + answer), whole epochs so more labels mean more steps, no checkpoints (a full model's
# optimizer state is ~1 GB per save).
# One epoch: a reward training step of the full 135M model costs 7-30 s on these 2 shared cores.
REWARD_CONFIG: dict[str, Any] = {"max_steps": -1, "num_train_epochs": 1.0, "learning_rate": 5e-5,
                                 "per_device_train_batch_size": 4, "max_length": 128, "save_steps": 100_000}


# --- the pool and the held-out pairs ---------------------------------------------------------------


def set_order(db: Db, order: str, *, seed: int, model_scores: dict[int, list[float]] | None = None) -> dict:
    """The pool project's queue order, and its open items' keys for it."""
    from db.engine import session_scope
    from feedback.priority import reorder_queue
    from feedback.projects import get_project
    from feedback.queue import update_queue_settings

    with session_scope(db.engine) as s:
        project = get_project(session=s, name=PROJECT)
        update_queue_settings(session=s, actor=CLI, project=project, overlap=project.overlap,
                              lease_seconds=project.lease_seconds, prompt_tags=list(project.prompt_tags),
                              policy_version_ids=list(project.policy_version_ids), refill_below=0,
                              refill_prompts=max(1, project.refill_prompts), queue_order=order)
        return reorder_queue(session=s, actor=CLI, project=project, rng=random.Random(seed),
                             model_scores=model_scores)


def pair_truths(db: Db, project: str, truth: Truth) -> list[tuple[int, list[dict], str, str, str]]:
    """(item id, messages, text a, text b, verdict for a) of a project's pairs: verdict 'right' when
    the grader prefers a, 'wrong' when b, 'no_truth' when it scores them equal."""
    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from db.engine import session_scope
    from db.models import Item, Project, Prompt, Response

    ra, rb = aliased(Response), aliased(Response)
    with session_scope(db.engine, read_only=True) as s:
        rows = s.execute(select(Item.id, Prompt.messages, ra.text, rb.text).select_from(Item)
                         .join(Prompt, Prompt.id == Item.prompt_id)
                         .join(ra, ra.id == Item.response_a_id).join(rb, rb.id == Item.response_b_id)
                         .join(Project, Project.id == Item.project_id)
                         .where(Project.name == project, Item.kind == "pair").order_by(Item.id)).all()
    return [(i, m, a, b, truth.verdict({"prompt": m, "chosen": [{"content": a}], "rejected": [{"content": b}]}))
            for i, m, a, b in rows]


POOL_OPTIONS = ("pool_prompts", "pool_samples", "eval_prompts", "eval_samples", "no_truth", "seed")


def build_pool(path: Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The base database: train-prompt pairs in the pool project, val-prompt pairs in the eval project.
    With --reuse-pool, a pool this workdir already holds for the same options is used as it is (its
    database is only ever copied, never labelled)."""
    options = {k: getattr(args, k) for k in POOL_OPTIONS}
    stamp = path.with_suffix(".json")
    if args.reuse_pool and path.exists() and stamp.exists():
        saved = json.loads(stamp.read_text())
        if saved["options"] == options:
            base = Db(path)
            info = {**saved["info"], "reused": True}
            say(f"  pool and held-out pairs reused from {path} (made {saved['made']}; sampling took "
                f"{info['sampled']['seconds']:.0f} + {info['held_out_sampled']['seconds']:.0f} s then)")
            return {"base": base, "truth": Truth(base), "info": info,
                    "evaluation": [p for p in pair_truths(base, EVAL_PROJECT, Truth(base)) if p[4] != "no_truth"]}
    from sqlalchemy import update

    from db.engine import session_scope
    from db.models import Item
    from feedback.projects import create_project, get_project
    from feedback.sampling import SamplingConfig, run_sampling

    stamp.unlink(missing_ok=True)
    pool_args = argparse.Namespace(overlap=1, prompts=args.pool_prompts, samples=args.pool_samples, seed=args.seed)
    base, sampled = make_base(path, rows, pool_args)
    say(f"  pool: {sampled['prompts']} train prompts x {args.pool_samples} from v0: {sampled['items']} pairs "
        f"[{sampled['seconds']:.0f} s]")
    loop = LOOP_TASKS["grader"]["loop"]
    with session_scope(base.engine) as s:
        for name in (EVAL_PROJECT, ASIDE_PROJECT):
            create_project(session=s, actor=CLI, name=name, task_type="pairwise",
                           guidelines="Held out by the label-efficiency benchmark: not for labelling.")
    t0 = time.perf_counter()
    held = run_sampling(engine=base.engine, config=SamplingConfig(
        project=EVAL_PROJECT, split="val", limit=args.eval_prompts, n_per_prompt=args.eval_samples,
        temperature=loop["temperature"], top_p=1.0, max_new_tokens=loop["max_new_tokens"], seed=args.seed + 7))
    held["seconds"] = time.perf_counter() - t0
    say(f"  held-out: {held['prompts']} val prompts x {args.eval_samples}: {held['items']} pairs "
        f"[{held['seconds']:.0f} s]")
    truth = Truth(base)
    pool = pair_truths(base, PROJECT, truth)
    no_truth = [item_id for item_id, *_, v in pool if v == "no_truth"]
    if args.no_truth == "drop" and no_truth:
        # Bench only: the pool's pairs without a truth go to a project nobody labels, before any
        # labelling or ordering, so both arms choose among pairs the grader separates.
        with session_scope(base.engine) as s:
            aside = get_project(session=s, name=ASIDE_PROJECT)
            s.execute(update(Item).where(Item.id.in_(no_truth)).values(project_id=aside.id))
    evaluation = [p for p in pair_truths(base, EVAL_PROJECT, truth) if p[4] != "no_truth"]
    shorter = mean((len(a) < len(b)) == (v == "right") if len(a) != len(b) else 0.5 for _, _, a, b, v in evaluation)
    info = {"sampled": sampled, "held_out_sampled": held, "pool_pairs": len(pool), "pool_no_truth": len(no_truth),
            "pool_open": len(pool) - (len(no_truth) if args.no_truth == "drop" else 0),
            "eval_pairs": len(evaluation), "eval_no_truth": held["items"] - len(evaluation),
            "eval_shorter_wins": shorter}
    say(f"  pool pairs: {len(pool)}, the grader separates {len(pool) - len(no_truth)} "
        f"({len(no_truth)} no truth: {'set aside' if args.no_truth == 'drop' else 'kept'}); held-out pairs with a "
        f"truth: {len(evaluation)} of {held['items']} (shorter answer wins on {shorter:.3f} of them)")
    base.engine.dispose()
    stamp.write_text(json.dumps({"options": options, "made": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
                                 "info": info}, default=str))
    return {"base": base, "truth": truth, "evaluation": evaluation, "info": info}


# --- labelling, training, measuring ----------------------------------------------------------------


def label(db: Db, n: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from judges.simulated import run_simulation

    db.use()
    return run_simulation(engine=db.engine, project=PROJECT, pool=args.annotators, labels=n, actor=CLI, seed=seed)


def labelled_items(db: Db) -> dict[int, str]:
    """item id -> its (single, overlap 1) human label's value, for the pool project."""
    from sqlalchemy import select

    from db.engine import session_scope
    from db.models import Item, Label, Project
    from feedback.reliability import value_of

    with session_scope(db.engine, read_only=True) as s:
        labels = s.scalars(select(Label).join(Item, Item.id == Label.item_id)
                           .join(Project, Project.id == Item.project_id)
                           .where(Project.name == PROJECT, Label.source == "human").order_by(Label.id))
        return {label.item_id: value_of(label) for label in labels}


def train_reward(db: Db, args: argparse.Namespace, seed: int, tag: str) -> dict[str, Any]:
    """One 'train' job, stage 'reward', on every human label of the pool project (rule majority: one
    label per pair here, so a tie or both-bad trains nothing)."""
    from db.engine import session_scope
    from feedback import jobs
    from training.rounds import RoundConfig, start_round
    from training.uncertainty import resolve_reward_models

    db.use()
    stage_config = {**REWARD_CONFIG, **json.loads(args.reward_config), "seed": seed}
    config = RoundConfig(stage="reward", stage_config=stage_config, parent="v0", evaluate=False,
                         snapshot={"project": PROJECT, "sources": ["human"], "rule": "majority"})
    with session_scope(db.engine) as s:
        job_id = start_round(session=s, config=config, actor=CLI).id
    t0 = time.perf_counter()
    done = jobs.run_job(engine=db.engine, job_id=job_id)
    if done.status != "succeeded":
        raise SystemExit(f"{tag}: reward job {job_id} {done.status}: {done.error}")
    with session_scope(db.engine, read_only=True) as s:
        (model_dir,) = resolve_reward_models(session=s, specs=[str(job_id)])
    metrics = done.result.get("metrics") or {}
    out = {"job": job_id, "model_dir": model_dir, "train_s": time.perf_counter() - t0,
           "trainer_s": next((float(m["train_runtime"]) for m in reversed(done.metrics or []) if "train_runtime" in m),
                             None), "steps": metrics.get("global_step"),
           "stage_eval_pairs": metrics.get("eval_pairs"), "stage_eval_accuracy": metrics.get("eval_accuracy")}
    say(f"    [{tag}] reward job {job_id}: {out['steps']} steps in {out['train_s']:.0f} s (trainer "
        f"{fmt(out['trainer_s'], '.0f')} s); stage's own eval {fmt(out['stage_eval_accuracy'])} on "
        f"{out['stage_eval_pairs']} pairs  ({load_line()})")
    return out


def accuracy(model_dirs: list[str], evaluation: list[tuple]) -> tuple[float, list[float]]:
    """(accuracy of the members' mean P(a better), each member's accuracy) on the held-out pairs:
    a pair counts when the grader-preferred answer gets the higher reward (P(a better) > 1/2 for a)."""
    from training.uncertainty import score_pairs

    scores = score_pairs([(i, m, a, b) for i, m, a, b, _ in evaluation], model_dirs)
    right = {i: v == "right" for i, *_, v in evaluation}

    def acc(p_of) -> float:
        return mean(1.0 if p_of(i) == 0.5 else float((p_of(i) > 0.5) == right[i]) for i in right) if right else 0.0

    each = [acc(lambda i, k=k: scores[i][k]) for k in range(len(model_dirs))]
    return acc(lambda i: mean(scores[i])), each


def snapshot_rows(db: Db) -> int:
    """Pairs the newest snapshot trains on (the stage holds back a share of these for its own eval)."""
    from sqlalchemy import select

    from db.engine import session_scope
    from db.models import Snapshot
    from training.snapshot import rows_for_stage

    with session_scope(db.engine, read_only=True) as s:
        snap = s.scalars(select(Snapshot).order_by(Snapshot.id.desc()).limit(1)).one()
        return len(rows_for_stage(session=s, snapshot=snap, stage="reward"))


def label_accuracy(values: dict[int, str], verdicts: dict[int, str]) -> dict[str, Any]:
    """Labels on pairs with a truth: right, wrong, and neither (tie / both bad)."""
    right = sum(values[i] == ("a" if verdicts[i] == "right" else "b") for i in values if verdicts[i] != "no_truth")
    wrong = sum(values[i] == ("b" if verdicts[i] == "right" else "a") for i in values if verdicts[i] != "no_truth")
    return {"labels": len(values), "right": right, "wrong": wrong,
            "neither": sum(verdicts[i] != "no_truth" for i in values) - right - wrong,
            "no_truth": sum(verdicts[i] == "no_truth" for i in values)}


def drop_model(path: str, args: argparse.Namespace) -> None:
    """The reward job's whole round directory: its model (~0.5 GB) and the checkpoint the trainer
    writes at the last step whatever save_steps says (model + optimizer state, ~1.6 GB)."""
    if not args.keep_models:
        shutil.rmtree(Path(path).parent, ignore_errors=True)


# --- one repeat ------------------------------------------------------------------------------------


def run_repeat(r: int, pool: dict[str, Any], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from db.engine import session_scope
    from feedback.priority import ensemble_uncertainty
    from feedback.projects import get_project
    from training.uncertainty import ensemble_scores

    seed = args.seed + args.repeat_offset + r
    t_rep = time.perf_counter()
    say(f"\n### Repeat {r + 1} (seed {seed}; {load_line()})")
    evaluation = pool["evaluation"]
    verdicts = {i: v for i, *_, v in pair_truths(pool["base"], PROJECT, pool["truth"])}
    start = pool["base"].copy_to(workdir / f"s{seed}-seed.sqlite3")
    ordered = set_order(start, "random", seed=seed)
    seeded = label(start, args.seed_labels, args, seed)
    seed_values = labelled_items(start)
    say(f"  seed round: {ordered['open']} open pairs in random order; {seeded['summary']}")

    members = [train_reward(start, args, seed * 1000 + k, f"member {k}") for k in range(args.members)]
    seed_rows = snapshot_rows(start)
    dirs = [m["model_dir"] for m in members]
    t0 = time.perf_counter()
    ens_acc, member_acc = accuracy(dirs, evaluation)
    say(f"  held-out accuracy: members {', '.join(f'{a:.3f}' for a in member_acc)}, ensemble mean "
        f"{ens_acc:.3f} [{time.perf_counter() - t0:.0f} s]")
    t0 = time.perf_counter()
    with session_scope(start.engine, read_only=True) as s:
        scores = ensemble_scores(session=s, project=get_project(session=s, name=PROJECT), model_dirs=dirs)
    u = {i: ensemble_uncertainty(p) for i, p in scores.items()}
    total_u = sum(u.values())
    spread = mean(max(p) - min(p) for p in scores.values()) if scores else 0.0
    # u_model is min(1, H(p) + mutual information): every pair whose members straddle 1/2 sits at the cap,
    # and the queue orders those among themselves by the random jitter alone.
    capped = sum(v >= 1.0 for v in u.values())
    say(f"  ensemble scored {len(scores)} open pool pairs [{time.perf_counter() - t0:.0f} s]: mean u "
        f"{mean(u.values()):.3f}, min {min(u.values()):.3f}, {capped} at the cap u = 1; mean member spread of "
        f"P(a better) {spread:.3f}")
    for d in dirs[1:]:
        drop_model(d, args)  # member 0 stays: it is the seed row's model until the arms are done

    rows_out = [{"arm": "seed", "n1": 0, "labels": len(seed_values), "rows": seed_rows,
                 "accuracy": member_acc[0], **label_accuracy(seed_values, verdicts),
                 "u_share": None, "mean_u": None, "train_s": members[0]["train_s"]}]
    budgets = sorted(set(args.budgets))
    for arm in ARMS:
        db = start.copy_to(workdir / f"s{seed}-{arm}.sqlite3")
        reorder = set_order(db, arm, seed=seed, model_scores=scores if arm == "uncertainty" else None)
        say(f"  [{arm}] reordered {reorder['reordered']} open pairs"
            + (f" ({reorder['model']} with the ensemble's scores)" if arm == "uncertainty" else ""))
        done_labels = 0
        for n1 in budgets:
            sim = label(db, n1 - done_labels, args, seed * 7919 + n1)
            done_labels = n1
            values = labelled_items(db)
            new = {i: v for i, v in values.items() if i not in seed_values}
            model = train_reward(db, args, seed * 1000, f"{arm} N1={n1}")
            acc, _ = accuracy([model["model_dir"]], evaluation)
            picked_u = [u.get(i, 0.0) for i in new]
            row = {"arm": arm, "n1": n1, "labels": len(values), "rows": snapshot_rows(db), "accuracy": acc,
                   **label_accuracy(values, verdicts), "new_labels": len(new),
                   "u_share": sum(picked_u) / total_u if total_u else None,
                   "mean_u": mean(picked_u) if picked_u else None, "train_s": model["train_s"],
                   "sim": sim["summary"]}
            say(f"  [{arm}] N1={n1}: {sim['summary']}; picked mean u {fmt(row['mean_u'])} "
                f"({fmt(row['u_share'], '.1%')} of the pool's u); held-out accuracy {acc:.3f}")
            rows_out.append(row)
            drop_model(model["model_dir"], args)
        db.engine.dispose()
    drop_model(dirs[0], args)
    start.engine.dispose()
    return {"seed": seed, "rows": rows_out, "members": members, "member_accuracy": member_acc,
            "ensemble_accuracy": ens_acc, "pool_u_mean": mean(u.values()), "pool_u_total": total_u,
            "member_spread": spread, "open_pool": len(scores), "u_capped": capped,
            "pool_scores": {str(i): p for i, p in scores.items()}, "minutes": (time.perf_counter() - t_rep) / 60}


# --- the part --------------------------------------------------------------------------------------


def run_efficiency(args: argparse.Namespace, workdir: Path, data: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    t_part = time.perf_counter()
    say(f"\n## Part efficiency ({load_line()})")
    pool = build_pool(workdir / "pool.sqlite3", data["arith.jsonl"], args)
    if pool["info"]["pool_open"] < args.seed_labels + max(args.budgets):
        say(f"  warning: {pool['info']['pool_open']} pool pairs for {args.seed_labels} + {max(args.budgets)} labels: "
            "the largest budget takes (nearly) the whole pool, and the arms cannot differ there")
    repeats = [run_repeat(r, pool, args, workdir) for r in range(args.repeats)]
    pool["base"].engine.dispose()
    result = {"part": "efficiency", "annotators": args.annotators, "seed_labels": args.seed_labels,
              "budgets": sorted(set(args.budgets)), "members": args.members, "no_truth": args.no_truth,
              "reward_config": {**REWARD_CONFIG, **json.loads(args.reward_config)}, "pool": pool["info"],
              "repeats": repeats, "minutes": (time.perf_counter() - t_part) / 60, "workdir": str(workdir)}
    say("\n" + render(result))
    return result


def render(result: dict[str, Any]) -> str:
    n_eval = result["pool"]["eval_pairs"]
    headers = ["seed", "arm", "N0 + N1", "labels right / wrong / tie", "rows (stage trains on 80%)",
               "picked mean u", "share of pool u", "held-out pairwise acc", "vs random"]
    body = []
    for rep in result["repeats"]:
        random_acc = {row["n1"]: row["accuracy"] for row in rep["rows"] if row["arm"] == "random"}
        for row in rep["rows"]:
            versus = (f"{(row['accuracy'] - random_acc[row['n1']]) * 100:+.1f} pts"
                      if row["arm"] == "uncertainty" else "-")
            body.append([rep["seed"], row["arm"] if row["arm"] != "seed" else "seed model (ensemble member 0)",
                         f"{result['seed_labels']} + {row['n1']}",
                         f"{row['right']} / {row['wrong']} / {row['neither']}",
                         row["rows"], fmt(row["mean_u"]), fmt(row["u_share"], ".1%"), f"{row['accuracy']:.3f}",
                         versus])
    lines = [table(headers, body)]
    for rep in result["repeats"]:
        lines.append(f"Seed {rep['seed']}: ensemble of {len(rep['member_accuracy'])} members on N0 "
                     f"(held-out {', '.join(f'{a:.3f}' for a in rep['member_accuracy'])}; mean-P "
                     f"{rep['ensemble_accuracy']:.3f}); open pool {rep['open_pool']} pairs, mean u "
                     f"{rep['pool_u_mean']:.3f} ({rep.get('u_capped', '?')} at the cap u = 1), mean member spread "
                     f"of P(a better) {rep['member_spread']:.3f}; "
                     f"{rep['minutes']:.1f} min.")
    diffs = [(row["n1"], row["accuracy"] - next(x["accuracy"] for x in rep["rows"]
                                                 if x["arm"] == "random" and x["n1"] == row["n1"]))
             for rep in result["repeats"] for row in rep["rows"] if row["arm"] == "uncertainty"]
    if diffs:
        lines.append("Uncertainty minus random, per seed and budget: "
                     + ", ".join(f"N1={n} {d * 100:+.1f}" for n, d in diffs)
                     + f" pts (mean {mean(d for _, d in diffs) * 100:+.1f}). One held-out pair is "
                     f"{100 / n_eval:.1f} points ({n_eval} pairs; shorter answer wins on "
                     f"{result['pool']['eval_shorter_wins']:.3f}).")
    lines.append(f"Part wall time: {result['minutes']:.1f} min.")
    return "\n".join(lines)


# --- entry point -----------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """This part's options (bench/quality.py has --seed, --threads, --workdir, --json-out already)."""
    p.add_argument("--pool-prompts", type=int, default=64, help="train prompts sampled into the pool")
    p.add_argument("--pool-samples", type=int, default=8, help="samples per pool prompt (up to samples/2 pairs)")
    p.add_argument("--eval-prompts", type=int, default=100, help="val prompts sampled for the held-out pairs")
    p.add_argument("--eval-samples", type=int, default=4, help="samples per val prompt")
    p.add_argument("--no-truth", choices=("drop", "keep"), default="drop",
                   help="pool pairs the grader scores equal: set aside before labelling, or keep in the pool")
    p.add_argument("--annotators", default=DEFAULT_ANNOTATORS, help="the simulated pool (judges/simulated.py)")
    p.add_argument("--seed-labels", type=int, default=16, help="N0: labels chosen at random for the seed ensemble")
    p.add_argument("--budgets", type=int, nargs="+", default=[16, 32], help="N1: labels after the seed, per arm")
    p.add_argument("--members", type=int, default=2, help="reward models in the seed ensemble")
    p.add_argument("--reward-config", default="{}", help="JSON overrides of the reward stage config used here")
    p.add_argument("--repeats", type=int, default=2, help="seed rounds and arms again, seeds seed, seed+1, ...")
    p.add_argument("--repeat-offset", type=int, default=0,
                   help="repeat r uses seed + offset + r (the pool is sampled with --seed): more seeds on one pool")
    p.add_argument("--reuse-pool", action="store_true",
                   help="reuse the sampled pool and held-out pairs a previous run left in --workdir (same options)")
    p.add_argument("--keep-models", action="store_true", help="keep the reward-model directories (~0.5 GB each)")
    return p


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="databases and models (default: a temp dir)")
    p.add_argument("--json-out", type=Path, default=None, help="write all results as JSON here")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = make_parser().parse_args(argv)
    return run_benchmark(title="Label-efficiency benchmark (issue 11)", args=args, prefix="bench-efficiency-",
                         argv=argv, body=lambda workdir: run_efficiency(args, workdir, write_data()))


if __name__ == "__main__":
    main()
