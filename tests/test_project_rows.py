"""Rank, rating and edit projects end to end, on real SQLite and Postgres: labels written through
the real queue (claimed in a seeded random shown order, given in that order), then exported as
every TRL format, and frozen into snapshots that give the same rows.

Response texts are "<prompt> :: <position>" (testkit.factories.make_project_items), so a row says
which of an item's responses it chose and rejected, whatever order the annotator saw them in.
"""
from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import select, update

from db.engine import session_scope
from db.models import Assignment, Item, Label, Project, Prompt, User
from feedback import queue
from feedback.actors import CLI
from feedback.conversions import rank_pairs
from feedback.errors import UserError
from feedback.export import export_rows
from feedback.projects import create_project, current_guidelines
from testkit.factories import make_items, make_project_items, make_users, set_queue
from training.snapshot import SnapshotFilter, create_snapshot, rows_for_stage

ASPECTS = ["helpfulness", "honesty"]

# --- helpers -------------------------------------------------------------------------------------


def position(text: str) -> int:
    return int(text.rsplit(" :: ", 1)[1])


def prompt_text(text: str) -> str:
    return text.rsplit(" :: ", 1)[0]


def completion(row: dict, column: str) -> str:
    [message] = row[column]
    assert message["role"] == "assistant"
    return message["content"]


def row_prompt(row: dict) -> str:
    [message] = row["prompt"]
    assert message["role"] == "user"
    return message["content"]


def directions(rows: list[dict]) -> Counter:
    """(prompt, chosen position, rejected position) of preference rows, counted."""
    out = Counter()
    for row in rows:
        chosen, rejected = completion(row, "chosen"), completion(row, "rejected")
        assert prompt_text(chosen) == prompt_text(rejected) == row_prompt(row)  # one item's responses
        out[(row_prompt(row), position(chosen), position(rejected))] += 1
    return out


def setup_project(engine, name: str, task_type: str, count: int, *, overlap: int = 1, **options):
    """An open project of `task_type` with `count` items; (project id, item ids, {item id: prompt})."""
    with session_scope(engine) as s:
        project = create_project(session=s, actor=CLI, name=name, task_type=task_type, open_to_all=True,
                                 guidelines=f"How to label {name}.", **options)
        set_queue(s, project=project, overlap=overlap)
        ids = make_project_items(s, project=project, count=count)
        prompts = dict(s.execute(select(Item.id, Prompt.text).join(Prompt).where(Item.id.in_(ids))).all())
        return project.id, ids, prompts


def annotators(engine, count: int, prefix: str = "ann") -> list[int]:
    with session_scope(engine) as s:
        return make_users(s, count, prefix=prefix)


SUBMIT = {"rank": (queue.submit_rank, "ranks"), "rating": (queue.submit_rating, "ratings"),
          "edit": (queue.submit_edit, "edited_text")}


def label(engine, project_id: int, user_id: int, answer: Callable, rng: random.Random, *,
          limit: int | None = None) -> list[queue.Claim]:
    """Claim and submit items of the project as `user_id` until none is left (or `limit` are done);
    `answer(claim)` gives the value in the annotator's terms (the order shown). The claims made."""
    claims = []
    while limit is None or len(claims) < limit:
        with session_scope(engine) as s:
            project = s.get(Project, project_id)
            claim = queue.claim_next(session=s, user=s.get(User, user_id), project=project, rng=rng)
        if claim is None:
            break
        submit, field = SUBMIT[claim.kind]
        with session_scope(engine) as s:
            submit(session=s, user=s.get(User, user_id), assignment_id=claim.assignment_id,
                   submission_id=uuid.uuid4().hex, **{field: answer(claim)})
        claims.append(claim)
    return claims


def ranks_shown(by_position: dict[int, list[int]]) -> Callable:
    """The annotator's answer: each shown response's rank, looked up by the position it really is."""
    return lambda claim: [by_position[claim.item_id][position(text)] for text in claim.responses]


def ratings_shown(by_position: dict[int, list[tuple[int, int]]]) -> Callable:
    def answer(claim):
        out = []
        for text in claim.responses:
            scores = by_position[claim.item_id][position(text)]
            out.append({"scores": dict(zip(ASPECTS, scores, strict=True)),
                        "rationales": {"honesty": f"about {position(text)}"}})
        return out
    return answer


def export(engine, fmt: str, **kwargs) -> list[dict]:
    with session_scope(engine, read_only=True) as s:
        return export_rows(session=s, fmt=fmt, **kwargs)


def assert_permutations_vary(claims: list[queue.Claim], engine) -> None:
    """The seeded rng really shuffled: some item was shown in another order than its own."""
    with session_scope(engine, read_only=True) as s:
        shown = [s.get(Assignment, c.assignment_id).shown_permutation for c in claims]
    assert all(sorted(p) == list(range(len(p))) for p in shown)
    assert any(p != sorted(p) for p in shown), shown


# --- rank ----------------------------------------------------------------------------------------

RANKINGS = [[2, 4, 1, 3], [1, 2, 3, 4], [4, 3, 2, 1]]  # by position, 1 = best, strict


@pytest.fixture
def ranked(engine):
    """A rank project (K=4), three items each ranked strictly by one annotator."""
    project_id, ids, prompts = setup_project(engine, "rank-k4", "rank", 3, k=4)
    [user] = annotators(engine, 1)
    by_position = dict(zip(ids, RANKINGS, strict=True))
    claims = label(engine, project_id, user, ranks_shown(by_position), random.Random(7))
    assert len(claims) == 3
    assert_permutations_vary(claims, engine)
    return engine, ids, prompts, by_position, claims


def test_rank_labels_are_stored_by_item_position(ranked):
    engine, ids, prompts, by_position, claims = ranked
    with session_scope(engine, read_only=True) as s:
        labels = {label.item_id: label for label in s.scalars(select(Label).where(Label.kind == "rank"))}
        guidelines = current_guidelines(session=s, project_id=s.get(Item, ids[0]).project_id)
        assignments = {a.item_id: a for a in s.scalars(select(Assignment))}
    assert {i: labels[i].ranking for i in ids} == by_position
    for claim in claims:
        label, assignment = labels[claim.item_id], assignments[claim.item_id]
        assert label.shown_permutation == assignment.shown_permutation
        # the i-th response on screen was the item's position shown_permutation[i]
        assert [position(text) for text in claim.responses] == label.shown_permutation
        assert label.guidelines_id == guidelines.id == claim.guidelines_id
        assert assignment.status == "done"


def test_rank_reward_rows_are_all_pairs(ranked):
    engine, ids, prompts, by_position, _ = ranked
    rows = export(engine, "reward", project="rank-k4")
    assert len(rows) == len(ids) * 4 * 3 // 2  # K(K-1)/2 per strict ranking
    assert all(set(row) == {"prompt", "chosen", "rejected", "margin", "rule"} for row in rows)
    assert {row["rule"] for row in rows} == {"rank:all_pairs"}
    assert all(row["margin"] == 0.0 for row in rows)
    want = Counter((prompts[i], w, lo) for i in ids for w, lo in rank_pairs(by_position[i], "all_pairs"))
    assert directions(rows) == want
    # every chosen response is ranked better than its rejected one
    by_prompt = {prompts[i]: by_position[i] for i in ids}
    assert all(by_prompt[p][w] < by_prompt[p][lo] for p, w, lo in directions(rows))


def test_rank_dpo_default_is_best_vs_worst(ranked):
    engine, ids, prompts, by_position, _ = ranked
    rows = export(engine, "dpo", project="rank-k4")
    assert all(set(row) == {"prompt", "chosen", "rejected", "rule"} for row in rows)
    assert {row["rule"] for row in rows} == {"rank:best_vs_worst"}
    best = {i: by_position[i].index(1) for i in ids}
    worst = {i: by_position[i].index(4) for i in ids}
    assert directions(rows) == Counter((prompts[i], best[i], worst[i]) for i in ids)
    # item 0: position 2 is best and position 1 worst, shown in a shuffled order
    assert (best[ids[0]], worst[ids[0]]) == (2, 1)


def test_rank_best_vs_rest_option(ranked):
    engine, ids, prompts, by_position, _ = ranked
    rows = export(engine, "dpo", project="rank-k4", rank_pairs="best_vs_rest")
    assert {row["rule"] for row in rows} == {"rank:best_vs_rest"}
    want = Counter((prompts[i], by_position[i].index(1), p) for i in ids for p in range(4)
                   if by_position[i][p] != 1)
    assert directions(rows) == want and len(rows) == 3 * 3
    # the option applies to reward rows as well
    reward = export(engine, "reward", project="rank-k4", rank_pairs="best_vs_worst")
    assert {row["rule"] for row in reward} == {"rank:best_vs_worst"} and len(reward) == 3


def test_rank_sft_rows_are_the_best_responses(ranked):
    engine, ids, prompts, by_position, _ = ranked
    rows = export(engine, "sft", project="rank-k4")
    assert {row["rule"] for row in rows} == {"rank:winners"}
    got = sorted((row_prompt(row), position(completion(row, "completion"))) for row in rows)
    assert got == sorted((prompts[i], by_position[i].index(1)) for i in ids)
    assert export(engine, "kto", project="rank-k4") == []  # a ranking says nothing absolute


def test_rank_ties(engine):
    project_id, ids, prompts = setup_project(engine, "rank-ties", "rank", 3, k=4)
    [user] = annotators(engine, 1)
    by_position = dict(zip(ids, [[1, 1, 2, 2], [1, 1, 1, 1], [3, 1, 3, 2]], strict=True))
    label(engine, project_id, user, ranks_shown(by_position), random.Random(3))
    reward = directions(export(engine, "reward", project="rank-ties"))
    assert reward == Counter({(prompts[ids[0]], 0, 2): 1, (prompts[ids[0]], 0, 3): 1, (prompts[ids[0]], 1, 2): 1,
                              (prompts[ids[0]], 1, 3): 1,
                              # the all-tied item gives nothing; item 2: 1 > 3 > 0 = 2
                              (prompts[ids[2]], 1, 3): 1, (prompts[ids[2]], 1, 0): 1, (prompts[ids[2]], 1, 2): 1,
                              (prompts[ids[2]], 3, 0): 1, (prompts[ids[2]], 3, 2): 1})
    dpo = directions(export(engine, "dpo", project="rank-ties"))  # best vs worst: both worst of item 2
    assert dpo == Counter({(prompts[ids[0]], 0, 2): 1, (prompts[ids[0]], 0, 3): 1, (prompts[ids[0]], 1, 2): 1,
                           (prompts[ids[0]], 1, 3): 1, (prompts[ids[2]], 1, 0): 1, (prompts[ids[2]], 1, 2): 1})


# --- several annotators on one rank item ---------------------------------------------------------


@pytest.fixture
def disagreeing(engine):
    """Rank K=3, overlap 3. Item A: alice and bob rank 0 > 1 > 2, carol 1 > 0 > 2. Item B: alice
    0 > 1 > 2, bob 1 > 0 > 2 (an even split on 0 vs 1)."""
    project_id, (item_a, item_b), prompts = setup_project(engine, "rank-votes", "rank", 2, k=3, overlap=3)
    alice, bob, carol = annotators(engine, 3)
    rng = random.Random(11)
    label(engine, project_id, alice, ranks_shown({item_a: [1, 2, 3], item_b: [1, 2, 3]}), rng)
    label(engine, project_id, bob, ranks_shown({item_a: [1, 2, 3], item_b: [2, 1, 3]}), rng)
    [claim] = label(engine, project_id, carol, ranks_shown({item_a: [2, 1, 3]}), rng, limit=1)
    assert claim.item_id == item_a
    return engine, prompts[item_a], prompts[item_b]


def test_rank_disagreement_majority(disagreeing):
    engine, a, b = disagreeing
    rows = export(engine, "reward", project="rank-votes", rule="majority")
    assert directions(rows) == Counter({(a, 0, 1): 1, (a, 0, 2): 1, (a, 1, 2): 1,  # 0 > 1 by 2 to 1
                                        (b, 0, 2): 1, (b, 1, 2): 1})  # 0 vs 1 split evenly: dropped
    assert {row["rule"] for row in rows} == {"rank:all_pairs"}


def test_rank_disagreement_drop(disagreeing):
    engine, a, b = disagreeing
    rows = export(engine, "reward", project="rank-votes", rule="drop")
    assert directions(rows) == Counter({(a, 0, 2): 1, (a, 1, 2): 1, (b, 0, 2): 1, (b, 1, 2): 1})


def test_rank_disagreement_soft(disagreeing):
    engine, a, b = disagreeing
    rows = export(engine, "reward", project="rank-votes", rule="soft")
    assert directions(rows) == Counter({(a, 0, 1): 2, (a, 1, 0): 1, (a, 0, 2): 3, (a, 1, 2): 3,
                                        (b, 0, 1): 1, (b, 1, 0): 1, (b, 0, 2): 2, (b, 1, 2): 2})


def test_rank_disagreement_best_vs_worst_majority(disagreeing):
    engine, a, b = disagreeing
    # best vs worst: alice, bob 0 > 2, carol 1 > 2 on item A; each pair unopposed
    assert directions(export(engine, "dpo", project="rank-votes")) == Counter(
        {(a, 0, 2): 1, (a, 1, 2): 1, (b, 0, 2): 1, (b, 1, 2): 1})


# --- rating --------------------------------------------------------------------------------------

# by position: (helpfulness, honesty)
RATINGS = [
    [(5, 5), (4, 4), (4, 3)],  # scores 5, 4, 3.5
    [(3, 3), (3, 3), (2, 4)],  # all 3: tied
    [(1, 2), (5, 4), (3, 3)],  # 1.5, 4.5, 3
]


@pytest.fixture
def rated(engine):
    project_id, ids, prompts = setup_project(engine, "rate-k3", "rating", 3, k=3, aspects=ASPECTS)
    [user] = annotators(engine, 1)
    by_position = dict(zip(ids, RATINGS, strict=True))
    claims = label(engine, project_id, user, ratings_shown(by_position), random.Random(5))
    assert_permutations_vary(claims, engine)
    return engine, ids, prompts, by_position


def test_rating_labels_are_stored_by_item_position(rated):
    engine, ids, prompts, by_position = rated
    with session_scope(engine, read_only=True) as s:
        labels = {label.item_id: label.ratings for label in s.scalars(select(Label).where(Label.kind == "rating"))}
    for i in ids:
        assert [tuple(r["scores"][a] for a in ASPECTS) for r in labels[i]] == by_position[i]
        assert [r["rationales"] for r in labels[i]] == [{"honesty": f"about {p}"} for p in range(3)]


def test_rating_pairs_by_mean_with_min_margin(rated):
    engine, ids, prompts, _ = rated
    p0, p2 = prompts[ids[0]], prompts[ids[2]]
    rows = export(engine, "reward", project="rate-k3")  # min margin 1.0
    assert {row["rule"] for row in rows} == {"rating:mean_margin"}
    # item 0: 5 > 4, 5 > 3.5 (4 vs 3.5 too close); item 1 all tied; item 2: 4.5 > 3 > 1.5
    margins = {(row_prompt(r), position(completion(r, "chosen")), position(completion(r, "rejected"))): r["margin"]
               for r in rows}
    assert margins == {(p0, 0, 1): pytest.approx(0.25), (p0, 0, 2): pytest.approx(0.375),
                       (p2, 1, 0): pytest.approx(0.75), (p2, 1, 2): pytest.approx(0.375),
                       (p2, 2, 0): pytest.approx(0.375)}
    assert len(rows) == len(margins)
    dpo = export(engine, "dpo", project="rate-k3")
    assert directions(dpo) == Counter(margins.keys())
    assert all("margin" not in row for row in dpo)
    # a smaller margin lets the 0.5 difference in, never the ties
    looser = directions(export(engine, "dpo", project="rate-k3", rating_min_margin=0.5))
    assert looser == Counter(margins.keys()) + Counter({(p0, 1, 2): 1})
    stricter = directions(export(engine, "dpo", project="rate-k3", rating_min_margin=1.5))
    assert stricter == Counter({(p0, 0, 2): 1, (p2, 1, 0): 1, (p2, 1, 2): 1, (p2, 2, 0): 1})  # 1.5 apart or more


def test_rating_kto_by_threshold(rated):
    engine, ids, prompts, _ = rated
    rows = export(engine, "kto", project="rate-k3")  # desirable at a mean of 4 or more
    assert all(set(row) == {"prompt", "completion", "label", "rule"} for row in rows)
    assert {row["rule"] for row in rows} == {"rating:kto_threshold"}
    got = {(row_prompt(r), position(completion(r, "completion"))): r["label"] for r in rows}
    want = {(prompts[ids[0]], 0): True, (prompts[ids[0]], 1): True, (prompts[ids[0]], 2): False,
            (prompts[ids[1]], 0): False, (prompts[ids[1]], 1): False, (prompts[ids[1]], 2): False,
            (prompts[ids[2]], 0): False, (prompts[ids[2]], 1): True, (prompts[ids[2]], 2): False}
    assert got == want and len(rows) == 9
    assert all(type(r["label"]) is bool for r in rows)
    lower = {(row_prompt(r), position(completion(r, "completion"))): r["label"]
             for r in export(engine, "kto", project="rate-k3", rating_kto_threshold=3.0)}
    assert [k for k, desirable in lower.items() if not desirable] == [(prompts[ids[2]], 0)]  # only the 1.5


def test_rating_sft_rows_are_the_unbeaten_responses(rated):
    engine, ids, prompts, _ = rated
    rows = export(engine, "sft", project="rate-k3")
    assert {row["rule"] for row in rows} == {"rating:winners"}
    got = sorted((row_prompt(r), position(completion(r, "completion"))) for r in rows)
    assert got == sorted([(prompts[ids[0]], 0), (prompts[ids[2]], 1)])  # the tied item has no winner


# --- edit ----------------------------------------------------------------------------------------


@pytest.fixture
def edited(engine):
    """Three edit items: two rewritten, one submitted unchanged ("nothing to fix")."""
    project_id, ids, prompts = setup_project(engine, "edit-p", "edit", 3)
    [user] = annotators(engine, 1)
    rewrites = {ids[0]: "A much better answer.", ids[2]: f"{prompts[ids[2]]} :: 0, and fixed."}

    def answer(claim):
        [original] = claim.responses
        return rewrites.get(claim.item_id, f"  {original}\n")  # white space around is not an edit

    assert len(label(engine, project_id, user, answer, random.Random(1))) == 3
    return engine, ids, prompts, rewrites


def test_edit_labels_record_the_distance(edited):
    engine, ids, prompts, rewrites = edited
    with session_scope(engine, read_only=True) as s:
        got = {lb.item_id: (lb.edited_text, lb.edit_distance) for lb in s.scalars(select(Label))}
    assert got == {ids[0]: (rewrites[ids[0]], got[ids[0]][1]), ids[1]: (f"{prompts[ids[1]]} :: 0", 0),
                   ids[2]: (rewrites[ids[2]], len(", and fixed."))}
    assert got[ids[0]][1] > 0


def test_edit_sft_rows_are_the_edited_texts(edited):
    engine, ids, prompts, rewrites = edited
    rows = export(engine, "sft", project="edit-p")
    assert all(set(row) == {"prompt", "completion", "rule"} for row in rows)
    assert {row["rule"] for row in rows} == {"edit:sft"}
    got = {row_prompt(r): completion(r, "completion") for r in rows}
    # the unchanged submission is an SFT row of the original
    assert got == {prompts[ids[0]]: rewrites[ids[0]], prompts[ids[1]]: f"{prompts[ids[1]]} :: 0",
                   prompts[ids[2]]: rewrites[ids[2]]}


def test_edit_pairs_prefer_the_edit_over_the_original(edited):
    engine, ids, prompts, rewrites = edited
    for fmt in ("dpo", "reward"):
        rows = export(engine, fmt, project="edit-p")
        assert {row["rule"] for row in rows} == {"edit:over_original"}
        got = {row_prompt(r): (completion(r, "chosen"), completion(r, "rejected")) for r in rows}
        # no pair from the unchanged one: it would compare a response with itself
        assert got == {prompts[i]: (rewrites[i], f"{prompts[i]} :: 0") for i in (ids[0], ids[2])}
        assert len(rows) == 2
    kto = export(engine, "kto", project="edit-p")
    assert sorted((row_prompt(r), completion(r, "completion"), r["label"]) for r in kto) == sorted(
        [(prompts[i], rewrites[i], True) for i in (ids[0], ids[2])]
        + [(prompts[i], f"{prompts[i]} :: 0", False) for i in (ids[0], ids[2])])


# --- scope: projects and the val split -----------------------------------------------------------


@pytest.fixture
def two_projects(engine):
    """Two rank projects and a labelled pair in the default project, one annotator in all."""
    a_id, a_items, a_prompts = setup_project(engine, "rank-a", "rank", 2, k=3)
    b_id, b_items, b_prompts = setup_project(engine, "rank-b", "rank", 3, k=3)
    [user] = annotators(engine, 1)
    rng = random.Random(2)
    label(engine, a_id, user, lambda claim: [position(t) + 1 for t in claim.responses], rng)
    label(engine, b_id, user, lambda claim: [3 - position(t) for t in claim.responses], rng)
    with session_scope(engine) as s:
        [pair] = make_items(s, pairs=1)
        claim = queue.claim_next(session=s, user=s.get(User, user), kind="pair", rng=rng)
        assert claim.item_id == pair
        queue.submit_pairwise(session=s, user=s.get(User, user), assignment_id=claim.assignment_id,
                              submission_id=uuid.uuid4().hex, preferred="left")
    return engine, set(a_prompts.values()), set(b_prompts.values())


def test_project_filter_takes_only_that_projects_labels(two_projects):
    engine, a_prompts, b_prompts = two_projects
    rows_a = export(engine, "reward", project="rank-a")
    assert {row_prompt(r) for r in rows_a} == a_prompts and len(rows_a) == 2 * 3
    assert {(w, lo) for _, w, lo in directions(rows_a)} == {(0, 1), (0, 2), (1, 2)}
    rows_b = export(engine, "reward", project="rank-b")
    assert {row_prompt(r) for r in rows_b} == b_prompts and len(rows_b) == 3 * 3
    assert {(w, lo) for _, w, lo in directions(rows_b)} == {(2, 1), (2, 0), (1, 0)}
    default = export(engine, "reward", project="default")
    assert [r["rule"] for r in default] == ["pairwise:majority"]
    everything = export(engine, "reward")
    assert len(everything) == len(rows_a) + len(rows_b) + 1
    assert Counter(r["rule"] for r in everything) == {"rank:all_pairs": 15, "pairwise:majority": 1}
    with pytest.raises(UserError, match="No project called 'rank-c'"):
        export(engine, "reward", project="rank-c")


def test_val_prompts_are_excluded(engine):
    project_id, ids, prompts = setup_project(engine, "rank-val", "rank", 3, k=3)
    with session_scope(engine) as s:
        s.execute(update(Prompt).where(Prompt.text == prompts[ids[1]]).values(split="val"))
    [user] = annotators(engine, 1)
    label(engine, project_id, user, lambda claim: [position(t) + 1 for t in claim.responses], random.Random(4))
    for fmt in ("reward", "dpo", "sft"):
        assert {row_prompt(r) for r in export(engine, fmt, project="rank-val")} == {prompts[ids[0]], prompts[ids[2]]}
        with_val = {row_prompt(r) for r in export(engine, fmt, project="rank-val", include_val=True)}
        assert with_val == set(prompts.values())
    with session_scope(engine) as s:
        snapshot = create_snapshot(session=s, filters=SnapshotFilter(project="rank-val"), actor=CLI)
        assert snapshot.n_labels == 2
        assert {row_prompt(r) for r in rows_for_stage(session=s, snapshot=snapshot, stage="reward")} == {
            prompts[ids[0]], prompts[ids[2]]}


# --- snapshots -----------------------------------------------------------------------------------


def test_snapshot_rows_equal_the_export(two_projects, engine):
    _, a_prompts, _ = two_projects
    with session_scope(engine) as s:
        snap = create_snapshot(session=s, filters=SnapshotFilter(project="rank-a", rank_pairs="all_pairs"), actor=CLI)
        assert snap.n_labels == 2  # only rank-a's labels
        reward = rows_for_stage(session=s, snapshot=snap, stage="reward")
        dpo = rows_for_stage(session=s, snapshot=snap, stage="dpo")
    assert reward == export(engine, "reward", project="rank-a", rank_pairs="all_pairs")
    assert dpo == export(engine, "dpo", project="rank-a", rank_pairs="all_pairs")
    assert {r["rule"] for r in dpo} == {"rank:all_pairs"} and len(dpo) == 6
    with session_scope(engine) as s:  # no rank_pairs: each stage's own default, as the export
        snap = create_snapshot(session=s, filters=SnapshotFilter(project="rank-a"), actor=CLI)
        assert rows_for_stage(session=s, snapshot=snap, stage="dpo") == export(engine, "dpo", project="rank-a")
        assert rows_for_stage(session=s, snapshot=snap, stage="reward") == export(engine, "reward", project="rank-a")
        assert rows_for_stage(session=s, snapshot=snap, stage="sft") == export(engine, "sft", project="rank-a")


def test_snapshot_of_ratings_keeps_its_settings_and_labels(rated):
    engine, ids, prompts, _ = rated
    filters = SnapshotFilter(project="rate-k3", rating_min_margin=0.5, rating_kto_threshold=3.0, rule="soft")
    with session_scope(engine) as s:
        snap = create_snapshot(session=s, filters=filters, actor=CLI)
        snap_id = snap.id
    # a label written after the snapshot is not in it
    more_id, more_items, _ = setup_project(engine, "rate-more", "rating", 1, k=3, aspects=ASPECTS)
    [late] = annotators(engine, 1, prefix="late")
    label(engine, more_id, late, ratings_shown({more_items[0]: [(5, 5), (1, 1), (3, 3)]}), random.Random(0))
    settings = dict(rating_min_margin=0.5, rating_kto_threshold=3.0, rule="soft")
    with session_scope(engine) as s:
        from db.models import Snapshot

        snap = s.get(Snapshot, snap_id)
        for stage in ("dpo", "reward", "kto", "sft"):
            assert rows_for_stage(session=s, snapshot=snap, stage=stage) == export(
                engine, stage, project="rate-k3", **settings), stage
        assert len(rows_for_stage(session=s, snapshot=snap, stage="dpo")) == 6


def test_snapshot_of_an_unknown_project(engine):
    with session_scope(engine) as s, pytest.raises(UserError, match="No project called"):
        create_snapshot(session=s, filters=SnapshotFilter(project="nope"), actor=CLI)


def test_a_picked_pair_is_voted_on_by_every_ranking(engine):
    """best_vs_worst picks (0, 2) from one ranking; the two others rank 2 above 0, so under
    majority that pair goes their way, and under drop it is disputed and left out."""
    project_id, [item], prompts = setup_project(engine, "rank-picked", "rank", 1, k=3, overlap=3)
    users = annotators(engine, 3, prefix="pick")
    for user, ranking in zip(users, ([1, 2, 3], [3, 1, 2], [3, 1, 2]), strict=True):
        label(engine, project_id, user, ranks_shown({item: ranking}), random.Random(user))
    majority = directions(export(engine, "dpo", project="rank-picked"))
    assert majority == Counter({(prompts[item], 1, 0): 1, (prompts[item], 2, 0): 1})
    assert export(engine, "dpo", project="rank-picked", rule="drop") == []
    best_vs_rest = directions(export(engine, "dpo", project="rank-picked", rule="drop", rank_pairs="best_vs_rest"))
    # Picked: (0, 1), (0, 2) from the first ranking, (1, 0), (1, 2) from the others. Only 1 over 2
    # is unanimous.
    assert best_vs_rest == Counter({(prompts[item], 1, 2): 1})
