"""From rich labels to training rows' directions: pure functions, one per rule, each with the name
that exports and snapshots record in a row's `rule` column.

Positions are an item's own response positions (0..K-1), never the order an annotator saw.

Rankings (rank: 1 = best, ties share a rank)
- "rank:all_pairs"      every two responses with different ranks, better over worse: K(K-1)/2
                        pairs from a strict ranking. For reward models (and DPO).
- "rank:best_vs_rest"   the best response(s) over each of the others.
- "rank:best_vs_worst"  the best response(s) over the worst: one clean pair per ranking, DPO's
                        usual choice for ranked data.
  A ranking where everything ties gives no pair.

Ratings (each response 1-5 on each of the project's aspects)
- "rating:mean_margin"  a response's score is the mean of its aspects; every two responses whose
                        scores differ by at least `min_margin` make a pair, higher over lower.
                        Closer scores (ties included) are dropped. The reward margin is the score
                        difference over 4, so it lies in (0, 1] like the strength margins.
- "rating:kto_threshold" a response is desirable when its score is at least the threshold.

Edits (a person's rewrite of one response)
- "edit:sft"            (prompt, edited response) for SFT.
- "edit:over_original"  the edited response chosen over the original (DPO, reward). An unchanged
                        submission ("nothing to fix") gives an SFT row of the original, no pair.

When several annotators labelled an item, their pair directions are pooled per pair of positions
and resolved by the snapshot rule, as for pairwise labels (`resolve_votes`); a pair one label
left level (equal ranks, ratings closer than the margin) counts as a tie vote there.
"""
from __future__ import annotations

import numbers
from collections import defaultdict
from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import Any

RANK_RULES = ("all_pairs", "best_vs_rest", "best_vs_worst")
RATING_SCALE = (1, 5)
DEFAULT_ASPECTS = ("instruction_following", "truthfulness", "honesty", "helpfulness")

Pair = tuple[int, int]  # (winner position, loser position)


def rank_pairs(ranking: Sequence[int], how: str = "all_pairs") -> list[Pair]:
    """Better-over-worse position pairs from one ranking (ranking[p] = rank of position p)."""
    if how not in RANK_RULES:
        raise ValueError(f"rank rule is one of {', '.join(RANK_RULES)}, not {how!r}")
    positions = range(len(ranking))
    if how == "all_pairs":
        return [(i, j) for i in positions for j in positions if ranking[i] < ranking[j]]
    best, worst = min(ranking), max(ranking)
    if best == worst:
        return []
    winners = [i for i in positions if ranking[i] == best]
    losers = [j for j in positions if (ranking[j] == worst if how == "best_vs_worst" else ranking[j] != best)]
    return [(i, j) for i in winners for j in losers]


# Means of whole-number ratings are floats: (5+4+4)/3 - (4+3+3)/3 is 0.9999999999999996, not 1.
# Comparisons with a margin or threshold allow for that rounding (far below any real difference).
_ROUNDING = 1e-9


def rating_scores(ratings: Sequence[dict[str, Any]], aspects: Sequence[str]) -> list[float]:
    """Each response's score: the mean of its aspect ratings (only the given aspects count)."""
    return [fmean(r["scores"][a] for a in aspects) for r in ratings]


def rating_pairs(ratings: Sequence[dict[str, Any]], aspects: Sequence[str],
                 min_margin: float) -> list[tuple[int, int, float]]:
    """(winner, loser, reward margin) for every two responses whose scores differ by >= min_margin."""
    if min_margin <= 0:
        raise ValueError("min_margin must be positive: equal scores say nothing about which is better")
    scores = rating_scores(ratings, aspects)
    span = RATING_SCALE[1] - RATING_SCALE[0]
    positions = range(len(scores))
    return [(i, j, (scores[i] - scores[j]) / span) for i in positions for j in positions
            if scores[i] - scores[j] > _ROUNDING and meets(scores[i] - scores[j], min_margin)]


def rating_desirable(ratings: Sequence[dict[str, Any]], aspects: Sequence[str], threshold: float) -> list[bool]:
    """KTO's label for each response: desirable when its score is at least `threshold`."""
    return [meets(score, threshold) for score in rating_scores(ratings, aspects)]


def meets(score: float, threshold: float) -> bool:
    """score >= threshold, allowing for the rounding of a mean of whole-number ratings."""
    return score >= threshold - _ROUNDING


def resolve_votes(votes: Iterable[Pair], rule: str, ties: Iterable[Pair] = ()) -> list[Pair]:
    """One item's pooled pair directions (from all its labels) resolved by the snapshot rule,
    as pairwise labels are; `ties` are the pairs a label left level (equal ranks, ratings closer
    than the margin), which count like a pairwise "tie" vote:
    - majority: each pair of positions once, in its strict majority direction (an even split, or
      as many ties as votes for the leading direction, drops it);
    - drop: only pairs every label agrees on (a tie is a disagreement);
    - soft: every vote as it is (disagreement stays in the data as opposite rows; ties add none)."""
    votes = list(votes)
    if rule == "soft":
        return votes
    counts: dict[frozenset[int], dict[Pair | None, int]] = defaultdict(lambda: defaultdict(int))
    for vote in votes:
        counts[frozenset(vote)][vote] += 1
    for tie in ties:
        if frozenset(tie) in counts:  # a level pair only matters where someone chose a side
            counts[frozenset(tie)][None] += 1
    out = []
    for directions in counts.values():
        ranked = sorted(directions.items(), key=lambda kv: -kv[1])
        if rule == "drop" and len(ranked) > 1:
            continue
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            continue
        if ranked[0][0] is not None:
            out.append(ranked[0][0])
    return sorted(out)


def rank_ties(ranking: Sequence[int]) -> list[Pair]:
    """Pairs of positions a ranking puts level."""
    n = len(ranking)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if ranking[i] == ranking[j]]


def rating_ties(ratings: Sequence[dict[str, Any]], aspects: Sequence[str], min_margin: float) -> list[Pair]:
    """Pairs of positions whose scores are closer than the margin (no preference either way)."""
    scores = rating_scores(ratings, aspects)
    n = len(scores)
    return [(i, j) for i in range(n) for j in range(i + 1, n) if not meets(abs(scores[i] - scores[j]), min_margin)]


def edit_distance(original: str, edited: str) -> int:
    """Characters inserted, deleted or substituted to turn `original` into `edited`."""
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(original, edited)


def validate_ranking(ranking: Sequence[int], k: int) -> list[int]:
    """A ranking of k responses: k whole numbers from 1 to k (ties share a number)."""
    if any(isinstance(r, bool) or not (isinstance(r, numbers.Integral) or (isinstance(r, float) and r.is_integer()))
           for r in ranking):  # int() would quietly turn 1.5 into 1 and True into 1
        raise ValueError(f"ranks are whole numbers from 1 (best) to {k}")
    values = [int(r) for r in ranking]
    if len(values) != k or any(r < 1 or r > k for r in values):
        raise ValueError(f"give each of the {k} responses a rank from 1 (best) to {k}")
    return values


def validate_ratings(ratings: Sequence[dict[str, Any]], k: int, aspects: Sequence[str]) -> list[dict[str, Any]]:
    """k responses' ratings: every aspect scored 1-5; rationales optional, short, per aspect."""
    low, high = RATING_SCALE
    if len(ratings) != k:
        raise ValueError(f"rate all {k} responses")
    out = []
    for n, rating in enumerate(ratings, start=1):
        scores = rating.get("scores") or {}
        if set(scores) != set(aspects):
            missing = ", ".join(a for a in aspects if a not in scores)
            unknown = ", ".join(sorted(str(a) for a in set(scores) - set(aspects)))
            raise ValueError(f"response {n}: " + (f"rate every aspect (missing: {missing})" if missing
                                                   else f"no such aspect: {unknown}"))
        if any(not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high for v in scores.values()):
            raise ValueError(f"response {n}: each rating is a whole number from {low} to {high}")
        rationales = {a: t.strip() for a, t in (rating.get("rationales") or {}).items() if t and t.strip()}
        if set(rationales) - set(aspects) or any(len(t) > 2000 for t in rationales.values()):
            raise ValueError(f"response {n}: rationales are per aspect and under 2000 characters")
        out.append({"scores": {a: scores[a] for a in aspects}, "rationales": rationales})
    return out
