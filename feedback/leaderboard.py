"""A leaderboard of policy versions from head-to-head pairwise labels (arena mode, `sample --versus`).

A comparison is a pairwise label on a pair item whose two responses come from two different
policy versions. What counts, and how:
- every label of the chosen sources is one comparison (three annotators on one item: three), as
  in Chatbot Arena, where every vote is a battle;
- an item with a final answer (a gold answer or a reviewer's adjudication, feedback/decisions.py)
  counts once, with that answer, in place of its labels, when it has a label of the chosen
  sources (as training rows do, feedback/rows.py); attention checks never count;
- a tie counts as half a win each way, and so does "both bad" (neither response is better than
  the other). In choix's input every vote is worth two wins: a decisive vote is two wins for
  the winner, a tie one win each way (FastChat's arena does the same), so the ratings and the
  win matrix weigh ties alike.

Ratings are Bradley-Terry strengths fitted by choix (`ilsr_pairwise`, with a little
regularisation so a version that never lost still gets a finite rating), reported on an Elo-like
scale: 1000 + 400·log10(e)·θ, so the versions average 1000 and 400 points are odds of 10 to 1
(a version that wins 80% of its games against another is ~241 points above it). The 95% interval
is a percentile bootstrap over items (an item's votes are resampled together, since they are
not independent), refitted `bootstrap` times. A version absent from a resample is held at the
average there by the regularisation, which widens its interval: honest for a version with few items.

Only versions connected by comparisons can be rated on one scale. The largest connected group
(most comparisons) is rated; a version that never met any of it has no rating, and the
leaderboard says so instead of inventing one. Versions with no comparisons are left out.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import choix
import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, aliased

from db.models import LABEL_SOURCES, Item, ItemDecision, Label, PolicyVersion, Response
from feedback.errors import UserError

# What the page and the CLI offer: people, the AI judge, or both.
SOURCE_CHOICES = {"human": ("human",), "judge": ("judge",), "all": ("human", "judge")}
ELO_BASE = 1000.0
ELO_SCALE = 400 / math.log(10)  # 400·log10(e): θ in natural-log odds to Elo points
ALPHA = 0.01  # choix's regularisation: keeps an unbeaten version's rating finite
EMPTY = "No comparisons between versions yet: turn on arena mode on a project, or sample with --versus."


@dataclass(frozen=True)
class Comparison:
    """One vote between two versions: `first` made response A, `second` response B; `winner`
    is one of them, or None for a tie (or both bad)."""

    item_id: int
    first: int
    second: int
    winner: int | None
    source: str  # the label's source, or the decision's origin (gold, adjudication)


@dataclass(frozen=True)
class Standing:
    version_id: int
    name: str
    rating: float | None  # Elo-like (see the module docstring); None when not connected
    low: float | None  # the bootstrap 95% interval
    high: float | None
    comparisons: int
    wins: int
    losses: int
    ties: int
    connected: bool  # in the rated group: False means its rating is not comparable, so none


@dataclass(frozen=True)
class Cell:
    """How the `row` version did against the `column` version: share = (wins + ties / 2) / n."""

    row: str
    column: str
    wins: int
    losses: int
    ties: int
    n: int

    @property
    def share(self) -> float:
        return (self.wins + self.ties / 2) / self.n


@dataclass(frozen=True)
class Leaderboard:
    standings: list[Standing]  # rated versions best first, then the unconnected ones by name
    sources: tuple[str, ...]
    comparisons: int
    note: str | None = None  # why some versions have no rating
    cells: list[Cell] = field(default_factory=list)  # the win matrix of the same comparisons


def check_sources(sources: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(sources))
    if not chosen or any(s not in LABEL_SOURCES for s in chosen):
        raise UserError(f"Sources are some of {', '.join(LABEL_SOURCES)}.")
    return chosen


def comparisons(*, session: Session, sources: Sequence[str] = ("human",),
                project_id: int | None = None) -> list[Comparison]:
    """Every comparison between two versions (see the module docstring), in item order: one
    query for the labels with their items' versions and decisions."""
    sources = check_sources(sources)
    side_a, side_b = aliased(Response), aliased(Response)
    query = (
        select(Label.item_id, side_a.policy_version_id, side_b.policy_version_id, Label.choice, Label.source,
               ItemDecision.choice, ItemDecision.origin)
        .join(Item, Item.id == Label.item_id)
        .join(side_a, side_a.id == Item.response_a_id)
        .join(side_b, side_b.id == Item.response_b_id)
        .outerjoin(ItemDecision, ItemDecision.item_id == Item.id)
        .where(Label.kind == "pairwise", Item.kind == "pair", side_a.policy_version_id != side_b.policy_version_id,
               Label.source.in_(sources), or_(ItemDecision.origin.is_(None), ItemDecision.origin != "attention"))
        .order_by(Label.item_id, Label.id)
    )
    if project_id is not None:
        query = query.where(Item.project_id == project_id)
    found, decided = [], set()
    for item_id, first, second, choice, source, decision, origin in session.execute(query):
        if decision is not None:
            if item_id in decided:
                continue
            decided.add(item_id)
            choice, source = decision, origin
        winner = {"a": first, "b": second}.get(choice)  # tie and both bad: no winner
        found.append(Comparison(item_id=item_id, first=first, second=second, winner=winner, source=source))
    return found


def leaderboard(*, session: Session, sources: Sequence[str] = ("human",), project_id: int | None = None,
                bootstrap: int = 200, seed: int = 0) -> Leaderboard:
    """Versions by Bradley-Terry rating, with bootstrap intervals and their records, and the win
    matrix of the same comparisons (`cells`)."""
    sources = check_sources(sources)
    found = comparisons(session=session, sources=sources, project_id=project_id)
    names = version_names(session, found)
    board = rate(found, names=names, sources=sources, bootstrap=bootstrap, seed=seed)
    return replace(board, cells=matrix(found, names=names))


def win_matrix(*, session: Session, sources: Sequence[str] = ("human",), project_id: int | None = None) -> list[Cell]:
    """For every two versions that met, how each did against the other (both directions)."""
    found = comparisons(session=session, sources=sources, project_id=project_id)
    return matrix(found, names=version_names(session, found))


def version_names(session: Session, found: Sequence[Comparison]) -> dict[int, str]:
    ids = {c.first for c in found} | {c.second for c in found}
    if not ids:
        return {}
    return dict(session.execute(select(PolicyVersion.id, PolicyVersion.name).where(PolicyVersion.id.in_(ids))).all())


def records(found: Sequence[Comparison]) -> dict[int, Counter]:
    """Wins, losses, ties and comparisons per version id."""
    tally: dict[int, Counter] = {}
    for c in found:
        for me in (c.first, c.second):
            row = tally.setdefault(me, Counter())
            row["comparisons"] += 1
            row["ties" if c.winner is None else "wins" if c.winner == me else "losses"] += 1
    return tally


def rate(found: Sequence[Comparison], *, names: dict[int, str], sources: Sequence[str] = ("human",),
         bootstrap: int = 200, seed: int = 0) -> Leaderboard:
    """The leaderboard of these comparisons (pure: no database)."""
    if bootstrap < 0:
        raise UserError("The number of bootstrap refits cannot be negative.")
    tally = records(found)
    rated_ids = _largest_group(found)
    rated = [c for c in found if c.first in rated_ids]
    index = {vid: i for i, vid in enumerate(sorted(rated_ids))}
    ratings, low, high = {}, {}, {}
    if rated:
        point = _fit(rated, index)
        draws = _bootstrap(rated, index, bootstrap, seed) if bootstrap else point[None, :]
        lows, highs = np.percentile(draws, [2.5, 97.5], axis=0)
        for vid, i in index.items():
            ratings[vid], low[vid], high[vid] = float(point[i]), float(lows[i]), float(highs[i])
    standings = [
        Standing(version_id=vid, name=names.get(vid, f"version {vid}"), rating=ratings.get(vid), low=low.get(vid),
                 high=high.get(vid), comparisons=row["comparisons"], wins=row["wins"], losses=row["losses"],
                 ties=row["ties"], connected=vid in rated_ids)
        for vid, row in tally.items()
    ]
    standings.sort(key=lambda s: (not s.connected, -(s.rating or 0.0), s.name))
    apart = [s.name for s in standings if not s.connected]
    note = None
    if apart:
        note = (f"{', '.join(apart)} never met any of {', '.join(s.name for s in standings if s.connected)}, "
                "so no rating on this scale; compare them with these versions to rate them.")
    return Leaderboard(standings=standings, sources=tuple(sources), comparisons=len(found), note=note)


def matrix(found: Sequence[Comparison], *, names: dict[int, str]) -> list[Cell]:
    """The win matrix of these comparisons (pure), rows and columns by version name."""
    tally: dict[tuple[int, int], Counter] = {}
    for c in found:
        for me, other in ((c.first, c.second), (c.second, c.first)):
            row = tally.setdefault((me, other), Counter())
            row["ties" if c.winner is None else "wins" if c.winner == me else "losses"] += 1

    def name(vid: int) -> str:
        return names.get(vid, f"version {vid}")

    cells = [Cell(row=name(me), column=name(other), wins=t["wins"], losses=t["losses"], ties=t["ties"],
                  n=t["wins"] + t["losses"] + t["ties"]) for (me, other), t in tally.items()]
    return sorted(cells, key=lambda c: (c.row, c.column))


def _fit(found: Sequence[Comparison], index: dict[int, int]) -> np.ndarray:
    """Bradley-Terry ratings on the Elo-like scale, by `index` position."""
    pairs = []
    for c in found:
        a, b = index[c.first], index[c.second]
        # Every vote is two wins' worth, so a tie is exactly half a win each way (as FastChat's arena
        # does it), the same weighting as the win matrix: a decisive vote twice, a tie once each way.
        if c.winner is None:
            pairs += [(a, b), (b, a)]
        else:
            pairs += [(a, b) if c.winner == c.first else (b, a)] * 2
    theta = choix.ilsr_pairwise(len(index), pairs, alpha=ALPHA)
    return ELO_BASE + ELO_SCALE * theta


def _bootstrap(rated: Sequence[Comparison], index: dict[int, int], times: int, seed: int) -> np.ndarray:
    """Refits on resamples of whole items (a cluster bootstrap): the votes on one item (several
    annotators, the judge) are not independent, and resampling them one by one would make the
    intervals too narrow."""
    by_item: dict[int, list[Comparison]] = {}
    for c in rated:
        by_item.setdefault(c.item_id, []).append(c)
    items = list(by_item.values())
    rng = np.random.default_rng(seed)
    return np.array([_fit([c for k in rng.integers(0, len(items), len(items)) for c in items[k]], index)
                     for _ in range(times)])


def _largest_group(found: Sequence[Comparison]) -> set[int]:
    """The versions of the connected group with the most comparisons (union-find over who met whom)."""
    parent: dict[int, int] = {}

    def root(v: int) -> int:
        parent.setdefault(v, v)
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for c in found:
        parent[root(c.first)] = root(c.second)
    size = Counter(root(c.first) for c in found)
    if not size:
        return set()
    best = min(size, key=lambda r: (-size[r], min(v for v in parent if root(v) == r)))
    return {v for v in parent if root(v) == best}
