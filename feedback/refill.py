"""Keeping each project's pool full: when few of its items are left to hand out, a sampling job
makes more from the current policy in the background, so an annotator never waits on generation."""
from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import AuditLog, Item, Job, Project, utcnow
from feedback import jobs, webhooks
from feedback.actors import Actor
from feedback.projects import default_project
from feedback.queue import open_item_count
from feedback.sampling import SamplingConfig

# Any fixed number: Postgres advisory lock that makes "check, then create a job" one step.
_REFILL_LOCK = 727_001
# Refills are started by whoever's page found the pool low; the refill itself acts for nobody.
REFILL = Actor.process("refill")


# A job queued this long ago and never started has lost its worker (a worker given several jobs
# in turn died before reaching it): it no longer holds off a refill.
QUEUED_GRACE = timedelta(minutes=30)


def refill_running(*, session: Session, project: Project | None = None) -> bool:
    """A sampling job is running, or was queued lately (for this project, when one is given)."""
    fresh = (Job.status == "running") | ((Job.status == "queued") & (Job.created_at > utcnow() - QUEUED_GRACE))
    active = session.scalars(select(Job.config).where(Job.kind == "sample", fresh))
    return any(project is None or config.get("project", "default") == project.name for config in active)


def _refill_config(project: Project) -> SamplingConfig:
    return SamplingConfig(project=project.name, limit=project.refill_prompts, tags=list(project.prompt_tags))


def maybe_refill(*, engine: Engine, database_url: str, project_id: int) -> int | None:
    """Start a refill job for the project if its pool is low and none is running; the job id, or None."""
    with session_scope(engine) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k, :p)"), {"k": _REFILL_LOCK, "p": project_id})
        project = session.get(Project, project_id)
        jobs.mark_stale(session=session)
        if refill_running(session=session, project=project):
            return None
        open_items = open_item_count(session=session, project=project)
        if open_items >= project.refill_below:
            return None
        job = jobs.create_job(session=session, kind="sample", config=asdict(_refill_config(project)), actor=REFILL)
        if _newly_low(session, project, open_items):
            webhooks.emit(session=session, event="queue.low", payload={
                "project": project.name, "project_id": project.id, "open_items": open_items,
                "refill_below": project.refill_below, "refill_job_id": job.id})
    jobs.start_detached(job=job, database_url=database_url)
    return job.id


def _newly_low(session: Session, project: Project, open_items: int) -> bool:
    """The first low reading since the pool last gained items: queue.low fires once per crossing,
    not on every claim, nor again for a refill that made nothing. The audit log keeps the mark."""
    newest_item = session.scalar(select(func.max(Item.id)).where(Item.project_id == project.id)) or 0
    last = session.scalar(select(AuditLog.details).where(AuditLog.action == "queue.low",
                                                         AuditLog.target == f"project:{project.id}")
                          .order_by(AuditLog.id.desc()).limit(1))
    if last is not None and last.get("newest_item", 0) >= newest_item:
        return False
    REFILL.record(session=session, action="queue.low", target=f"project:{project.id}",
                  details={"open_items": open_items, "refill_below": project.refill_below, "newest_item": newest_item})
    return True


def sample_new_policy(*, engine: Engine, database_url: str, actor: Actor) -> list[int]:
    """Right after a promotion: sample each project's usual refill from the new active policy,
    so every annotation page serves its responses next (on-policy items go first). Projects with
    no items yet are left to their first refill (the default project, when none has any)."""
    created = []
    with session_scope(engine) as session:
        in_use = select(Item.project_id).distinct()
        projects = list(session.scalars(select(Project).where(Project.id.in_(in_use)).order_by(Project.id)))
        for project in projects or [default_project(session=session)]:
            created.append(jobs.create_job(session=session, kind="sample", config=asdict(_refill_config(project)),
                                           actor=actor))
    for job in created:
        jobs.start_detached(job=job, database_url=database_url)
    return [job.id for job in created]
