"""`gold ...`, `review ...` and `quality`: label quality from the shell (feedback/gold.py,
feedback/adjudication.py, feedback/quality.py), the same services the Review page calls."""
from __future__ import annotations

import random

from cli.common import get_engine
from feedback.errors import UserError


def print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    print("  ".join(f"{c:>14}" if i else f"{c:<24}" for i, c in enumerate(columns)))
    for row in rows:
        print("  ".join(f"{'-' if row[c] is None else row[c]!s:>14}" if i else f"{row[c]!s:<24}"
                        for i, c in enumerate(columns)))


def cmd_quality(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.projects import get_project
    from feedback.quality import annotator_table

    with session_scope(get_engine(), read_only=True) as session:
        project_id = get_project(session=session, name=args.project).id if args.project else None
        rows = annotator_table(session=session, actor=CLI, project_id=project_id)
    if not rows:
        raise UserError("No pairwise or binary labels yet.")
    print_table(rows)


def cmd_gold_mark(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.gold import mark_gold

    with session_scope(get_engine()) as session:
        decision = mark_gold(session=session, actor=CLI, item_id=args.item, answer=args.answer, note=args.note or "")
        answer = decision.choice or decision.thumb
    print(f"item {args.item} is gold, answer {answer}")


def cmd_gold_unmark(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.gold import unmark_gold

    with session_scope(get_engine()) as session:
        unmark_gold(session=session, actor=CLI, item_id=args.item)
    print(f"item {args.item} is no longer gold")


def cmd_gold_attention(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.gold import make_attention_checks
    from feedback.projects import get_project

    with session_scope(get_engine()) as session:
        project = get_project(session=session, name=args.project)
        made = make_attention_checks(session=session, actor=CLI, project=project, count=args.count,
                                     rng=random.Random(args.seed))
    print(f"{len(made)} attention checks in {args.project} (items {made[0]}-{made[-1]})")


def cmd_gold_settings(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.gold import update_gold_settings
    from feedback.projects import get_project

    with session_scope(get_engine()) as session:
        project = get_project(session=session, name=args.project)
        update_gold_settings(session=session, actor=CLI, project=project,
                             gold_rate=project.gold_rate if args.rate is None else args.rate,
                             gold_min_accuracy=project.gold_min_accuracy if args.min_accuracy is None
                             else args.min_accuracy,
                             gold_min_answers=project.gold_min_answers if args.min_answers is None
                             else args.min_answers)
        line = (f"{project.name}: gold rate {project.gold_rate:g}, warn below {project.gold_min_accuracy:g} after "
                f"{project.gold_min_answers} gold answers, pause after {2 * project.gold_min_answers}")
    print(line)


def cmd_gold_standings(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.gold import standings
    from feedback.projects import get_project

    with session_scope(get_engine(), read_only=True) as session:
        rows = [{"annotator": s.username, "status": s.status, "gold_answers": s.gold_answers,
                 "gold_correct": s.gold_correct, "accuracy": s.accuracy}
                for s in standings(session=session, actor=CLI, project=get_project(session=session,
                                                                                  name=args.project))]
    if not rows:
        raise UserError(f"Nobody has answered a gold item in {args.project} yet.")
    print_table(rows)


def cmd_gold_lift(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.gold import lift_pause
    from feedback.projects import get_project

    with session_scope(get_engine()) as session:
        lift_pause(session=session, actor=CLI, project=get_project(session=session, name=args.project),
                   username=args.user)
    print(f"{args.user} may label in {args.project} again; gold answers count afresh")


def cmd_review_list(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.adjudication import disputed_items
    from feedback.projects import get_project

    with session_scope(get_engine(), read_only=True) as session:
        disputes = disputed_items(session=session, actor=CLI, project=get_project(session=session, name=args.project),
                                  min_confidence=args.min_confidence, limit=args.limit)
    if not disputes:
        print(f"no disputed items in {args.project}")
        return
    print_table([{"item": d.item_id, "reasons": "; ".join(d.reasons),
                  "votes": " ".join(f"{v}:{n}" for v, n in d.votes.items()), "aggregate": d.aggregate,
                  "confidence": d.confidence} for d in disputes])


def cmd_review_decide(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.adjudication import adjudicate

    with session_scope(get_engine()) as session:
        adjudicate(session=session, actor=CLI, item_id=args.item, answer=args.answer, note=args.note,
                   make_gold=args.gold)
    print(f"item {args.item} settled: {args.answer.strip().lower()}" + (" (now gold)" if args.gold else ""))


def add_commands(sub) -> None:
    p = sub.add_parser("quality", help="per-annotator measures: agreement, reliability (Dawid-Skene), gold "
                                       "accuracy, position bias, tie rate, speed")
    p.add_argument("--project", help="only this project's labels (default: all)")
    p.set_defaults(func=cmd_quality)

    gold = sub.add_parser("gold", help="gold items, attention checks and annotator standings").add_subparsers(
        dest="gold_command", required=True)
    p = gold.add_parser("mark", help="make an item gold with its answer (no --answer: promote its adjudication)")
    p.add_argument("item", type=int)
    p.add_argument("--answer", help="a / b / tie / both_bad for a pair, up / down for a single response")
    p.add_argument("--note")
    p.set_defaults(func=cmd_gold_mark)
    p = gold.add_parser("unmark", help="an item is no longer gold")
    p.add_argument("item", type=int)
    p.set_defaults(func=cmd_gold_unmark)
    p = gold.add_parser("attention", help="make attention checks: a good response against word salad")
    p.add_argument("--project", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_gold_attention)
    p = gold.add_parser("settings", help="how often gold is served and when annotators are warned and paused")
    p.add_argument("--project", required=True)
    p.add_argument("--rate", type=float, help="share of claims that hand out a gold item (0: none)")
    p.add_argument("--min-accuracy", type=float, help="warn, then pause, below this gold accuracy")
    p.add_argument("--min-answers", type=int, help="gold answers before a warning (a pause: twice as many)")
    p.set_defaults(func=cmd_gold_settings)
    p = gold.add_parser("standings", help="each annotator's gold accuracy and standing on a project")
    p.add_argument("--project", required=True)
    p.set_defaults(func=cmd_gold_standings)
    p = gold.add_parser("lift", help="lift an annotator's pause (or warning) on a project")
    p.add_argument("--project", required=True)
    p.add_argument("--user", required=True)
    p.set_defaults(func=cmd_gold_lift)

    review = sub.add_parser("review", help="the reviewers' queue of disputed items").add_subparsers(
        dest="review_command", required=True)
    p = review.add_parser("list", help="disputed items, most reasons first")
    p.add_argument("--project", required=True)
    p.add_argument("--min-confidence", type=float, default=0.6, help="Dawid-Skene confidence below this is a dispute")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_review_list)
    p = review.add_parser("decide", help="settle an item with a final answer and a note")
    p.add_argument("item", type=int)
    p.add_argument("--answer", required=True, help="a / b / tie / both_bad, or up / down")
    p.add_argument("--note", required=True, help="why this is the answer")
    p.add_argument("--gold", action="store_true", help="and make it gold")
    p.set_defaults(func=cmd_review_decide)
