"""`leaderboard`: policy versions ranked by their head-to-head pairwise labels (feedback/leaderboard.py),
the same service the Leaderboard page calls."""
from __future__ import annotations

import json

from cli.common import get_engine
from feedback.errors import UserError


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def cmd_leaderboard(args) -> None:
    from dataclasses import asdict

    from db.engine import session_scope
    from feedback.leaderboard import EMPTY, SOURCE_CHOICES, leaderboard
    from feedback.projects import get_project

    with session_scope(get_engine(), read_only=True) as session:
        project_id = get_project(session=session, name=args.project).id if args.project else None
        board = leaderboard(session=session, sources=SOURCE_CHOICES[args.source], project_id=project_id,
                            bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps({"sources": list(board.sources), "comparisons": board.comparisons, "note": board.note,
                          "scale": "elo: 1000 + 400*log10(e)*theta",
                          "standings": [asdict(s) for s in board.standings],
                          "win_matrix": [{**asdict(c), "share": c.share} for c in board.cells]}, indent=2))
        return
    if not board.standings:
        raise UserError(EMPTY)
    width = max(12, *(len(s.name) for s in board.standings))
    print(f"{'version':<{width}} {'rating':>7} {'95% interval':>14} {'n':>6} {'wins':>6} {'losses':>6} {'ties':>6}")
    for s in board.standings:
        interval = f"{_number(s.low)} to {_number(s.high)}" if s.connected else "-"
        print(f"{s.name:<{width}} {_number(s.rating):>7} {interval:>14} {s.comparisons:>6} {s.wins:>6} "
              f"{s.losses:>6} {s.ties:>6}")
    print(f"\n{board.comparisons} comparisons from {' and '.join(board.sources)} labels; Elo-like scale "
          "(the versions average 1000), ties and both-bad count half a win each way")
    if board.note:
        print(f"note: {board.note}")
    print("\nwin rate of row over column (n):")
    for c in board.cells:
        print(f"  {c.row:<{width}} vs {c.column:<{width}} {c.share:>5.0%} ({c.n})")


def add_commands(sub) -> None:
    from feedback.leaderboard import SOURCE_CHOICES

    p = sub.add_parser("leaderboard", help="policy versions ranked by head-to-head pairwise labels (Bradley-Terry)")
    p.add_argument("--source", choices=tuple(SOURCE_CHOICES), default="human",
                   help="whose labels: people (human), the AI judge (judge) or both (all); default human")
    p.add_argument("--project", help="only this project's labels (default: every project)")
    p.add_argument("--bootstrap", type=int, default=200, help="refits on resampled items for the intervals")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed")
    p.add_argument("--json", action="store_true", help="print the standings and the win matrix as JSON")
    p.set_defaults(func=cmd_leaderboard)
