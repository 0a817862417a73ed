"""Data factories shared by the tests and the benchmarks: rows built straight through the ORM,
without the import, sampling or labelling services (those are what the tests exercise)."""
from __future__ import annotations

import uuid

from sqlalchemy import Engine

from db.engine import session_scope
from db.models import Item, ItemResponse, PolicyVersion, Project, Prompt, Response, User
from feedback.actors import Actor
from feedback.policies import ensure_base_policy
from feedback.projects import default_project
from feedback.prompts import canonical_messages, content_hash
from judges.constitutions import ensure_shipped

# Who the factories' audit rows name, unless a caller says otherwise (bench/judge.py: "bench").
FACTORY = Actor.process("testkit")

# --- the annotation queue (tests/test_queue.py, tests/test_concurrency.py, bench/annotation_queue.py)


def _new_prompt(tags: list[str] | None) -> Prompt:
    text = f"prompt {uuid.uuid4().hex[:12]}"
    messages = canonical_messages(text, None)
    return Prompt(text=text, messages=messages, content_hash=content_hash(messages), split="train",
                  tags=list(tags or []), source="test")


def make_items(session, *, pairs: int = 0, singles: int = 0, tags: list[str] | None = None,
               policy: PolicyVersion | None = None, actor: Actor = FACTORY) -> list[int]:
    """`pairs` pair items then `singles` single items, each on its own new prompt, in the default
    projects of their kinds; returns their ids.

    Response texts are "<prompt> :: A" / "<prompt> :: B" so a test can tell which one is shown where.
    """
    policy = policy or ensure_base_policy(session=session, actor=actor)
    items = []
    for kind, count in (("pair", pairs), ("single", singles)):
        project = default_project(session=session, kind=kind) if count else None
        for _ in range(count):
            prompt = _new_prompt(tags)
            a = Response(prompt=prompt, policy_version_id=policy.id, text=f"{prompt.text} :: A")
            b = Response(prompt=prompt, policy_version_id=policy.id, text=f"{prompt.text} :: B") \
                if kind == "pair" else None
            items.append(Item(kind=kind, project_id=project.id, prompt=prompt, response_a=a, response_b=b))
    session.add_all(items)
    session.flush()
    return [item.id for item in items]


def make_project_items(session, *, project: Project, count: int, tags: list[str] | None = None,
                       policy: PolicyVersion | None = None, actor: Actor = FACTORY) -> list[int]:
    """`count` items of the project's kind, each on its own new prompt; returns their ids.

    Rank and rating items hold the project's K responses, texts "<prompt> :: 0" .. ":: K-1" by
    position; edit and binary items one response "<prompt> :: 0"; pairs ":: A" and ":: B"."""
    if project.task_type == "pairwise":
        raise ValueError("use make_items for pairs")
    policy = policy or ensure_base_policy(session=session, actor=actor)
    kind = {"binary": "single"}.get(project.task_type, project.task_type)
    ids = []
    for _ in range(count):
        prompt = _new_prompt(tags)
        responses = [Response(prompt=prompt, policy_version_id=policy.id, text=f"{prompt.text} :: {p}")
                     for p in range(project.k)]
        item = Item(kind=kind, project_id=project.id, prompt=prompt, response_a=responses[0])
        session.add_all([*responses, item])
        session.flush()
        if kind in ("rank", "rating"):
            session.add_all([ItemResponse(item_id=item.id, position=p, response_id=r.id)
                             for p, r in enumerate(responses)])
        ids.append(item.id)
    session.flush()
    return ids


def make_users(session, count: int, *, role: str = "annotator", prefix: str = "ann") -> list[int]:
    """Users with an unusable password hash (fast: no argon2); for tests that never sign in."""
    users = [User(username=f"{prefix}{i:03d}", role=role, password_hash="!") for i in range(count)]
    session.add_all(users)
    session.flush()
    return [u.id for u in users]


def set_queue(session, *, project: Project | None = None, kind: str = "pair", **fields) -> Project:
    """Set queue fields of a project (default: the default project of `kind`) directly, with no
    validation and no audit entry."""
    settings = project or default_project(session=session, kind=kind)
    for name, value in fields.items():
        setattr(settings, name, value)
    session.flush()
    return settings


# --- the AI judge (tests/test_judge_e2e.py, bench/judge.py) -------------------------------------


def seed_short_long_pairs(engine: Engine, count: int, actor: Actor = FACTORY) -> None:
    """`count` pairs, each a short and a long correct answer to i + i, the short one alternately
    shown as a and as b (so a judge biased to one position is caught)."""
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        v0 = ensure_base_policy(session=s, actor=actor)
        for i in range(count):
            messages = canonical_messages(f"What is {i} + {i}?", None)
            prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages))
            s.add(prompt)
            s.flush()
            short = Response(prompt_id=prompt.id, policy_version_id=v0.id, text=f"{2 * i}.", params={})
            long = Response(prompt_id=prompt.id, policy_version_id=v0.id,
                            text=f"Well, let me think about it at length: the answer is {2 * i}.", params={})
            s.add_all([short, long])
            s.flush()
            a, b = (short, long) if i % 2 == 0 else (long, short)
            s.add(Item(kind="pair", project_id=default_project(session=s).id, prompt_id=prompt.id,
                       response_a_id=a.id, response_b_id=b.id))


# --- dashboards and calibration (tests/test_dashboards.py, tests/test_app_dashboards.py) --------


def add_label(session, *, item_id: int, at, source: str = "human", user_id: int | None = None,
              leased_at=None, constitution_id: int | None = None, **values):
    """A label written at `at` (default: a pairwise "a"; pass kind=/thumb= etc. for others). A
    human label comes with the finished assignment the queue would have left, leased at
    `leased_at` (default: 10 s before)."""
    from datetime import timedelta

    from db.models import Assignment, Label

    values = values or {"kind": "pairwise", "choice": "a"}
    label = Label(item_id=item_id, source=source, user_id=user_id, constitution_id=constitution_id,
                  submission_id=uuid.uuid4().hex, created_at=at, **values)
    session.add(label)
    if source == "human":
        leased_at = leased_at or at - timedelta(seconds=10)
        session.add(Assignment(item_id=item_id, user_id=user_id, status="done", shown_order="ab",
                               leased_at=leased_at, expires_at=leased_at + timedelta(minutes=10), finished_at=at))
    session.flush()
    return label


def add_lease(session, *, item_id: int, user_id: int, leased_at, expires_at):
    """An open lease of `item_id` to `user_id`, as claim_next leaves it."""
    from db.models import Assignment

    lease = Assignment(item_id=item_id, user_id=user_id, status="leased", shown_order="ab", leased_at=leased_at,
                       expires_at=expires_at)
    session.add(lease)
    session.flush()
    return lease


def add_judgment(session, *, item_id: int, constitution_id: int, at, outcome: str = "a",
                 cost_usd: float | None = None, backend: str = "anthropic", model: str = "claude-test"):
    """One judgment made at `at`, in a judge job of its own."""
    from db.models import Job, Judgment

    job = Job(kind="judge", status="succeeded", created_at=at)
    session.add(job)
    session.flush()
    verdicts = {"a": ("a", "a"), "b": ("b", "b"), "tie": ("tie", "tie"), "inconsistent": ("a", "b")}
    ab, ba = verdicts.get(outcome, (None, None))
    judgment = Judgment(job_id=job.id, item_id=item_id, constitution_id=constitution_id, backend=backend,
                        model=model, template_version="test", outcome=outcome, verdict_ab=ab, verdict_ba=ba,
                        cost_usd=cost_usd, created_at=at)
    session.add(judgment)
    session.flush()
    return judgment
