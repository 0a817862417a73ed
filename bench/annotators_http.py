"""Many annotators over HTTP (issue 14, part 3): 100 annotators driven by locust, in several
processes, each its own user with its own API token, against the API served by uvicorn.

Each annotator claims an item, then loops: (think), submit a pairwise label and get the next item
(bench/locust_annotators.py), through the API's annotation endpoints (api/routes.py): by default
in one request (`POST /v1/assignments/{id}/label` with next=true), with --step separate as a submit
then a claim (`POST /v1/projects/{project}/claim`). The latency is from the start of the submit
to the next item in hand, from the client's side. The server is the API application itself
(api.server.create_app), served by uvicorn as `streamlit run app.py` serves it, without the pages.

Runs, each on a fresh database (SQLite file; Postgres: TEST_POSTGRES_URL or a throw-away cluster,
as bench/annotation_queue.py starts one):
  human    think time 2 s (locust `constant(2)`)
  nothink  no think time
each with one server process (what `make run` serves: one uvicorn process) and with more
(--server-workers).

Measured per run: p50/p95/p99 of submit -> next item claimed, throughput, the server's and the
clients' CPU; afterwards, from the database: lost (acknowledged submits not in labels) and
duplicates (labels beyond one per item and annotator, one per submission id, `overlap` per item).
The no-think throughput is set against two bounds: `server processes / L_http`, with L_http one
client's sequential step over HTTP (the run's way; the table also shows the other way) on an idle
server (a process serves one request's Python at a time), and `1 / L_db`, the same step in-process
without HTTP (SQLite takes one write at a time, so this bounds SQLite whatever the number of
processes).
The ramp (annotators start spread over one think time, so they do not submit in step) is left out
of the latency figures.

    .venv/bin/python bench/annotators_http.py [--annotators 100 --duration 30 --processes 4]
"""
from __future__ import annotations

import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
# A script's own directory comes first on the path, where a module in bench/ could shadow the
# standard library: take bench/ off it, put the repo root on.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import datetime as dt  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import psutil  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench.annotation_queue import machine, postgres_server, postgres_version  # noqa: E402
from db.engine import make_engine, session_scope  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import Label, User  # noqa: E402
from feedback import queue  # noqa: E402
from feedback.actors import Actor  # noqa: E402
from feedback.tokens import create_token  # noqa: E402
from testkit.factories import make_items, make_users, set_queue  # noqa: E402
from testkit.local_servers import free_port, new_database  # noqa: E402

ROOT = _BENCH_DIR.parent
LOCUSTFILE = _BENCH_DIR / "locust_annotators.py"
GOAL_P95_MS = 50.0  # at human pace
PROJECT = "default"  # where testkit's make_items puts pairs
# The API application without the /api mount the app gives it, so its paths start at /v1.
CLAIM_PATH = f"/v1/projects/{PROJECT}/claim"
STEPS = ("combined", "separate")


def label_path(assignment_id: int) -> str:
    return f"/v1/assignments/{assignment_id}/label"
SETUP = Actor.process("bench")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--annotators", type=int, default=100, help="locust users, each its own user and token")
    p.add_argument("--processes", type=int, default=4, help="locust worker processes the annotators share")
    p.add_argument("--duration", type=float, default=30, help="seconds of each locust run")
    p.add_argument("--think-s", type=float, default=2.0, help="think time of the human-pace mode")
    p.add_argument("--modes", default="human,nothink", help="comma-separated: human, nothink")
    p.add_argument("--server-workers", default="1,2",
                   help="uvicorn worker processes to run each mode with, comma-separated (1: what `make run` serves)")
    p.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    p.add_argument("--overlap", type=int, default=2, help="distinct annotators per item")
    p.add_argument("--step", choices=STEPS, default="combined",
                   help="combined: submit with next=true, one request; separate: submit, then claim")
    p.add_argument("--solo-steps", type=int, default=100,
                   help="sequential submit + claim steps of the one-client measurements (HTTP and in-process)")
    p.add_argument("--nothink-rate-cap", type=float, default=250,
                   help="submissions/s the no-think runs are given items for (the queue must not run dry)")
    return p


@dataclass
class Run:
    database: str
    mode: str
    workers: int
    think_s: float
    annotators: int
    processes: int
    latencies_ms: list[float] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)  # submission ids the server acknowledged
    submissions: int = 0
    throughput: float = 0.0
    step: str = "combined"
    solo_http_ms: float = float("nan")  # one client's step over HTTP, done the run's way
    solo_other_ms: float = float("nan")  # ... and done the other way
    server_cores: float = float("nan")  # CPU seconds of the server processes per wall second
    client_cores: float = float("nan")
    lost: int = 0
    duplicates: int = 0
    dry: int = 0
    failures: int = 0
    failure_examples: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        think = f"think {self.think_s:g} s" if self.think_s else "no think"
        return f"{self.database} {think}, {self.workers} proc"

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in ms."""
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else float("nan")

    @property
    def http_bound(self) -> float:
        return self.workers / (self.solo_http_ms / 1000) if self.solo_http_ms else float("nan")

    @property
    def clean(self) -> bool:
        """Nothing lost, duplicated or failed, in a run that labelled something."""
        return self.submissions > 0 and self.lost == 0 and self.duplicates == 0 and self.failures == 0


# --- databases and seeding ----------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, server_url: str | None) -> Iterator[str]:
    """A migrated, empty database of `kind`; its URL."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="annotators-http-") as tmp:
            url = f"sqlite:///{tmp}/bench.sqlite3"
            upgrade(url)
            yield url
    else:
        url = new_database(server_url, prefix="annhttp_")
        upgrade(url)
        yield url


def seed(url: str, *, annotators: int, items: int, overlap: int) -> list[str]:
    """The items and `annotators` users (plus one for the solo measurement, the last), each with an
    API token; the tokens."""
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            set_queue(s, overlap=overlap, lease_seconds=600)
            make_items(s, pairs=items)
            user_ids = make_users(s, annotators + 1)
            names = [s.get(User, uid).username for uid in user_ids]
            return [create_token(session=s, actor=SETUP, username=name, name="bench")[1] for name in names]
    finally:
        engine.dispose()


def items_needed(args: argparse.Namespace, think_s: float) -> int:
    per_annotator = args.duration / think_s + 2 if think_s else args.nothink_rate_cap * args.duration / args.annotators
    submissions = args.annotators * per_annotator + 2 * (args.solo_steps + 3)
    return math.ceil(submissions / args.overlap) + 2 * args.annotators  # slack: nobody gets an item twice


# --- the server and the clients ----------------------------------------------------------------


@contextlib.contextmanager
def api_server(url: str, workers: int, log: Path, timeout_s: float = 60) -> Iterator[tuple[str, psutil.Process]]:
    """uvicorn serving the API application (api.server.create_app) over `url`; its base URL and
    process."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.server:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/openapi.json")
        return conn.getresponse().status == 200
    except OSError:
        return False


class SoloClient:
    """One annotator on one keep-alive connection, as a browser-less client would be."""

    def __init__(self, base: str, token: str):
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict) -> object:
        self.conn.request("POST", path, body=json.dumps(body), headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
        return json.loads(data)

    def step_ms(self, steps: int, step: str) -> float:
        """Median ms of `steps` sequential steps done the `step` way (after two warm-up steps)."""
        current = self.post(CLAIM_PATH, {})["item"]
        times = []
        for _ in range(steps + 2):
            began = time.perf_counter()
            answer = {"submission_id": uuid.uuid4().hex, "preferred": "left", "next": step == "combined"}
            submitted = self.post(label_path(current["assignment_id"]), answer)
            current = submitted["next"] if step == "combined" else self.post(CLAIM_PATH, {})["item"]
            times.append((time.perf_counter() - began) * 1000)
        return sorted(times[2:])[len(times[2:]) // 2]


def in_process_step_ms(kind: str, server_url: str | None, steps: int, step: str = "combined") -> float:
    """Median ms of one annotator's step called in-process (no HTTP, no auth): combined, the
    endpoint's one transaction (queue.submit_then_claim); separate, a submit and a claim."""
    with fresh_database(kind, server_url) as url:
        engine = make_engine(url)
        try:
            with session_scope(engine) as s:
                set_queue(s, overlap=1, lease_seconds=600)
                make_items(s, pairs=steps + 4)
                uid = make_users(s, 1)[0]

            def claim():
                with session_scope(engine) as s:
                    return queue.claim_next(session=s, user=s.get(User, uid), kind="pair")

            current, times = claim(), []
            for _ in range(steps + 2):
                began = time.perf_counter()
                with session_scope(engine) as s:
                    answer = {"session": s, "user": s.get(User, uid), "assignment_id": current.assignment_id,
                              "submission_id": uuid.uuid4().hex, "preferred": "left"}
                    if step == "combined":
                        current = queue.submit_then_claim(**answer).next
                    else:
                        queue.submit_answer(**answer)
                if step != "combined":
                    current = claim()
                times.append((time.perf_counter() - began) * 1000)
            return sorted(times[2:])[len(times[2:]) // 2]
        finally:
            engine.dispose()


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of a process and its children (uvicorn's workers, locust's forks) so far."""
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def run_locust(run: Run, base: str, tokens: list[str], server: psutil.Process, args: argparse.Namespace,
               workdir: Path) -> None:
    out = workdir / "out"
    out.mkdir()
    (workdir / "tokens.txt").write_text("\n".join(tokens) + "\n")
    # Spread the starts over one think time, so the annotators do not all submit at the same moment.
    spawn_rate = run.annotators / run.think_s if run.think_s else run.annotators
    env = {**os.environ, "ANNOTATORS_TOKENS": str(workdir / "tokens.txt"), "ANNOTATORS_OUT": str(out),
           "ANNOTATORS_THINK_S": str(run.think_s), "ANNOTATORS_STEP": run.step, "ANNOTATORS_PROJECT": PROJECT}
    master_port = free_port()
    server_before, began = cpu_seconds(server), time.monotonic()
    client = psutil.Popen(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", base,
         "--users", str(run.annotators), "--spawn-rate", f"{spawn_rate:g}", "--run-time", f"{args.duration:g}s",
         "--processes", str(args.processes), "--stop-timeout", "5", "--csv", str(workdir / "locust"),
         # Locust's master and its worker processes meet on a port, 5557 unless told: a free one, so
         # another locust on this machine cannot take this run's workers (or leave it none).
         "--master-bind-port", str(master_port), "--master-port", str(master_port),
         "--only-summary", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=open(workdir / "locust.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    client_cpu = 0.0
    while client.poll() is None:  # sample the forks' CPU while they live (they are gone at the end)
        with contextlib.suppress(psutil.NoSuchProcess):
            client_cpu = max(client_cpu, cpu_seconds(client))
        time.sleep(1)
    wall = time.monotonic() - began
    run.server_cores = (cpu_seconds(server) - server_before) / wall
    run.client_cores = client_cpu / wall

    ramp_end = time.time() - wall + 1 + run.annotators / spawn_rate  # ~1 s for locust's own start
    acked, times = [], []
    for path in out.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("dry"):
                run.dry += 1
            elif "error" in record:
                run.failure_examples.append(record["error"])
            else:
                acked.append(record["submission_id"])
                times.append(record["at"])
                if record["at"] >= ramp_end:
                    run.latencies_ms.append(record["ms"])
    run.submissions = len(acked)
    if len(times) > 1:
        run.throughput = sum(t >= ramp_end for t in times) / (max(times) - ramp_end)
    run.failures = _locust_failures(workdir / "locust_stats.csv")
    run.acked = acked


def _locust_failures(stats_csv: Path) -> int:
    if not stats_csv.exists():
        return -1  # locust wrote nothing: counted as a failure
    with open(stats_csv) as f:
        return sum(int(row["Failure Count"]) for row in csv.DictReader(f) if row["Name"] != "Aggregated")


def check_database(run: Run, url: str, overlap: int) -> None:
    engine = make_engine(url)
    try:
        with session_scope(engine, read_only=True) as s:
            rows = s.execute(select(Label.item_id, Label.user_id, Label.submission_id)).all()
            per_item = s.execute(select(func.count()).select_from(Label).group_by(Label.item_id)).scalars().all()
    finally:
        engine.dispose()
    stored = {r.submission_id for r in rows}
    run.lost = len(set(run.acked) - stored)
    run.duplicates = ((len(rows) - len({(r.item_id, r.user_id) for r in rows})) + (len(rows) - len(stored))
                      + sum(max(0, n - overlap) for n in per_item))


def one_run(database: str, server_url: str | None, mode: str, workers: int, args: argparse.Namespace) -> Run:
    think = args.think_s if mode == "human" else 0.0
    run = Run(database=database, mode=mode, workers=workers, think_s=think, annotators=args.annotators,
              processes=args.processes, step=args.step)
    with fresh_database(database, server_url) as url, tempfile.TemporaryDirectory(prefix="locust-") as tmp:
        workdir = Path(tmp)
        tokens = seed(url, annotators=args.annotators, items=items_needed(args, think), overlap=args.overlap)
        with api_server(url, workers, workdir / "server.log") as (base, server):
            solo = SoloClient(base, tokens[-1])
            other = STEPS[1 - STEPS.index(run.step)]
            run.solo_http_ms = solo.step_ms(args.solo_steps, run.step)
            run.solo_other_ms = solo.step_ms(args.solo_steps, other)
            run_locust(run, base, tokens[:-1], server, args, workdir)
        check_database(run, url, args.overlap)
        if run.failures and not run.failure_examples:
            run.failure_examples.append((workdir / "locust.log").read_text()[-500:])
    print(f"# {run.name}: {run.submissions} submissions, p95 {run.percentile(95):.1f} ms, "
          f"{run.throughput:.1f}/s, lost {run.lost}, duplicates {run.duplicates}, failures {run.failures}", flush=True)
    return run


# --- report -------------------------------------------------------------------------------------


def table(runs: list[Run], in_process_ms: dict[str, float]) -> str:
    def ratio(r: Run) -> str:
        return f"{r.throughput / r.http_bound:.2f}" if r.http_bound else "-"

    rows = [
        ("annotators / locust processes", lambda r: f"{r.annotators} / {r.processes}"),
        ("server processes (uvicorn)", lambda r: f"{r.workers}"),
        ("submissions", lambda r: f"{r.submissions}"),
        ("submissions/s", lambda r: f"{r.throughput:.1f}"),
        ("p50 submit+next claim (ms)", lambda r: f"{r.percentile(50):.1f}"),
        ("p95 submit+next claim (ms)", lambda r: f"{r.percentile(95):.1f}"),
        ("p99 submit+next claim (ms)", lambda r: f"{r.percentile(99):.1f}"),
        ("max (ms)", lambda r: f"{max(r.latencies_ms, default=float('nan')):.1f}"),
        ("one client over HTTP, L_http (ms)", lambda r: f"{r.solo_http_ms:.1f}"),
        ("... the step done the other way (ms)", lambda r: f"{r.solo_other_ms:.1f}"),
        ("bound processes / L_http (/s)", lambda r: f"{r.http_bound:.1f}"),
        ("submissions/s / HTTP bound", ratio),
        ("in-process step, L_db (ms); bound 1/L_db (/s)",
         lambda r: f"{in_process_ms[r.database]:.1f}; {1000 / in_process_ms[r.database]:.0f}"),
        ("server CPU (cores busy)", lambda r: f"{r.server_cores:.2f}"),
        ("locust CPU (cores busy)", lambda r: f"{r.client_cores:.2f}"),
        ("lost", lambda r: f"{r.lost}"),
        ("duplicates", lambda r: f"{r.duplicates}"),
        ("failed requests / ran dry", lambda r: f"{r.failures} / {r.dry}"),
    ]
    lines = ["| | " + " | ".join(r.name for r in runs) + " |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {label} | " + " | ".join(fmt(r) for r in runs) + " |" for label, fmt in rows]
    return "\n".join(lines)


def summary_lines(runs: list[Run]) -> list[str]:
    lines = []
    for r in runs:
        if r.mode == "human":
            met = r.percentile(95) < GOAL_P95_MS and r.clean
            lines.append(f"p95 human pace = {r.percentile(95):.1f} ms ({r.database}, {r.annotators} annotators, "
                         f"think {r.think_s:g} s, {r.workers} server process{'es' * (r.workers > 1)}; "
                         f"goal < {GOAL_P95_MS:.0f} ms, 0 lost, 0 duplicated: "
                         f"{'MET' if met else 'NOT MET'})")
    for r in runs:
        if r.mode == "nothink":
            lines.append(f"no-think throughput / HTTP bound = {r.throughput / r.http_bound:.2f} "
                         f"({r.database}, {r.workers} server process{'es' * (r.workers > 1)}: "
                         f"{r.throughput:.1f}/s against {r.http_bound:.1f}/s)")
    nothing_lost = all(r.lost == r.duplicates == 0 for r in runs)
    lines.append(f"0 lost and 0 duplicated in every run: {'yes' if nothing_lost else 'NO'}")
    if empty := [r.name for r in runs if r.submissions == 0]:
        lines.append(f"NO submission acknowledged in: {'; '.join(empty)}")
    return lines


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    server_workers = [int(w) for w in args.server_workers.split(",") if w.strip()]
    print(f"# annotators over HTTP: {args.annotators} annotators in {args.processes} locust processes, "
          f"{args.duration:g} s a run, overlap {args.overlap}, think {args.think_s:g} s (human pace) or none, "
          f"step {args.step} ({'submit with next=true' if args.step == 'combined' else 'submit, then claim'})")
    print(f"# {dt.date.today()}  {machine()}  SQLite {sqlite3.sqlite_version}  load average {load_average()}",
          flush=True)
    runs: list[Run] = []
    in_process_ms: dict[str, float] = {}
    with postgres_server() if "postgres" in databases else contextlib.nullcontext() as server_url:
        for database in databases:
            if database == "postgres":
                if server_url is None:
                    print("# Postgres skipped: no binaries under /usr/lib/postgresql and TEST_POSTGRES_URL is not set")
                    continue
                print(f"# Postgres {postgres_version(server_url)}")
            in_process_ms[database] = in_process_step_ms(database, server_url, args.solo_steps, args.step)
            for mode, workers in [(m, w) for m in modes for w in server_workers]:
                runs.append(one_run(database, server_url, mode, workers, args))
    for r in runs:
        for example in r.failure_examples[:3]:
            print(f"# {r.name} failure: {example}")
    print(table(runs, in_process_ms))
    for line in summary_lines(runs):
        print(line)
    print(f"# load average after: {load_average()}")
    return 0 if runs and all(r.clean for r in runs) else 1


if __name__ == "__main__":
    # Stopped with SIGTERM, unwind as for Ctrl-C: the servers and the Postgres cluster are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise SystemExit(main())
