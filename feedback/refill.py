"""Keeping each project's pool full: when few of its items are left to hand out, a sampling job
makes more from the current policy in the background, so an annotator never waits on generation.
An arena project's refills sample two of its versions head to head instead (arena_pair)."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict
from datetime import timedelta

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, aliased

from db.engine import session_scope
from db.models import AuditLog, Item, Job, PolicyVersion, Project, Response, utcnow
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


def _refill_config(session: Session, project: Project, rng: random.Random | None = None) -> SamplingConfig:
    """A refill's sampling job: the current policy, or in an arena project one head-to-head pair."""
    plain = SamplingConfig(project=project.name, limit=project.refill_prompts, tags=list(project.prompt_tags))
    pair = arena_pair(session=session, project=project, rng=rng) if project.arena else None
    if pair is None:  # not an arena, or its versions were taken out of the queue settings since
        return plain
    first, second = pair
    return SamplingConfig(project=project.name, limit=project.refill_prompts, tags=list(project.prompt_tags),
                          policy_version=first.name, versus_version=second.name, n_per_prompt=1)


def arena_pair(*, session: Session, project: Project,
               rng: random.Random | None = None) -> tuple[PolicyVersion, PolicyVersion] | None:
    """Two of the arena project's versions: the pair that has met least often in its items so
    far (ties at random), so every pair's count grows evenly. Items, not labels, are counted: the
    next refill is due before the last one's items are labelled. Which of the two samples first
    (becomes response A) is random too; annotators see A and B in an order drawn per showing anyway
    (feedback/queue.py), and the AI judge reads both orders. None with fewer than two versions
    that can be sampled (outside models, whose responses were imported, cannot)."""
    rng = rng or random.Random()
    versions = list(session.scalars(select(PolicyVersion).where(
        PolicyVersion.id.in_(project.policy_version_ids), PolicyVersion.status != "external")
        .order_by(PolicyVersion.id)))
    if len(versions) < 2:
        return None
    met = _pair_counts(session, project)
    pairs = [(a, b) for i, a in enumerate(versions) for b in versions[i + 1:]]
    fewest = min(met[frozenset((a.id, b.id))] for a, b in pairs)
    first, second = rng.choice([p for p in pairs if met[frozenset((p[0].id, p[1].id))] == fewest])
    return (first, second) if rng.random() < 0.5 else (second, first)


def _pair_counts(session: Session, project: Project) -> Counter:
    """The project's pair items by the two versions that made them (either side), one query."""
    side_a, side_b = aliased(Response), aliased(Response)
    rows = session.execute(
        select(side_a.policy_version_id, side_b.policy_version_id, func.count()).select_from(Item)
        .join(side_a, side_a.id == Item.response_a_id).join(side_b, side_b.id == Item.response_b_id)
        .where(Item.project_id == project.id, Item.kind == "pair")
        .group_by(side_a.policy_version_id, side_b.policy_version_id))
    met: Counter = Counter()
    for a, b, n in rows:
        met[frozenset((a, b))] += n
    return met


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
        job = jobs.create_job(session=session, kind="sample", config=asdict(_refill_config(session, project)),
                              actor=REFILL)
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
    no items yet are left to their first refill (the default project, when none has any). An arena
    project gets its next head-to-head pair instead: same-version pairs would be no comparison."""
    created = []
    with session_scope(engine) as session:
        in_use = select(Item.project_id).distinct()
        projects = list(session.scalars(select(Project).where(Project.id.in_(in_use)).order_by(Project.id)))
        for project in projects or [default_project(session=session)]:
            config = asdict(_refill_config(session, project))
            created.append(jobs.create_job(session=session, kind="sample", config=config, actor=actor))
    for job in created:
        jobs.start_detached(job=job, database_url=database_url)
    return [job.id for job in created]
