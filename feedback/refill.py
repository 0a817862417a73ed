"""Keeping the pool full: when few items are left to hand out, a sampling job makes more from
the current policy in the background, so an annotator never waits on generation."""
from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Job
from feedback import jobs
from feedback.actors import Actor
from feedback.queue import get_queue_settings, open_item_count
from feedback.sampling import SamplingConfig

# Any fixed number: Postgres advisory lock that makes "check, then create a job" one step.
_REFILL_LOCK = 727_001
# Refills are started by whoever's page found the pool low; the refill itself acts for nobody.
REFILL = Actor.process("refill")


def refill_running(*, session: Session) -> bool:
    return session.scalar(
        select(Job.id).where(Job.kind == "sample", Job.status.in_(jobs.ACTIVE)).limit(1)
    ) is not None


def maybe_refill(*, engine: Engine, database_url: str) -> int | None:
    """Start a refill job if the pool is low and none is running; the job id, or None."""
    with session_scope(engine) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _REFILL_LOCK})
        settings = get_queue_settings(session=session)
        jobs.mark_stale(session=session)
        if refill_running(session=session) or open_item_count(session=session) >= settings.refill_below:
            return None
        config = SamplingConfig(limit=settings.refill_prompts, tags=list(settings.prompt_tags), items="both")
        job = jobs.create_job(session=session, kind="sample", config=asdict(config), actor=REFILL)
    jobs.start_detached(job=job, database_url=database_url)
    return job.id


def sample_new_policy(*, engine: Engine, database_url: str, actor: Actor) -> int:
    """Right after a promotion: sample the queue's usual number of prompts from the new active
    policy, so the annotation pages serve its responses next (on-policy items go first)."""
    with session_scope(engine) as session:
        settings = get_queue_settings(session=session)
        config = SamplingConfig(limit=settings.refill_prompts, tags=list(settings.prompt_tags), items="both")
        job = jobs.create_job(session=session, kind="sample", config=asdict(config), actor=actor)
    jobs.start_detached(job=job, database_url=database_url)
    return job.id
