"""Peak memory (issue 14, part 5): the app serving 20 annotator sessions, a sampling job and a
DPO round on the real SmolLM2-135M-Instruct, each in its own process as the product runs it.

(a) app:      `streamlit run app.py` (testkit.local_servers.running_app) on a seeded SQLite file;
              20 Playwright Chromium contexts (separate sessions) sign in as 20 annotators, wait
              for the Compare page, then each labels one pair and waits for the next. Only the
              Streamlit server process is measured (Chromium is the browser's memory, not ours).
(b) sampling: a 'sample' job with the default SamplingConfig (16 prompts, n=2, 128 new tokens)
              in a worker (`python -m feedback jobs work ID`, the command every launcher runs).
(c) DPO:      a DPO round (bench/training.py's seed: 120 labelled pairs; stage defaults except
              max_steps, default gate: 16 val prompts, the local judge) in a worker.

Two figures per process: psutil samples of the RSS of it and its children every 50 ms (the
tree's sum), and the kernel's own peak of the process (ru_maxrss from wait4 for the workers,
VmHWM from /proc for the server, read just before it is stopped).

    .venv/bin/python bench/memory.py [--only app,sampling,dpo --sessions 20 --steps 20]
"""
from __future__ import annotations

import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
# Not the script's own folder (bench/training.py would shadow the `training` package), but the repo root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse
import contextlib
import os
import re
import subprocess
import threading
import time
from typing import Any

from bench.machine import load_line, run_benchmark
from feedback.actors import Actor

BENCH = Actor.process("bench")
MIB = 1024 * 1024
PASSWORD = "bench-annotator-pw"
TIMEOUT_MS = 90_000  # 20 sessions on 2 shared cores: a rerun can take a while


# --- measuring ---------------------------------------------------------------------------------


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of the process, RSS of it and all its descendants), in bytes; (0, 0) once it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        own = root.memory_info().rss
        total = own
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += child.memory_info().rss
        return own, total
    except psutil.NoSuchProcess:
        return 0, 0


class PeakSampler:
    """Samples tree_rss(pid) every `interval_s` in a thread, keeping the peaks."""

    def __init__(self, pid: int, interval_s: float = 0.05):
        self.pid, self.interval_s = pid, interval_s
        self.peak_own = self.peak_tree = self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> tuple[int, int]:
        own, tree = tree_rss(self.pid)
        self.peak_own, self.peak_tree = max(self.peak_own, own), max(self.peak_tree, tree)
        self.samples += 1
        return own, tree

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def vm_hwm(pid: int) -> int | None:
    """The kernel's peak RSS of a live process (VmHWM), in bytes."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def run_worker(*, job_id: int, kind: str, config: dict[str, Any], database_url: str, log_path: Path) -> dict[str, Any]:
    """The worker command for one job, as a child of this process (so wait4 reports its peak)."""
    from feedback.jobs import child_env
    from feedback.launchers import worker_argv
    from feedback.settings import PROJECT_ROOT

    env = {**child_env(kind, config), "DATABASE_URL": database_url}
    t0 = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(worker_argv(job_id), cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    with PeakSampler(proc.pid) as sampler:
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return {"peak_tree": sampler.peak_tree, "peak_own": sampler.peak_own, "kernel_peak": usage.ru_maxrss * 1024,
            "kernel_source": "ru_maxrss (wait4)", "seconds": time.perf_counter() - t0, "exit": proc.returncode,
            "samples": sampler.samples}


def job_status(engine, job_id: int) -> tuple[str, str | None]:
    from db.engine import session_scope
    from db.models import Job

    with session_scope(engine, read_only=True) as s:
        job = s.get(Job, job_id)
        return job.status, job.error


def fresh_database(workdir: Path, name: str):
    from db.engine import make_engine
    from db.migrate import upgrade

    url = f"sqlite:///{workdir / f'{name}.sqlite3'}"
    upgrade(url)
    return url, make_engine(url)


# --- (b) sampling and (c) DPO ------------------------------------------------------------------


def measure_sampling(workdir: Path) -> dict[str, Any]:
    from bench.sampling import PROMPTS
    from db.engine import session_scope
    from db.models import Prompt
    from feedback import jobs
    from feedback.policies import ensure_base_policy
    from feedback.prompts import canonical_messages, content_hash
    from feedback.sampling import SamplingConfig

    url, engine = fresh_database(workdir, "sampling")
    config = SamplingConfig()  # the product's defaults
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=BENCH)
        for text in PROMPTS:
            messages = canonical_messages(text, None)
            s.add(Prompt(text=text, messages=messages, content_hash=content_hash(messages), split="train",
                         source="bench-memory"))
        job_id = jobs.create_job(session=s, kind="sample", config=vars(config), actor=BENCH).id
    out = run_worker(job_id=job_id, kind="sample", config=vars(config), database_url=url,
                     log_path=workdir / f"job-{job_id}.log")
    out["status"], out["error"] = job_status(engine, job_id)
    out["what"] = (f"sampling job: {config.limit} prompts x n={config.n_per_prompt}, "
                   f"{config.max_new_tokens} new tokens (SamplingConfig defaults)")
    engine.dispose()
    return out


def measure_dpo(workdir: Path, *, steps: int, pairs: int) -> dict[str, Any]:
    from bench.training import round_config, seed_labelled_pairs
    from db.engine import session_scope
    from training.rounds import start_round

    url, engine = fresh_database(workdir, "dpo")
    seed_labelled_pairs(engine, pairs=pairs)
    config = round_config(steps=steps)
    with session_scope(engine) as s:
        job = start_round(session=s, config=config, actor=BENCH)
    out = run_worker(job_id=job.id, kind="train", config=job.config, database_url=url,
                     log_path=workdir / f"job-{job.id}.log")
    out["status"], out["error"] = job_status(engine, job.id)
    out["what"] = (f"DPO round: {pairs} pairs, max_steps {steps}, batch 4, max_length 384, LoRA r 8; "
                   "gate: 16 val prompts, local judge")
    engine.dispose()
    return out


# --- (a) the app -------------------------------------------------------------------------------


def seed_app(url: str, *, sessions: int) -> list[str]:
    """`sessions` annotators (real passwords) and three pairs per annotator; refills off, so no
    sampling worker (and no model) is started by the app. Returns the usernames."""
    import random

    from bench.training import answer, question
    from db.engine import make_engine, session_scope
    from db.models import Item, Prompt, Response
    from feedback.actors import CLI
    from feedback.policies import ensure_base_policy
    from feedback.projects import default_project
    from feedback.prompts import canonical_messages, content_hash
    from feedback.users import create_user
    from testkit.factories import set_queue

    rng = random.Random(0)
    engine = make_engine(url)
    names = [f"annotator{i:02d}" for i in range(sessions)]
    try:
        with session_scope(engine) as s:
            v0 = ensure_base_policy(session=s, actor=CLI)
            for name in names:
                create_user(session=s, username=name, role="annotator", password=PASSWORD, actor=CLI)
            set_queue(s, kind="pair", refill_below=0)
            project_id = default_project(session=s).id
            for k in range(3 * sessions):
                messages = canonical_messages(question(k), None)
                prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                                split="train", source="bench-memory")
                s.add(prompt)
                s.flush()
                a, b = (Response(prompt_id=prompt.id, policy_version_id=v0.id, text=answer(rng, k, n), params={})
                        for n in (rng.randint(2, 4), rng.randint(6, 12)))
                s.add_all([a, b])
                s.flush()
                s.add(Item(kind="pair", project_id=project_id, prompt_id=prompt.id, response_a_id=a.id,
                           response_b_id=b.id))
    finally:
        engine.dispose()
    return names


def server_pid() -> int:
    """The `streamlit run app.py` child running_app started."""
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if "streamlit" in " ".join(child.cmdline()):
                return child.pid
    raise RuntimeError("no streamlit child process found")


def sign_in(page, base: str, username: str) -> None:
    from playwright.sync_api import expect

    page.goto(base)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Compare responses")).to_be_visible()
    expect(page.get_by_test_id("stSidebar").get_by_text(username, exact=True)).to_be_visible()


def label_one(page) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name=re.compile(r"^A is better")).click()
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(r"^You: "))
           ).to_contain_text("1 in all")


def measure_app(workdir: Path, *, sessions: int) -> dict[str, Any]:
    from playwright.sync_api import expect

    from testkit.browser import chromium
    from testkit.local_servers import running_app

    url, engine = fresh_database(workdir, "app")
    engine.dispose()
    names = seed_app(url, sessions=sessions)
    expect.set_options(timeout=TIMEOUT_MS)
    marks: dict[str, int] = {}
    t0 = time.perf_counter()
    with running_app(url, workdir / "streamlit.log") as base:
        pid = server_pid()
        with PeakSampler(pid) as sampler:
            time.sleep(2)
            marks["started, no session"] = sampler.sample()[0]
            with chromium() as browser:
                contexts = []
                for name in names:
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = context.new_page()
                    page.set_default_timeout(TIMEOUT_MS)
                    sign_in(page, base, name)
                    contexts.append((context, page))
                marks[f"{sessions} sessions signed in, on Compare"] = sampler.sample()[0]
                for _, page in contexts:
                    label_one(page)
                marks[f"{sessions} sessions, each labelled one pair"] = sampler.sample()[0]
                time.sleep(3)
                marks["3 s later, sessions open"] = sampler.sample()[0]
                hwm = vm_hwm(pid)
                for context, _ in contexts:
                    context.close()
    return {"peak_tree": sampler.peak_tree, "peak_own": sampler.peak_own, "kernel_peak": hwm,
            "kernel_source": "VmHWM (/proc)", "seconds": time.perf_counter() - t0, "marks": marks,
            "samples": sampler.samples, "status": "succeeded", "error": None,
            "what": f"app (streamlit server only): {sessions} signed-in annotator sessions on Compare, one label each"}


# --- report ------------------------------------------------------------------------------------


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def render(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| process | peak RSS, kernel (MiB) | peak RSS, sampled: process / with children (MiB) | wall s "
             "| status |", "|---|---:|---:|---:|---|"]
    for r in results.values():
        lines.append(f"| {r['what']} | {mib(r['kernel_peak'])} ({r['kernel_source']}) | {mib(r['peak_own'])} / "
                     f"{mib(r['peak_tree'])} | {r['seconds']:.0f} | {r['status']} |")
    app = results.get("app")
    if app:
        lines.append("\nStreamlit server RSS along the way: "
                     + "; ".join(f"{k}: {mib(v)} MiB" for k, v in app["marks"].items()))
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="app,sampling,dpo", help="comma-separated: app, sampling, dpo")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--steps", type=int, default=20, help="DPO steps (stage default: 30)")
    p.add_argument("--pairs", type=int, default=120)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json-out", type=Path, default=None)
    return p


def body(args, workdir: Path) -> dict[str, Any]:
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    results: dict[str, dict[str, Any]] = {}
    for which in wanted:
        print(f"\n{which}: starting ({load_line()})", flush=True)
        if which == "app":
            results[which] = measure_app(workdir, sessions=args.sessions)
        elif which == "sampling":
            results[which] = measure_sampling(workdir)
        elif which == "dpo":
            results[which] = measure_dpo(workdir, steps=args.steps, pairs=args.pairs)
        else:
            raise SystemExit(f"unknown part {which!r}")
        r = results[which]
        print(f"{which}: {r['status']} in {r['seconds']:.0f} s; peak RSS {mib(r['kernel_peak'])} MiB "
              f"({r['kernel_source']}), sampled {mib(r['peak_own'])} / {mib(r['peak_tree'])} MiB ({load_line()})"
              + (f"\n  error: {r['error']}" if r.get("error") else ""), flush=True)
    print("\n" + render(results), flush=True)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = make_parser().parse_args(argv)
    return run_benchmark(title="Peak memory (issue 14)", args=args, prefix="bench-memory-",
                         body=lambda workdir: body(args, workdir), argv=argv)


if __name__ == "__main__":
    main()
