"""`queue reorder`: order a project's open items by its queue order (feedback/priority.py)."""
from __future__ import annotations

import random

from cli.common import get_engine
from feedback.errors import UserError


def cmd_reorder(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.priority import reorder_queue
    from feedback.projects import get_project
    from feedback.queue import update_queue_settings

    specs = [s for s in (args.reward_models or "").split(",") if s.strip()]
    engine = get_engine()
    if args.order:
        with session_scope(engine) as session:
            p = get_project(session=session, name=args.project)
            if specs and args.order != "uncertainty":
                raise UserError("--reward-models only counts in the uncertainty order.")
            update_queue_settings(session=session, actor=CLI, project=p, overlap=p.overlap,
                                  lease_seconds=p.lease_seconds, prompt_tags=p.prompt_tags,
                                  policy_version_ids=p.policy_version_ids, refill_below=p.refill_below,
                                  refill_prompts=p.refill_prompts, queue_order=args.order)
    model_scores = None
    if specs:
        from training.uncertainty import ensemble_scores, resolve_reward_models

        # Scored in a read-only session: no write lock is held while the models run.
        with session_scope(engine, read_only=True) as session:
            p = get_project(session=session, name=args.project)
            if p.queue_order != "uncertainty":
                raise UserError(f"Project {p.name!r} is in {p.queue_order} order; --reward-models only counts in "
                                "the uncertainty order (add --order uncertainty).")
            dirs = resolve_reward_models(session=session, specs=specs)
            model_scores = ensemble_scores(session=session, project=p, model_dirs=dirs)
        print(f"scored {len(model_scores)} open pairs with {len(dirs)} reward model(s)")
    with session_scope(engine) as session:
        counts = reorder_queue(session=session, actor=CLI, project=get_project(session=session, name=args.project),
                               rng=random.Random(args.seed), model_scores=model_scores)
    line = f"{counts['project']}: {counts['reordered']} items reordered ({counts['order']} order"
    if counts["order"] == "uncertainty":
        line += (f"; signals: labels {counts['labels']}, judge {counts['judge']}, model {counts['model']}, "
                 f"none {counts['no_signal']}")
    print(line + ")")


def add_commands(sub) -> None:
    from db.models import QUEUE_ORDERS

    queue = sub.add_parser("queue", help="the annotation queue").add_subparsers(dest="queue_command", required=True)
    p = queue.add_parser("reorder", help="order a project's open items by its queue order (oldest, random, or most "
                                         "uncertain first)")
    p.add_argument("--project", required=True)
    p.add_argument("--order", choices=QUEUE_ORDERS, help="set the project's queue order first (default: keep it)")
    p.add_argument("--reward-models", metavar="DIR,...",
                   help="uncertainty order: also score the open pairs with this ensemble of reward models "
                        "(directories, or ids of the training jobs that made them), comma-separated")
    p.add_argument("--seed", type=int, help="seed of the random keys and tie-breaks (default: a fresh one)")
    p.set_defaults(func=cmd_reorder)
