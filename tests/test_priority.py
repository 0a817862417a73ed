"""Ordering a project's open items (feedback/priority.py): the uncertainty formula itself, and
the keys it writes as seen through the real queue.claim_next, on SQLite and Postgres."""
from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from cli import main
from db.engine import session_scope
from db.models import (
    Assignment,
    AuditLog,
    Constitution,
    Item,
    Job,
    Judgment,
    Label,
    Project,
    Prompt,
    Response,
    User,
)
from feedback import queue
from feedback.actors import CLI, Actor
from feedback.errors import PermissionDenied, UserError
from feedback.policies import ensure_base_policy
from feedback.policy import Completion
from feedback.priority import (
    JITTER,
    MIDDLE,
    ensemble_uncertainty,
    key_for,
    label_uncertainty,
    new_item_key,
    reorder_queue,
    uncertainty,
    vote_uncertainty,
)
from feedback.projects import default_project
from feedback.prompts import canonical_messages, content_hash
from feedback.sampling import record_samples
from testkit.factories import make_items, make_users, set_queue

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def H(p: float) -> float:
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


# --- the formula --------------------------------------------------------------------------------


def test_uncertainty_of_each_signal_and_their_mean():
    assert uncertainty() == MIDDLE  # no signal: the middle
    # Dawid-Skene posterior, shrunk by one pseudo-label: a lone label is no evidence either way
    assert label_uncertainty(1.0, 1) == pytest.approx(0.5)
    assert label_uncertainty(1.0, 2) == pytest.approx(1 / 3)
    assert label_uncertainty(0.5, 2) == pytest.approx(1.0)
    assert label_uncertainty(0.6, 1) > label_uncertainty(0.9, 1) > label_uncertainty(0.9, 3)
    # judge votes: the leading answer's share; an order-inconsistent verdict never leads
    assert vote_uncertainty(["a"]) == 0.0
    assert vote_uncertainty(["inconsistent"]) == 1.0
    assert vote_uncertainty(["a", "b"]) == 1.0
    assert vote_uncertainty(["a", "a", "b"]) == pytest.approx(2 / 3)
    assert vote_uncertainty(["a", "inconsistent"]) == 1.0
    assert vote_uncertainty(["failed"]) is None and vote_uncertainty(["a", "failed"]) == 0.0
    # the ensemble: predictive entropy plus the members' disagreement
    assert ensemble_uncertainty([0.5]) == pytest.approx(1.0)
    assert ensemble_uncertainty([0.9]) == pytest.approx(H(0.9))
    assert ensemble_uncertainty([0.99, 0.01]) == pytest.approx(1.0)  # confident members that disagree
    assert ensemble_uncertainty([0.99, 0.99]) < 0.1
    assert ensemble_uncertainty([0.9, 0.5]) > ensemble_uncertainty([0.7, 0.7])  # same mean, disagreement counts
    assert ensemble_uncertainty([]) is None
    with pytest.raises(ValueError):
        ensemble_uncertainty([1.2])
    # the signals an item has are averaged
    assert uncertainty(votes=["a", "b"], model_probabilities=[0.9]) == pytest.approx((1 + H(0.9)) / 2)
    assert uncertainty(confidence=1.0, n_labels=2, votes=["a"]) == pytest.approx(1 / 6)
    assert uncertainty(votes=["failed"]) == MIDDLE
    # keys: most uncertain lowest; the jitter only breaks ties
    assert key_for(1.0, 0.0) == 0.0 and key_for(0.0, 0.999) < 1.0 + JITTER
    assert key_for(0.6, 0.999) < key_for(0.6 - 1e-6, 0.0)


def test_new_item_keys_by_order():
    rng = random.Random(1)
    assert new_item_key("oldest", rng) == 0.0
    keys = [new_item_key("random", rng) for _ in range(20)]
    assert all(0 <= k < 1 for k in keys) and len(set(keys)) == 20
    assert all(MIDDLE <= new_item_key("uncertainty", rng) < MIDDLE + JITTER for _ in range(20))


# --- helpers ------------------------------------------------------------------------------------


def keys_of(engine, ids) -> dict[int, float]:
    with session_scope(engine, read_only=True) as s:
        return dict(s.execute(select(Item.id, Item.queue_key).where(Item.id.in_(ids))).all())


def claim_order(engine, user_id: int, project_id: int) -> list[int]:
    """Every item the annotator is handed, in order (each skipped to get the next)."""
    order = []
    while True:
        with session_scope(engine) as s:
            user = s.get(User, user_id)
            claim = queue.claim_next(session=s, user=user, project=project_id, rng=random.Random(0))
            if claim is None:
                return order
            order.append(claim.item_id)
            queue.skip(session=s, user=user, assignment_id=claim.assignment_id)


def reorder(engine, *, seed=0, model_scores=None, actor=CLI) -> dict:
    with session_scope(engine) as s:
        return reorder_queue(session=s, actor=actor, project=default_project(session=s), rng=random.Random(seed),
                             model_scores=model_scores)


def human_label(s, item_id: int, user_id: int, choice: str) -> None:
    """A finished assignment and its label, as the queue leaves them."""
    s.add(Assignment(item_id=item_id, user_id=user_id, shown_order="ab", status="done", leased_at=T0,
                     expires_at=T0 + timedelta(minutes=10), finished_at=T0))
    s.add(Label(item_id=item_id, kind="pairwise", choice=choice, source="human", user_id=user_id,
                submission_id=uuid.uuid4().hex))


def judgment(s, item_id: int, outcome: str, label_choice: str | None) -> None:
    """One judge job's judgment of the item, with the label it wrote (if any), as judges/batch.py stores them."""
    constitution = s.scalar(select(Constitution).where(Constitution.name == "c"))
    if constitution is None:
        constitution = Constitution(name="c", version=1, principles=["p"], content_hash="h")
        s.add(constitution)
    job = Job(kind="judge", config={}, status="succeeded")
    s.add(job)
    s.flush()
    row = Judgment(job_id=job.id, item_id=item_id, constitution_id=constitution.id, backend="x", model="x",
                   template_version="t", outcome=outcome)
    s.add(row)
    if label_choice is not None:
        label = Label(item_id=item_id, kind="pairwise", choice=label_choice, source="judge", producer="x:x",
                      constitution_id=constitution.id, submission_id=f"judge-{job.id}-{item_id}")
        s.add(label)
        s.flush()
        row.label_id = label.id


# --- random and oldest --------------------------------------------------------------------------


def test_random_order_is_reproducible_with_a_seed_and_claims_follow_it(engine):
    with session_scope(engine) as s:
        ids = make_items(s, pairs=6)
        (annotator,) = make_users(s, 1)
        set_queue(s, queue_order="random")
        project_id = default_project(session=s).id
    counts = reorder(engine, seed=7)
    assert counts["reordered"] == 6 and counts["order"] == "random"
    first = keys_of(engine, ids)
    reorder(engine, seed=7)
    assert keys_of(engine, ids) == first
    reorder(engine, seed=8)
    assert keys_of(engine, ids) != first
    reorder(engine, seed=7)
    expected = sorted(ids, key=lambda i: (first[i], i))
    assert expected != sorted(ids)  # (with this seed) not the oldest-first order
    assert claim_order(engine, annotator, project_id) == expected
    with session_scope(engine, read_only=True) as s:
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "queue.reorder")).all()
        assert len(audit) == 4 and audit[-1].target == "project:default" and audit[-1].details["reordered"] == 6


def test_oldest_resets_every_key(engine):
    with session_scope(engine) as s:
        ids = make_items(s, pairs=4)
        (annotator,) = make_users(s, 1)
        set_queue(s, queue_order="random")
        project_id = default_project(session=s).id
    reorder(engine, seed=3)
    assert any(k != 0 for k in keys_of(engine, ids).values())
    with session_scope(engine) as s:
        set_queue(s, queue_order="oldest")
    reorder(engine)
    assert set(keys_of(engine, ids).values()) == {0.0}
    assert claim_order(engine, annotator, project_id) == ids


def test_reordering_needs_an_admin(engine):
    with session_scope(engine) as s:
        make_items(s, pairs=1)
        (uid,) = make_users(s, 1, role="reviewer")
    with session_scope(engine) as s:
        with pytest.raises(PermissionDenied):
            reorder_queue(session=s, actor=Actor.signed_in(s.get(User, uid)), project=default_project(session=s))


def test_new_items_from_sampling_get_a_key_by_the_projects_order(engine):
    with session_scope(engine) as s:
        version = ensure_base_policy(session=s, actor=CLI)
        project = default_project(session=s)
        made = {}
        for order in ("oldest", "random", "uncertainty"):
            project.queue_order = order
            messages = canonical_messages(f"question for {order}", None)
            prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages))
            s.add(prompt)
            s.flush()
            completions = [Completion(text=t, finish_reason="stop", prompt_tokens=1, completion_tokens=1,
                                      latency_ms=1.0, seed=None) for t in ("one", "two")]
            assert record_samples(session=s, prompt=prompt, version=version, completions=completions, params={},
                                  project=project) == 1
            s.flush()
            made[order] = s.scalar(select(Item.queue_key).where(Item.prompt_id == prompt.id))
    assert made["oldest"] == 0.0
    assert 0.0 <= made["random"] < 1.0 and made["random"] != 0.0
    assert MIDDLE <= made["uncertainty"] < MIDDLE + JITTER


# --- uncertainty --------------------------------------------------------------------------------


def test_uncertainty_hands_out_split_and_inconsistent_items_first_and_confident_ones_last(engine):
    with session_scope(engine) as s:
        (split, agree_a, agree_b, inconsistent, judge_split, judged, plain1, plain2) = make_items(s, pairs=8)
        alice, bob, carol = make_users(s, 3)
        set_queue(s, queue_order="uncertainty", overlap=3)
        project_id = default_project(session=s).id
        for item, (x, y) in ((split, "ab"), (agree_a, "aa"), (agree_b, "bb")):
            human_label(s, item, alice, x)
            human_label(s, item, bob, y)
        judgment(s, inconsistent, "inconsistent", "tie")  # on_disagreement=tie: labelled, so not escalated
        judgment(s, judge_split, "a", "a")
        judgment(s, judge_split, "b", "b")
        judgment(s, judged, "a", "a")
        judgment(s, judged, "failed", None)  # a failed request says nothing about the item
    counts = reorder(engine, seed=1)
    assert counts == {"project": "default", "order": "uncertainty", "open": 8, "reordered": 8, "labels": 3,
                      "judge": 3, "model": 0, "no_signal": 2}
    keys = keys_of(engine, [split, agree_a, agree_b, inconsistent, judge_split, judged, plain1, plain2])
    # u = 1: a 1-1 split between two equally reliable annotators, an order-inconsistent verdict, a 1-1 judge split
    assert [keys[i] for i in (split, inconsistent, judge_split)] == pytest.approx([0.0] * 3, abs=1e-8)
    assert keys[plain1] == pytest.approx(MIDDLE, abs=1e-8) and keys[judged] == pytest.approx(1.0, abs=1e-8)
    assert keys[agree_a] == pytest.approx(1 - 1 / 3, abs=1e-3)  # two agreeing labels, Dawid-Skene sure
    assert keys[plain1] != keys[plain2]  # the tie among items without a signal is broken at random

    order = claim_order(engine, carol, project_id)
    assert set(order[:3]) == {split, inconsistent, judge_split}
    assert set(order[3:5]) == {plain1, plain2}
    assert set(order[5:7]) == {agree_a, agree_b}
    assert order[7] == judged


def test_uncertainty_without_any_signal_is_random_not_oldest(engine):
    with session_scope(engine) as s:
        ids = make_items(s, pairs=6)
        (annotator,) = make_users(s, 1)
        set_queue(s, queue_order="uncertainty")
        project_id = default_project(session=s).id
    counts = reorder(engine, seed=5)
    assert counts["no_signal"] == 6
    keys = keys_of(engine, ids)
    expected = sorted(ids, key=lambda i: (keys[i], i))
    assert expected != ids
    assert claim_order(engine, annotator, project_id) == expected


# --- a reward-model ensemble ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def reward_models(tiny_model_dir, tmp_path_factory) -> list[str]:
    """Two reward-model directories as the reward stage saves them: the tiny model with a one-output
    score head. The heads are one random direction, the second member's with some noise added (an
    ensemble mostly agrees), and large enough that the random model's margins are not all ~0."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    direction = torch.randn(model.score.weight.shape, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(model.score.weight.shape, generator=torch.Generator().manual_seed(2))
    dirs = []
    for k, head in enumerate((direction, direction + 0.5 * noise)):
        out = tmp_path_factory.mktemp(f"reward-{k}")
        with torch.no_grad():
            model.score.weight.copy_(3.0 * head)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        dirs.append(str(out))
    return dirs


TEXTS = [("The answer is 4.", "I would rather not say anything about numbers today, sorry."),
         ("Paris.", "The capital of France is Paris, a city on the Seine."),
         ("Yes", "No, never, under no circumstances whatsoever."),
         ("Exactly the same answer.", "Exactly the same answer.")]  # two responses, one text: P(a better) = 1/2


def _pairs(s) -> list[int]:
    version = ensure_base_policy(session=s, actor=CLI)
    project = default_project(session=s)
    ids = []
    for i, (a, b) in enumerate(TEXTS):
        messages = canonical_messages(f"question {i}", None)
        prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages))
        s.add(prompt)
        s.flush()
        ra = Response(prompt_id=prompt.id, policy_version_id=version.id, text=a, params={})
        rb = Response(prompt_id=prompt.id, policy_version_id=version.id, text=b, params={})
        s.add_all([ra, rb])
        s.flush()
        item = Item(kind="pair", project_id=project.id, prompt_id=prompt.id, response_a_id=ra.id, response_b_id=rb.id)
        s.add(item)
        s.flush()
        ids.append(item.id)
    return ids


def test_a_reward_model_ensemble_orders_the_pairs(engine, use_db, reward_models, capsys):
    import torch

    from training.reward_model import RewardModel
    from training.uncertainty import MAX_LENGTH, ensemble_scores, resolve_reward_models, sigmoid

    with session_scope(engine) as s:
        ids = _pairs(s)
        (annotator,) = make_users(s, 1)
        set_queue(s, queue_order="uncertainty")
        project_id = default_project(session=s).id
        job = Job(kind="train", config={}, status="succeeded", result={"reward_model_dir": reward_models[1]})
        s.add(job)
        s.flush()
        job_id = job.id

    with session_scope(engine, read_only=True) as s:
        assert resolve_reward_models(session=s, specs=[reward_models[0], f"job:{job_id}"]) == reward_models
        with pytest.raises(UserError, match="did not produce a reward model"):
            resolve_reward_models(session=s, specs=["999"])
        with pytest.raises(UserError, match="no such directory"):
            resolve_reward_models(session=s, specs=["/no/such/dir"])
        scores = ensemble_scores(session=s, project=default_project(session=s), model_dirs=reward_models)
    assert sorted(scores) == ids and all(len(p) == 2 for p in scores.values())
    # each member's P(a better) is the sigmoid of its reward margin
    member = RewardModel(reward_models[0], torch.device("cpu"), max_length=MAX_LENGTH)
    (reward_a, reward_b) = member([canonical_messages("question 0", None)] * 2, list(TEXTS[0]))
    assert scores[ids[0]][0] == pytest.approx(sigmoid(reward_a - reward_b), abs=1e-5)
    assert scores[ids[3]] == pytest.approx([0.5, 0.5], abs=1e-4)  # the same text twice: a coin flip
    u = {i: ensemble_uncertainty(p) for i, p in scores.items()}
    assert len({round(x, 3) for x in u.values()}) == 4  # the models tell the pairs apart

    counts = reorder(engine, seed=0, model_scores=scores)
    assert counts["model"] == 4 and counts["no_signal"] == 0
    by_u = sorted(ids, key=lambda i: -u[i])
    assert by_u[0] == ids[3] and by_u != ids  # the last-made pair (oldest order: handed out last) now comes first
    assert claim_order(engine, annotator, project_id) == by_u

    # The CLI does the same: a directory and a reward round's job id, scored then reordered.
    expected = keys_of(engine, ids)
    reorder(engine, seed=9)  # no model: keys move
    assert main(["queue", "reorder", "--project", "default", "--reward-models",
                 f"{reward_models[0]},job:{job_id}", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "scored 4 open pairs with 2 reward model(s)" in out and "model 4" in out
    assert keys_of(engine, ids) == pytest.approx(expected)


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_sets_the_order_and_reorders(engine, use_db, capsys):
    with session_scope(engine) as s:
        ids = make_items(s, pairs=3)
    assert main(["queue", "reorder", "--project", "default", "--order", "random", "--seed", "3"]) == 0
    assert "default: 3 items reordered (random order)" in capsys.readouterr().out
    rng = random.Random(3)
    assert keys_of(engine, ids) == {i: rng.random() for i in ids}
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(Project.queue_order).where(Project.name == "default")) == "random"
        assert list(s.scalars(select(AuditLog.action).where(AuditLog.action.like("queue.%")).order_by(AuditLog.id))) \
            == ["queue.settings", "queue.reorder"]

    assert main(["queue", "reorder", "--project", "default", "--order", "oldest", "--reward-models", "x"]) == 2
    assert "only counts in the uncertainty order" in capsys.readouterr().err
    assert main(["queue", "reorder", "--project", "default", "--reward-models", "x"]) == 2  # still random
    assert "add --order uncertainty" in capsys.readouterr().err
    assert main(["queue", "reorder", "--project", "nope"]) == 2
    assert "No project called 'nope'" in capsys.readouterr().err
