"""The annotation queue and the account rules it leans on, on real SQLite and real Postgres.

Each test states one rule from the docstrings of feedback/queue.py and feedback/users.py. Time is
moved with the `now=` parameters, never by sleeping. The builders (make_items, make_users,
set_queue) live in testkit/factories.py, shared with tests/test_concurrency.py and
bench/annotation_queue.py.
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import (
    Assignment,
    AuditLog,
    Label,
    PolicyVersion,
    Project,
    SignInFailure,
    User,
)
from feedback import browse, queue
from feedback.actors import CLI, Actor
from feedback.errors import PermissionDenied, UserError
from feedback.projects import default_project
from feedback.users import (
    FAILURE_WINDOW,
    MAX_FAILURES,
    TooManyAttempts,
    add_user,
    create_user,
    list_users,
    reset_password,
    set_active,
    set_role,
    sign_in,
)
from testkit.factories import make_items, make_users, set_queue

# --- helpers ------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LEASE = 600


def rng_showing(order: str) -> random.Random:
    """A seeded rng whose first choice of shown order is `order`."""
    for seed in range(100):
        if random.Random(seed).choice(("ab", "ba")) == order:
            return random.Random(seed)
    raise AssertionError("no seed")


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def claim(engine, uid, *, kind="pair", now=T0, rng=None):
    with session_scope(engine) as s:
        return queue.claim_next(session=s, user=s.get(User, uid), kind=kind, now=now, rng=rng)


def submit(engine, uid, assignment_id, *, preferred="left", submission_id=None, now=T0, **kw):
    with session_scope(engine) as s:
        return queue.submit_pairwise(session=s, user=s.get(User, uid), assignment_id=assignment_id,
                                     submission_id=submission_id or uuid.uuid4().hex, preferred=preferred,
                                     now=now, **kw)


@pytest.fixture
def world(engine):
    """Three annotators (a, b, c), a reviewer and an admin; overlap 1 unless a test changes it."""
    with session_scope(engine) as s:
        a, b, c = make_users(s, 3)
        (reviewer,) = make_users(s, 1, role="reviewer", prefix="rev")
        (admin,) = make_users(s, 1, role="admin", prefix="adm")
        set_queue(s, overlap=1, lease_seconds=LEASE)
    return dict(a=a, b=b, c=c, reviewer=reviewer, admin=admin)


# --- claiming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["ab", "ba"])
def test_claim_shows_the_shown_order_and_a_rerun_gets_the_same_lease(engine, world, order):
    with session_scope(engine) as s:
        (item_id,) = make_items(s, pairs=1)
    first = claim(engine, world["a"], rng=rng_showing(order))
    assert first is not None and first.item_id == item_id and first.shown_order == order
    left, right = ("A", "B") if order == "ab" else ("B", "A")
    assert first.left.endswith(f":: {left}") and first.right.endswith(f":: {right}")
    assert first.messages[-1]["role"] == "user"
    assert first.expires_at == T0 + timedelta(seconds=LEASE)

    # A rerun of the page (later, with another rng) shows the same assignment in the same order.
    again = claim(engine, world["a"], now=T0 + timedelta(seconds=30), rng=rng_showing("ab" if order == "ba" else "ba"))
    assert again == first
    with session_scope(engine, read_only=True) as s:
        assert count(s, Assignment) == 1


@pytest.mark.parametrize("order", ["ab", "ba"])
@pytest.mark.parametrize("preferred, canonical", [("left", None), ("right", None), ("tie", "tie"),
                                                  ("both_bad", "both_bad")])
def test_submit_maps_left_right_to_the_items_own_a_b(engine, world, order, preferred, canonical):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, world["a"], rng=rng_showing(order))
    label = submit(engine, world["a"], c.assignment_id, preferred=preferred)
    if canonical is None:  # the letter of the response that was shown on that side
        shown = c.left if preferred == "left" else c.right
        canonical = shown.rsplit(":: ", 1)[1].lower()
    assert label.choice == canonical
    assert label.shown_order == order
    assert (label.kind, label.source, label.user_id, label.item_id) == ("pairwise", "human", world["a"], c.item_id)
    with session_scope(engine, read_only=True) as s:
        assert s.get(Assignment, c.assignment_id).status == "done"


def test_strength_only_with_left_or_right(engine, world):
    with session_scope(engine) as s:
        make_items(s, pairs=4)
    for preferred, strength in (("tie", "slight"), ("both_bad", "much"), ("left", "very"), ("nope", None)):
        c = claim(engine, world["a"])
        with pytest.raises(UserError):
            submit(engine, world["a"], c.assignment_id, preferred=preferred, strength=strength)
    with session_scope(engine, read_only=True) as s:
        assert count(s, Label) == 0
    assert submit(engine, world["a"], c.assignment_id, preferred="left", strength="much").strength == "much"
    c = claim(engine, world["a"])
    assert submit(engine, world["a"], c.assignment_id, preferred="right", strength="slight").strength == "slight"
    c = claim(engine, world["a"])
    assert submit(engine, world["a"], c.assignment_id, preferred="tie").strength is None


def test_overlap_two_gives_an_item_to_exactly_two_different_annotators(engine, world):
    with session_scope(engine) as s:
        set_queue(s, overlap=2)
        (item_id,) = make_items(s, pairs=1)
    first, second = claim(engine, world["a"]), claim(engine, world["b"])
    assert first.item_id == second.item_id == item_id
    assert claim(engine, world["c"]) is None  # both slots leased
    submit(engine, world["a"], first.assignment_id)
    submit(engine, world["b"], second.assignment_id)
    assert claim(engine, world["c"]) is None  # both slots done
    with session_scope(engine, read_only=True) as s:
        who = sorted(s.scalars(select(Label.user_id).where(Label.item_id == item_id)))
    assert who == sorted([world["a"], world["b"]])


def test_never_the_same_item_twice_to_one_annotator_even_after_skip(engine, world):
    with session_scope(engine) as s:
        set_queue(s, overlap=2)
        first_id, second_id = make_items(s, pairs=2)
    c = claim(engine, world["a"])
    assert c.item_id == first_id
    with session_scope(engine) as s:
        queue.skip(session=s, user=s.get(User, world["a"]), assignment_id=c.assignment_id, now=T0)
    c2 = claim(engine, world["a"])
    assert c2.item_id == second_id  # not the skipped one, although it has free slots
    submit(engine, world["a"], c2.assignment_id)
    assert claim(engine, world["a"]) is None  # skipped one and labelled one: nothing left for a
    # ... and that holds long after every lease would have expired.
    assert claim(engine, world["a"], now=T0 + timedelta(days=2)) is None
    assert claim(engine, world["b"]).item_id == first_id  # the skip gave the slot back
    with session_scope(engine, read_only=True) as s:
        assert s.get(Assignment, c.assignment_id).status == "skipped"
    with pytest.raises(UserError):  # a skipped item cannot be labelled afterwards
        submit(engine, world["a"], c.assignment_id)


@pytest.mark.parametrize("overlap", [1, 2])
def test_a_claim_in_flight_does_not_hide_an_item_that_still_has_a_slot(engine, world, overlap):
    """a's claim holds the item (row lock on Postgres, the write lock on SQLite) when b asks."""
    with session_scope(engine) as s:
        set_queue(s, overlap=overlap)
        (item_id,) = make_items(s, pairs=1)
    outcome = {}

    def b_claims():
        outcome["b"] = claim(engine, world["b"])

    with session_scope(engine) as s:
        assert queue.claim_next(session=s, user=s.get(User, world["a"]), kind="pair", now=T0).item_id == item_id
        thread = threading.Thread(target=b_claims)
        thread.start()
        time.sleep(0.5)
    thread.join(timeout=30)
    assert not thread.is_alive()
    if overlap == 2:  # b waits for a's claim and gets the second slot, rather than "nothing to do"
        assert outcome["b"] is not None and outcome["b"].item_id == item_id
    else:
        assert outcome["b"] is None


def test_an_expired_lease_returns_the_item_to_the_pool(engine, world):
    with session_scope(engine) as s:
        (item_id,) = make_items(s, pairs=1)
    assert claim(engine, world["a"]).item_id == item_id
    assert claim(engine, world["b"], now=T0 + timedelta(seconds=LEASE - 1)) is None
    later = claim(engine, world["b"], now=T0 + timedelta(seconds=LEASE + 1))
    assert later is not None and later.item_id == item_id
    # a's lease has expired: a's page gets nothing (not the expired lease, not the item again).
    assert claim(engine, world["a"], now=T0 + timedelta(seconds=LEASE + 2)) is None


def test_late_submission_is_accepted_while_the_slot_is_still_free(engine, world):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, world["a"])
    late = T0 + timedelta(seconds=LEASE + 300)
    label = submit(engine, world["a"], c.assignment_id, now=late)
    with session_scope(engine, read_only=True) as s:
        assert s.get(Label, label.id) is not None
        assert s.get(Assignment, c.assignment_id).status == "done"
    assert claim(engine, world["b"], now=late) is None  # the slot is used


def test_late_submission_is_refused_when_the_slot_went_to_someone_else(engine, world):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, world["a"])
    late = T0 + timedelta(seconds=LEASE + 1)
    assert claim(engine, world["b"], now=late).item_id == c.item_id
    with pytest.raises(UserError, match="someone else"):
        submit(engine, world["a"], c.assignment_id, now=late + timedelta(seconds=5))
    with session_scope(engine, read_only=True) as s:
        assert count(s, Label) == 0
        assert s.get(Assignment, c.assignment_id).status == "leased"


def test_late_submission_racing_a_new_claim_does_not_exceed_overlap(engine, world):
    """b claims a's expired slot while a's late submission is on its way: one of them loses."""
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, world["a"])
    late = T0 + timedelta(seconds=LEASE + 1)
    outcome = {}

    def a_submits_late():
        try:
            outcome["label"] = submit(engine, world["a"], c.assignment_id, now=late)
        except UserError as e:
            outcome["error"] = e

    with session_scope(engine) as s:  # b's claim, not yet committed when a submits
        b_claim = queue.claim_next(session=s, user=s.get(User, world["b"]), kind="pair", now=late)
        assert b_claim is not None
        thread = threading.Thread(target=a_submits_late)
        thread.start()
        time.sleep(0.5)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert "error" in outcome, "a's late label was written although b holds the only slot"
    with session_scope(engine, read_only=True) as s:
        assert count(s, Label) == 0


# --- exactly-once labels ------------------------------------------------------------------------


def test_double_submit_with_the_same_submission_id_writes_one_label(engine, world):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, world["a"])
    first = submit(engine, world["a"], c.assignment_id, submission_id="click-1", preferred="left")
    again = submit(engine, world["a"], c.assignment_id, submission_id="click-1", preferred="left",
                   now=T0 + timedelta(seconds=1))
    assert again.id == first.id
    with session_scope(engine, read_only=True) as s:
        assert count(s, Label) == 1


def test_a_second_submit_with_a_new_submission_id_returns_the_existing_label(engine, world):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, world["a"])
    first = submit(engine, world["a"], c.assignment_id, submission_id="tab-1", preferred="left")
    second = submit(engine, world["a"], c.assignment_id, submission_id="tab-2", preferred="right")
    assert second.id == first.id and second.choice == first.choice and second.submission_id == "tab-1"
    with session_scope(engine, read_only=True) as s:
        assert count(s, Label) == 1


def test_submit_on_someone_elses_assignment_is_refused(engine, world):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, world["a"])
    with pytest.raises(UserError, match="not assigned to you"):
        submit(engine, world["b"], c.assignment_id)
    with pytest.raises(UserError, match="not assigned to you"):
        submit(engine, world["b"], 10_000)
    with session_scope(engine, read_only=True) as s:
        assert count(s, Label) == 0
        assert s.get(Assignment, c.assignment_id).status == "leased"


def test_submission_id_of_someone_else_is_refused(engine, world):
    with session_scope(engine) as s:
        set_queue(s, overlap=2)
        make_items(s, pairs=1)
    ca, cb = claim(engine, world["a"]), claim(engine, world["b"])
    submit(engine, world["a"], ca.assignment_id, submission_id="shared")
    with pytest.raises(UserError, match="someone else"):
        submit(engine, world["b"], cb.assignment_id, submission_id="shared")
    with session_scope(engine, read_only=True) as s:
        assert count(s, Label) == 1


def test_kind_mismatch_is_refused(engine, world):
    with session_scope(engine) as s:
        make_items(s, pairs=1, singles=1)
    pair = claim(engine, world["a"], kind="pair")
    single = claim(engine, world["a"], kind="single")
    assert single.right is None and single.shown_order == "ab"
    with session_scope(engine) as s, pytest.raises(UserError, match="pair item, not a single item"):
        queue.submit_binary(session=s, user=s.get(User, world["a"]), assignment_id=pair.assignment_id,
                            submission_id="x1", thumb="up", now=T0)
    with pytest.raises(UserError, match="single item, not a pair item"):
        submit(engine, world["a"], single.assignment_id)
    with session_scope(engine, read_only=True) as s:
        assert count(s, Label) == 0
    with session_scope(engine) as s:
        label = queue.submit_binary(session=s, user=s.get(User, world["a"]), assignment_id=single.assignment_id,
                                    submission_id="x2", thumb="down", now=T0)
    assert (label.kind, label.thumb, label.choice) == ("binary", "down", None)


# --- progress and settings ----------------------------------------------------------------------


def test_progress_counts_today_total_and_open_for_me(engine, world):
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        set_queue(s, overlap=2)
        make_items(s, pairs=4, singles=1)
    for _ in range(2):
        c = claim(engine, world["a"], now=now)
        submit(engine, world["a"], c.assignment_id, now=now)
    c = claim(engine, world["a"], now=now)  # leased, not labelled
    with session_scope(engine) as s:  # one of a's labels is from two days ago
        oldest = s.scalar(select(Label).order_by(Label.id).limit(1))
        oldest.created_at = now - timedelta(days=2)
    with session_scope(engine, read_only=True) as s:
        mine = queue.progress(session=s, user=s.get(User, world["a"]), kind="pair", now=now)
        theirs = queue.progress(session=s, user=s.get(User, world["b"]), kind="pair", now=now)
        singles = queue.progress(session=s, user=s.get(User, world["a"]), kind="single", now=now)
    assert (mine.today, mine.total, mine.open_for_me) == (1, 2, 1)  # 3 pairs had, 1 left
    assert (theirs.today, theirs.total, theirs.open_for_me) == (0, 0, 4)
    assert singles.open_for_me == 1


def test_queue_settings_prompt_tags_filter(engine, world):
    with session_scope(engine) as s:
        (math_id,) = make_items(s, pairs=1, tags=["math", "easy"])
        make_items(s, pairs=1, tags=["chat"])
        make_items(s, pairs=1)
        queue.update_queue_settings(session=s, project=default_project(session=s),
                                    actor=Actor.signed_in(s.get(User, world["admin"])), overlap=1,
                                    lease_seconds=LEASE, prompt_tags=[" math ", "poetry", ""], policy_version_ids=[],
                                    refill_below=4, refill_prompts=8)
    with session_scope(engine, read_only=True) as s:
        assert default_project(session=s).prompt_tags == ["math", "poetry"]
        assert queue.progress(session=s, user=s.get(User, world["a"]), kind="pair", now=T0).open_for_me == 1
        assert queue.open_item_count(session=s, now=T0) == 1
    assert claim(engine, world["a"]).item_id == math_id
    assert claim(engine, world["b"]) is None


def test_queue_settings_policy_version_filter(engine, world):
    with session_scope(engine) as s:
        make_items(s, pairs=2)  # v0
        v1 = PolicyVersion(name="v1", base_model="base", status="candidate")
        s.add(v1)
        s.flush()
        v1_ids = make_items(s, pairs=2, policy=v1)
        queue.update_queue_settings(session=s, project=default_project(session=s),
                                    actor=Actor.signed_in(s.get(User, world["admin"])), overlap=1,
                                    lease_seconds=LEASE, prompt_tags=[], policy_version_ids=[v1.id, v1.id],
                                    refill_below=4, refill_prompts=8)
        assert default_project(session=s).policy_version_ids == [v1.id]
    got = [claim(engine, uid).item_id for uid in (world["a"], world["b"])]
    assert sorted(got) == sorted(v1_ids)
    assert claim(engine, world["c"]) is None


def test_update_queue_settings_validates_and_audits(engine, world):
    with session_scope(engine) as s:
        admin = s.get(User, world["admin"])
        for bad in (dict(overlap=0), dict(lease_seconds=5), dict(refill_below=-1), dict(refill_prompts=0)):
            args = dict(overlap=2, lease_seconds=60, prompt_tags=[], policy_version_ids=[], refill_below=1,
                        refill_prompts=1) | bad
            with pytest.raises(UserError):
                queue.update_queue_settings(session=s, project=default_project(session=s),
                                            actor=Actor.signed_in(admin), **args)
        assert count(s, AuditLog) == 0
        queue.update_queue_settings(session=s, project=default_project(session=s), actor=Actor.signed_in(admin),
                                    overlap=3, lease_seconds=60,
                                    prompt_tags=[], policy_version_ids=[], refill_below=1, refill_prompts=1)
    with session_scope(engine, read_only=True) as s:
        settings = default_project(session=s)
        assert (settings.overlap, settings.lease_seconds, settings.updated_by_id) == (3, 60, world["admin"])
        assert s.scalar(select(AuditLog.action)) == "queue.settings"


def test_recent_labels_for_reviewers_and_admins_only(engine, world):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
    c = claim(engine, world["a"])
    submit(engine, world["a"], c.assignment_id, preferred="right", rationale="  clearer  ")
    with session_scope(engine, read_only=True) as s:
        with pytest.raises(PermissionDenied):
            browse.recent_labels(session=s, user=s.get(User, world["a"]))
        for role in ("reviewer", "admin"):
            rows = browse.recent_labels(session=s, user=s.get(User, world[role]))
            assert len(rows) == 1
            assert rows[0]["annotator"] == "ann000" and rows[0]["rationale"] == "clearer"
            assert rows[0]["choice"] in ("a", "b") and rows[0]["shown_order"] == c.shown_order
        assert browse.recent_labels(session=s, user=s.get(User, world["admin"]), username="ann001") == []


# --- accounts -----------------------------------------------------------------------------------


def failures_for(engine, username):
    with session_scope(engine, read_only=True) as s:
        return s.scalar(select(func.count()).select_from(SignInFailure).where(SignInFailure.username == username))


def try_sign_in(engine, username, password, now):
    with session_scope(engine) as s:
        user = sign_in(session=s, username=username, password=password, now=now)
        return user.id if user else None


def test_sign_in_is_refused_after_five_failures_until_the_window_passes(engine):
    with session_scope(engine) as s:
        uid = create_user(session=s, username="alice", role="annotator", password="correct-horse", actor=CLI).id
    for i in range(MAX_FAILURES):
        assert try_sign_in(engine, "alice", "wrong-password", T0 + timedelta(seconds=i)) is None
    assert failures_for(engine, "alice") == MAX_FAILURES
    for later in (timedelta(seconds=MAX_FAILURES), FAILURE_WINDOW - timedelta(seconds=1)):
        with pytest.raises(TooManyAttempts):  # even the right password
            try_sign_in(engine, "alice", "correct-horse", T0 + later)
    assert failures_for(engine, "alice") == MAX_FAILURES  # refusals are not counted as failures
    # Once the window has passed the oldest failures, fewer than five are left in it: the right password works.
    assert try_sign_in(engine, "alice", "correct-horse", T0 + FAILURE_WINDOW + timedelta(seconds=1)) == uid
    assert failures_for(engine, "alice") == 0


def test_a_successful_sign_in_clears_the_failures(engine):
    with session_scope(engine) as s:
        uid = create_user(session=s, username="bob", role="reviewer", password="correct-horse", actor=CLI).id
    for i in range(MAX_FAILURES - 1):
        assert try_sign_in(engine, "bob", "nope-nope", T0 + timedelta(seconds=i)) is None
    assert try_sign_in(engine, "bob", "correct-horse", T0 + timedelta(seconds=10)) == uid
    assert failures_for(engine, "bob") == 0
    for i in range(MAX_FAILURES - 1):  # four more: still not locked, the earlier four were forgotten
        assert try_sign_in(engine, "bob", "nope-nope", T0 + timedelta(seconds=20 + i)) is None
    assert try_sign_in(engine, " bob ", "correct-horse", T0 + timedelta(seconds=30)) == uid


def test_a_deactivated_user_cannot_sign_in(engine):
    with session_scope(engine) as s:
        admin = create_user(session=s, username="root", role="admin", password="correct-horse", actor=CLI)
        uid = create_user(session=s, username="carol", role="annotator", password="correct-horse", actor=CLI).id
        set_active(session=s, actor=Actor.signed_in(admin), user_id=uid, active=False)
    assert try_sign_in(engine, "carol", "correct-horse", T0) is None
    with session_scope(engine) as s:
        set_active(session=s, actor=Actor.signed_in(s.get(User, admin.id)), user_id=uid, active=True)
    assert try_sign_in(engine, "carol", "correct-horse", T0 + timedelta(seconds=1)) == uid


def test_the_last_active_admin_cannot_be_deactivated_or_demoted(engine):
    with session_scope(engine) as s:
        (root,) = make_users(s, 1, role="admin", prefix="root")
        (other,) = make_users(s, 1, role="reviewer", prefix="other")
    with session_scope(engine) as s:
        me = s.get(User, root)
        with pytest.raises(UserError, match="last active admin"):
            set_active(session=s, actor=Actor.signed_in(me), user_id=root, active=False)
        for role in ("reviewer", "annotator"):
            with pytest.raises(UserError, match="last active admin"):
                set_role(session=s, actor=Actor.signed_in(me), user_id=root, role=role)
        set_role(session=s, actor=Actor.signed_in(me), user_id=root, role="admin")  # no change: fine
    with session_scope(engine) as s:
        assert (s.get(User, root).role, s.get(User, root).active) == ("admin", True)
        set_role(session=s, actor=Actor.signed_in(s.get(User, root)), user_id=other, role="admin")
    with session_scope(engine) as s:  # two admins: one may go
        set_active(session=s, actor=Actor.signed_in(s.get(User, other)), user_id=root, active=False)
    with session_scope(engine) as s:
        # an inactive admin does not count: `other` is now the last one
        with pytest.raises(UserError, match="last active admin"):
            set_role(session=s, actor=Actor.signed_in(s.get(User, other)), user_id=other, role="reviewer")
        set_role(session=s, actor=Actor.signed_in(s.get(User, other)), user_id=root,
                 role="reviewer")  # inactive admin: fine
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.role == "admin", User.active)) == 1


def test_two_admins_demoting_each_other_at_once_leave_one_admin(engine):
    with session_scope(engine) as s:
        one, two = make_users(s, 2, role="admin", prefix="admin")
    outcome = {}

    def two_demotes_one():
        try:
            with session_scope(engine) as s:
                set_role(session=s, actor=Actor.signed_in(s.get(User, two)), user_id=one, role="reviewer")
            outcome["ok"] = True
        except UserError as e:
            outcome["error"] = e

    with session_scope(engine) as s:
        set_role(session=s, actor=Actor.signed_in(s.get(User, one)), user_id=two, role="reviewer")
        s.flush()
        thread = threading.Thread(target=two_demotes_one)
        thread.start()
        time.sleep(0.5)
    thread.join(timeout=30)
    assert not thread.is_alive()
    with session_scope(engine, read_only=True) as s:
        admins = s.scalar(select(func.count()).select_from(User).where(User.role == "admin", User.active))
    assert admins == 1 and "error" in outcome


# --- role matrix --------------------------------------------------------------------------------

# In this order: claim_next comes after submit/skip have used up the leases made in the setup.
ALL_ACTIONS = ("submit_pairwise", "submit_binary", "skip", "claim_next", "recent_labels",
               "update_queue_settings", "list_users", "add_user", "set_role", "set_active", "reset_password")
ANNOTATE = {"claim_next", "submit_pairwise", "submit_binary", "skip"}
ALLOWED = {
    "annotator": ANNOTATE,
    "reviewer": ANNOTATE | {"recent_labels"},
    "admin": set(ALL_ACTIONS),
    "inactive-admin": set(),
}


def _fingerprint(s) -> dict:
    """Everything a forbidden action could have touched."""
    return {
        "counts": {m.__tablename__: count(s, m) for m in (User, Assignment, Label, Project, AuditLog,
                                                          SignInFailure)},
        "users": s.execute(select(User.id, User.username, User.role, User.active, User.password_hash)
                           .order_by(User.id)).all(),
        "assignments": s.execute(select(Assignment.id, Assignment.status).order_by(Assignment.id)).all(),
        "settings": s.execute(select(Project.overlap, Project.lease_seconds, Project.prompt_tags,
                                     Project.policy_version_ids, Project.updated_at)).all(),
    }


@pytest.mark.parametrize("role", list(ALLOWED))
def test_role_matrix(engine, role):
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        make_users(s, 1, role="admin", prefix="boss")  # an admin besides the actor: no last-admin refusals
        (target,) = make_users(s, 1, role="annotator", prefix="target")
        (actor,) = make_users(s, 1, role=role.removeprefix("inactive-"), prefix="actor")
        s.get(User, actor).active = not role.startswith("inactive")
        set_queue(s, overlap=1)
        pair1, pair2, _ = make_items(s, pairs=3)
        (single,) = make_items(s, singles=1)
        lease = dict(user_id=actor, status="leased", shown_order="ab", leased_at=now,
                     expires_at=now + timedelta(hours=1))
        held = {name: Assignment(item_id=item, **lease)
                for name, item in (("pair", pair1), ("single", single), ("skip", pair2))}
        s.add_all(held.values())
        s.flush()
        held = {name: a.id for name, a in held.items()}

    actions = {
        "submit_pairwise": lambda s, me: queue.submit_pairwise(
            session=s, user=me, assignment_id=held["pair"], submission_id="m1", preferred="left"),
        "submit_binary": lambda s, me: queue.submit_binary(
            session=s, user=me, assignment_id=held["single"], submission_id="m2", thumb="up"),
        "skip": lambda s, me: queue.skip(session=s, user=me, assignment_id=held["skip"]) or "skipped",
        "claim_next": lambda s, me: queue.claim_next(session=s, user=me, kind="pair"),
        "recent_labels": lambda s, me: browse.recent_labels(session=s, user=me),
        "update_queue_settings": lambda s, me: queue.update_queue_settings(
            session=s, project=default_project(session=s), actor=Actor.signed_in(me), overlap=2, lease_seconds=60,
            prompt_tags=["x"], policy_version_ids=[],
            refill_below=1, refill_prompts=2),
        "list_users": lambda s, me: list_users(session=s, actor=Actor.signed_in(me)),
        "add_user": lambda s, me: add_user(session=s, actor=Actor.signed_in(me), username="newbie", role="annotator"),
        "set_role": lambda s, me: set_role(session=s, actor=Actor.signed_in(me), user_id=target, role="reviewer"),
        "set_active": lambda s, me: set_active(session=s, actor=Actor.signed_in(me), user_id=target, active=False),
        "reset_password": lambda s, me: reset_password(session=s, actor=Actor.signed_in(me), user_id=target),
    }
    assert set(actions) == set(ALL_ACTIONS)
    problems = []
    for name in ALL_ACTIONS:
        with session_scope(engine, read_only=True) as s:
            before = _fingerprint(s)
        # The refusal is caught inside the transaction, which then commits (as a page that shows
        # the error would): a refused call must not have written anything before raising.
        with session_scope(engine) as s:
            try:
                result = actions[name](s, s.get(User, actor))
            except PermissionDenied:
                result = PermissionDenied
        with session_scope(engine, read_only=True) as s:
            after = _fingerprint(s)
        if name in ALLOWED[role]:
            if result is PermissionDenied or result is None:
                problems.append(f"{name}: allowed for {role} but got {result!r}")
            elif before == after and name != "list_users" and name != "recent_labels":
                problems.append(f"{name}: allowed for {role} but changed nothing")
        else:
            if result is not PermissionDenied:
                problems.append(f"{name}: forbidden for {role} but returned {result!r}")
            if before != after:
                problems.append(f"{name}: forbidden for {role} but changed the database")
    assert problems == []


def test_a_member_removed_while_holding_a_lease_cannot_submit(engine, world):
    from feedback.projects import add_member, create_project, remove_member
    from testkit.factories import make_project_items

    with session_scope(engine) as s:
        project = create_project(session=s, actor=CLI, name="closed", task_type="edit")
        make_project_items(s, project=project, count=1)
        add_member(session=s, actor=CLI, project=project, username="ann000")
        claim = queue.claim_next(session=s, user=s.get(User, world["a"]), project=project, now=T0)
        remove_member(session=s, actor=CLI, project=project, username="ann000")
    with session_scope(engine) as s, pytest.raises(UserError, match="not a member of project 'closed'"):
        queue.submit_edit(session=s, user=s.get(User, world["a"]), assignment_id=claim.assignment_id,
                          submission_id="late", edited_text="better", now=T0)
    with session_scope(engine) as s:
        assert count(s, Label) == 0
        queue.skip(session=s, user=s.get(User, world["a"]), assignment_id=claim.assignment_id, now=T0)  # frees it
