"""Undo of one's last label (feedback.queue.undo_last_label), on real SQLite and real Postgres:
the item comes back to the same annotator under the same assignment while their lease runs,
never once the label is frozen into a snapshot or a reviewer decided the item after it; gold
answers are undone like any other and the standing is recounted."""
from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import AnnotatorStanding, Assignment, AuditLog, Label, User, WebhookDelivery, utcnow
from feedback import adjudication, gold, queue
from feedback.actors import CLI, Actor
from feedback.errors import UserError
from feedback.projects import create_project, default_project
from testkit.factories import make_items, make_project_items, make_users, set_queue
from training.snapshot import SnapshotFilter, create_snapshot

LEASE = 600


@pytest.fixture
def people(engine):
    """Two annotators (ids) and a reviewer; overlap 1 with a 10-minute lease."""
    with session_scope(engine) as s:
        a, b = make_users(s, 2)
        (reviewer,) = make_users(s, 1, role="reviewer", prefix="rev")
        set_queue(s, overlap=1, lease_seconds=LEASE)
    return {"a": a, "b": b, "reviewer": reviewer}


def claim(engine, user_id: int, *, now=None, project=None) -> queue.Claim | None:
    with session_scope(engine) as s:
        return queue.claim_next(session=s, user=s.get(User, user_id), project=project, kind="pair", now=now,
                                rng=random.Random(0))


def vote(engine, user_id: int, assignment_id: int, preferred: str = "left", rationale: str | None = None) -> Label:
    with session_scope(engine) as s:
        return queue.submit_pairwise(session=s, user=s.get(User, user_id), assignment_id=assignment_id,
                                     submission_id=uuid.uuid4().hex, preferred=preferred, rationale=rationale)


def undo(engine, user_id: int, label_id: int, *, now=None) -> int:
    with session_scope(engine) as s:
        return queue.undo_last_label(session=s, user=s.get(User, user_id), label_id=label_id, now=now)


def count(engine, model, *where) -> int:
    with session_scope(engine, read_only=True) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def test_undo_within_the_lease_gives_the_same_item_back_and_the_next_submit_writes_one_label(engine, people):
    with session_scope(engine) as s:
        make_items(s, pairs=3)
    first = claim(engine, people["a"])
    label = vote(engine, people["a"], first.assignment_id, rationale="A is clearer")
    following = claim(engine, people["a"])  # the page moved on to the next pair
    assert following.item_id != first.item_id

    assert undo(engine, people["a"], label.id) == first.assignment_id
    again = claim(engine, people["a"])
    assert again == first  # same assignment, same item, same order shown, same expiry
    with session_scope(engine, read_only=True) as s:
        assignment = s.get(Assignment, first.assignment_id)
        assert (assignment.status, assignment.finished_at) == ("leased", None)
        entry = s.scalar(select(AuditLog).where(AuditLog.action == "label.undo"))
        assert entry.target == f"item:{first.item_id}" and entry.user_id == people["a"]
        assert entry.details["label_id"] == label.id and entry.details["assignment_id"] == first.assignment_id
        assert (entry.details["kind"], entry.details["choice"], entry.details["rationale"]) == (
            "pairwise", label.choice, "A is clearer")
        assert entry.details["submission_id"] == label.submission_id
    # The other annotator cannot take the slot meanwhile: the item is still a's.
    assert claim(engine, people["b"]).item_id not in (first.item_id, following.item_id)

    relabel = vote(engine, people["a"], first.assignment_id, preferred="right")
    assert relabel.submission_id != label.submission_id and relabel.choice != label.choice
    assert count(engine, Label, Label.item_id == first.item_id) == 1
    assert count(engine, Label, Label.user_id == people["a"]) == 1
    assert claim(engine, people["a"]) == following  # then on to the pair after it
    assert count(engine, WebhookDelivery) == 0  # no event for it


def test_undo_after_the_lease_ran_out_is_refused(engine, people):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, people["a"])
    label = vote(engine, people["a"], c.assignment_id)
    with pytest.raises(UserError, match="Too late to undo: your time on this item has run out"):
        undo(engine, people["a"], label.id, now=c.expires_at)
    assert count(engine, Label) == 1
    assert undo(engine, people["a"], label.id, now=c.expires_at - timedelta(seconds=1)) == c.assignment_id


def test_undo_of_a_label_in_a_snapshot_is_refused(engine, people):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, people["a"])
    label = vote(engine, people["a"], c.assignment_id)
    with session_scope(engine) as s:
        create_snapshot(session=s, filters=SnapshotFilter(), actor=CLI)
    with pytest.raises(UserError, match="Too late to undo: this label is already in a training snapshot"):
        undo(engine, people["a"], label.id)
    with session_scope(engine, read_only=True) as s:
        assert s.get(Label, label.id) is not None
        assert s.get(Assignment, c.assignment_id).status == "done"


def test_undo_after_a_reviewer_decided_the_item_is_refused(engine, people):
    with session_scope(engine) as s:
        (item_id,) = make_items(s, pairs=1)
    c = claim(engine, people["a"])
    label = vote(engine, people["a"], c.assignment_id)
    with session_scope(engine) as s:
        adjudication.adjudicate(session=s, actor=Actor.signed_in(s.get(User, people["reviewer"])), item_id=item_id,
                                answer="tie", note="both fine")
    with pytest.raises(UserError, match="a reviewer has already decided this item"):
        undo(engine, people["a"], label.id)
    assert count(engine, Label) == 1


def test_someone_elses_label_and_a_label_from_no_queue_are_refused(engine, people):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
        (imported,) = make_items(s, pairs=1)
    c = claim(engine, people["a"])
    label = vote(engine, people["a"], c.assignment_id)
    with pytest.raises(UserError, match="not yours to undo"):
        undo(engine, people["b"], label.id)
    with session_scope(engine) as s:  # as an import writes them: no assignment behind it
        s.add(Label(item_id=imported, kind="pairwise", choice="a", source="human", user_id=people["b"],
                    submission_id="imported-1"))
        s.flush()
        imported_label = s.scalar(select(Label.id).where(Label.submission_id == "imported-1"))
    with pytest.raises(UserError, match="Only a label given on a labelling page"):
        undo(engine, people["b"], imported_label)
    assert count(engine, Label) == 2
    assert count(engine, AuditLog, AuditLog.action == "label.undo") == 0


def test_a_second_undo_is_refused(engine, people):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, people["a"])
    label = vote(engine, people["a"], c.assignment_id)
    undo(engine, people["a"], label.id)
    with pytest.raises(UserError, match="taken back already"):
        undo(engine, people["a"], label.id)
    assert count(engine, AuditLog, AuditLog.action == "label.undo") == 1


def test_two_undos_at_once_undo_once(engine, people):
    """The second undo starts while the first is not yet committed: it waits, then refuses."""
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, people["a"])
    label = vote(engine, people["a"], c.assignment_id)
    outcome = {}

    def second_undo():
        try:
            outcome["assignment"] = undo(engine, people["a"], label.id)
        except UserError as exc:
            outcome["error"] = str(exc)

    with session_scope(engine) as s:
        assert queue.undo_last_label(session=s, user=s.get(User, people["a"]), label_id=label.id) == c.assignment_id
        thread = threading.Thread(target=second_undo)
        thread.start()
        time.sleep(0.5)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert outcome == {"error": queue.ALREADY_UNDONE}
    assert count(engine, AuditLog, AuditLog.action == "label.undo") == 1
    assert count(engine, Label) == 0
    assert claim(engine, people["a"]) == c


def test_undo_of_a_gold_answer_works_alike_but_the_miss_still_counts(engine, people):
    with session_scope(engine) as s:
        (item_id,) = make_items(s, pairs=1)
        set_queue(s, gold_rate=1.0, gold_min_answers=1, gold_min_accuracy=0.7)
        gold.mark_gold(session=s, actor=Actor.signed_in(s.get(User, people["reviewer"])), item_id=item_id,
                       answer="tie")
        project_id = default_project(session=s).id

    def standing() -> tuple[str, int, int]:
        with session_scope(engine, read_only=True) as s:
            row = s.get(AnnotatorStanding, (project_id, people["a"]))
            return row.status, row.gold_answers, row.gold_correct

    c = claim(engine, people["a"])
    assert c.item_id == item_id
    wrong = vote(engine, people["a"], c.assignment_id, preferred="left")
    assert standing() == ("warned", 1, 0)
    # Undo works as on any other item (nothing tells a check item apart) ...
    assert undo(engine, people["a"], wrong.id) == c.assignment_id
    assert claim(engine, people["a"]) == c
    # ... but the miss the warning revealed is not erased: the standing still counts it.
    assert standing() == ("warned", 1, 0)
    vote(engine, people["a"], c.assignment_id, preferred="tie")
    assert standing() == ("paused", 2, 1)  # 1 of 2 right, at twice gold_min_answers (1)
    with session_scope(engine, read_only=True) as s:
        actions = s.scalars(select(AuditLog.action).where(AuditLog.action.like("standing.%") |
                                                         (AuditLog.action == "label.undo")).order_by(AuditLog.id))
        assert list(actions) == ["standing.warned", "label.undo", "standing.paused"]


def test_a_paused_annotator_cannot_undo(engine, people):
    with session_scope(engine) as s:
        make_items(s, pairs=2)
        set_queue(s, gold_rate=0.0)
    c = claim(engine, people["a"])
    label = vote(engine, people["a"], c.assignment_id, preferred="left")
    with session_scope(engine) as s:
        project = default_project(session=s)
        s.add(AnnotatorStanding(project_id=project.id, user_id=people["a"], status="paused", gold_answers=10,
                                gold_correct=0, changed_at=utcnow()))
    with pytest.raises(UserError, match="paused"):
        undo(engine, people["a"], label.id)


@pytest.mark.parametrize("task,submit,values", [
    ("binary", queue.submit_binary, {"thumb": "down"}),
    ("rank", queue.submit_rank, {"ranks": [1, 2, 3]}),
    ("rating", queue.submit_rating, {"ratings": [{"scores": {"helpfulness": s}} for s in (1, 3, 5)]}),
    ("edit", queue.submit_edit, {"edited_text": "a better answer"}),
])
def test_every_task_kind_can_be_undone(engine, people, task, submit, values):
    with session_scope(engine) as s:
        shape = {"k": 3} if task in ("rank", "rating") else {}
        if task == "rating":
            shape["aspects"] = ["helpfulness"]
        project = create_project(session=s, actor=CLI, name=f"p-{task}", task_type=task, open_to_all=True, **shape)
        make_project_items(s, project=project, count=1)
        project_id = project.id
    with session_scope(engine) as s:
        user = s.get(User, people["a"])
        c = queue.claim_next(session=s, user=user, project=project_id)
        label = submit(session=s, user=user, assignment_id=c.assignment_id, submission_id="x", **values)
    undo(engine, people["a"], label.id)
    with session_scope(engine) as s:
        user = s.get(User, people["a"])
        assert queue.claim_next(session=s, user=user, project=project_id) == c
        again = submit(session=s, user=user, assignment_id=c.assignment_id, submission_id="y", **values)
        assert again.submission_id == "y"  # written anew, not the undone label found again
    assert count(engine, Label) == 1
