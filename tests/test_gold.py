"""Gold items, attention checks, standings (warn, pause, lift) and adjudication, through the real
queue on SQLite and Postgres; and what decisions do to training rows and snapshots."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import AuditLog, Item, ItemDecision, Label, Project, Snapshot, SnapshotLabel, User, utcnow
from feedback import adjudication, gold, queue
from feedback.actors import CLI, Actor
from feedback.errors import PermissionDenied, UserError
from feedback.export import export_rows
from feedback.projects import create_project, default_project
from feedback.quality import annotator_table
from judges.simulated import run_simulation
from testkit.factories import make_items, make_project_items, make_users, set_queue
from tests.test_simulated import arithmetic_pairs
from training.snapshot import SnapshotFilter, create_snapshot, rows_for_stage


@pytest.fixture
def people(engine):
    """Three annotators, a reviewer and an admin (ids)."""
    with session_scope(engine) as s:
        annotators = make_users(s, 3)
        (reviewer,) = make_users(s, 1, role="reviewer", prefix="rev")
        (admin,) = make_users(s, 1, role="admin", prefix="adm")
    return {"annotators": annotators, "reviewer": reviewer, "admin": admin}


def as_actor(s, user_id: int) -> Actor:
    return Actor.signed_in(s.get(User, user_id))


def label_next(engine, user_id: int, preferred: str, project: str = "default") -> int | None:
    """The user claims their next item in the project and answers `preferred` (left/right/tie,
    or up/down for thumbs); returns the item id, None when the pool is empty."""
    with session_scope(engine) as s:
        user = s.get(User, user_id)
        target = s.scalar(select(Project).where(Project.name == project))
        claim = queue.claim_next(session=s, user=user, project=target, rng=random.Random(user_id))
        if claim is None:
            return None
        submit = queue.submit_binary if claim.kind == "single" else queue.submit_pairwise
        value = {"thumb": preferred} if claim.kind == "single" else {"preferred": preferred}
        submit(session=s, user=user, assignment_id=claim.assignment_id, submission_id=f"s-{claim.assignment_id}",
               **value)
        return claim.item_id


def test_marking_gold_checks_the_answer_the_item_and_the_role(engine, people):
    with session_scope(engine) as s:
        pair, single = make_items(s, pairs=1, singles=1)
        rank_project = create_project(session=s, actor=CLI, name="ranked", task_type="rank", k=3)
        (ranked,) = make_project_items(s, project=rank_project, count=1)
        reviewer, annotator = as_actor(s, people["reviewer"]), as_actor(s, people["annotators"][0])
        with pytest.raises(PermissionDenied):
            gold.mark_gold(session=s, actor=annotator, item_id=pair, answer="a")
        with pytest.raises(UserError, match="one of a, b, tie, both_bad, not 'up'"):
            gold.mark_gold(session=s, actor=reviewer, item_id=pair, answer="up")
        with pytest.raises(UserError, match="one of up, down"):
            gold.mark_gold(session=s, actor=reviewer, item_id=single, answer="a")
        with pytest.raises(UserError, match="rank item"):
            gold.mark_gold(session=s, actor=reviewer, item_id=ranked, answer="a")
        with pytest.raises(UserError, match="no adjudicated answer to promote"):
            gold.mark_gold(session=s, actor=reviewer, item_id=pair)
        with pytest.raises(UserError, match="No item with id 999"):
            gold.mark_gold(session=s, actor=reviewer, item_id=999, answer="a")
        decision = gold.mark_gold(session=s, actor=reviewer, item_id=pair, answer=" B ", note="b is right")
        assert (decision.origin, decision.choice, decision.thumb, decision.gold) == ("gold", "b", None, True)
        gold.mark_gold(session=s, actor=reviewer, item_id=single, answer="down")
    with session_scope(engine) as s:
        log = s.scalars(select(AuditLog).where(AuditLog.action == "decision.gold").order_by(AuditLog.id)).all()
        assert [e.target for e in log] == [f"item:{pair}", f"item:{single}"]
        assert log[0].details["answer"] == "b" and log[0].details["previous"] is None
        gold.unmark_gold(session=s, actor=as_actor(s, people["reviewer"]), item_id=pair)
        assert s.get(ItemDecision, pair) is None  # a plain gold mark goes entirely
        with pytest.raises(UserError, match="not gold"):
            gold.unmark_gold(session=s, actor=as_actor(s, people["reviewer"]), item_id=pair)


def test_gold_items_are_served_at_the_rate_to_everyone_and_take_no_slot(engine, people):
    with session_scope(engine) as s:
        ids = make_items(s, pairs=6)
        set_queue(s, overlap=1, gold_rate=1.0)
        reviewer = as_actor(s, people["reviewer"])
        for item_id in ids[:2]:
            gold.mark_gold(session=s, actor=reviewer, item_id=item_id, answer="a")
        assert queue.open_item_count(session=s) == 4  # gold is not open work
    first, second = people["annotators"][:2]
    # Rate 1: both annotators get the two gold items first (overlap 1 does not stop the second),
    # each once, then ordinary items.
    served_first = [label_next(engine, first, "left") for _ in range(3)]
    served_second = [label_next(engine, second, "left") for _ in range(3)]
    assert set(served_first[:2]) == set(served_second[:2]) == set(ids[:2])
    assert served_first[2] in ids[2:] and served_second[2] in ids[2:] and served_first[2] != served_second[2]
    with session_scope(engine) as s:
        set_queue(s, gold_rate=0.0)
        third = people["annotators"][2]
    served_third = [label_next(engine, third, "left") for _ in range(4)]
    assert not set(served_third) & set(ids[:2])  # rate 0: gold is never handed out
    assert served_third[-1] is None  # the two open items left were all there was


def test_a_late_answer_on_a_gold_item_is_still_taken(engine, people):
    with session_scope(engine) as s:
        (item_id,) = make_items(s, pairs=1)
        set_queue(s, overlap=1, gold_rate=1.0, lease_seconds=10)
        gold.mark_gold(session=s, actor=as_actor(s, people["reviewer"]), item_id=item_id, answer="a")
        user = s.get(User, people["annotators"][0])
        claim = queue.claim_next(session=s, user=user)
        assignment_id = claim.assignment_id
    late = utcnow() + timedelta(minutes=5)
    with session_scope(engine) as s:
        other = s.get(User, people["annotators"][1])
        assert queue.claim_next(session=s, user=other, now=late).item_id == item_id  # gold: everyone's
    with session_scope(engine) as s:
        label = queue.submit_pairwise(session=s, user=s.get(User, people["annotators"][0]),
                                      assignment_id=assignment_id, submission_id="late-1", preferred="left", now=late)
        assert label.item_id == item_id


def test_wrong_gold_answers_warn_then_pause_until_an_admin_lifts_it(engine, people):
    with session_scope(engine) as s:
        ids = make_items(s, pairs=10)
        set_queue(s, overlap=3, gold_rate=1.0, gold_min_answers=2, gold_min_accuracy=0.7)
        reviewer = as_actor(s, people["reviewer"])
        for item_id in ids[:6]:
            gold.mark_gold(session=s, actor=reviewer, item_id=item_id, answer="tie")
    careless, careful = people["annotators"][:2]
    label_next(engine, careless, "left")
    with session_scope(engine) as s:
        assert queue.progress(session=s, user=s.get(User, careless)).standing == "ok"  # one answer says little
    label_next(engine, careless, "right")
    with session_scope(engine) as s:
        assert queue.progress(session=s, user=s.get(User, careless)).standing == "warned"  # 0 of 2
    label_next(engine, careless, "tie")  # 1 of 3: still warned
    label_next(engine, careless, "left")  # 1 of 4, twice the minimum: paused
    with session_scope(engine) as s:
        user = s.get(User, careless)
        assert queue.progress(session=s, user=user).standing == "paused"
        with pytest.raises(UserError, match="paused on project 'default'.*An admin can lift"):
            queue.claim_next(session=s, user=user)
        standings = gold.standings(session=s, actor=as_actor(s, people["reviewer"]), project=default_project(session=s))
        assert [(x.username, x.status, x.gold_answers, x.gold_correct) for x in standings] == [
            ("ann000", "paused", 4, 1)]
    for _ in range(4):
        label_next(engine, careful, "tie")  # right every time: never warned
    with session_scope(engine) as s:
        project = default_project(session=s)
        statuses = {x.username: x.status for x in gold.standings(session=s, actor=CLI, project=project)}
        assert statuses == {"ann000": "paused", "ann001": "ok"}
        with pytest.raises(PermissionDenied):
            gold.lift_pause(session=s, actor=as_actor(s, people["reviewer"]), project=project, username="ann000")
        with pytest.raises(UserError, match="not warned or paused"):
            gold.lift_pause(session=s, actor=as_actor(s, people["admin"]), project=project, username="ann001")
        gold.lift_pause(session=s, actor=as_actor(s, people["admin"]), project=project, username="ann000")
        actions = s.scalars(select(AuditLog.action).where(AuditLog.action.like("standing.%"))
                            .order_by(AuditLog.id)).all()
        assert actions == ["standing.warned", "standing.paused", "standing.lift"]
    # Lifted: the count starts afresh, so one more wrong answer does not pause again at once.
    assert label_next(engine, careless, "left") in ids
    with session_scope(engine) as s:
        assert queue.progress(session=s, user=s.get(User, careless)).standing == "ok"


def test_attention_checks_catch_the_adversary_and_never_train(engine):
    arithmetic_pairs(engine, 20)
    with session_scope(engine) as s:
        project = default_project(session=s)
        made = gold.make_attention_checks(session=s, actor=CLI, project=project, count=8, rng=random.Random(3))
        assert len(made) == 8
        for item_id in made:  # the good side is the reference answer, the other word salad
            item, decision = s.get(Item, item_id), s.get(ItemDecision, item_id)
            good = item.response_a if decision.choice == "a" else item.response_b
            bad = item.response_b if decision.choice == "a" else item.response_a
            assert decision.origin == "attention" and good.text == item.prompt.reference
            assert not any(ch.isdigit() for ch in bad.text) and bad.params == {"attention_check": "word_salad"}
        assert {d.choice for d in s.scalars(select(ItemDecision))} == {"a", "b"}  # both sides used
        with pytest.raises(UserError, match="attention check; its answer is fixed"):
            gold.mark_gold(session=s, actor=CLI, item_id=made[0], answer="b" if s.get(ItemDecision, made[0]).choice
                           == "a" else "a")
        with pytest.raises(UserError, match="made to be gold"):
            gold.unmark_gold(session=s, actor=CLI, item_id=made[0])
        set_queue(s, project=project, overlap=4, gold_rate=0.3, gold_min_answers=3, gold_min_accuracy=0.7)
    result = run_simulation(engine=engine, project="default", pool="grader:3,adversarial:1", labels=10_000,
                            actor=CLI, seed=5)
    assert result["paused"] == {"adversarial": 1}
    with session_scope(engine, read_only=True) as s:
        project = default_project(session=s)
        statuses = {x.username: x.status for x in gold.standings(session=s, actor=CLI, project=project)}
        assert statuses["sim-adversarial-1"] == "paused"
        assert {statuses[f"sim-grader-{n}"] for n in (1, 2, 3)} == {"ok"}
        table = {r["annotator"]: r for r in annotator_table(session=s, actor=CLI, project_id=project.id)}
        assert table["sim-grader-1"]["gold_accuracy"] == 1.0 and table["sim-grader-1"]["gold_n"] >= 1
        assert table["sim-adversarial-1"]["gold_accuracy"] == 0.0
        assert table["sim-adversarial-1"]["standing"] == "paused"
        rows = export_rows(session=s, fmt="dpo")
        salad = {r.text for r in s.scalars(select(Item)) for r in (r.response_a, r.response_b)
                 if r is not None and r.params.get("attention_check") == "word_salad"}
        assert rows and not salad & {row["rejected"][0]["content"] for row in rows}
        assert {row["prompt"][0]["content"] for row in rows}  # training rows from the real pairs
        with_checks = s.scalar(select(func.count()).select_from(Label).where(Label.item_id.in_(made)))
        assert with_checks > 0  # people answered checks; none of those labels trains
    with session_scope(engine) as s:
        snapshot = create_snapshot(session=s, filters=SnapshotFilter(), actor=CLI)
        frozen_items = set(s.scalars(select(Label.item_id).join(SnapshotLabel, SnapshotLabel.label_id == Label.id)
                                     .where(SnapshotLabel.snapshot_id == snapshot.id)))
        assert frozen_items and not frozen_items & set(made)


def test_attention_checks_for_thumbs_and_refusals(engine):
    with session_scope(engine) as s:
        thumbs = create_project(session=s, actor=CLI, name="thumbs", task_type="binary")
        make_project_items(s, project=thumbs, count=3)
        made = gold.make_attention_checks(session=s, actor=CLI, project=thumbs, count=5, rng=random.Random(1))
        assert len(made) == 3  # one per prompt, at most
        assert {s.get(ItemDecision, i).thumb for i in made} == {"down"}
        with pytest.raises(UserError, match="no train items"):
            gold.make_attention_checks(session=s, actor=CLI, project=thumbs, count=1)
        ranked = create_project(session=s, actor=CLI, name="ranked", task_type="rank", k=3)
        with pytest.raises(UserError, match="pairwise and binary projects, not rank"):
            gold.make_attention_checks(session=s, actor=CLI, project=ranked, count=1)


def disputed_world(engine, people) -> list[int]:
    """Four pairs: one where people split 2-1, one unanimous, one the judge disputes, one unlabelled."""
    with session_scope(engine) as s:
        ids = make_items(s, pairs=4)
        set_queue(s, overlap=3)
    a, b, c = people["annotators"]
    # Claims go oldest first, so each annotator's n-th claim is the same item ids[n].
    plan = {a: ["a", "a", "a"], b: ["a", "a", "a"], c: ["b", "a", "a"]}
    for user_id, answers in plan.items():
        for answer in answers:
            with session_scope(engine) as s:
                user = s.get(User, user_id)
                claim = queue.claim_next(session=s, user=user, rng=random.Random(0))
                side = "left" if (answer == "a") == (claim.shown_order == "ab") else "right"
                queue.submit_pairwise(session=s, user=user, assignment_id=claim.assignment_id,
                                      submission_id=f"d-{claim.assignment_id}", preferred=side)
    with session_scope(engine) as s:
        s.add(Label(item_id=ids[2], kind="pairwise", choice="b", source="judge", producer="anthropic:test",
                    submission_id="judge-1"))
    return ids


def test_the_review_queue_and_decisions_winning_over_the_aggregate(engine, people):
    ids = disputed_world(engine, people)
    with session_scope(engine) as s:
        reviewer = as_actor(s, people["reviewer"])
        project = default_project(session=s)
        disputes = {d.item_id: d for d in adjudication.disputed_items(session=s, actor=reviewer, project=project)}
        assert set(disputes) == {ids[0], ids[2]}
        assert "annotators disagree" in disputes[ids[0]].reasons and disputes[ids[0]].votes == {"a": 2, "b": 1}
        assert disputes[ids[2]].reasons == ("judge and humans disagree",)
        with pytest.raises(PermissionDenied):
            adjudication.disputed_items(session=s, actor=as_actor(s, people["annotators"][0]), project=project)
        view = adjudication.item_view(session=s, actor=reviewer, item_id=ids[0])
        assert len(view.responses) == 2 and sorted(v.value for v in view.labels) == ["a", "a", "b"]
        majority = {r["rule"]: r for r in export_rows(session=s, fmt="dpo")}
        assert set(majority) == {"pairwise:majority"}
        with pytest.raises(UserError, match="note"):
            adjudication.adjudicate(session=s, actor=reviewer, item_id=ids[0], answer="b", note=" ")
        # The reviewer overrules the 2-1 majority, and the judge on the other.
        adjudication.adjudicate(session=s, actor=reviewer, item_id=ids[0], answer="b", note="A miscounts")
        adjudication.adjudicate(session=s, actor=reviewer, item_id=ids[2], answer="a", note="the judge is wrong",
                                make_gold=True)
        assert adjudication.disputed_items(session=s, actor=reviewer, project=project) == []
        texts = {item_id: (s.get(Item, item_id).response_a.text, s.get(Item, item_id).response_b.text)
                 for item_id in ids}
    with session_scope(engine, read_only=True) as s:
        for rule in ("majority", "soft", "drop", "reliability"):
            rows = export_rows(session=s, fmt="dpo", rule=rule)
            by_prompt = {row["chosen"][0]["content"].split(" :: ")[0]: row for row in rows}
            settled = by_prompt[texts[ids[0]][1].split(" :: ")[0]]
            assert settled["chosen"][0]["content"] == texts[ids[0]][1] and settled["rule"] == "pairwise:adjudication"
            # Once, under every rule: "soft" would have made three rows of the three votes.
            assert sum(row["rejected"][0]["content"] == texts[ids[0]][0] for row in rows) == 1
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "decision.adjudication")
                          .order_by(AuditLog.id)).all()
        assert [(e.target, e.details["answer"], e.details["gold"]) for e in audit] == [
            (f"item:{ids[0]}", "b", False), (f"item:{ids[2]}", "a", True)]


def test_a_snapshot_keeps_the_decisions_it_was_made_with(engine, people):
    ids = disputed_world(engine, people)
    with session_scope(engine) as s:
        before = create_snapshot(session=s, filters=SnapshotFilter(), actor=CLI)
        before_id = before.id
        adjudication.adjudicate(session=s, actor=as_actor(s, people["reviewer"]), item_id=ids[0], answer="b",
                                note="settled")
    with session_scope(engine) as s:
        after = create_snapshot(session=s, filters=SnapshotFilter(), actor=CLI)
        assert after.id != before_id  # same labels, a new decision: a new snapshot
        assert after.filters["decisions"] == {str(ids[0]): ["b", "adjudication"]}
        old_rows = rows_for_stage(session=s, snapshot=s.get(Snapshot, before_id), stage="dpo")
        new_rows = rows_for_stage(session=s, snapshot=after, stage="dpo")
        assert {r["rule"] for r in old_rows} == {"pairwise:majority"}
        assert sorted(r["rule"] for r in new_rows) == ["pairwise:adjudication", "pairwise:majority",
                                                       "pairwise:majority"]
        # Later decisions do not reach the frozen one.
        adjudication.adjudicate(session=s, actor=CLI, item_id=ids[1], answer="tie", note="both fine")
    with session_scope(engine, read_only=True) as s:
        assert len(rows_for_stage(session=s, snapshot=s.get(Snapshot, after.id), stage="dpo")) == 3


def test_gold_labels_train_once_and_judges_are_measured_on_gold(engine, people):
    with session_scope(engine) as s:
        (item_id,) = make_items(s, pairs=1)
        set_queue(s, overlap=3, gold_rate=1.0)
        gold.mark_gold(session=s, actor=as_actor(s, people["reviewer"]), item_id=item_id, answer="a")
        s.add(Label(item_id=item_id, kind="pairwise", choice="b", source="judge", producer="local:tiny",
                    submission_id="judge-gold"))
    for user_id in people["annotators"]:
        with session_scope(engine) as s:
            user = s.get(User, user_id)
            claim = queue.claim_next(session=s, user=user, rng=random.Random(1))
            side = "left" if claim.shown_order == "ab" else "right"
            queue.submit_pairwise(session=s, user=user, assignment_id=claim.assignment_id,
                                  submission_id=f"g-{user_id}", preferred=side)
    with session_scope(engine, read_only=True) as s:
        rows = export_rows(session=s, fmt="dpo", rule="soft")
        assert [r["rule"] for r in rows] == ["pairwise:gold"]  # four labels, one row
        table = {r["annotator"]: r for r in annotator_table(session=s, actor=CLI)}
        assert table["local:tiny"]["gold_accuracy"] == 0.0 and table["ann000"]["gold_accuracy"] == 1.0


def test_a_settled_item_needs_no_more_labels(engine, people):
    with session_scope(engine) as s:
        ids = make_items(s, pairs=2)
        set_queue(s, overlap=3)
        adjudication.adjudicate(session=s, actor=as_actor(s, people["reviewer"]), item_id=ids[0], answer="a",
                                note="obvious")
        assert queue.open_item_count(session=s) == 1
    assert [label_next(engine, people["annotators"][0], "left") for _ in range(2)] == [ids[1], None]


def test_review_findings_a_pause_stops_old_leases_and_old_labels_are_no_gold_answers(engine, people):
    """A paused annotator cannot submit on a lease from before the pause; labels given before an
    item became gold do not count against anyone; settling a gold item again keeps it gold."""
    with session_scope(engine) as s:
        ids = make_items(s, pairs=6)
        set_queue(s, overlap=3, gold_min_answers=1, gold_min_accuracy=0.7, lease_seconds=10)
    a, b, c = people["annotators"]
    for user_id, side in ((a, "left"), (b, "left"), (c, "right")):
        label_next(engine, user_id, side)  # item ids[0]: two against one
    with session_scope(engine) as s:
        first = s.scalars(select(Label).where(Label.item_id == ids[0])).all()
        majority = next(label.choice for label in first if [x.choice for x in first].count(label.choice) == 2)
        adjudication.adjudicate(session=s, actor=as_actor(s, people["reviewer"]), item_id=ids[0], answer=majority,
                                note="the two are right", make_gold=True)
        adjudication.adjudicate(session=s, actor=as_actor(s, people["reviewer"]), item_id=ids[0], answer=majority,
                                note="checked again")
        assert s.get(ItemDecision, ids[0]).gold  # still gold
        assert gold.standing_status(s, s.get(Project, default_project(session=s).id).id, c) == "ok"
        # c takes an ordinary item and holds the lease; then gold answers pause c.
        user = s.get(User, c)
        held = queue.claim_next(session=s, user=user)
        gold.mark_gold(session=s, actor=as_actor(s, people["reviewer"]), item_id=ids[5], answer="both_bad")
        gold.mark_gold(session=s, actor=as_actor(s, people["reviewer"]), item_id=ids[4], answer="both_bad")
        set_queue(s, gold_rate=1.0)
        assert held.item_id not in (ids[4], ids[5])
    later = utcnow() + timedelta(seconds=30)  # the held lease expired meanwhile, nobody took its slot
    for _ in range(2):
        with session_scope(engine) as s:
            user = s.get(User, c)
            claim = queue.claim_next(session=s, user=user, now=later, rng=random.Random(0))
            queue.submit_pairwise(session=s, user=user, assignment_id=claim.assignment_id,
                                  submission_id=f"p-{claim.assignment_id}", preferred="left", now=later)
    with session_scope(engine) as s:
        user = s.get(User, c)
        assert queue.progress(session=s, user=user).standing == "paused"
        with pytest.raises(UserError, match="paused"):
            queue.submit_pairwise(session=s, user=user, assignment_id=held.assignment_id, submission_id="old-lease",
                                  preferred="left", now=later)


def test_a_decided_single_response_with_only_grader_scores_trains_on_its_decision(engine, people):
    with session_scope(engine) as s:
        (item_id,) = make_items(s, singles=1)
        s.add(Label(item_id=item_id, kind="score", score=0.9, source="grader", producer="grader:numeric",
                    submission_id="score-1"))
        gold.mark_gold(session=s, actor=as_actor(s, people["reviewer"]), item_id=item_id, answer="down")
    with session_scope(engine, read_only=True) as s:
        rows = export_rows(session=s, fmt="kto")
        assert [(r["label"], r["rule"]) for r in rows] == [(False, "binary:gold")]


def test_two_gold_answers_at_once_are_both_kept_and_counted(engine, people):
    """The same annotator answers two gold items at the same moment (an expired lease and a fresh
    one, from two tabs): both labels are kept and the standing counts both (on Postgres the
    standing row is made and locked before the recount)."""
    import threading

    with session_scope(engine) as s:
        ids = make_items(s, pairs=2)
        set_queue(s, overlap=1, gold_rate=1.0, lease_seconds=10, gold_min_answers=5)
        for item_id in ids:
            gold.mark_gold(session=s, actor=as_actor(s, people["reviewer"]), item_id=item_id, answer="tie")
    user_id = people["annotators"][0]
    later = utcnow() + timedelta(seconds=30)
    with session_scope(engine) as s:
        first = queue.claim_next(session=s, user=s.get(User, user_id), rng=random.Random(0)).assignment_id
    with session_scope(engine) as s:  # the first lease has expired: a second item
        second = queue.claim_next(session=s, user=s.get(User, user_id), now=later, rng=random.Random(1)).assignment_id
    barrier, errors = threading.Barrier(2), []

    def answer(assignment_id: int) -> None:
        try:
            barrier.wait(timeout=10)  # before the session: SQLite's write transactions queue up at BEGIN
            with session_scope(engine) as s:
                queue.submit_pairwise(session=s, user=s.get(User, user_id), assignment_id=assignment_id,
                                      submission_id=f"twin-{assignment_id}", preferred="tie", now=later)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=answer, args=(a,)) for a in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Label).where(Label.user_id == user_id)) == 2
        (standing,) = gold.standings(session=s, actor=CLI, project=default_project(session=s))
        assert (standing.gold_answers, standing.gold_correct, standing.status) == (2, 2, "ok")
