"""Many annotators at once, on SQLite and on Postgres: nothing lost, nothing written twice.

Two queues: pairs (below), and a rank project (the last test: free-running rankers until the
queue is empty, each ranking given in the order shown and stored by item position).

20 annotator threads share one engine (as the app's sessions share `engine_for(url)`); each one
claims a pair in one transaction, submits it in another with a fresh submission id, then submits
the same id again (a double click). There are exactly as many slots (items x overlap) as claims.

The threads claim in rounds: a barrier after every claim, so all 20 have claimed before anyone
claims again (the submits of one round overlap the claims of the next). Why not free-running
threads: with exactly as many slots as claims, a thread left alone at the end is owed the second
slot of an item it already holds (nobody gets an item twice), so its last claims can never be
made; free-running, that happened in each of six trial runs (991-998 of 1000 labels on SQLite,
999 on Postgres). That is the arithmetic of the test, not a queue bug. In rounds it cannot happen
on SQLite (claims are serialised, so each round fills exactly ten items) and did not in trials on
Postgres (SKIP LOCKED can spread a round over more items; the next round's claimers all prefer
the lowest ids and complete them).
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, func, select

from db.engine import make_engine, session_scope
from db.models import Assignment, Item, Label, Project, User
from feedback import queue
from feedback.actors import CLI
from feedback.projects import create_project
from testkit.factories import make_items, make_project_items, make_users, set_queue

ANNOTATORS = 20
SUBMISSIONS = 50  # per annotator
OVERLAP = 2
ITEMS = ANNOTATORS * SUBMISSIONS // OVERLAP  # 500 items = 1000 slots = 20 x 50 claims


def shared_engine(url: str, threads: int = ANNOTATORS):
    if url.startswith("sqlite"):
        return make_engine(url)
    # One connection per thread and then some: the default pool (5 + 10) would make threads queue.
    return create_engine(url, pool_size=threads + 5, max_overflow=5, pool_pre_ping=True)


@pytest.fixture
def loaded(db_url):
    engine = shared_engine(db_url)
    with session_scope(engine) as s:
        set_queue(s, overlap=OVERLAP, lease_seconds=600)
        make_items(s, pairs=ITEMS)
        users = make_users(s, ANNOTATORS)
    yield engine, users
    engine.dispose()


@pytest.mark.slow  # 1000 submissions: ~12 s on SQLite, ~25 s on Postgres (2 cores)
def test_twenty_annotators_fifty_submissions_each(loaded):
    engine, users = loaded
    start = threading.Barrier(ANNOTATORS)
    rounds = threading.Barrier(ANNOTATORS, timeout=60)

    def annotator(uid: int) -> dict:
        rng = random.Random(uid)
        seen = dict(claims=0, labels=0, resubmit_mismatch=0, ended_early=False)
        start.wait()
        for _ in range(SUBMISSIONS):
            with session_scope(engine) as s:
                claim = queue.claim_next(session=s, user=s.get(User, uid), kind="pair")
            if claim is None:
                seen["ended_early"] = True
                rounds.abort()  # the other threads fail fast instead of waiting for this one
                break
            seen["claims"] += 1
            rounds.wait()  # everyone has claimed this round before anyone claims the next
            submission_id = uuid.uuid4().hex
            preferred = rng.choice(queue.PAIRWISE_PREFERENCES)
            with session_scope(engine) as s:
                label = queue.submit_pairwise(session=s, user=s.get(User, uid), assignment_id=claim.assignment_id,
                                              submission_id=submission_id, preferred=preferred)
            seen["labels"] += 1
            with session_scope(engine) as s:  # the double click
                again = queue.submit_pairwise(session=s, user=s.get(User, uid), assignment_id=claim.assignment_id,
                                              submission_id=submission_id, preferred=preferred)
            seen["resubmit_mismatch"] += again.id != label.id
        return seen

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=ANNOTATORS) as pool:
        futures = {uid: pool.submit(annotator, uid) for uid in users}
        # .result() re-raises whatever a thread raised ("database is locked", IntegrityError, ...).
        results = {uid: f.result() for uid, f in futures.items()}
    elapsed = time.monotonic() - began

    assert all(r["claims"] == SUBMISSIONS and r["labels"] == SUBMISSIONS for r in results.values()), results
    assert sum(r["resubmit_mismatch"] for r in results.values()) == 0

    with session_scope(engine, read_only=True) as s:
        labels = s.execute(select(Label.id, Label.item_id, Label.user_id, Label.submission_id)).all()
        done = set(s.execute(select(Assignment.item_id, Assignment.user_id).where(Assignment.status == "done")).all())
        statuses = Counter(s.scalars(select(Assignment.status)))
        per_user = dict(s.execute(select(Label.user_id, func.count()).group_by(Label.user_id)).all())
    assert len(labels) == ANNOTATORS * SUBMISSIONS  # 0 lost
    assert len({(r.item_id, r.user_id) for r in labels}) == len(labels)  # 0 duplicated (item, user)
    assert len({r.submission_id for r in labels}) == len(labels)  # 0 duplicated submission ids
    users_per_item: dict[int, set[int]] = {}
    for r in labels:
        users_per_item.setdefault(r.item_id, set()).add(r.user_id)
    assert len(users_per_item) == ITEMS
    assert all(len(who) == OVERLAP for who in users_per_item.values())  # overlap respected exactly
    assert {(r.item_id, r.user_id) for r in labels} == done  # every label has its 'done' assignment
    assert statuses == {"done": ANNOTATORS * SUBMISSIONS}  # and no assignment without a label
    assert per_user == {uid: SUBMISSIONS for uid in users}
    print(f"{engine.dialect.name}: {ANNOTATORS} x {SUBMISSIONS} claim+submit+resubmit in {elapsed:.1f} s")


# --- the rank queue ------------------------------------------------------------------------------

RANK_K, RANK_OVERLAP, RANK_ITEMS, RANKERS = 4, 2, 30, 8


@pytest.fixture
def rank_loaded(db_url):
    engine = shared_engine(db_url, RANKERS)
    with session_scope(engine) as s:
        project = create_project(session=s, actor=CLI, name="rank-race", task_type="rank", k=RANK_K,
                                 open_to_all=True)
        set_queue(s, project=project, overlap=RANK_OVERLAP, lease_seconds=600)
        items = make_project_items(s, project=project, count=RANK_ITEMS)
        users = make_users(s, RANKERS, prefix="ranker")
        project_id = project.id
    yield engine, project_id, items, users
    engine.dispose()


def intended_ranking(uid: int, item_id: int) -> list[int]:
    """What annotator `uid` thinks of the item's positions: a ranking (ties allowed) by position."""
    rng = random.Random(uid * 1000 + item_id)
    return [rng.randint(1, RANK_K) for _ in range(RANK_K)]


def test_eight_rankers_until_the_rank_queue_is_empty(rank_loaded):
    """Free-running threads claim and rank (then double-click) until nothing is left for them:
    every item ends with exactly `overlap` labels, nobody labels an item twice, and each stored
    ranking is the one its annotator gave, mapped back from the order they saw."""
    engine, project_id, items, users = rank_loaded
    start = threading.Barrier(RANKERS)

    def ranker(uid: int) -> dict:
        rng = random.Random(uid)
        seen = dict(claims=0, resubmit_mismatch=0, items=[])
        start.wait()
        while True:
            with session_scope(engine) as s:
                claim = queue.claim_next(session=s, user=s.get(User, uid), project=s.get(Project, project_id),
                                         rng=rng)
            if claim is None:
                return seen
            seen["claims"] += 1
            seen["items"].append(claim.item_id)
            by_position = intended_ranking(uid, claim.item_id)
            ranks = [by_position[int(text.rsplit(" :: ", 1)[1])] for text in claim.responses]  # in the shown order
            submission_id = uuid.uuid4().hex
            for attempt in range(2):  # the second is the double click
                with session_scope(engine) as s:
                    label = queue.submit_rank(session=s, user=s.get(User, uid), assignment_id=claim.assignment_id,
                                              submission_id=submission_id, ranks=ranks)
                    label_id = label.id
                if attempt == 0:
                    first = label_id
            seen["resubmit_mismatch"] += label_id != first

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=RANKERS) as pool:
        futures = {uid: pool.submit(ranker, uid) for uid in users}
        results = {uid: f.result() for uid, f in futures.items()}
    elapsed = time.monotonic() - began

    slots = RANK_ITEMS * RANK_OVERLAP
    assert sum(r["claims"] for r in results.values()) == slots, results
    assert sum(r["resubmit_mismatch"] for r in results.values()) == 0
    assert all(len(set(r["items"])) == len(r["items"]) for r in results.values())  # nobody got one twice

    with session_scope(engine, read_only=True) as s:
        labels = s.execute(select(Label.item_id, Label.user_id, Label.ranking, Label.shown_permutation, Label.kind)
                           .join(Item, Item.id == Label.item_id).where(Item.project_id == project_id)).all()
        statuses = Counter(s.scalars(select(Assignment.status)))
        assignments = s.execute(select(Assignment.item_id, Assignment.user_id, Assignment.shown_permutation)).all()
    assert len(labels) == slots  # 0 lost
    assert len({(r.item_id, r.user_id) for r in labels}) == len(labels)  # 0 duplicated (item, user)
    per_item = Counter(r.item_id for r in labels)
    assert set(per_item) == set(items)
    assert set(per_item.values()) == {RANK_OVERLAP}  # every item exactly `overlap` labels, none more
    assert statuses == {"done": slots}
    shown = {(a.item_id, a.user_id): a.shown_permutation for a in assignments}
    for r in labels:
        assert r.kind == "rank"
        assert r.ranking == intended_ranking(r.user_id, r.item_id)
        assert r.shown_permutation == shown[(r.item_id, r.user_id)]
    assert any(p != sorted(p) for p in shown.values())
    print(f"{engine.dialect.name}: {RANKERS} rankers, {slots} rank labels (+ resubmits) in {elapsed:.1f} s")
