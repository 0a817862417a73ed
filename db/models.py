"""The schema. Alembic migrations in db/migrations are the only way it changes in a database;
tests/test_migrations.py checks that upgrading an empty SQLite and Postgres database gives exactly
these tables.

Vocabulary columns are short strings with CHECK constraints rather than native enums: adding a
value is then a one-line migration on both SQLite and Postgres.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so migrations can drop/alter them on SQLite (batch mode) and Postgres.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")

ROLES = ("annotator", "reviewer", "admin")
SPLITS = ("train", "val")
# "external": a model outside this app whose responses came in through an import or the API.
POLICY_STATUSES = ("candidate", "active", "retired", "rejected", "external")
# A project's task type decides the item kind it samples, the page that shows it and the label
# kind a person gives (feedback/projects.py: TASKS).
TASK_TYPES = ("pairwise", "binary", "rank", "rating", "edit")
ITEM_KINDS = ("pair", "single", "rank", "rating", "edit")
LABEL_KINDS = ("pairwise", "binary", "score", "rank", "rating", "edit")
# "imported": a label from an existing preference dataset (its file is in the label's provenance).
LABEL_SOURCES = ("human", "judge", "grader", "imported")
PAIRWISE_CHOICES = ("a", "b", "tie", "both_bad")
STRENGTHS = ("slight", "much")
THUMB_VALUES = ("up", "down")
SHOWN_ORDERS = ("ab", "ba")
ASSIGNMENT_STATUSES = ("leased", "done", "skipped")
JUDGMENT_OUTCOMES = ("a", "b", "tie", "inconsistent", "failed")
# "paused": a loop stopped at a safe point on request (pause_requested); resumed, it goes on from there.
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted", "paused")
DELIVERY_STATUSES = ("pending", "delivered", "failed")
# How a project orders its open items (feedback/priority.py): by id, at random, or most uncertain first.
QUEUE_ORDERS = ("oldest", "random", "uncertainty")
# Where an item's final answer came from: a reviewer marking it gold, a reviewer settling a
# dispute, or a generated attention check (feedback/gold.py, feedback/adjudication.py).
DECISION_ORIGINS = ("gold", "adjudication", "attention")
STANDINGS = ("ok", "warned", "paused")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database. SQLite keeps no offset, so values read
    back from it would otherwise be naive and fail to compare with utcnow()."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use db.models.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # argon2id hash; never leaves the service layer (see feedback/users.py).
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Project(Base):
    """A labelling project: one task type, its guidelines, its members and its queue settings.

    The queue settings live here (one project, one queue): how many annotators each item needs,
    how long a lease lasts, which prompts and policy versions it serves, and when it refills."""

    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint(_in("task_type", TASK_TYPES), name="task_type"),
        CheckConstraint("k >= 1 AND k <= 8", name="k_range"),
        CheckConstraint("overlap >= 1", name="overlap_positive"),
        CheckConstraint("lease_seconds >= 10", name="lease_min"),
        CheckConstraint("gold_rate >= 0 AND gold_rate <= 1", name="gold_rate_range"),
        CheckConstraint("gold_min_accuracy >= 0 AND gold_min_accuracy <= 1", name="gold_accuracy_range"),
        CheckConstraint("gold_min_answers >= 1", name="gold_answers_positive"),
        CheckConstraint(_in("queue_order", QUEUE_ORDERS), name="queue_order"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    task_type: Mapped[str] = mapped_column(String(16))
    # Responses per item: 2 for pairwise, 1 for binary and edit, 3-8 for rank and rating.
    k: Mapped[int] = mapped_column(Integer, default=2)
    # What a rating project rates each response on (1-5 each); empty for other task types.
    aspects: Mapped[list[str]] = mapped_column(JSONType, default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    # Open projects take every annotator; closed ones only their members (admins: any project).
    open_to_all: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    overlap: Mapped[int] = mapped_column(Integer, default=1)  # distinct annotators per item
    lease_seconds: Mapped[int] = mapped_column(Integer, default=600)
    prompt_tags: Mapped[list[str]] = mapped_column(JSONType, default=list)  # empty: any prompt
    policy_version_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)  # empty: any version
    refill_below: Mapped[int] = mapped_column(Integer, default=4)  # open items that trigger a refill
    refill_prompts: Mapped[int] = mapped_column(Integer, default=8)  # prompts sampled per refill
    # Gold items: the share of claims that silently hand out a gold item the annotator has not
    # had; an annotator below `gold_min_accuracy` after `gold_min_answers` gold answers is warned,
    # and paused on this project after twice as many.
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    gold_min_accuracy: Mapped[float] = mapped_column(Float, default=0.7, server_default=text("0.7"))
    gold_min_answers: Mapped[int] = mapped_column(Integer, default=5, server_default=text("5"))
    queue_order: Mapped[str] = mapped_column(String(16), default="oldest", server_default=text("'oldest'"))
    # Arena mode: refills sample blind head-to-head pairs of two of `policy_version_ids` on the
    # same prompt (the page never names the versions), for the leaderboard.
    arena: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class Guidelines(Base):
    """One version of a project's written guidelines (markdown, shown inert). Editing makes a new
    version; each human label records the version its annotator was shown."""

    __tablename__ = "guidelines"
    __table_args__ = (UniqueConstraint("project_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ProjectMember(Base):
    """Who may label in a project (admins may label anywhere)."""

    __tablename__ = "project_members"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (CheckConstraint(_in("split", SPLITS), name="split"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # `text` is what people read and search: the prompt string, or the last user turn of a chat.
    text: Mapped[str] = mapped_column(Text)
    # The chat sent to the model; a plain prompt is stored as one user message.
    messages: Mapped[list[dict[str, str]]] = mapped_column(JSONType)
    reference: Mapped[str | None] = mapped_column(Text)
    split: Mapped[str] = mapped_column(String(8), default="train", index=True)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    source: Mapped[str] = mapped_column(String(255), default="")
    # sha256 of the canonical messages JSON: the same prompt imported twice is stored once.
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    """A long task (sampling, judging, training) run by a detached worker; pages only poll it."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        # One training run at a time, whoever asks: a second queued/running 'train' job is refused.
        Index(
            "uq_jobs_one_active_training",
            "kind",
            unique=True,
            sqlite_where=text("kind = 'train' AND status IN ('queued', 'running')"),
            postgresql_where=text("kind = 'train' AND status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    # Logged training metrics, one dict per log step ({"step": 3, "loss": 0.61, ...}), for curves.
    metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list, server_default=text("'[]'"))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Snapshot(Base):
    """An immutable, content-hashed set of labels that a training round trains on."""

    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    filters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    n_labels: Mapped[int] = mapped_column(Integer)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PolicyVersion(Base):
    """One deployable policy, with the lineage that made it."""

    __tablename__ = "policy_versions"
    __table_args__ = (
        CheckConstraint(_in("status", POLICY_STATUSES), name="status"),
        # At most one active policy: enforced by the database, not by whoever promotes.
        Index(
            "uq_policy_versions_one_active",
            "status",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    base_model: Mapped[str] = mapped_column(String(255))
    # Local full-model directory (None: use the base model as is).
    model_path: Mapped[str | None] = mapped_column(String(1024))
    # LoRA adapter directory on top of the base model (None for a full model).
    adapter_path: Mapped[str | None] = mapped_column(String(1024))
    # Name under which an OpenAI-compatible server (vLLM) serves it (an adapter's lora_name).
    served_name: Mapped[str | None] = mapped_column(String(255))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    # The training round that made it: its job, the snapshot it trained on, stage, config, metrics.
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshots.id"))
    stage: Mapped[str | None] = mapped_column(String(32))
    train_config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The evaluation gate's figures (win rate vs the parent with its interval, grader accuracy).
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    parent: Mapped[PolicyVersion | None] = relationship(remote_side=[id])


class Response(Base):
    """One sampled answer, with everything needed to say how it was made."""

    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    policy_version_id: Mapped[int] = mapped_column(ForeignKey("policy_versions.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    # temperature, top_p, max_new_tokens, n, backend, served model ...
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    seed: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    # Wall time of the generate call (or HTTP request) that produced it, in milliseconds.
    latency_ms: Mapped[float | None] = mapped_column(Float)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    prompt: Mapped[Prompt] = relationship()
    policy_version: Mapped[PolicyVersion] = relationship()


class Item(Base):
    """Something to label, in one project: a pair of two responses to one prompt, a single
    response (thumbs, or one to rewrite), or K responses to rank or rate.

    response_a is always the first response (so "which policy made this item" is one column);
    rank and rating items list all K in item_responses, by position."""

    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint(_in("kind", ITEM_KINDS), name="kind"),
        CheckConstraint(
            "(kind = 'pair' AND response_b_id IS NOT NULL AND response_b_id <> response_a_id)"
            " OR (kind IN ('single', 'edit', 'rank', 'rating') AND response_b_id IS NULL)",
            name="shape",
        ),
        Index(
            "uq_items_pair",
            "response_a_id",
            "response_b_id",
            unique=True,
            sqlite_where=text("kind = 'pair'"),
            postgresql_where=text("kind = 'pair'"),
        ),
        Index(
            "uq_items_single",
            "response_a_id",
            unique=True,
            sqlite_where=text("kind = 'single'"),
            postgresql_where=text("kind = 'single'"),
        ),
        # A claim asks for a project's open items in id order and takes the first: with (project,
        # id) it walks the index and stops there. On project_id alone a planner without fresh
        # statistics fetched every item of the project, tested each one's slots, then sorted.
        Index("ix_items_project_id_id", "project_id", "id"),
        # Projects ordered by uncertainty or at random walk this one instead (feedback/priority.py).
        Index("ix_items_project_id_queue_key", "project_id", "queue_key", "id"),
        # A record pushed through the API twice (same client id) is one item.
        UniqueConstraint("project_id", "client_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    kind: Mapped[str] = mapped_column(String(8), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    response_a_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))
    response_b_id: Mapped[int | None] = mapped_column(ForeignKey("responses.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    # Claims hand out the lowest key first (then the lowest id): 0 for every item of an "oldest"
    # project; a random number, or 1 - uncertainty, otherwise (feedback/priority.py).
    queue_key: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    # The caller's id for an item pushed through the API (None for sampled items).
    client_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    prompt: Mapped[Prompt] = relationship()
    response_a: Mapped[Response] = relationship(foreign_keys=[response_a_id])
    response_b: Mapped[Response | None] = relationship(foreign_keys=[response_b_id])


class ItemResponse(Base):
    """The K responses of a rank or rating item, in the item's own order (position 0..K-1).
    Labels refer to positions; what an annotator saw is a permutation of them."""

    __tablename__ = "item_responses"
    __table_args__ = (UniqueConstraint("item_id", "response_id"),)

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"))


class Constitution(Base):
    """A named, versioned set of principles for the AI judge; editing makes a new version."""

    __tablename__ = "constitutions"
    __table_args__ = (UniqueConstraint("name", "version"), UniqueConstraint("name", "content_hash"))

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    principles: Mapped[list[str]] = mapped_column(JSONType)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Label(Base):
    """An append-only fact: who or what said what about an item, under which conditions.

    For pairs, `choice` refers to the item's own response_a / response_b, whatever order the
    annotator saw; `shown_order` records that order ('ba': response_b was shown on the left).
    Rank and rating labels likewise refer to item positions; `shown_permutation` records the
    order shown (shown_permutation[i] = the item position displayed i-th).

    - rank:   `ranking[p]` = the rank of position p, 1 = best; ties share a rank.
    - rating: `ratings[p]` = {"scores": {aspect: 1..5}, "rationales": {aspect: text}}.
    - edit:   `edited_text`, and `edit_distance` from the original (Levenshtein, characters).
    """

    __tablename__ = "labels"
    __table_args__ = (
        CheckConstraint(_in("kind", LABEL_KINDS), name="kind"),
        CheckConstraint(_in("source", LABEL_SOURCES), name="source"),
        CheckConstraint(f"choice IS NULL OR {_in('choice', PAIRWISE_CHOICES)}", name="choice"),
        CheckConstraint(f"strength IS NULL OR {_in('strength', STRENGTHS)}", name="strength"),
        CheckConstraint(f"thumb IS NULL OR {_in('thumb', THUMB_VALUES)}", name="thumb"),
        CheckConstraint(f"shown_order IS NULL OR {_in('shown_order', SHOWN_ORDERS)}", name="shown_order"),
        CheckConstraint("score IS NULL OR (score >= 0 AND score <= 1)", name="score_range"),
        CheckConstraint(
            "(kind = 'pairwise' AND choice IS NOT NULL)"
            " OR (kind = 'binary' AND thumb IS NOT NULL)"
            " OR (kind = 'score' AND score IS NOT NULL)"
            " OR (kind = 'rank' AND ranking IS NOT NULL)"
            " OR (kind = 'rating' AND ratings IS NOT NULL)"
            " OR (kind = 'edit' AND edited_text IS NOT NULL AND edit_distance IS NOT NULL)",
            name="value",
        ),
        CheckConstraint("source <> 'human' OR user_id IS NOT NULL", name="human_has_user"),
        # One label per annotator per item: a double click cannot write two.
        UniqueConstraint("item_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    choice: Mapped[str | None] = mapped_column(String(8))
    strength: Mapped[str | None] = mapped_column(String(8))
    thumb: Mapped[str | None] = mapped_column(String(4))  # binary labels: up or down
    score: Mapped[float | None] = mapped_column(Float)
    ranking: Mapped[list[int] | None] = mapped_column(JSONType)
    ratings: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    edited_text: Mapped[str | None] = mapped_column(Text)
    edit_distance: Mapped[int | None] = mapped_column(Integer)
    rationale: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(8), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # For judge/grader labels: e.g. "anthropic:claude-sonnet-4-5" or "grader:numeric".
    producer: Mapped[str | None] = mapped_column(String(255))
    constitution_id: Mapped[int | None] = mapped_column(ForeignKey("constitutions.id"))
    # Raw outputs, template version, tokens, cost ... for AI labels.
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    shown_order: Mapped[str | None] = mapped_column(String(2))
    shown_permutation: Mapped[list[int] | None] = mapped_column(JSONType)
    # The project guidelines version a person labelled under (None for AI and grader labels).
    guidelines_id: Mapped[int | None] = mapped_column(ForeignKey("guidelines.id"))
    # Client-generated id: a resubmission of the same id is recognised and writes nothing.
    submission_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    item: Mapped[Item] = relationship()


class Assignment(Base):
    """An item handed to one annotator. One row per (item, annotator), ever: nobody gets the same
    item twice. A lease past `expires_at` no longer counts against the item's overlap."""

    __tablename__ = "assignments"
    __table_args__ = (
        CheckConstraint(_in("status", ASSIGNMENT_STATUSES), name="status"),
        CheckConstraint(_in("shown_order", SHOWN_ORDERS), name="shown_order"),
        UniqueConstraint("item_id", "user_id"),
        Index("ix_assignments_item_status", "item_id", "status"),
        Index("ix_assignments_user_status", "user_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(8), default="leased")
    # The left/right order this annotator sees, fixed for the lease so a rerun shows the same
    # ('ab' for single responses); for rank and rating items the shown permutation of positions.
    shown_order: Mapped[str] = mapped_column(String(2))
    shown_permutation: Mapped[list[int] | None] = mapped_column(JSONType)
    # The guidelines version current when the item was handed out: what the annotator was shown.
    guidelines_id: Mapped[int | None] = mapped_column(ForeignKey("guidelines.id"))
    leased_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    item: Mapped[Item] = relationship()


class ItemDecision(Base):
    """An item's final answer, which wins over whatever its labels aggregate to: a gold answer
    (marked by a reviewer, or a generated attention check's known answer) or a reviewer's
    adjudication of a dispute. One per item; a new decision replaces the old, and the audit log
    keeps every one. Gold items are served to every annotator to measure them (feedback/gold.py);
    attention checks never reach training.

    `choice` (a / b / tie / both_bad) for pairs, `thumb` (up / down) for single responses."""

    __tablename__ = "item_decisions"
    __table_args__ = (
        CheckConstraint(_in("origin", DECISION_ORIGINS), name="origin"),
        CheckConstraint(f"choice IS NULL OR {_in('choice', PAIRWISE_CHOICES)}", name="choice"),
        CheckConstraint(f"thumb IS NULL OR {_in('thumb', THUMB_VALUES)}", name="thumb"),
        CheckConstraint("(choice IS NULL) <> (thumb IS NULL)", name="one_value"),
        CheckConstraint("origin <> 'attention' OR gold", name="attention_is_gold"),
        Index("ix_item_decisions_project_gold", "project_id", "gold"),
    )

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    origin: Mapped[str] = mapped_column(String(16))
    gold: Mapped[bool] = mapped_column(Boolean, default=False)
    choice: Mapped[str | None] = mapped_column(String(8))
    thumb: Mapped[str | None] = mapped_column(String(4))
    note: Mapped[str] = mapped_column(Text, default="")
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AnnotatorStanding(Base):
    """An annotator's standing on one project, from their gold answers: ok, warned, or paused
    (no more items from this project until an admin lifts it). Gold answers count from
    `counted_from`, so a lifted pause starts afresh."""

    __tablename__ = "annotator_standings"
    __table_args__ = (CheckConstraint(_in("status", STANDINGS), name="status"),)

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(8), default="ok")
    gold_answers: Mapped[int] = mapped_column(Integer, default=0)  # counted since counted_from
    gold_correct: Mapped[int] = mapped_column(Integer, default=0)
    # Gold answers the annotator took back with "undo": they still count (an undo must not erase
    # a miss the warning just revealed), on top of the answers recounted from the labels.
    undone_answers: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    undone_correct: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    counted_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class ApiToken(Base):
    """A token for the HTTP API; it acts as its user, with the user's role. Only the sha256 of the
    token is stored (it is shown once, when made); `prefix` is its first characters, to tell
    tokens apart in listings."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UserSession(Base):
    """A browser sign-in. Only hashes are stored: `ticket_hash` of the one-time ticket the
    signed-in tab trades, once and within a minute, for the session cookie; `token_hash` of the
    token in that HttpOnly cookie. Revoked on sign-out, password reset, deactivation and role change."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    ticket_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    ticket_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    client: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(String(32))


class Webhook(Base):
    """A URL that receives signed JSON POSTs for the events it subscribes to. Its signing secret
    is not stored: it is derived from the server's secret key and the webhook's id."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: pending until delivered or out of retries; the delivery log."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id"), index=True)
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SignInFailure(Base):
    """Failed sign-ins, for rate limiting per username and per client across every app process."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_username_at", "username", "at"),
                      Index("ix_sign_in_failures_client_at", "client", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    # The client's address as the server saw it ("" when unknown).
    client: Mapped[str] = mapped_column(String(64), default="", server_default=text("''"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Judgment(Base):
    """One AI-judge decision on one item within one judge job: both orders' raw answers and the
    outcome. It exists whether or not a label came of it (an inconsistent verdict is routed to
    humans), so a resumed job never judges an item twice and flip rates can be measured."""

    __tablename__ = "judgments"
    __table_args__ = (
        CheckConstraint(_in("outcome", JUDGMENT_OUTCOMES), name="outcome"),
        UniqueConstraint("job_id", "item_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    constitution_id: Mapped[int] = mapped_column(ForeignKey("constitutions.id"), index=True)
    backend: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(255))
    template_version: Mapped[str] = mapped_column(String(32))
    # 'a' / 'b' / 'tie' when both orders agree; 'inconsistent' when they do not; 'failed' when no
    # parseable verdict came back after retries.
    outcome: Mapped[str] = mapped_column(String(16))
    verdict_ab: Mapped[str | None] = mapped_column(String(8))  # the winner with response_a shown first
    verdict_ba: Mapped[str | None] = mapped_column(String(8))  # the winner with response_b shown first
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    label_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SnapshotLabel(Base):
    __tablename__ = "snapshot_labels"

    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id"), primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id"), primary_key=True)


class AuditLog(Base):
    """Who changed what, for every mutating action in the service layer."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # "cli", "app:alice", "worker:job-12" ...
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
