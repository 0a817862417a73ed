"""Long jobs run outside Streamlit: a row in `jobs`, a detached worker process that claims it,
writes heartbeats and progress, and checks for cancellation; pages and the CLI only poll.

A worker that dies (killed, machine restarted) stops heartbeating; `mark_stale` then marks its
job interrupted, so nothing stays "running" forever.
"""
from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

from pydantic import SecretStr
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Job, utcnow
from feedback import webhooks
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.launchers import get_launcher
from feedback.registry import Registry
from feedback.settings import PROJECT_ROOT, Settings

HEARTBEAT_EVERY_S = 5.0
STALE_AFTER = timedelta(seconds=60)
LOG_TAIL_CHARS = 4000
ACTIVE = ("queued", "running")


class Cancelled(Exception):
    """Raised inside a job when someone asked it to stop."""


class Paused(Cancelled):
    """Raised inside a job when someone asked it to pause: it ends 'paused', and resume goes on.
    A Cancelled, so code that stops cleanly on a cancel stops the same way on a pause."""


@dataclass(frozen=True)
class JobKind:
    """What a kind of job is: how a worker runs it, what its config looks like, which secrets
    its worker may see."""

    runner: Callable[..., dict[str, Any]]  # runner(engine=..., job=..., reporter=...) -> result dict
    config: type  # a dataclass: create_job builds it from the row's config, so a bad one is refused at once
    secrets: tuple[str, ...] = ()  # environment variables of secrets the worker needs (POLICY_API_KEY, ...)
    # The further secrets one job's config needs, for kinds where that depends on the config (a
    # grading job whose grader asks a judge model); the rest of that kind's jobs never see them.
    secrets_for: Callable[[dict[str, Any]], tuple[str, ...]] | None = None
    # The webhook event run_job emits when a job of this kind ends (feedback.webhooks.EVENTS), if any.
    # A kind with SECRET_KEY among its secrets also delivers the due webhooks after each job.
    finished_event: str | None = None


# Filled by the composition root (cli/job_kinds.py), the one place that knows every package:
# the core does not import judges/ or training/ to learn their kinds.
JOB_KINDS: Registry[JobKind] = Registry("job kind")


def secret_env_vars() -> set[str]:
    """Every secret setting's environment variable (the SecretStr fields of Settings)."""
    return {name.upper() for name, info in Settings.model_fields.items()
            if info.annotation is SecretStr or SecretStr in get_args(info.annotation)}


def create_job(*, session: Session, kind: str, config: dict[str, Any], actor: Actor) -> Job:
    """Queue a job (admins only, or a trusted process); its config is checked against its kind now."""
    actor.require("admin")
    check_config(kind, config)
    job = Job(kind=kind, config=config, created_by_id=actor.user_id, status="queued")
    session.add(job)
    session.flush()
    actor.record(session=session, action="job.create", target=f"job:{job.id}", details={"kind": kind})
    return job


def check_config(kind: str, config: dict[str, Any]) -> Any:
    """The job's config as its kind's dataclass; a UserError when it is not one."""
    config_cls = JOB_KINDS.get(kind).config
    known = {f.name for f in fields(config_cls)}
    unknown = set(config) - known
    if unknown:
        raise UserError(f"Unknown {kind} job setting(s): {', '.join(sorted(unknown))}.")
    try:
        return config_cls(**config)
    except TypeError as exc:  # e.g. a required setting left out
        raise UserError(f"Bad {kind} job settings: {exc}") from None


def request_cancel(*, session: Session, job_id: int, actor: Actor) -> bool:
    """Ask a job to stop; a queued job is cancelled at once. False if it had already ended."""
    actor.require("admin")
    job = session.get(Job, job_id)
    if job is None:
        raise UserError(f"No job {job_id}.")
    if job.status not in (*ACTIVE, "paused"):
        return False
    job.cancel_requested = True
    if job.status in ("queued", "paused"):  # no worker holds it: cancelled now
        job.status, job.finished_at = "cancelled", utcnow()
    actor.record(session=session, action="job.cancel", target=f"job:{job_id}")
    return True


def mark_stale(*, session: Session) -> int:
    """Running jobs whose worker stopped heartbeating become 'interrupted'."""
    cutoff = utcnow() - STALE_AFTER
    result = session.execute(
        update(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)
        .values(status="interrupted", finished_at=utcnow(), error="worker stopped heartbeating")
    )
    return result.rowcount or 0


def list_jobs(*, session: Session, limit: int = 50, kind: str | None = None) -> list[Job]:
    mark_stale(session=session)
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if kind:
        query = query.where(Job.kind == kind)
    return list(session.scalars(query))


def latest_job(*, session: Session, kind: str) -> Job | None:
    return session.scalar(select(Job).where(Job.kind == kind).order_by(Job.id.desc()).limit(1))


def child_env(kind: str, config: dict[str, Any] | None = None) -> dict[str, str]:
    """The worker's environment: ours, minus every secret its kind (and, where the kind says so,
    this job's `config`) does not need."""
    job_kind = JOB_KINDS.get(kind)
    needed = set(job_kind.secrets)
    if job_kind.secrets_for is not None and config is not None:
        needed |= set(job_kind.secrets_for(config))
    drop = secret_env_vars() - needed
    env = {k: v for k, v in os.environ.items() if k.upper() not in drop}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def start_detached(*, job: Job, database_url: str, log_dir: Path | None = None) -> int | str:
    """Start a worker for `job` that outlives the caller (page rerun, app restart), through the
    launcher JOB_LAUNCHER names (feedback.launchers): a local process by default (returns its
    pid, an int) or a Ray job (returns its submission id, a str)."""
    log_dir = log_dir or PROJECT_ROOT / "var" / "jobs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(job.kind, job.config)
    env["DATABASE_URL"] = database_url
    handle = get_launcher().launch(job_id=job.id, kind=job.kind, database_url=database_url, env=env,
                                   log_path=log_dir / f"job-{job.id}.log")
    return int(handle) if handle.isdigit() else handle


class Reporter:
    """What a running job uses to talk to its row: progress, log lines, cancellation."""

    def __init__(self, engine: Engine, job_id: int, listener: Callable[[int, int | None], None] | None = None):
        self.engine, self.job_id, self.listener = engine, job_id, listener
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat_loop, daemon=True)

    def _heartbeat_loop(self) -> None:
        # Keeps the job alive in the eyes of mark_stale during one long model call.
        while not self._stop.wait(HEARTBEAT_EVERY_S):
            with session_scope(self.engine) as s:
                s.execute(update(Job).where(Job.id == self.job_id).values(heartbeat_at=utcnow()))

    def progress(self, done: int, total: int | None = None, log: str | None = None) -> None:
        """Record progress; raise Cancelled if a cancel was requested."""
        if self.listener:
            self.listener(done, total)
        with session_scope(self.engine) as s:
            job = s.get(Job, self.job_id)
            job.progress_done, job.heartbeat_at = done, utcnow()
            if total is not None:
                job.progress_total = total
            if log:
                job.log_tail = (job.log_tail + log.rstrip() + "\n")[-LOG_TAIL_CHARS:]
            cancel, pause = job.cancel_requested, job.pause_requested
        if cancel:
            raise Cancelled()
        if pause:
            raise Paused()


    def log_metrics(self, entry: dict[str, Any]) -> None:
        """Append one logged step ({"step": 3, "loss": 0.61, ...}) to the job's metric history."""
        with session_scope(self.engine) as s:
            job = s.get(Job, self.job_id)
            job.metrics = [*(job.metrics or []), entry]  # reassign: JSON columns do not track in-place edits
            job.heartbeat_at = utcnow()


def claim(*, engine: Engine, job_id: int) -> bool:
    """Atomically move a queued job to running: two workers cannot both run it."""
    with session_scope(engine) as s:
        result = s.execute(
            update(Job).where(Job.id == job_id, Job.status == "queued")
            .values(status="running", started_at=utcnow(), heartbeat_at=utcnow(), pid=os.getpid())
        )
        return result.rowcount == 1


def run_job(*, engine: Engine, job_id: int, listener: Callable[[int, int | None], None] | None = None) -> Job:
    """Claim and run one job in this process, recording how it ended. Returns the final row.

    `listener(done, total)` sees each progress report (the CLI draws its progress bar with it).
    """
    if not claim(engine=engine, job_id=job_id):
        with session_scope(engine, read_only=True) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise UserError(f"No job {job_id}.")
            raise UserError(f"Job {job_id} is {job.status}, not queued.")
    with session_scope(engine, read_only=True) as s:
        job = s.get(Job, job_id)
    kind = JOB_KINDS.get(job.kind)
    reporter = Reporter(engine, job_id, listener)
    reporter._beat.start()
    status, result, error = "succeeded", None, None
    try:
        result = kind.runner(engine=engine, job=job, reporter=reporter)
    except Paused:
        status = "paused"
    except Cancelled:
        status = "cancelled"
    except Exception as exc:  # a crashed job is recorded, never left "running"
        status = "failed"
        error = str(exc) if isinstance(exc, UserError) else traceback.format_exc(limit=8)
    finally:
        reporter._stop.set()
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        job.status, job.error, job.finished_at = status, error, utcnow()
        if result is not None:  # a failed run keeps the state it saved (e.g. a provider batch id)
            job.result = result
        if kind.finished_event:  # in the same transaction: the event exists iff the ending is recorded
            webhooks.emit(session=s, event=kind.finished_event, payload=webhooks.job_payload(job))
    if webhooks.SECRET_ENV in kind.secrets:
        webhooks.deliver_after_job(engine=engine, job_id=job_id)
    return job


def request_pause(*, session: Session, job_id: int, actor: Actor) -> bool:
    """Ask a running job to stop at its next progress report and end 'paused' (a queued one is
    paused at once); `resume` goes on from there. False if it had already ended."""
    actor.require("admin")
    job = session.get(Job, job_id)
    if job is None:
        raise UserError(f"No job {job_id}.")
    if job.status not in ACTIVE:
        return False
    job.pause_requested = True
    if job.status == "queued":
        job.status, job.finished_at = "paused", utcnow()
    actor.record(session=session, action="job.pause", target=f"job:{job_id}")
    return True


def resume(*, session: Session, job_id: int, actor: Actor) -> Job:
    """Queue an interrupted, failed or paused job again; its runner skips the work it already stored."""
    actor.require("admin")
    mark_stale(session=session)
    job = session.get(Job, job_id)
    if job is None:
        raise UserError(f"No job {job_id}.")
    if job.status not in ("interrupted", "failed", "paused"):
        raise UserError(f"Job {job_id} is {job.status}; only interrupted, failed or paused jobs can be resumed.")
    job.status, job.cancel_requested, job.error, job.finished_at, job.pid = "queued", False, None, None, None
    job.pause_requested = False
    actor.record(session=session, action="job.resume", target=f"job:{job_id}")
    return job
