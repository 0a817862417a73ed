"""What the command modules share: the engine, reading a password, running a job in the foreground."""
from __future__ import annotations

import sys

from feedback.errors import UserError


def get_engine():
    from db.engine import engine_for
    from feedback.settings import get_settings

    return engine_for(get_settings().database_url)


def read_password_stdin() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UserError("No password on standard input.")
    return password


def run_job_inline(kind: str, config: dict, detach: bool, unit: str):
    """Create a job; run it here with a progress bar, or in a detached worker."""
    from db.engine import session_scope
    from feedback import jobs
    from feedback.actors import CLI

    with session_scope(get_engine()) as session:
        job = jobs.create_job(session=session, kind=kind, config=config, actor=CLI)
    return follow_job(job, detach=detach, unit=unit)


def follow_job(job, *, detach: bool, unit: str):
    """Run a queued job here with a progress bar (the finished row), or detached (None)."""
    from tqdm import tqdm

    from feedback import jobs
    from feedback.settings import get_settings

    engine = get_engine()
    if detach:
        pid = jobs.start_detached(job=job, database_url=get_settings().database_url)
        print(f"job {job.id} started in the background (pid {pid}); follow it with: python -m feedback jobs list")
        return None
    bar = tqdm(total=None, unit=unit, desc=f"{job.kind} (job {job.id})")

    def listener(done: int, total: int | None) -> None:
        if total is not None:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        job = jobs.run_job(engine=engine, job_id=job.id, listener=listener)
    finally:
        bar.close()
    if job.status != "succeeded":
        raise UserError(f"job {job.id} {job.status}: {job.error or ''}".strip())
    return job


