"""Annotation queue under concurrent annotators (issue 3): latency, throughput, exactly-once.

N annotator threads share one engine, as the app's sessions do. Each thread claims a pair, then
loops: submit a pairwise label (fresh submission id), claim the next pair. The latency measured is
what an annotator waits for after clicking: from the start of the submit to having the next item
claimed (two write transactions, each its own session_scope, exactly as the pages do it).

Runs against a fresh SQLite file and a fresh Postgres database, both built by the migrations.
Postgres: TEST_POSTGRES_URL (a server URL without a database) if set, else a throw-away cluster
started here as tests/conftest.py does; skipped with a note if no Postgres binaries are found.

Lost and duplicate counts come from the database afterwards: lost = submissions that returned a
label to the client but whose submission id is not in the labels table; duplicates = label rows
beyond one per (item, annotator), beyond one per submission id, or beyond `overlap` per item.

There are `--slack` more items than the claims need (default: annotators + submissions). With
exactly as many slots as claims, a thread left running alone at the end is owed only second slots
of items it already holds (nobody gets an item twice) and runs dry; under SQLite's unfair lock
waits one thread can fall 20+ claims behind, so the slack covers a whole thread's worth.

By default nobody reads: each annotator submits the moment its next item arrives. That is a
closed loop of N clients, so mean latency = N / throughput (Little's law) however fair the
database is; --think-ms adds the time a person spends on an item before clicking.

    .venv/bin/python bench/annotation_queue.py [--annotators 20 --submissions 50 --overlap 2] [--think-ms 0]
"""
from __future__ import annotations

import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
# Python puts a script's own directory first on the path, where a module in bench/ could shadow
# the standard library: take bench/ off it, put the repo root on.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))  # repo root, for `db`, `feedback`, `testkit`

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from sqlalchemy import create_engine, func, select  # noqa: E402

from db.engine import make_engine, session_scope  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import Label, User  # noqa: E402
from feedback import queue  # noqa: E402
from testkit.factories import make_items, make_users, set_queue  # noqa: E402
from testkit.local_servers import PG_BIN_DIRS, new_database, throwaway_cluster  # noqa: E402

GOAL_P95_MS = 50.0  # at 20 annotators, on SQLite


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--annotators", type=int, default=20, help="concurrent annotator threads")
    p.add_argument("--submissions", type=int, default=50, help="labels each annotator submits")
    p.add_argument("--overlap", type=int, default=2, help="distinct annotators per item")
    p.add_argument("--think-ms", type=float, default=0.0,
                   help="reading time before each submit, uniform in 0.5x-1.5x (0: submit at once, a stress test)")
    p.add_argument("--slack", type=int, default=None,
                   help="items beyond what the claims need (default: annotators + submissions)")
    p.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    return p


@dataclass
class Result:
    database: str
    submissions: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    lost: int = 0
    duplicates: int = 0
    ran_dry: int = 0  # claims that found nothing although the thread had submissions left
    errors: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in ms."""
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else float("nan")


# --- databases ----------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_server() -> Iterator[str | None]:
    """A Postgres server URL (no database): TEST_POSTGRES_URL, or a throw-away cluster, or None."""
    if url := os.environ.get("TEST_POSTGRES_URL"):
        yield url
    elif not PG_BIN_DIRS:
        yield None
    else:
        # The same cluster settings as the tests (fsync off: this measures the queue, not the disk).
        with throwaway_cluster(prefix="pgbench-") as url:
            yield url


def postgres_version(server_url: str) -> str:
    import psycopg

    with psycopg.connect(server_url.replace("+psycopg", "") + "/postgres") as conn:
        return conn.execute("SHOW server_version").fetchone()[0].split()[0]


# --- the run ------------------------------------------------------------------------------------


def run(name: str, url: str, engine, args: argparse.Namespace) -> Result:
    slack = args.annotators + args.submissions if args.slack is None else args.slack
    n_items = math.ceil(args.annotators * args.submissions / args.overlap) + slack
    with session_scope(engine) as s:
        set_queue(s, overlap=args.overlap, lease_seconds=600)
        make_items(s, pairs=n_items)
        users = make_users(s, args.annotators)

    result = Result(database=name)
    acknowledged: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(args.annotators + 1)

    def claim(uid: int):
        with session_scope(engine) as s:
            return queue.claim_next(session=s, user=s.get(User, uid), kind="pair")

    def annotator(uid: int) -> None:
        mine, acked, dry = [], [], 0
        rng = random.Random(uid)
        try:
            current = claim(uid)
            start.wait()
            for _ in range(args.submissions):
                if current is None:
                    dry += 1
                    break
                if args.think_ms:
                    time.sleep(rng.uniform(0.5, 1.5) * args.think_ms / 1000)
                submission_id = uuid.uuid4().hex
                began = time.perf_counter()
                with session_scope(engine) as s:
                    queue.submit_pairwise(session=s, user=s.get(User, uid), assignment_id=current.assignment_id,
                                          submission_id=submission_id, preferred="left")
                acked.append(submission_id)
                current = claim(uid)
                mine.append((time.perf_counter() - began) * 1000)
        except threading.BrokenBarrierError:
            return
        except Exception as e:  # noqa: BLE001 - counted and shown, the run goes on
            with lock:
                result.errors.append(f"{type(e).__name__}: {e}"[:300])
            start.abort()
        with lock:
            result.latencies_ms.extend(mine)
            acknowledged.extend(acked)
            result.ran_dry += dry

    with ThreadPoolExecutor(max_workers=args.annotators) as pool:
        for uid in users:
            pool.submit(annotator, uid)
        try:
            start.wait()  # every thread holds its first item: the clock starts now
        except threading.BrokenBarrierError:
            pass
        began = time.perf_counter()
    result.wall_s = time.perf_counter() - began

    with session_scope(engine, read_only=True) as s:
        rows = s.execute(select(Label.item_id, Label.user_id, Label.submission_id)).all()
        per_item = s.execute(select(func.count()).select_from(Label).group_by(Label.item_id)).scalars().all()
    stored = {r.submission_id for r in rows}
    result.submissions = len(acknowledged)
    result.lost = len(set(acknowledged) - stored)
    result.duplicates = ((len(rows) - len({(r.item_id, r.user_id) for r in rows}))
                         + (len(rows) - len(stored))
                         + sum(max(0, n - args.overlap) for n in per_item))
    return result


def sqlite_run(args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp:
        url = f"sqlite:///{tmp}/bench.sqlite3"
        upgrade(url)
        engine = make_engine(url)  # exactly the app's engine: WAL, busy_timeout, BEGIN IMMEDIATE
        try:
            return run("sqlite", url, engine, args)
        finally:
            engine.dispose()


def postgres_run(server_url: str, args: argparse.Namespace) -> Result:
    url = new_database(server_url, prefix="bench_")
    upgrade(url)
    # A connection per annotator thread: make_engine's default pool (5 + 10) would queue them.
    engine = create_engine(url, pool_size=args.annotators + 5, max_overflow=5, pool_pre_ping=True)
    try:
        return run("postgres", url, engine, args)
    finally:
        engine.dispose()


# --- report -------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}, Python {platform.python_version()}"


def table(results: list[Result]) -> str:
    rows = [
        ("submissions", lambda r: f"{r.submissions}"),
        ("wall time (s)", lambda r: f"{r.wall_s:.1f}"),
        ("submissions/s", lambda r: f"{r.submissions / r.wall_s:.1f}" if r.wall_s else "-"),
        ("p50 submit+next claim (ms)", lambda r: f"{r.percentile(50):.1f}"),
        ("p95 submit+next claim (ms)", lambda r: f"{r.percentile(95):.1f}"),
        ("p99 submit+next claim (ms)", lambda r: f"{r.percentile(99):.1f}"),
        ("max (ms)", lambda r: f"{max(r.latencies_ms, default=float('nan')):.1f}"),
        ("lost", lambda r: f"{r.lost}"),
        ("duplicates", lambda r: f"{r.duplicates}"),
        ("ran dry / errors", lambda r: f"{r.ran_dry} / {len(r.errors)}"),
    ]
    lines = ["| | " + " | ".join(r.database for r in results) + " |",
             "|---|" + "---:|" * len(results)]
    lines += [f"| {label} | " + " | ".join(fmt(r) for r in results) + " |" for label, fmt in rows]
    return "\n".join(lines)


def goal_line(results: list[Result], args: argparse.Namespace) -> str:
    sqlite_result = next((r for r in results if r.database == "sqlite"), None)
    if sqlite_result is None:
        return "Goal not checked (no SQLite run)."
    met = (sqlite_result.percentile(95) < GOAL_P95_MS and sqlite_result.lost == 0
           and sqlite_result.duplicates == 0 and not sqlite_result.errors)
    others = all(r.lost == 0 and r.duplicates == 0 and not r.errors for r in results)
    at = "" if args.annotators == 20 else f" (this run: {args.annotators} annotators)"
    at += f" (think time {args.think_ms:g} ms)" if args.think_ms else ""
    return (f"Goal: p95 under {GOAL_P95_MS:.0f} ms at 20 annotators on SQLite, 0 lost, 0 duplicates{at}: "
            f"{'MET' if met else 'NOT MET'} (SQLite p95 {sqlite_result.percentile(95):.1f} ms, "
            f"lost {sqlite_result.lost}, duplicates {sqlite_result.duplicates}); "
            f"0 lost / 0 duplicates on every database: {'yes' if others else 'NO'}.")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    wanted = {d.strip() for d in args.databases.split(",") if d.strip()}
    print(f"# queue bench: {args.annotators} annotators x {args.submissions} submissions, overlap {args.overlap}, "
          f"think time {args.think_ms:g} ms")
    print(f"# {dt.date.today()}  {machine()}  SQLite {sqlite3.sqlite_version}")
    results = []
    if "sqlite" in wanted:
        results.append(sqlite_run(args))
    if "postgres" in wanted:
        with postgres_server() as server:
            if server is None:
                print("# Postgres skipped: no binaries under /usr/lib/postgresql and TEST_POSTGRES_URL is not set")
            else:
                print(f"# Postgres {postgres_version(server)}")
                results.append(postgres_run(server, args))
    for r in results:
        for error in r.errors[:3]:
            print(f"# {r.database} error: {error}")
    print(table(results))
    print(goal_line(results, args))
    return 0 if all(r.lost == 0 and r.duplicates == 0 and not r.errors for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
