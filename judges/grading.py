"""Grading items against their prompts' reference answers, and storing the scores as labels.

A pair gets a 'pairwise' label (the higher-scoring response is chosen; equal scores are a tie);
a single gets a 'score' label. Labels come from `grader:<spec>` and their submission id is
derived from (spec, item), so a rerun, a resumed job or two concurrent runs label each item at
most once per grader.

run_grading scores outside any write transaction and commits one chunk at a time: a slow
python grader never holds SQLite's write lock, and a cancel or crash loses at most one chunk.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from db.engine import session_scope
from db.models import Item, Label, Prompt, Response
from feedback import jobs
from feedback.actors import Actor
from feedback.config_fields import cfg_field
from feedback.errors import UserError
from judges.graders import Grader, GraderError, parse_grader

CHUNK_ITEMS = 50  # items per write transaction
TIE_EPSILON = 1e-9  # scores closer than this are equal (BLEU and friends carry float noise)
MAX_ERROR_EXAMPLES = 5
PRODUCER_MAX_CHARS = 255  # labels.producer


@dataclass
class GradeSummary:
    items: int = 0  # labels written: pairs + singles
    pairs: int = 0
    singles: int = 0
    ties: int = 0  # pairs whose responses scored the same
    skipped_no_reference: int = 0  # ungraded items whose prompt has no reference answer
    already_labelled: int = 0  # a concurrent run got there first
    errors: int = 0  # items the grader could not score: left unlabelled, retried next run
    stopped_early: int = 0  # 1 when the grader stopped the run (e.g. score_model's budget); why: error_examples
    error_examples: list[str] = field(default_factory=list)

    def add(self, other: GradeSummary) -> None:
        for name, value in asdict(other).items():
            if name == "error_examples":
                self.note_errors(value)
            else:
                setattr(self, name, getattr(self, name) + value)

    def note_errors(self, messages: Iterable[str]) -> None:
        for message in messages:
            if len(self.error_examples) < MAX_ERROR_EXAMPLES and message not in self.error_examples:
                self.error_examples.append(message)


@dataclass(frozen=True)
class _Task:
    """What grading one item needs, detached from any session."""

    item_id: int
    kind: str  # pair | single
    reference: str
    responses: tuple[tuple[int, str], ...]  # (response id, text): a, then b for a pair
    messages: Any = None  # the prompt's chat messages, for graders that read the prompt (uses_prompt)


def producer_for(grader: Grader) -> str:
    producer = f"grader:{grader.spec}"
    if len(producer) > PRODUCER_MAX_CHARS:
        raise UserError(f"Grader spec too long to record ({len(grader.spec)} characters); keep it under "
                        f"{PRODUCER_MAX_CHARS - len('grader:')}.")
    return producer


def submission_id_for(grader: Grader, item_id: int) -> str:
    # Hashed: specs can be long (regexes, paths) and the column holds 64 characters.
    return hashlib.sha256(f"grader:{grader.spec}:{item_id}".encode()).hexdigest()


def _has_reference():
    return Prompt.reference.is_not(None) & (func.length(func.trim(Prompt.reference)) > 0)


def _pending(producer: str, item_ids: Sequence[int] | None):
    """Items with no label from this producer yet (optionally among item_ids), joined to their prompt."""
    labelled = exists().where(Label.item_id == Item.id, Label.producer == producer)
    # Graders score pairs and single responses; rank, rating and edit items are people's work.
    query = select(Item.id).join(Prompt, Prompt.id == Item.prompt_id).where(~labelled,
                                                                          Item.kind.in_(("pair", "single")))
    if item_ids is not None:
        query = query.where(Item.id.in_(list(item_ids)))
    return query


def pending_item_ids(*, session: Session, grader: Grader, limit: int | None = None,
                     item_ids: Sequence[int] | None = None) -> tuple[list[int], int]:
    """(ids of items to grade, in id order; how many ungraded items lack a reference)."""
    base = _pending(producer_for(grader), item_ids)
    skipped = session.scalar(select(func.count()).select_from(base.where(~_has_reference()).subquery()))
    ids = list(session.scalars(base.where(_has_reference()).order_by(Item.id).limit(limit)))
    return ids, int(skipped or 0)


def _load_tasks(session: Session, item_ids: Sequence[int]) -> list[_Task]:
    if not item_ids:
        return []
    a, b = aliased(Response), aliased(Response)
    rows = session.execute(
        select(Item.id, Item.kind, Prompt.reference, a.id, a.text, b.id, b.text, Prompt.messages)
        .join(Prompt, Prompt.id == Item.prompt_id)
        .join(a, a.id == Item.response_a_id)
        .outerjoin(b, b.id == Item.response_b_id)
        .where(Item.id.in_(list(item_ids)), _has_reference())
        .order_by(Item.id)
    ).all()
    return [
        _Task(item_id, kind, reference, ((a_id, a_text),) if kind == "single" else ((a_id, a_text), (b_id, b_text)),
              messages)
        for item_id, kind, reference, a_id, a_text, b_id, b_text, messages in rows
    ]


def _score(grader: Grader, tasks: Sequence[_Task], summary: GradeSummary) -> list[tuple[_Task, list[float]]]:
    """Grade every response of every task. Items the grader fails on are counted and dropped."""
    # A response can sit in several items (a pair and a single); the grader is deterministic,
    # so it is scored once per call. Keyed by reference too, in case prompts ever share responses.
    cache: dict[tuple[int, str], float] = {}
    scored = []
    for task in tasks:
        try:
            scores = []
            for response_id, text in task.responses:
                key = (response_id, task.reference)
                if key not in cache:
                    cache[key] = (grader.grade(text, task.reference, prompt=task.messages)
                                  if getattr(grader, "uses_prompt", False) else grader.grade(text, task.reference))
                scores.append(cache[key])
        except GraderError as exc:
            if getattr(exc, "stops_run", False):  # e.g. a budget reached: stop here, this item is not at fault
                summary.stopped_early = 1
                summary.note_errors([f"stopped before item {task.item_id}: {exc}"])
                break
            summary.errors += 1
            summary.note_errors([f"item {task.item_id}: {exc}"])
            continue
        scored.append((task, scores))
    return scored


def _label(grader: Grader, producer: str, task: _Task, scores: list[float], job_id: int | None) -> Label:
    provenance: dict[str, Any] = {
        "grader": grader.spec,
        "scores": dict(zip("ab", scores, strict=False)),
        "response_ids": dict(zip("ab", (rid for rid, _ in task.responses), strict=False)),
        **(grader.describe() if hasattr(grader, "describe") else {}),
        # Per-response details a model-based grader keeps (raw answers, tokens, cost).
        **(grader.provenance_for([text for _, text in task.responses], task.reference, prompt=task.messages)
           if hasattr(grader, "provenance_for") else {}),
    }
    if job_id is not None:
        provenance["job_id"] = job_id
    common = {"item_id": task.item_id, "source": "grader", "producer": producer, "provenance": provenance,
              "submission_id": submission_id_for(grader, task.item_id)}
    if task.kind == "single":
        return Label(kind="score", score=scores[0], **common)
    a, b = scores
    choice = "tie" if abs(a - b) <= TIE_EPSILON else ("a" if a > b else "b")
    return Label(kind="pairwise", choice=choice, rationale=f"{grader.spec}: a scored {a:.4g}, b scored {b:.4g}",
                 **common)


def _write(session: Session, grader: Grader, scored: Sequence[tuple[_Task, list[float]]],
           summary: GradeSummary, job_id: int | None) -> None:
    producer = producer_for(grader)
    wanted = {submission_id_for(grader, task.item_id) for task, _ in scored}
    existing = (set(session.scalars(select(Label.submission_id).where(Label.submission_id.in_(wanted))))
                if wanted else set())
    for task, scores in scored:
        label = _label(grader, producer, task, scores, job_id)
        if label.submission_id in existing:
            summary.already_labelled += 1
            continue
        try:
            # A savepoint per label: losing a race to another run undoes only this insert.
            with session.begin_nested():
                session.add(label)
                session.flush()
        except IntegrityError:
            summary.already_labelled += 1
            continue
        summary.items += 1
        if task.kind == "single":
            summary.singles += 1
        else:
            summary.pairs += 1
            summary.ties += label.choice == "tie"


def grade_items(*, session: Session, grader: Grader, limit: int | None = None,
                item_ids: Sequence[int] | None = None, job_id: int | None = None) -> GradeSummary:
    """Grade items not yet labelled by `grader` whose prompt has a reference, in this session.

    Scores are computed inside the caller's transaction; for long runs use run_grading, which
    keeps grading out of write transactions.
    """
    ids, skipped = pending_item_ids(session=session, grader=grader, limit=limit, item_ids=item_ids)
    summary = GradeSummary(skipped_no_reference=skipped)
    scored = _score(grader, _load_tasks(session, ids), summary)
    _write(session, grader, scored, summary, job_id)
    return summary


def run_grading(*, engine: Engine, spec: str, limit: int | None = None, job_id: int | None = None,
                on_progress: Callable[[int, int], None] | None = None, actor: Actor) -> dict[str, Any]:
    """Grade up to `limit` ungraded items with the grader `spec`; returns the summary's counts.

    Raises UserError if the grader failed on every item it tried (a broken grader should fail
    the job, not report success with nothing labelled).
    """
    if limit is not None and limit < 1:
        raise UserError("limit must be at least 1.")
    grader = parse_grader(spec)
    producer_for(grader)  # a spec too long to record fails before any work
    with session_scope(engine, read_only=True) as s:
        ids, skipped = pending_item_ids(session=s, grader=grader, limit=limit)
    summary = GradeSummary(skipped_no_reference=skipped)
    if on_progress:
        on_progress(0, len(ids))
    for start in range(0, len(ids), CHUNK_ITEMS):
        chunk = ids[start : start + CHUNK_ITEMS]
        with session_scope(engine, read_only=True) as s:
            tasks = _load_tasks(s, chunk)
        part = GradeSummary()
        scored = _score(grader, tasks, part)
        with session_scope(engine) as s:
            _write(s, grader, scored, part, job_id)
            if part.items:
                actor.record(session=s, action="grader.label", target=f"grader:{grader.spec}"[:128],
                             details={"labels": part.items, "job_id": job_id})
        summary.add(part)
        if on_progress:
            on_progress(start + len(chunk), len(ids))
        if part.stopped_early:
            break
    if summary.errors and not summary.items and not summary.already_labelled:
        raise UserError(f"The grader failed on all {summary.errors} items it tried; first: {summary.error_examples[0]}")
    return {"spec": grader.spec, **asdict(summary)}


@dataclass
class GradeConfig:
    spec: str = cfg_field("numeric", "The grader, e.g. exact, numeric:tol=0.01, regex:PATTERN, "
                                     "multi:0.7*numeric+0.3*similarity.", flag="--grader")
    limit: int | None = cfg_field(None, "Most items to grade (None: every ungraded one).")

    def __post_init__(self) -> None:
        parse_grader(self.spec)  # a bad spec is refused before any job row exists
        if self.limit is not None and self.limit < 1:
            raise UserError("limit must be at least 1.")


def run_grading_job(*, engine: Engine, job, reporter: jobs.Reporter) -> dict[str, Any]:
    config = GradeConfig(**job.config)

    def progress(done: int, total: int) -> None:
        reporter.progress(done, total, log=f"{done}/{total} items graded with {config.spec}")

    return run_grading(engine=engine, spec=config.spec, limit=config.limit, job_id=job.id, on_progress=progress,
                       actor=Actor.worker(job.id))


# No secrets: a python: grader runs user code, and its subprocess gets none either.
def _grader_secrets(config: dict[str, Any]) -> tuple[str, ...]:
    # Only a model grader asks a judge backend; every other grading job runs without the keys.
    return ("ANTHROPIC_API_KEY", "JUDGE_API_KEY") if "score_model" in str(config.get("spec", "")) else ()


GRADE_JOB = jobs.JobKind(runner=run_grading_job, config=GradeConfig, secrets_for=_grader_secrets)
