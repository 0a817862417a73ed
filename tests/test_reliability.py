"""Annotator reliability (Dawid-Skene through crowd-kit), the `reliability` snapshot rule, and the
per-annotator measures; labels come from simulated annotators through the real queue (SQLite and
Postgres)."""
from __future__ import annotations

import random

import pytest

from db.engine import session_scope
from db.models import User
from feedback.actors import CLI, Actor
from feedback.errors import PermissionDenied, UserError
from feedback.export import export_rows
from feedback.projects import default_project
from feedback.quality import annotator_table
from feedback.reliability import Estimates, dawid_skene
from feedback.rows import RowSettings
from judges.simulated import run_simulation
from testkit.factories import make_users
from tests.test_simulated import arithmetic_pairs
from training.snapshot import SnapshotFilter, create_snapshot, rows_for_stage


def test_dawid_skene_finds_the_reliable_annotators():
    rng = random.Random(0)
    truth = {i: rng.choice("ab") for i in range(60)}
    observations = []
    for item, value in truth.items():
        observations += [(item, "good-1", value), (item, "good-2", value)]
        observations += [(item, f"coin-{n}", rng.choice("ab")) for n in range(3)]
    estimates = dawid_skene(observations)
    majority = {item: max("ab", key=[v for i, _, v in observations if i == item].count) for item in truth}
    ds_right = sum(estimates.items[item][0] == value for item, value in truth.items())
    majority_right = sum(majority[item] == value for item, value in truth.items())
    assert ds_right == 60 > majority_right  # two reliable voices outweigh three coins
    assert min(estimates.annotators["good-1"], estimates.annotators["good-2"]) > 0.95
    assert max(estimates.annotators[f"coin-{n}"] for n in range(3)) < 0.75
    assert Estimates.from_json(estimates.as_json()) == Estimates.from_json(estimates.as_json())
    assert dawid_skene([]) == Estimates(items={}, annotators={})


def simulated_pool(engine, pool: str, pairs: int = 24, overlap: int = 5) -> None:
    arithmetic_pairs(engine, pairs)
    with session_scope(engine) as s:
        default_project(session=s).overlap = overlap
    run_simulation(engine=engine, project="default", pool=pool, labels=10_000, actor=CLI, seed=7)


def test_the_reliability_rule_beats_majority_on_a_noisy_pool(engine):
    # Two careful annotators and three who answer at random (left, right or tie).
    simulated_pool(engine, "grader:2,random:3")
    with session_scope(engine, read_only=True) as s:
        majority = export_rows(session=s, fmt="dpo")
        reliable = export_rows(session=s, fmt="dpo", rule="reliability")
    assert {r["rule"] for r in reliable} == {"pairwise:reliability"}
    assert all(0.6 <= r["confidence"] <= 1.0 for r in reliable)
    # Dawid-Skene keeps more pairs than majority and gets every one it keeps the right way round;
    # majority loses the pairs where two coins agree against the careful two.
    assert rightly_chosen(reliable) == reliable and rightly_chosen(majority) == majority
    assert len(majority) < len(reliable) <= 24 and len(reliable) >= 20


def rightly_chosen(rows: list[dict]) -> list[dict]:
    """Rows whose chosen answer is the right one ("It is 2i.", the wrong one says 2i + 1)."""
    right = {f"It is {2 * i}." for i in range(100)}
    return [r for r in rows if r["chosen"][0]["content"] in right]


def test_reliability_snapshot_freezes_its_estimates(engine):
    simulated_pool(engine, "grader:2,random:2,adversarial:1", pairs=10)
    with session_scope(engine) as s:
        snapshot = create_snapshot(session=s, filters=SnapshotFilter(rule="reliability", min_confidence=0.0),
                                   actor=CLI)
        frozen = Estimates.from_json(snapshot.filters["estimates"]["pairwise"])
        assert len(frozen.items) == 10 and frozen.annotators["sim-grader-1"] > frozen.annotators["sim-adversarial-1"]
        rows = rows_for_stage(session=s, snapshot=snapshot, stage="dpo")
        assert sorted(r["confidence"] for r in rows) == sorted(c for v, c in frozen.items.values() if v in "ab")
        # The frozen estimates decide, not a new fit: tamper with them and the rows follow.
        flipped = {str(i): ["b" if v == "a" else "a", 1.0] for i, (v, _) in frozen.items.items()}
        snapshot.filters = {**snapshot.filters, "estimates": {"pairwise": {"items": flipped, "annotators": {}},
                                                              "binary": {"items": {}, "annotators": {}}}}
        tampered = rows_for_stage(session=s, snapshot=snapshot, stage="dpo")
    assert [(r["chosen"], r["rejected"]) for r in tampered] != [(r["chosen"], r["rejected"]) for r in rows]
    with pytest.raises(UserError, match="min_confidence"):
        RowSettings(rule="reliability", min_confidence=1.5)


def test_per_annotator_measures(engine):
    simulated_pool(engine, "grader:2,left:1,adversarial:1", pairs=12, overlap=4)
    with session_scope(engine) as s:
        table = {row["annotator"]: row for row in annotator_table(session=s, actor=CLI)}
        (uid,) = make_users(s, 1)
        with pytest.raises(PermissionDenied):  # annotators do not see each other's figures
            annotator_table(session=s, actor=Actor.signed_in(s.get(User, uid)))
    grader, left, adversarial = table["sim-grader-1"], table["sim-left-1"], table["sim-adversarial-1"]
    assert grader["labels"] == left["labels"] == adversarial["labels"] == 12
    assert left["left_wins"] == 1.0  # always the left response: pure position bias
    # The graders agree with each other, the adversary with nobody careful.
    assert adversarial["agree_others"] < 0.34 < grader["agree_others"] and grader["agree_majority"] is not None
    assert grader["reliability"] > adversarial["reliability"]
    assert grader["tie_rate"] == 0.0 and grader["median_s"] is not None and grader["too_fast"] == 12
