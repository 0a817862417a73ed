"""Commands for AI judges and graders: judge, judge-canaries, grade."""
from __future__ import annotations

from cli.common import get_engine, run_job_inline


def cmd_judge(args) -> None:
    from dataclasses import asdict

    from db.engine import session_scope
    from feedback.config_fields import flag_values
    from judges.batch import JudgeConfig
    from judges.constitutions import ensure_shipped, latest_constitution

    config = JudgeConfig(**flag_values(args, JudgeConfig))
    with session_scope(get_engine()) as session:
        ensure_shipped(session=session)
        latest_constitution(session=session, name=config.constitution)  # fail early on a typo
    job = run_job_inline("judge", asdict(config), args.detach, "pair")
    if job:
        print(f"job {job.id}: {job.result['summary']}")


def cmd_judge_canaries(args) -> None:
    from db.engine import session_scope
    from judges.backends import get_backend
    from judges.canaries import run_canaries
    from judges.constitutions import ensure_shipped, latest_constitution

    with session_scope(get_engine()) as session:
        ensure_shipped(session=session)
        principles = latest_constitution(session=session, name=args.constitution).principles
    backend = get_backend(args.backend, **({"model": args.model} if args.model else {}))
    print(run_canaries(backend=backend, principles=principles[:1] if args.first_principle else principles,
                       limit=args.limit).summary())


def cmd_grade(args) -> None:
    from dataclasses import asdict

    from feedback.config_fields import flag_values
    from judges.grading import GradeConfig

    config = GradeConfig(**flag_values(args, GradeConfig))  # a bad spec is a user error before any job exists
    job = run_job_inline("grade", asdict(config), args.detach, "item")
    if job:
        print(f"job {job.id}: {job.result}")


def cmd_simulate(args) -> None:
    from feedback.actors import CLI
    from judges.simulated import run_simulation

    result = run_simulation(engine=get_engine(), project=args.project, pool=args.annotators, labels=args.labels,
                            actor=CLI, seed=args.seed)
    print(result["summary"] + (f" (skipped: {result['skipped']})" if result["skipped"] else ""))


def add_commands(sub) -> None:
    from feedback.config_fields import add_arguments
    from judges.batch import JudgeConfig
    from judges.grading import GradeConfig

    p = sub.add_parser("judge", help="label pairs with an AI judge under a constitution (both orders)")
    add_arguments(p, JudgeConfig)
    p.add_argument("--detach", action="store_true", help="run as a background job and return at once")
    p.set_defaults(func=cmd_judge)

    p = sub.add_parser("judge-canaries", help="measure how often injected instructions flip the judge")
    p.add_argument("--constitution", default="default")
    p.add_argument("--backend", default="local")
    p.add_argument("--model")
    p.add_argument("--limit", type=int, help="only the first N canary pairs")
    p.add_argument("--first-principle", action="store_true", help="judge under the first principle only")
    p.set_defaults(func=cmd_judge_canaries)

    p = sub.add_parser("simulate", help="simulated annotators label a project through the real queue",
                       description="Simulated annotators (judges/simulated.py) label a pairwise or binary project "
                                   "as users of it, through the real queue.")
    p.add_argument("--project", default="default")
    p.add_argument("--annotators", required=True, metavar="POOL",
                   help="kind:count[:options], comma-separated; kinds: grader (noise=, grader=), random, left, "
                        "adversarial (grader=); e.g. grader:6:noise=0.1,random:2,left:1,adversarial:1")
    p.add_argument("--labels", type=int, required=True, help="stop after this many labels (or an empty pool)")
    p.add_argument("--seed", type=int, default=0, help="the random choices' seed (noise, random annotators)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("grade", help="score items against their prompts' references with a grader")
    add_arguments(p, GradeConfig)
    p.add_argument("--detach", action="store_true", help="run as a background job and return at once")
    p.set_defaults(func=cmd_grade)
