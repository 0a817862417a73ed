"""Commands for training rounds and policy versions: train, loop, policy list/promote/rollback."""
from __future__ import annotations

import json
from pathlib import Path

from feedback.cli.common import follow_job, get_engine, run_job_inline
from feedback.errors import UserError


def _load_config(path: str | None) -> dict:
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot read the config file {path}: {exc}") from None


def cmd_train(args) -> None:
    from db.engine import session_scope
    from training.rounds import RoundConfig, start_round

    file_config = _load_config(args.config)
    config = RoundConfig(**{"stage": args.stage, **file_config, **({"parent": args.parent} if args.parent else {})})
    with session_scope(get_engine()) as session:
        job = start_round(session=session, config=config)
    job = follow_job(job, detach=args.detach, unit="step")
    if job:
        print(f"job {job.id}: {json.dumps(job.result, default=str)}")


def cmd_loop(args) -> None:
    from dataclasses import asdict

    from training.loop import LoopConfig

    config = LoopConfig(**{**_load_config(args.config), "rounds": args.rounds, "labeler": args.labeler,
                           **({"grader": args.grader} if args.grader else {}),
                           **({"reward_job": args.reward_job} if args.reward_job else {})})
    job = run_job_inline("loop", asdict(config), args.detach, "round")
    if job:
        for row in job.result["rounds"]:
            print(json.dumps(row, default=str))


def cmd_policy_list(args) -> None:
    from db.engine import session_scope
    from feedback.policies import list_policies

    with session_scope(get_engine(), read_only=True) as session:
        versions = list_policies(session=session)
        names = {v.id: v.name for v in versions}
        print(f"{'name':<6} {'status':<10} {'parent':<7} {'stage':<7} {'job':>5}  {'win rate':<9} gate")
        for v in versions:
            evaluation = v.evaluation or {}
            win = f"{evaluation['win_rate']:.2f}" if evaluation.get("win_rate") is not None else "-"
            print(f"{v.name:<6} {v.status:<10} {names.get(v.parent_id, '-'):<7} {v.stage or '-':<7} "
                  f"{v.job_id or '-':>5}  {win:<9} {evaluation.get('passed', '-')}")


def cmd_policy_promote(args) -> None:
    from db.engine import session_scope
    from feedback.policies import policy_by_name, promote
    from training.deploy import deploy

    with session_scope(get_engine()) as session:
        done = deploy(version=policy_by_name(session=session, name=args.name))
        promote(session=session, name=args.name)
    print(f"{args.name} is the active policy ({done})")


def add_commands(sub) -> None:
    from training.stages.base import STAGE_MODULES

    p = sub.add_parser("train", help="run one training round (snapshot -> stage -> new policy version -> gate)")
    p.add_argument("--stage", required=True, choices=list(STAGE_MODULES))
    p.add_argument("--config", help="a JSON file with RoundConfig fields (stage_config, snapshot, gate, ...)")
    p.add_argument("--parent", help="policy version to improve (default: the active one)")
    p.add_argument("--detach", action="store_true", help="run as a background job and return at once")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("loop", help="online iterative DPO: sample K, label best-vs-worst, train, promote, repeat")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--labeler", default="grader", choices=("grader", "judge", "reward"))
    p.add_argument("--grader", help="grader spec for the grader labeler (default: numeric)")
    p.add_argument("--reward-job", type=int, help="the reward-model round to score with (reward labeler)")
    p.add_argument("--config", help="a JSON file with LoopConfig fields (samples_per_prompt, stage_config, gate, ...)")
    p.add_argument("--detach", action="store_true", help="run as a background job and return at once")
    p.set_defaults(func=cmd_loop)

    policy = sub.add_parser("policy", help="policy versions").add_subparsers(dest="policy_command", required=True)
    policy.add_parser("list", help="versions with lineage and gate results").set_defaults(func=cmd_policy_list)
    for verb, text in (("promote", "make a version the active policy"),
                       ("rollback", "make an earlier version the active policy again")):
        p = policy.add_parser(verb, help=text)
        p.add_argument("name")
        p.set_defaults(func=cmd_policy_promote)
