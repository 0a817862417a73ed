"""Commands for AI judges and graders: judge, judge-canaries, grade."""
from __future__ import annotations

from feedback.cli.common import get_engine, run_job_inline


def cmd_judge(args) -> None:
    from dataclasses import asdict

    from db.engine import session_scope
    from judges.batch import JudgeConfig
    from judges.constitutions import ensure_shipped, latest_constitution

    config = JudgeConfig(constitution=args.constitution, backend=args.backend, model=args.model, mode=args.mode,
                         on_disagreement=args.on_disagreement, selection=args.select, max_items=args.limit,
                         max_cost_usd=args.max_cost, concurrency=args.concurrency, batch_api=args.batch_api)
    with session_scope(get_engine()) as session:
        ensure_shipped(session=session)
        latest_constitution(session=session, name=config.constitution)  # fail early on a typo
    job = run_job_inline("judge", asdict(config), args.detach, "pair")
    if job:
        r = job.result
        print(f"job {job.id}: judged {r['judged']} pairs with {r['model']} under {r['constitution']}: "
              f"{r['outcomes']}; cost ${r['cost_usd']:.4f}")


def cmd_judge_canaries(args) -> None:
    from judges.backends import get_backend
    from judges.canaries import run_canaries
    from db.engine import session_scope
    from judges.constitutions import ensure_shipped, latest_constitution

    with session_scope(get_engine()) as session:
        ensure_shipped(session=session)
        principles = latest_constitution(session=session, name=args.constitution).principles
    backend = get_backend(args.backend, **({"model": args.model} if args.model else {}))
    print(run_canaries(backend=backend, principles=principles[:1] if args.first_principle else principles,
                       limit=args.limit).summary())


def cmd_grade(args) -> None:
    from judges.graders import parse_grader

    parse_grader(args.grader)  # a bad spec is a user error before any job exists
    job = run_job_inline("grade", {"spec": args.grader, "limit": args.limit}, args.detach, "item")
    if job:
        print(f"job {job.id}: {job.result}")


def add_commands(sub) -> None:
    p = sub.add_parser("judge", help="label pairs with an AI judge under a constitution (both orders)")
    p.add_argument("--constitution", default="default")
    p.add_argument("--backend", default="local", help="anthropic, openai or local")
    p.add_argument("--model", help="the backend's model (default: its own default)")
    p.add_argument("--mode", default="sample", choices=("sample", "all"),
                   help="one principle sampled per pair, or a verdict per principle combined")
    p.add_argument("--on-disagreement", default="escalate", choices=("escalate", "tie"),
                   help="when the two orders disagree: leave the pair to humans, or label a tie")
    p.add_argument("--select", default="unlabelled", choices=("unlabelled", "disputed", "calibration"),
                   help="unlabelled pairs, pairs humans disagree on, or a sample of human-labelled pairs")
    p.add_argument("--limit", type=int, default=50, help="most pairs to judge")
    p.add_argument("--max-cost", type=float, help="stop taking new pairs past this many US dollars")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--batch-api", action="store_true", help="the provider's batch API (Anthropic: half price)")
    p.add_argument("--detach", action="store_true", help="run as a background job and return at once")
    p.set_defaults(func=cmd_judge)

    p = sub.add_parser("judge-canaries", help="measure how often injected instructions flip the judge")
    p.add_argument("--constitution", default="default")
    p.add_argument("--backend", default="local")
    p.add_argument("--model")
    p.add_argument("--limit", type=int, help="only the first N canary pairs")
    p.add_argument("--first-principle", action="store_true", help="judge under the first principle only")
    p.set_defaults(func=cmd_judge_canaries)

    p = sub.add_parser("grade", help="score items against their prompts' references with a grader")
    p.add_argument("--grader", required=True, help="e.g. numeric, exact, regex:PATTERN, multi:0.7*numeric+0.3*similarity")
    p.add_argument("--limit", type=int)
    p.add_argument("--detach", action="store_true")
    p.set_defaults(func=cmd_grade)

