"""Where a job's worker runs: a detached local process (default) or a Ray cluster job.

Either way the worker is the same command, `python -m feedback jobs work ID`, and the job's
database row stays the source of truth: the worker claims the row, heartbeats, reports
progress and checks for cancellation exactly as it does locally. A launcher only starts it and
returns a handle (a pid, a Ray submission id) for people to look things up by.

Chosen at call time by the environment:
  JOB_LAUNCHER  "local" (default) or "ray" (or any name a module registered).
  RAY_ADDRESS   the Ray dashboard / job-submission address, default http://127.0.0.1:8265.
  RAY_JOB_PYTHON  the interpreter the Ray job runs, default this process's (`sys.executable`):
                a bare `python` on a Ray node is whatever its PATH finds, usually not our venv.

What the Ray backend needs from the cluster (no working_dir is uploaded):
  - the same code and venv at the same paths, and the same model cache (MODEL_CACHE_DIR,
    POLICIES_DIR): the same machine, or a shared filesystem mounted at the same place;
  - a database its nodes can reach at DATABASE_URL (SQLite only when the job lands on this
    machine; Postgres otherwise).
The environment the job gets is child_env(kind, config): secrets its kind does not use never leave this
process. Secrets a kind does use (a judge's API key) do travel, and Ray keeps runtime_env
env_vars in its job records, readable by anyone who can reach the dashboard: keep the dashboard
on a trusted network (Ray's token authentication off by default).
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from feedback.errors import UserError
from feedback.registry import Registry
from feedback.settings import PROJECT_ROOT, get_settings

DEFAULT_LAUNCHER = "local"
DEFAULT_RAY_ADDRESS = "http://127.0.0.1:8265"
# Never forwarded to a Ray job: the cluster's own variables and ones that only mean something
# on this host (Ray sets CUDA_VISIBLE_DEVICES itself for the GPUs it hands the job).
RAY_ENV_DROP_PREFIXES = ("RAY_",)
RAY_ENV_DROP = frozenset({"CUDA_VISIBLE_DEVICES", "PWD", "OLDPWD", "SHLVL", "_"})


@runtime_checkable
class Launcher(Protocol):
    name: str

    def launch(self, *, job_id: int, kind: str, database_url: str, env: dict[str, str], log_path: Path) -> str:
        """Start `python -m feedback jobs work job_id` somewhere; return a handle (pid, submission id)."""
        ...


# name -> zero-argument factory (usually the class), the classes below by default.
LAUNCHERS: Registry[Callable[[], Launcher]] = Registry("launcher", lazy={
    "local": "feedback.launchers:LocalProcessLauncher",
    "ray": "feedback.launchers:RayJobsLauncher",
})


def get_launcher(name: str | None = None) -> Launcher:
    """The launcher `name`, or the one JOB_LAUNCHER names (read now, so tests can set it)."""
    name = (name or get_settings().job_launcher or DEFAULT_LAUNCHER).strip().lower()
    return LAUNCHERS.get(name)()


def worker_argv(job_id: int, *more: int, python: str | None = None) -> list[str]:
    """The worker command: it runs the queued jobs given, one after another."""
    return [python or sys.executable, "-m", "feedback", "jobs", "work", *map(str, (job_id, *more))]


def start_local_worker(*job_ids: int, env: dict[str, str], log_path: Path) -> int:
    """A detached process on this machine running `job_ids` in turn; its pid."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            worker_argv(*job_ids), cwd=PROJECT_ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed with the Streamlit process or its rerun
        )
    return proc.pid


class LocalProcessLauncher:
    """A worker process on this machine that outlives the caller (page rerun, app restart)."""

    name = "local"

    def launch(self, *, job_id: int, kind: str, database_url: str, env: dict[str, str], log_path: Path) -> str:
        return str(start_local_worker(job_id, env={**env, "DATABASE_URL": database_url}, log_path=log_path))


def ray_env_vars(env: dict[str, str], database_url: str) -> dict[str, str]:
    """What the Ray job's runtime_env gets: the (already secret-filtered) worker env, minus
    host-only and Ray-internal variables, plus DATABASE_URL."""
    kept = {k: v for k, v in env.items()
            if k not in RAY_ENV_DROP and not k.startswith(RAY_ENV_DROP_PREFIXES)}
    kept["DATABASE_URL"] = database_url
    return kept


class RayJobsLauncher:
    """Submit the worker as a Ray job (JobSubmissionClient). Returns the submission id; the
    worker's output is in Ray's job logs (`ray job logs ID --address ...`), not in log_path."""

    name = "ray"

    def __init__(self, address: str | None = None, python: str | None = None):
        self.address = address  # None: RAY_ADDRESS at launch time
        self.python = python  # None: RAY_JOB_PYTHON at launch time, else sys.executable

    def client(self):
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError as exc:  # ray is optional until someone picks this launcher
            raise UserError("JOB_LAUNCHER=ray needs Ray: .venv/bin/pip install -r requirements-ray.txt") from exc
        return JobSubmissionClient(self.resolved_address())

    def resolved_address(self) -> str:
        return self.address or get_settings().ray_address or DEFAULT_RAY_ADDRESS

    def entrypoint(self, job_id: int) -> str:
        # cd: the same working directory a local worker has; the interpreter explicitly, because
        # `python` on a Ray node is whatever its PATH finds (here: the system one, without our deps).
        python = self.python or get_settings().ray_job_python or sys.executable
        return f"cd {shlex.quote(str(PROJECT_ROOT))} && exec {shlex.join(worker_argv(job_id, python=python))}"

    def launch(self, *, job_id: int, kind: str, database_url: str, env: dict[str, str], log_path: Path) -> str:
        address = self.resolved_address()
        try:
            submission_id = self.client().submit_job(
                entrypoint=self.entrypoint(job_id),
                # unique per submission: a resumed job is submitted again under the same job id
                submission_id=f"feedback-job-{job_id}-{uuid.uuid4().hex[:8]}",
                runtime_env={"env_vars": ray_env_vars(env, database_url)},  # no working_dir: shared code
                metadata={"feedback_job_id": str(job_id), "feedback_job_kind": kind},
            )
        except UserError:
            raise
        except Exception as exc:  # unreachable cluster, refused submission: the row stays queued
            raise UserError(f"Could not submit job {job_id} to Ray at {address}: {exc}. The job is still queued: "
                            f"fix RAY_ADDRESS, or run it here with `python -m feedback jobs work {job_id}`.") from exc
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with open(log_path, "a") as log:
            log.write(f"{stamp} job {job_id} submitted to Ray at {address} as {submission_id}; "
                      f"worker output: ray job logs {submission_id} --address {address}\n")
        return submission_id
