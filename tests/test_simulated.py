"""Simulated annotators label through the real queue (claims, leases, exactly-once labels), each
as a member of the project, and each kind labels the way it says (SQLite and Postgres)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Assignment, Item, Label, ProjectMember, Prompt, Response, User
from feedback.actors import CLI, Actor
from feedback.errors import PermissionDenied, UserError
from feedback.policies import ensure_base_policy
from feedback.projects import create_project, default_project
from feedback.prompts import canonical_messages, content_hash
from judges.simulated import parse_pool, run_simulation
from testkit.factories import make_users


def arithmetic_pairs(engine, count: int, *, with_reference: bool = True) -> None:
    """`count` pairs of a right and a wrong answer to i + i (right one alternately a and b)."""
    with session_scope(engine) as s:
        v0 = ensure_base_policy(session=s, actor=CLI)
        project = default_project(session=s)
        for i in range(count):
            messages = canonical_messages(f"What is {i} + {i}?", None)
            prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                            reference=str(2 * i) if with_reference else None)
            s.add(prompt)
            s.flush()
            right, wrong = (Response(prompt_id=prompt.id, policy_version_id=v0.id, text=t, params={})
                            for t in (f"It is {2 * i}.", f"It is {2 * i + 1}."))
            s.add_all([right, wrong])
            s.flush()
            a, b = (right, wrong) if i % 2 == 0 else (wrong, right)
            s.add(Item(kind="pair", project_id=project.id, prompt_id=prompt.id, response_a_id=a.id,
                       response_b_id=b.id))


def correct_side(s, label: Label) -> str:
    item = s.get(Item, label.item_id)
    reference = item.prompt.reference
    return "a" if item.response_a.text == f"It is {reference}." else "b"


def test_each_kind_labels_as_it_says_through_the_queue(engine):
    arithmetic_pairs(engine, 12)
    with session_scope(engine) as s:
        default_project(session=s).overlap = 4  # every annotator sees every pair
    result = run_simulation(engine=engine, project="default", pool="grader:2,left:1,adversarial:1",
                            labels=1000, actor=CLI, seed=3)
    assert result["labels"] == 48 and result["by_kind"] == {"grader": 24, "left": 12, "adversarial": 12}
    with session_scope(engine, read_only=True) as s:
        rows = s.execute(select(Label, User.username).join(User, User.id == Label.user_id)).all()
        assert len(rows) == 48 and all(label.source == "human" for label, _ in rows)
        for label, name in rows:
            right = correct_side(s, label)
            if name.startswith("sim-grader-"):
                assert label.choice == right
            elif name == "sim-adversarial-1":
                assert label.choice == {"a": "b", "b": "a"}[right]
            else:  # left: whatever was shown on the left, in the item's own a/b terms
                assert name == "sim-left-1" and label.choice == ("a" if label.shown_order == "ab" else "b")
        # Real users of the project, through real assignments: one per (item, annotator), all done.
        members = s.scalars(select(User.username).join(ProjectMember, ProjectMember.user_id == User.id)).all()
        assert {"sim-grader-1", "sim-grader-2", "sim-left-1", "sim-adversarial-1"} <= set(members)
        assert s.scalar(select(func.count()).select_from(Assignment).where(Assignment.status == "done")) == 48
        per_item = s.execute(select(Label.item_id, func.count()).group_by(Label.item_id)).all()
        assert {n for _, n in per_item} == {4}


def test_noise_and_the_label_budget(engine):
    arithmetic_pairs(engine, 30)
    first = run_simulation(engine=engine, project="default", pool="grader:1:noise=1.0", labels=20, actor=CLI, seed=1)
    assert first["labels"] == 20  # stops at the budget; overlap 1 leaves the other 10 pairs open
    with session_scope(engine, read_only=True) as s:
        labels = s.scalars(select(Label)).all()
        wrong = sum(label.choice != correct_side(s, label) for label in labels)
    assert wrong >= 5  # noise 1: every answer is random (left, right or tie), so many are wrong
    again = run_simulation(engine=engine, project="default", pool="grader:1", labels=50, actor=CLI)
    assert again["labels"] == 10  # the same user again: only the pairs it has not had; then the pool is empty


def test_items_without_a_reference_are_skipped_by_graders(engine):
    arithmetic_pairs(engine, 3, with_reference=False)
    result = run_simulation(engine=engine, project="default", pool="grader:1,random:1", labels=10, actor=CLI)
    assert result["by_kind"] == {"random": 3} and result["skipped"] == {"grader": 3}


def test_thumbs_in_a_binary_project(engine):
    with session_scope(engine) as s:
        v0 = ensure_base_policy(session=s, actor=CLI)
        project = create_project(session=s, actor=CLI, name="thumbs", task_type="binary")
        for i in range(4):
            messages = canonical_messages(f"What is {i} + {i}?", None)
            prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                            reference=str(2 * i))
            s.add(prompt)
            s.flush()
            response = Response(prompt_id=prompt.id, policy_version_id=v0.id, text=f"{2 * i + i % 2}", params={})
            s.add(response)
            s.flush()
            s.add(Item(kind="single", project_id=project.id, prompt_id=prompt.id, response_a_id=response.id))
    result = run_simulation(engine=engine, project="thumbs", pool="grader:1", labels=10, actor=CLI)
    assert result["labels"] == 4
    with session_scope(engine, read_only=True) as s:
        thumbs = [t for t, in s.execute(select(Label.thumb).order_by(Label.item_id))]
    assert thumbs == ["up", "down", "up", "down"]  # odd i answered wrong


@pytest.mark.parametrize(("pool", "message"), [
    ("", "at least one"),
    ("grader", "kind:count"),
    ("grader:0", "from 1 to 100"),
    ("psychic:2", "Unknown simulated annotator 'psychic'"),
    ("grader:2:noise=lots", "noise must be a number"),
    ("grader:2:noise=2", "noise is a probability"),
    ("left:1:noise=0.1", "'left' takes no options"),
    ("grader:1:grader=regex:[", "regex"),
    ("grader:2:noise=0.1,random:1,grader:1", "grader appears twice"),
])
def test_bad_pools_are_user_errors(pool, message):
    with pytest.raises(UserError, match=message):
        parse_pool(pool)


def test_only_admins_simulate_and_only_pairwise_or_binary(engine):
    arithmetic_pairs(engine, 1)
    with session_scope(engine) as s:
        (uid,) = make_users(s, 1)
        annotator = s.get(User, uid)
        create_project(session=s, actor=CLI, name="ranked", task_type="rank")
    with pytest.raises(PermissionDenied):
        run_simulation(engine=engine, project="default", pool="left:1", labels=1, actor=Actor.signed_in(annotator))
    with pytest.raises(UserError, match="pairwise and binary projects, not rank"):
        run_simulation(engine=engine, project="ranked", pool="left:1", labels=1, actor=CLI)
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Label)) == 0
        assert s.scalar(select(User.id).where(User.username.like("sim-%"))) is None
