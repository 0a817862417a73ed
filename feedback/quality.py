"""Per-annotator measures over a project's pairwise and binary labels: how much each annotator
agrees with the others, with the aggregate, and with themselves about sides; how fast they go.
People, the AI judge and each grader are all annotators here (feedback/reliability.py names them).

- agree_others: over every two labels on one item, the share with the same value.
- agree_majority: against the majority of the *other* labels on the item (leave-one-out; items
  where the others split evenly or there are none do not count).
- reliability: Dawid-Skene's expected accuracy (feedback/reliability.py), per label kind.
- gold_accuracy / gold_n: of their labels on gold items (marked, promoted or attention checks),
  the share that matched the gold answer; `standing` is a person's ok / warned / paused on the
  project (feedback/gold.py), shown when one project is asked for.
- left_wins: of a person's decisive pairwise labels (A or B), the share that chose the response
  shown on the left; 0.5 is no position bias.
- tie_rate: of pairwise labels, the share of tie and both-bad.
- median_s / too_fast: seconds from the item being handed out to the label (people only), and how
  many labels came in under TOO_FAST_S.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from statistics import median
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import AnnotatorStanding, Assignment, Item, ItemDecision, Label, User
from feedback.actors import Actor
from feedback.decisions import value_of as decision_value
from feedback.reliability import annotator_name, estimates_for, value_of

TOO_FAST_S = 3.0  # under this a label is unlikely to come from reading two answers
KINDS = ("pairwise", "binary")


def share(flags: list[bool]) -> float | None:
    """The share of True, to three places; None when there is nothing to count."""
    return round(sum(flags) / len(flags), 3) if flags else None


def annotator_table(*, session: Session, actor: Actor, project_id: int | None = None) -> list[dict[str, Any]]:
    """One row per annotator and label kind, most labels first (reviewers and admins)."""
    actor.require("reviewer", "admin")
    query = select(Label).where(Label.kind.in_(KINDS)).order_by(Label.id)
    if project_id is not None:
        query = query.where(Label.item_id.in_(select(Item.id).where(Item.project_id == project_id)))
    labels = list(session.scalars(query))
    names = dict(session.execute(select(User.id, User.username)).all())
    gold = {d.item_id: decision_value(d) for d in session.scalars(
        select(ItemDecision).where(ItemDecision.gold.is_(True),
                                   ItemDecision.item_id.in_({label.item_id for label in labels})))}
    standing = {}
    if project_id is not None:
        standing = dict(session.execute(select(User.username, AnnotatorStanding.status)
                                        .join(AnnotatorStanding, AnnotatorStanding.user_id == User.id)
                                        .where(AnnotatorStanding.project_id == project_id)).all())
    leased = {(item, user): at for item, user, at in session.execute(
        select(Assignment.item_id, Assignment.user_id, Assignment.leased_at)
        .where(Assignment.item_id.in_({label.item_id for label in labels})))}
    rows = []
    for kind in KINDS:
        of_kind = [label for label in labels if label.kind == kind]
        if not of_kind:
            continue
        reliability = estimates_for(session, of_kind).annotators
        by_item: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for label in of_kind:
            by_item[label.item_id].append((annotator_name(label, names.get(label.user_id)), value_of(label)))
        stats: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for label in of_kind:
            who, value = annotator_name(label, names.get(label.user_id)), value_of(label)
            s = stats[who]
            s["n"].append(1)
            if label.item_id in gold:
                s["gold"].append(value == gold[label.item_id])
            others = [v for w, v in by_item[label.item_id] if w != who]
            s["agree_others"] += [v == value for v in others]
            top = Counter(others).most_common(2)
            if top and (len(top) == 1 or top[0][1] > top[1][1]):
                s["agree_majority"].append(top[0][0] == value)
            if kind == "pairwise":
                s["tie"].append(value in ("tie", "both_bad"))
                if label.source == "human" and value in ("a", "b") and label.shown_order:
                    s["left"].append((value == "a") == (label.shown_order == "ab"))
            if label.source == "human" and (at := leased.get((label.item_id, label.user_id))) is not None:
                s["seconds"].append((label.created_at - at).total_seconds())
        for who, s in stats.items():
            rows.append({
                "annotator": who, "kind": kind, "labels": len(s["n"]),
                "agree_others": share(s["agree_others"]), "agree_majority": share(s["agree_majority"]),
                "reliability": round(reliability[who], 3) if who in reliability else None,
                "gold_accuracy": share(s["gold"]), "gold_n": len(s["gold"]), "standing": standing.get(who),
                "left_wins": share(s["left"]), "tie_rate": share(s["tie"]),
                "median_s": round(median(s["seconds"]), 1) if s["seconds"] else None,
                "too_fast": sum(x < TOO_FAST_S for x in s["seconds"]) if s["seconds"] else None,
            })
    return sorted(rows, key=lambda r: (-r["labels"], r["annotator"], r["kind"]))
