"""How reliable each annotator is, estimated from the labels themselves: Dawid-Skene (crowd-kit's
implementation; an EM over per-annotator confusion matrices), which gives every item an
aggregated label with a confidence and every annotator a reliability.

The AI judge and each grader are annotators here too, named by their producer
("anthropic:claude-...", "grader:numeric"); people by username. A label's value is the
item-level verdict: a / b / tie / both_bad for pairs (the item's own a/b, whatever was shown),
up / down for thumbs.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Label, User

# EM iterations: crowd-kit's default is 100; these label sets are small and converge in far fewer.
DS_ITERATIONS = 100


@dataclass(frozen=True)
class Estimates:
    """Dawid-Skene's output for one set of labels."""

    items: dict[int, tuple[str, float]]  # item id -> (aggregated value, its posterior probability)
    annotators: dict[str, float]  # annotator -> expected accuracy (P(says the true value))

    def as_json(self) -> dict[str, Any]:
        return {"items": {str(k): [v, round(c, 6)] for k, (v, c) in sorted(self.items.items())},
                "annotators": {k: round(v, 6) for k, v in sorted(self.annotators.items())}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Estimates:
        return cls(items={int(k): (v, float(c)) for k, (v, c) in data["items"].items()},
                   annotators={k: float(v) for k, v in data["annotators"].items()})


def annotator_name(label: Label, username: str | None) -> str:
    """Who a label counts as: a person by username, the judge or a grader by producer."""
    if label.source == "human":
        return username or f"user:{label.user_id}"
    return label.producer or label.source


def value_of(label: Label) -> str | None:
    return label.choice if label.kind == "pairwise" else label.thumb if label.kind == "binary" else None


def dawid_skene(observations: Iterable[tuple[int, str, str]]) -> Estimates:
    """(item id, annotator, value) triples -> Estimates. Empty in, empty out."""
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    frame = pd.DataFrame(list(observations), columns=["task", "worker", "label"])
    if frame.empty:
        return Estimates(items={}, annotators={})
    frame = frame.sort_values(["task", "worker"], kind="stable").reset_index(drop=True)  # same input, same EM
    model = DawidSkene(n_iter=DS_ITERATIONS).fit(frame)
    probas = model.probas_
    items = {int(task): (str(probas.loc[task].idxmax()), float(probas.loc[task].max())) for task in probas.index}
    # errors_[worker, observed][true] = P(observed | true); accuracy = sum_true prior(true) P(true | true).
    errors, priors = model.errors_, model.priors_
    annotators = {}
    for worker in frame["worker"].unique():
        matrix = errors.loc[worker]
        annotators[str(worker)] = float(sum(priors[true] * matrix.loc[true, true]
                                            for true in priors.index if true in matrix.index))
    return Estimates(items=items, annotators=annotators)


def estimates_for(session: Session, labels: Iterable[Label]) -> Estimates:
    """Dawid-Skene over these pairwise or binary labels (one kind at a time: their values differ)."""
    labels = list(labels)
    names = dict(session.execute(select(User.id, User.username)
                                 .where(User.id.in_({label.user_id for label in labels if label.user_id}))).all())
    return dawid_skene((label.item_id, annotator_name(label, names.get(label.user_id)), value_of(label))
                       for label in labels if value_of(label) is not None)
