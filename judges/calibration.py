"""How far to trust the judge: agreement with humans, position bias, length bias; and how far
humans agree with each other. Per constitution version, from what is stored, in all and per
period (day, week or month).

- judge vs human: on pairs with both a judge label and human labels (majority of the humans),
  raw agreement and Cohen's kappa (scikit-learn) over the choices a / b / tie / both_bad;
- position-flip rate: the share of judgments whose two orders disagreed;
- longer-wins rate: among decisive judge labels, how often the longer response was chosen;
- humans among themselves: Krippendorff's alpha (nominal) over items with two or more labels.

Every figure comes with the n behind it, and is None only when there is nothing to compute it
from (n = 0; kappa also when both raters gave one and the same answer throughout, where it is
undefined). Whether n is enough to read anything into is `enough(n)`: under MIN_N the pages say
"not enough data yet" rather than show a rate of 0 or 1 that one more pair would overturn.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from db.models import Constitution, Item, Judgment, Label, Response
from feedback.dashboards import zone
from feedback.errors import UserError

CHOICES = ("a", "b", "tie", "both_bad")
# Below this many pairs (judgments, decisive labels, pairs with a human majority) a rate moves by
# 20 points or more with each new pair: too few to tell a judge's habit from chance.
MIN_N = 5
PERIODS = ("day", "week", "month")
# Each figure of a report row, the count it rests on, and what it is called.
FIGURES = (
    ("agreement_with_humans", "pairs_with_humans", "Agreement with the human majority"),
    ("cohen_kappa", "pairs_with_humans", "Cohen's kappa"),
    ("position_flip_rate", "flip_n", "Flip rate (the two orders disagree)"),
    ("longer_wins_rate", "longer_n", "Longer response wins"),
)


def enough(n: int | None) -> bool:
    return n is not None and n >= MIN_N


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


def _lengths(session: Session) -> dict[int, tuple[int, int]]:
    """(len(response_a), len(response_b)) of every judged pair."""
    ra, rb = aliased(Response), aliased(Response)
    return {item_id: (len(a), len(b)) for item_id, a, b in session.execute(
        select(Item.id, ra.text, rb.text).join(ra, ra.id == Item.response_a_id).join(rb, rb.id == Item.response_b_id)
        .where(Item.id.in_(select(Judgment.item_id)))
    )}


def _measures(outcomes: list[str], labels: list[tuple[int, str]], humans: dict[int, str],
              lengths: dict[int, tuple[int, int]]) -> dict[str, Any]:
    """The judge's figures over some judgments (their outcomes) and judge labels (item, choice)."""
    from sklearn.metrics import cohen_kappa_score

    both_orders = [o for o in outcomes if o != "failed"]
    flips = sum(o == "inconsistent" for o in both_orders)
    decisive = [(i, c) for i, c in labels if c in ("a", "b") and i in lengths and lengths[i][0] != lengths[i][1]]
    longer = sum((c == "a") == (lengths[i][0] > lengths[i][1]) for i, c in decisive)
    paired = [(humans[i], c) for i, c in labels if i in humans]
    agreement = kappa = None
    if paired:
        h, j = zip(*paired, strict=True)
        agreement = float(np.mean([x == y for x, y in paired]))
        # kappa is undefined when both raters used one and the same category throughout
        kappa = float(cohen_kappa_score(h, j, labels=list(CHOICES))) if len(set(h) | set(j)) > 1 else None
    return {
        "position_flip_rate": flips / len(both_orders) if both_orders else None,
        "flip_n": len(both_orders),
        "longer_wins_rate": longer / len(decisive) if decisive else None,
        "longer_n": len(decisive),
        "pairs_with_humans": len(paired),
        "agreement_with_humans": agreement,
        "cohen_kappa": kappa,
    }


def _constitution_names(session: Session) -> dict[int, str]:
    return {c.id: f"{c.name} v{c.version}" for c in session.scalars(
        select(Constitution).where(Constitution.id.in_(select(Judgment.constitution_id)))
        .order_by(Constitution.name, Constitution.version))}


def judge_report(*, session: Session) -> list[dict[str, Any]]:
    """One row per constitution version that has judgments."""
    humans, lengths = _human_majority(session), _lengths(session)
    rows = []
    for constitution_id, name in _constitution_names(session).items():
        judgments = session.execute(select(Judgment.outcome, Judgment.cost_usd)
                                    .where(Judgment.constitution_id == constitution_id)).all()
        labels = [tuple(r) for r in session.execute(
            select(Label.item_id, Label.choice).where(Label.source == "judge", Label.constitution_id == constitution_id)
        )]
        rows.append({
            "constitution": name,
            "judgments": len(judgments),
            "labels": len(labels),
            **_measures([o for o, _ in judgments], labels, humans, lengths),
            "cost_usd": sum(c or 0 for _, c in judgments),
        })
    return rows


def period_start(at: datetime, period: str, tzinfo) -> str:
    """The local day that starts `at`'s period: the day itself, its week's Monday, its month's 1st."""
    day = at.astimezone(tzinfo).date()
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    return day.isoformat()


def calibration_over_time(*, session: Session, period: str = "week", tz: str = "UTC") -> list[dict[str, Any]]:
    """judge_report's figures per constitution version and period (judgments by when they were
    made, judge labels by when they were written; the human majority as it stands now), oldest
    period first. `period` is day, week (from Monday) or month, in time zone `tz`."""
    if period not in PERIODS:
        raise UserError(f"The period is one of {', '.join(PERIODS)}, not {period[:20]!r}.")
    tzinfo = zone(tz)
    names = _constitution_names(session)
    outcomes: dict[tuple[int, str], list[str]] = defaultdict(list)
    for constitution_id, outcome, at in session.execute(
            select(Judgment.constitution_id, Judgment.outcome, Judgment.created_at)):
        outcomes[constitution_id, period_start(at, period, tzinfo)].append(outcome)
    labels: dict[tuple[int, str], list[tuple[int, str]]] = defaultdict(list)
    for constitution_id, item_id, choice, at in session.execute(
            select(Label.constitution_id, Label.item_id, Label.choice, Label.created_at)
            .where(Label.source == "judge", Label.constitution_id.in_(list(names)))):
        labels[constitution_id, period_start(at, period, tzinfo)].append((item_id, choice))
    humans, lengths = _human_majority(session), _lengths(session)
    rows = []
    for constitution_id, start in sorted(set(outcomes) | set(labels), key=lambda key: (key[1], names[key[0]])):
        key = (constitution_id, start)
        rows.append({"constitution": names[constitution_id], "period": start, "judgments": len(outcomes[key]),
                     "labels": len(labels[key]), **_measures(outcomes[key], labels[key], humans, lengths)})
    return rows


def human_agreement(*, session: Session) -> dict[str, Any]:
    """Krippendorff's alpha (nominal) among human annotators on pairwise labels; None when it
    cannot be computed (fewer than 2 annotators on 2 shared pairs, or one answer throughout)."""
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
