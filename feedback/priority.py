"""Spending human time where it matters: the order a project's open items are handed out in.

`claim_next` (feedback/queue.py) takes a project's open items by (queue_key, id), lowest first,
within its tiers (judge-undecided pairs, then the active policy's responses, then the rest).
`reorder_queue` sets those keys by the project's `queue_order`:

- oldest: 0 for every item of the project, so the id decides (the baseline before this module).
- random: a uniform random number in [0, 1) per open item (the baseline to measure against).
- uncertainty: 1 - u, where u in [0, 1] is how unsure we are about the item's answer; the most
  uncertain item is handed out first.

How u is made, per open item, from whichever of three signals it has (each in [0, 1]; u is their
mean; an item with none gets u = 0.5, the middle):

- labels (pairwise and binary projects): Dawid-Skene over the project's human labels
  (feedback/reliability.py) gives the item's leading answer a posterior c. One label cannot show a
  disagreement (and Dawid-Skene makes a lone annotator perfectly reliable), so c is shrunk towards
  1/2 by one pseudo-label: c' = (n c + 1/2) / (n + 1), n = the item's human labels. Then
  u_labels = min(1, 2 (1 - c')): 0 when certain, 1 at a coin flip or worse. One label from a
  reliable annotator scores 0.5 (as no label does); two that agree ~0.33; a 1-1 split between
  equally reliable annotators 1.
- judge votes (pairs): one vote per judgment of the item (its outcome: a, b, tie, or
  inconsistent when the judge's two orders disagreed) and per judge label without a judgment (the
  loop's and other producers' labels). Failed judgments are not votes: they say nothing about the
  item. With f = the share of votes for the leading answer (inconsistent votes never lead),
  u_judge = min(1, 2 (1 - f)): one consistent verdict is 0 (it already agreed with itself across
  both orders), an inconsistent one 1, a 1-1 split 1, a 2-1 split 2/3.
- reward-model ensemble (pairs, when `model_scores` is given): member m's P(a better), p_m (the
  sigmoid of its reward margin, training/uncertainty.py). With H the binary entropy in bits and
  p = mean p_m, u_model = min(1, 2 H(p) - mean_m H(p_m)): the predictive entropy H(p) plus the
  members' disagreement, the mutual information H(p) - mean H(p_m) (BALD). One member gives H(p);
  members that agree confidently give ~0; members that confidently disagree give 1.

Every key also gets a random jitter below JITTER, so items with the same u (all those without a
signal, above all) come in random order: "uncertainty" with no signals at all degrades to random
order, not to oldest-first. Items sampled later get a key at once (`new_item_key`): random in a
random project, the middle (0.5 + jitter) in an uncertainty project, 0 in an oldest one.

The keys are a snapshot: reorder again after new labels, judge runs or reward models.
"""
from __future__ import annotations

import math
import random as random_module
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import QUEUE_ORDERS, Item, Judgment, Label, Project, utcnow
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.queue import open_items_query, update_queue_settings
from feedback.reliability import estimates_for, value_of

MIDDLE = 0.5  # u of an item with no signal, and so its key
JITTER = 1e-9  # random tie-break added to every key: far below any difference in u that matters
# The label kind Dawid-Skene reads for each task type (rank, rating and edit labels have no
# a/b-style value: those projects order by judge and model signals only, or at random).
DS_KINDS = {"pairwise": "pairwise", "binary": "binary"}
JUDGE_ANSWERS = ("a", "b", "tie", "both_bad", "up", "down")


# --- the pure part -------------------------------------------------------------------------------


def label_uncertainty(confidence: float, n_labels: int) -> float:
    """u from Dawid-Skene's posterior of the leading answer over `n_labels` labels (>= 1)."""
    if not 0.0 <= confidence <= 1.0 or n_labels < 1:
        raise ValueError("confidence is in [0, 1] and an item with a posterior has at least one label")
    shrunk = (n_labels * confidence + 0.5) / (n_labels + 1)
    return min(1.0, 2.0 * (1.0 - shrunk))


def vote_uncertainty(votes: Sequence[str]) -> float | None:
    """u from judge votes (a / b / tie / both_bad / up / down, or 'inconsistent'); None without votes.
    'failed' is not a vote and is ignored."""
    votes = [v for v in votes if v != "failed"]
    if not votes:
        return None
    answers = Counter(v for v in votes if v != "inconsistent")
    leading = max(answers.values(), default=0) / len(votes)
    return min(1.0, 2.0 * (1.0 - leading))


def _entropy(p: float) -> float:
    """Binary entropy in bits."""
    return 0.0 if p <= 0.0 or p >= 1.0 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def ensemble_uncertainty(probabilities: Sequence[float]) -> float | None:
    """u from the members' P(a better): predictive entropy plus their disagreement (mutual
    information), clipped to 1; None for an empty ensemble."""
    probabilities = [float(p) for p in probabilities]
    if not probabilities:
        return None
    if not all(0.0 <= p <= 1.0 for p in probabilities):
        raise ValueError(f"ensemble probabilities must be in [0, 1], not {probabilities}")
    mean = sum(probabilities) / len(probabilities)
    total = _entropy(mean)
    aleatoric = sum(_entropy(p) for p in probabilities) / len(probabilities)
    return min(1.0, max(0.0, 2.0 * total - aleatoric))


def uncertainty(*, confidence: float | None = None, n_labels: int = 0, votes: Sequence[str] = (),
                model_probabilities: Sequence[float] | None = None) -> float:
    """An item's u in [0, 1]: the mean of the signals it has (MIDDLE with none). See the module
    docstring for each signal."""
    return combine(signals_of(confidence=confidence, n_labels=n_labels, votes=votes,
                              model_probabilities=model_probabilities))


def combine(signals: Mapping[str, float]) -> float:
    """The mean of the signals' u; MIDDLE when there is none."""
    return sum(signals.values()) / len(signals) if signals else MIDDLE


def signals_of(*, confidence: float | None = None, n_labels: int = 0, votes: Sequence[str] = (),
               model_probabilities: Sequence[float] | None = None) -> dict[str, float]:
    """The signals an item has, by name (labels, judge, model), each its u."""
    signals = {}
    if confidence is not None and n_labels > 0:
        signals["labels"] = label_uncertainty(confidence, n_labels)
    if (judge := vote_uncertainty(votes)) is not None:
        signals["judge"] = judge
    if model_probabilities is not None and (model := ensemble_uncertainty(model_probabilities)) is not None:
        signals["model"] = model
    return signals


def key_for(u: float, jitter: float) -> float:
    """The queue key of an item with uncertainty u (lowest first); `jitter` in [0, 1)."""
    return 1.0 - u + JITTER * jitter


def new_item_key(queue_order: str, rng=None) -> float:
    """The key a newly made item starts with, so it takes its place among reordered ones."""
    rng = rng or random_module
    if queue_order == "random":
        return rng.random()
    if queue_order == "uncertainty":
        return key_for(MIDDLE, rng.random())
    return 0.0


# --- reading the signals and writing the keys ---------------------------------------------------


def _label_signals(session: Session, project: Project, open_ids: set[int]) -> dict[int, tuple[float, int]]:
    """item id -> (Dawid-Skene posterior of its leading answer, its human labels), open items only.
    The fit reads all the project's human labels of its kind: annotator reliability comes from
    every item, not only the open ones."""
    kind = DS_KINDS.get(project.task_type)
    if kind is None:
        return {}
    labels = list(session.scalars(
        select(Label).join(Item, Item.id == Label.item_id)
        .where(Item.project_id == project.id, Label.source == "human", Label.kind == kind).order_by(Label.id)))
    labels = [label for label in labels if value_of(label) is not None]
    counts = Counter(label.item_id for label in labels if label.item_id in open_ids)
    if not counts:
        return {}
    estimates = estimates_for(session, labels)
    return {item_id: (estimates.items[item_id][1], n) for item_id, n in counts.items()
            if item_id in estimates.items}


def _judge_votes(session: Session, open_query) -> dict[int, list[str]]:
    """item id -> its judge votes: each judgment's outcome, and each judge label no judgment made."""
    votes: dict[int, list[str]] = defaultdict(list)
    counted_labels = set()
    for item_id, outcome, label_id in session.execute(
            select(Judgment.item_id, Judgment.outcome, Judgment.label_id)
            .where(Judgment.item_id.in_(open_query)).order_by(Judgment.id)):
        votes[item_id].append(outcome)
        if label_id is not None:
            counted_labels.add(label_id)
    for label in session.scalars(select(Label).where(Label.source == "judge", Label.item_id.in_(open_query))
                                 .order_by(Label.id)):
        value = value_of(label)
        if label.id not in counted_labels and value in JUDGE_ANSWERS:
            votes[label.item_id].append(value)
    return votes


def reorder_queue(*, session: Session, actor: Actor, project: Project, rng: random_module.Random | None = None,
                  model_scores: Mapping[int, Sequence[float]] | None = None,
                  now: datetime | None = None) -> dict:
    """Set the queue keys of the project's open items by its queue order (the module docstring
    has the rules); `model_scores` (item id -> each ensemble member's P(a better)) only counts in
    uncertainty order. Returns what was done: the open items, the keys written ("reordered"; in oldest
    order the keys reset to 0), and in uncertainty order how many items had each signal."""
    actor.require("admin")
    order = project.queue_order
    if order not in QUEUE_ORDERS:
        raise UserError(f"The queue order is one of {', '.join(QUEUE_ORDERS)}, not {order!r}.")
    rng = rng or random_module.Random()
    now = now or utcnow()
    open_query = open_items_query(settings=project, now=now, dialect=session.get_bind().dialect.name)
    open_ids = list(session.scalars(open_query.order_by(Item.id)))
    counts = {"project": project.name, "order": order, "open": len(open_ids), "reordered": 0,
              "labels": 0, "judge": 0, "model": 0, "no_signal": 0}
    if order == "oldest":
        # Every item, not only the open ones: a lease that expires later must not bring back an old key.
        result = session.execute(update(Item).where(Item.project_id == project.id, Item.queue_key != 0.0)
                                 .values(queue_key=0.0))
        counts["reordered"] = result.rowcount
    elif order == "random":
        keys = {item_id: rng.random() for item_id in open_ids}
        counts["reordered"] = _write(session, keys)
    else:
        open_set = set(open_ids)
        labelled = _label_signals(session, project, open_set)
        votes = _judge_votes(session, open_query)
        model_scores = model_scores or {}
        keys = {}
        for item_id in open_ids:  # in id order, so one seed gives one ordering
            confidence, n_labels = labelled.get(item_id, (None, 0))
            signals = signals_of(confidence=confidence, n_labels=n_labels, votes=votes.get(item_id, ()),
                                 model_probabilities=model_scores.get(item_id))
            for name in signals:
                counts[name] += 1
            counts["no_signal"] += not signals
            keys[item_id] = key_for(combine(signals), rng.random())
        counts["reordered"] = _write(session, keys)
    actor.record(session=session, action="queue.reorder", target=f"project:{project.name}",
                 details={k: v for k, v in counts.items() if k != "project"})
    return counts


def _write(session: Session, keys: dict[int, float]) -> int:
    """One executemany UPDATE by primary key."""
    if keys:
        session.execute(update(Item), [{"id": item_id, "queue_key": key} for item_id, key in keys.items()])
    return len(keys)


def save_queue_settings(*, session: Session, actor: Actor, project: Project, queue_order: str,
                        rng: random_module.Random | None = None, **settings) -> Project:
    """The queue settings (feedback.queue.update_queue_settings), and when the order changed, the
    items' keys rewritten for it at once: a new order takes effect on the next claim."""
    before = project.queue_order
    update_queue_settings(session=session, actor=actor, project=project, queue_order=queue_order, **settings)
    if project.queue_order != before:
        reorder_queue(session=session, actor=actor, project=project, rng=rng)
    return project
