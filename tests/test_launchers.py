"""Job launchers: the registry, a real local worker process, and a real single-node Ray cluster
(loopback only) running the same sampling job through the Ray job-submission API."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import make_engine, session_scope
from db.models import Job, Prompt, Response
from feedback import jobs, launchers
from feedback.actors import CLI
from feedback.errors import UserError
from feedback.policies import ensure_base_policy
from feedback.prompts import canonical_messages, content_hash
from feedback.sampling import SamplingConfig
from feedback.settings import PROJECT_ROOT
from testkit.local_servers import free_port

SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-secret-for-test", "JUDGE_API_KEY": "judge-secret-for-test"}


def _sampling_job(engine, model_dir: Path) -> Job:
    """v0 on the tiny model, two prompts, and a queued sampling job (2 x 2 samples of 4 tokens)."""
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI).model_path = str(model_dir)
        for text in ("Say hello.", "Name a colour."):
            messages = canonical_messages(text, None)
            s.add(Prompt(text=text, messages=messages, split="train", tags=[], source="test",
                         content_hash=content_hash(messages)))
        return jobs.create_job(session=s, kind="sample", config=asdict(SamplingConfig(limit=2, max_new_tokens=4)),
                               actor=CLI)


def _wait_for_row(engine, job_id: int, timeout: float) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(engine, read_only=True) as s:
            job = s.get(Job, job_id)
        if job.status not in jobs.ACTIVE or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def _response_count(engine, job_id: int) -> int:
    with session_scope(engine, read_only=True) as s:
        return s.scalar(select(func.count()).select_from(Response).where(Response.job_id == job_id))


# --- registry and selection (no processes) ---------------------------------------------------

def test_launcher_is_chosen_by_env_at_call_time(monkeypatch):
    monkeypatch.delenv("JOB_LAUNCHER", raising=False)
    assert isinstance(launchers.get_launcher(), launchers.LocalProcessLauncher)
    monkeypatch.setenv("JOB_LAUNCHER", "ray")
    assert isinstance(launchers.get_launcher(), launchers.RayJobsLauncher)
    monkeypatch.setenv("JOB_LAUNCHER", "carrier-pigeon")
    with pytest.raises(UserError, match="carrier-pigeon"):
        launchers.get_launcher()
    assert all(isinstance(launchers.LAUNCHERS.get(name)(), launchers.Launcher) for name in launchers.LAUNCHERS.names())


def test_start_detached_routes_through_a_registered_launcher(sqlite_url, monkeypatch, tmp_path, registered):
    """A fake launcher registered through the real registry sees what any backend would get."""
    calls = []

    class Recording:
        name = "recording"

        def launch(self, **kw):
            calls.append(kw)
            return "handle-7"

    registered(launchers.LAUNCHERS, "recording", Recording)
    monkeypatch.setenv("JOB_LAUNCHER", "recording")
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    engine = make_engine(sqlite_url)
    try:
        with session_scope(engine) as s:
            sample = jobs.create_job(session=s, kind="sample", config={}, actor=CLI)
            judge = jobs.create_job(session=s, kind="judge", config={}, actor=CLI)
        assert jobs.start_detached(job=sample, database_url=sqlite_url, log_dir=tmp_path) == "handle-7"
        jobs.start_detached(job=judge, database_url=sqlite_url, log_dir=tmp_path)
    finally:
        engine.dispose()
    sample_call, judge_call = calls
    assert sample_call["job_id"] == sample.id and sample_call["kind"] == "sample"
    assert sample_call["log_path"] == tmp_path / f"job-{sample.id}.log"
    assert sample_call["env"]["DATABASE_URL"] == sample_call["database_url"] == sqlite_url
    assert not set(SECRETS) & set(sample_call["env"])  # a sampling worker never sees the judge keys
    assert judge_call["env"]["ANTHROPIC_API_KEY"] == SECRETS["ANTHROPIC_API_KEY"]


def test_ray_launcher_env_and_entrypoint(monkeypatch):
    env = {"PATH": "/usr/bin", "HF_HOME": "/models", "RAY_ADDRESS": "http://x:8265", "CUDA_VISIBLE_DEVICES": "0"}
    assert launchers.ray_env_vars(env, "sqlite:////db") == {"PATH": "/usr/bin", "HF_HOME": "/models",
                                                           "DATABASE_URL": "sqlite:////db"}
    monkeypatch.delenv("RAY_JOB_PYTHON", raising=False)
    entry = launchers.RayJobsLauncher().entrypoint(12)
    # our venv's interpreter, not whatever `python` a Ray node's PATH finds; the local worker's cwd
    assert entry == f"cd {PROJECT_ROOT} && exec {sys.executable} -m feedback jobs work 12"
    monkeypatch.setenv("RAY_JOB_PYTHON", "/opt/venv/bin/python")
    assert launchers.RayJobsLauncher().entrypoint(3).endswith("exec /opt/venv/bin/python -m feedback jobs work 3")


def test_unreachable_ray_is_a_user_error_and_the_job_stays_queued(sqlite_url, monkeypatch, tmp_path):
    pytest.importorskip("ray.job_submission")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("JOB_LAUNCHER", "ray")
    monkeypatch.setenv("RAY_ADDRESS", f"http://127.0.0.1:{closed}")
    engine = make_engine(sqlite_url)
    try:
        with session_scope(engine) as s:
            job = jobs.create_job(session=s, kind="sample", config={}, actor=CLI)
        with pytest.raises(UserError, match="still queued"):
            jobs.start_detached(job=job, database_url=sqlite_url, log_dir=tmp_path)
        with session_scope(engine, read_only=True) as s:
            assert s.get(Job, job.id).status == "queued"
    finally:
        engine.dispose()


# --- the local launcher runs a real job -------------------------------------------------------

def test_local_launcher_runs_a_real_job(engine, db_url, tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("JOB_LAUNCHER", raising=False)
    job = _sampling_job(engine, tiny_model_dir)
    pid = jobs.start_detached(job=job, database_url=db_url, log_dir=tmp_path)
    assert isinstance(pid, int)  # callers print it as a pid
    row = _wait_for_row(engine, job.id, timeout=120)
    assert row.status == "succeeded", (tmp_path / f"job-{job.id}.log").read_text()
    assert row.pid == pid  # the process we started is the worker that claimed the row
    assert _response_count(engine, job.id) == 4


# --- a real Ray head on loopback --------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (ppid, session id, start time, state) for every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        table[int(entry.name)] = (int(fields[1]), int(fields[3]), fields[19], fields[0])
    return table


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cluster_processes(root: int, marker: str) -> set[tuple[int, str]]:
    """Live processes of the cluster that `ray start --block` (pid `root`) runs: its session, its
    descendants (Ray puts job drivers in sessions of their own) and anything naming our temp dir.
    Nothing else on the machine: unlike `ray stop`, this never touches another Ray cluster."""
    table = _proc_table()
    found = {pid for pid, (_, sid, _, _) in table.items() if sid == root or pid == root}
    found |= {pid for pid in table if marker in _cmdline(pid)}
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    found.discard(os.getpid())
    return {(pid, table[pid][2]) for pid in found if table[pid][3] != "Z"}


def _stop_cluster(proc: subprocess.Popen, marker: str) -> set[tuple[int, str]]:
    """What `ray stop --force` does (SIGKILL), scoped to this cluster. Returns what survived."""
    seen: set[tuple[int, str]] = set()
    for _ in range(40):
        table = _proc_table()
        alive = {(pid, start) for pid, start in seen
                 if pid in table and table[pid][2] == start and table[pid][3] != "Z"}
        alive |= _cluster_processes(proc.pid, marker)  # orphans keep their start time: tracked via `seen`
        if not alive:
            break
        seen |= alive
        for pid, _ in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.25)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return _cluster_processes(proc.pid, marker)


@pytest.fixture(scope="module")
def ray_cluster():
    """`ray start --head` on loopback with free ports and its own temp dir; yields the
    job-submission (dashboard) address. Torn down with a scoped SIGKILL, leaving no process."""
    job_submission = pytest.importorskip("ray.job_submission")
    ray_bin = Path(sys.executable).with_name("ray")
    # Short: Ray puts Unix sockets under it (108-byte limit), so not pytest's deep tmp_path.
    temp_dir = tempfile.mkdtemp(prefix="rayt-", dir="/tmp")
    dashboard_port = free_port()
    address = f"http://127.0.0.1:{dashboard_port}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Ray maps 127.0.0.1 to the host's routable IP on Linux (for multi-node clusters) unless it
    # thinks clustering is off: this keeps every node address, and the job driver, on loopback.
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    cmd = [str(ray_bin), "start", "--head", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
           f"--port={free_port()}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dashboard_port}", f"--dashboard-agent-listen-port={free_port()}",
           f"--ray-client-server-port={free_port()}", f"--metrics-export-port={free_port()}",
           "--num-cpus=1", "--object-store-memory=100000000",  # 100 MB of /dev/shm is plenty: no objects
           f"--temp-dir={temp_dir}"]
    log_path = Path(temp_dir) / "ray-start.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                job_submission.JobSubmissionClient(address).list_jobs()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    pytest.fail(f"Ray job API did not answer at {address}:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield address
    finally:
        survivors = _stop_cluster(proc, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not survivors, f"Ray processes left running: {survivors}"


@pytest.mark.slow  # a single-node Ray head: ~15 s with its start-up
def test_ray_launcher_runs_a_real_job(ray_cluster, sqlite_url, tiny_model_dir, monkeypatch, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    monkeypatch.setenv("JOB_LAUNCHER", "ray")
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    engine = make_engine(sqlite_url)
    try:
        job = _sampling_job(engine, tiny_model_dir)
        submission_id = jobs.start_detached(job=job, database_url=sqlite_url, log_dir=tmp_path)
        assert isinstance(submission_id, str) and submission_id.startswith(f"feedback-job-{job.id}-")
        client = JobSubmissionClient(ray_cluster)
        row = _wait_for_row(engine, job.id, timeout=100)
        assert row.status == "succeeded", client.get_job_logs(submission_id)
        deadline = time.monotonic() + 30  # the driver exits just after it writes the final status
        terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
        while (status := client.get_job_status(submission_id)) not in terminal:
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert status == JobStatus.SUCCEEDED, client.get_job_logs(submission_id)
        assert _response_count(engine, job.id) == 4
    finally:
        engine.dispose()
    info = client.get_job_info(submission_id)
    env_vars = info.runtime_env["env_vars"]
    assert not set(SECRETS) & set(env_vars)  # set in os.environ, but a sampling job never gets them
    assert env_vars["DATABASE_URL"] == sqlite_url
    assert not [k for k in env_vars if k.startswith("RAY_")]
    assert "working_dir" not in info.runtime_env  # shared filesystem: nothing uploaded
    assert info.metadata == {"feedback_job_id": str(job.id), "feedback_job_kind": "sample"}
    assert info.driver_agent_http_address.startswith("http://127.0.0.1:")  # loopback only
    assert f"job {job.id} succeeded" in client.get_job_logs(submission_id)  # the worker's output lives in Ray
    assert submission_id in (tmp_path / f"job-{job.id}.log").read_text()  # and our log points there
