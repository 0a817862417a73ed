"""How far to trust the judge: agreement with humans, position bias, length bias; and how far
humans agree with each other. Per constitution version, from what is stored.

- judge vs human: on pairs with both a judge label and human labels (majority of the humans),
  raw agreement and Cohen's kappa (scikit-learn) over the choices a / b / tie / both_bad;
- position-flip rate: the share of judgments whose two orders disagreed;
- longer-wins rate: among decisive judge labels, how often the longer response was chosen;
- humans among themselves: Krippendorff's alpha (nominal) over items with two or more labels.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from db.models import Constitution, Item, Judgment, Label, Response

CHOICES = ("a", "b", "tie", "both_bad")


def _human_majority(session: Session) -> dict[int, str]:
    votes: dict[int, Counter] = defaultdict(Counter)
    for item_id, choice in session.execute(
        select(Label.item_id, Label.choice).where(Label.source == "human", Label.kind == "pairwise")
    ):
        votes[item_id][choice] += 1
    majority = {}
    for item_id, counts in votes.items():
        top = counts.most_common(2)
        if len(top) == 1 or top[0][1] > top[1][1]:
            majority[item_id] = top[0][0]
    return majority


def judge_report(*, session: Session) -> list[dict[str, Any]]:
    """One row per constitution version that has judgments."""
    from sklearn.metrics import cohen_kappa_score

    humans = _human_majority(session)
    ra, rb = aliased(Response), aliased(Response)
    lengths = {item_id: (len(a), len(b)) for item_id, a, b in session.execute(
        select(Item.id, ra.text, rb.text).join(ra, ra.id == Item.response_a_id).join(rb, rb.id == Item.response_b_id)
        .where(Item.id.in_(select(Judgment.item_id)))
    )}
    rows = []
    for constitution in session.scalars(
        select(Constitution).where(Constitution.id.in_(select(Judgment.constitution_id)))
        .order_by(Constitution.name, Constitution.version)
    ):
        judgments = session.scalars(select(Judgment).where(Judgment.constitution_id == constitution.id)).all()
        both_orders = [j for j in judgments if j.outcome != "failed"]
        flips = sum(j.outcome == "inconsistent" for j in both_orders)
        labels = session.execute(
            select(Label.item_id, Label.choice).where(Label.source == "judge", Label.constitution_id == constitution.id)
        ).all()
        decisive = [(i, c) for i, c in labels if c in ("a", "b") and i in lengths and lengths[i][0] != lengths[i][1]]
        longer = sum((c == "a") == (lengths[i][0] > lengths[i][1]) for i, c in decisive)
        paired = [(humans[i], c) for i, c in labels if i in humans]
        agreement = kappa = None
        if paired:
            h, j = zip(*paired, strict=True)
            agreement = float(np.mean([x == y for x, y in paired]))
            # kappa is undefined when both raters used one and the same category throughout
            kappa = float(cohen_kappa_score(h, j, labels=list(CHOICES))) if len(set(h) | set(j)) > 1 else None
        rows.append({
            "constitution": f"{constitution.name} v{constitution.version}",
            "judgments": len(judgments),
            "labels": len(labels),
            "position_flip_rate": flips / len(both_orders) if both_orders else None,
            "longer_wins_rate": longer / len(decisive) if decisive else None,
            "pairs_with_humans": len(paired),
            "agreement_with_humans": agreement,
            "cohen_kappa": kappa,
            "cost_usd": sum(j.cost_usd or 0 for j in judgments),
        })
    return rows


def human_agreement(*, session: Session) -> dict[str, Any]:
    """Krippendorff's alpha (nominal) among human annotators on pairwise labels."""
    import krippendorff

    rows = session.execute(
        select(Label.item_id, Label.user_id, Label.choice).where(Label.source == "human", Label.kind == "pairwise")
    ).all()
    per_item = Counter(item_id for item_id, _, _ in rows)
    shared = sorted(i for i, n in per_item.items() if n >= 2)
    annotators = sorted({u for i, u, _ in rows if i in set(shared)})
    if len(shared) < 2 or len(annotators) < 2:
        return {"items": len(shared), "annotators": len(annotators), "alpha": None}
    col = {item_id: k for k, item_id in enumerate(shared)}
    row = {user_id: k for k, user_id in enumerate(annotators)}
    data = np.full((len(annotators), len(shared)), np.nan)
    for item_id, user_id, choice in rows:
        if item_id in col:
            data[row[user_id], col[item_id]] = CHOICES.index(choice)
    try:
        alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
    except ValueError:  # every label the same value: agreement is total but alpha is undefined
        alpha = None
    return {"items": len(shared), "annotators": len(annotators), "alpha": alpha}


def judged_count(*, session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Judgment)) or 0
