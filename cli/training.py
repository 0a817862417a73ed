"""Commands for training rounds and policy versions: train, loop, policy list/promote/rollback."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cli.common import follow_job, get_engine
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
    from feedback.actors import CLI
    from feedback.config_fields import flag_values
    from training.rounds import RoundConfig, start_round
    from training.snapshot import SnapshotFilter
    from training.stages import STAGES

    file_config = _load_config(args.config)
    # Stage and snapshot flags override the file's; anything not given keeps its default.
    stage_config = {**file_config.pop("stage_config", {}), **flag_values(args, STAGES.get(args.stage).config)}
    snapshot = {**file_config.pop("snapshot", {}), **flag_values(args, SnapshotFilter)}
    config = RoundConfig(**{**file_config, "stage": args.stage, "stage_config": stage_config, "snapshot": snapshot,
                            **({"parent": args.parent} if args.parent else {})})
    with session_scope(get_engine()) as session:
        job = start_round(session=session, config=config, actor=CLI)
    job = follow_job(job, detach=args.detach, unit="step")
    if job:
        print(f"job {job.id}: {json.dumps(job.result, default=str)}")


def cmd_reft(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.config_fields import flag_values
    from training.reft import ReftConfig, start_reft

    config = ReftConfig(**{**_load_config(args.config), **flag_values(args, ReftConfig)})
    with session_scope(get_engine()) as session:
        job = start_reft(session=session, config=config, actor=CLI)
    job = follow_job(job, detach=args.detach, unit="step")
    if job:
        print(f"job {job.id}: {json.dumps(job.result, default=str)}")


def cmd_loop(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.config_fields import flag_values
    from training.loop import LoopConfig, resume_loop, start_loop

    flags = flag_values(args, LoopConfig)
    if args.resume is not None and (flags or args.config):
        raise UserError("--resume goes on with the loop's own settings; leave out --config and the other flags.")
    with session_scope(get_engine()) as session:
        if args.resume is not None:  # on from the round and phase it stopped in
            job = resume_loop(session=session, job_id=args.resume, actor=CLI)
        else:
            job = start_loop(session=session, config=LoopConfig(**{**_load_config(args.config), **flags}), actor=CLI)
    job = follow_job(job, detach=args.detach, unit="round")
    if job:
        for row in job.result["rounds"]:
            print(json.dumps(row, default=str))


def cmd_policy_list(args) -> None:
    from db.engine import session_scope
    from feedback.policies import gate_decision, list_policies

    with session_scope(get_engine(), read_only=True) as session:
        versions = list_policies(session=session)
        names = {v.id: v.name for v in versions}
        print(f"{'name':<6} {'status':<10} {'parent':<7} {'stage':<7} {'job':>5}  {'win rate':<9} gate")
        for v in versions:
            evaluation = v.evaluation or {}
            win = f"{evaluation['win_rate']:.2f}" if evaluation.get("win_rate") is not None else "-"
            print(f"{v.name:<6} {v.status:<10} {names.get(v.parent_id, '-'):<7} {v.stage or '-':<7} "
                  f"{v.job_id or '-':>5}  {win:<9} {gate_decision(v)}")


def cmd_policy_promote(args) -> None:
    from feedback.actors import CLI
    from feedback.release import release_policy

    print(release_policy(engine=get_engine(), name=args.name, actor=CLI, resample=not args.no_sample,
                         override_reason=args.override_gate).summary())


def add_commands(sub) -> None:
    from feedback.config_fields import add_arguments
    from training.loop import LoopConfig
    from training.rounds import LABEL_STAGES
    from training.snapshot import SnapshotFilter
    from training.stages import STAGES

    train = sub.add_parser("train", help="run one training round (snapshot -> stage -> new policy version -> gate)",
                           description="Run one training round. Each stage takes its own settings as flags: "
                                       "`train dpo --help` lists them with their defaults.")
    stages = train.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name in STAGES.names():
        config_cls = STAGES.get(name).config
        summary = (sys.modules[config_cls.__module__].__doc__ or name).strip().split("\n\n")[0]
        p = stages.add_parser(name, help=" ".join(summary.split()), description=summary)
        p.add_argument("--config", help="a JSON file with RoundConfig fields (snapshot, gate, reference, ...)")
        p.add_argument("--parent", help="policy version to improve (default: the active one)")
        p.add_argument("--detach", action="store_true", help="run as a background job and return at once")
        add_arguments(p, config_cls)
        if name in LABEL_STAGES:  # which labels, and how they become rows
            add_arguments(p.add_argument_group("snapshot (which labels, and how they become rows)"), SnapshotFilter)
        p.set_defaults(func=cmd_train)

    from training.reft import ReftConfig

    p = sub.add_parser("reft", help="ReFT as one job: SFT on reference answers, then GRPO or PPO with a grader "
                                    "reward, then the gate (two policy versions)",
                       description="SFT on the prompts' reference answers makes vN, then GRPO or PPO with a grader "
                                   "reward makes vN+1 from it; the gate compares vN+1 with the starting policy.")
    p.add_argument("--config", help="a JSON file with ReftConfig fields (sft and rl stage settings, gate, ...); "
                                    "flags override it")
    add_arguments(p, ReftConfig)
    p.add_argument("--detach", action="store_true", help="run as a background job and return at once")
    p.set_defaults(func=cmd_reft)

    p = sub.add_parser("loop", help="online iterative training: sample K, label (grader, judge, reward model or "
                                    "people), train, gate, promote, repeat")
    p.add_argument("--config", help="a JSON file with LoopConfig fields (stage_config, gate, ...); flags override it")
    p.add_argument("--resume", type=int, metavar="JOB_ID",
                   help="go on with a paused, interrupted or failed loop job, from the round it stopped in")
    add_arguments(p, LoopConfig)
    p.add_argument("--detach", action="store_true", help="run as a background job and return at once")
    p.set_defaults(func=cmd_loop)

    policy = sub.add_parser("policy", help="policy versions").add_subparsers(dest="policy_command", required=True)
    policy.add_parser("list", help="versions with lineage and gate results").set_defaults(func=cmd_policy_list)
    for verb, text in (("promote", "make a version the active policy"),
                       ("rollback", "make an earlier version the active policy again")):
        p = policy.add_parser(verb, help=text)
        p.add_argument("name")
        p.add_argument("--no-sample", action="store_true",
                       help="do not start sampling from the new active policy for annotators")
        p.add_argument("--override-gate", metavar="REASON",
                       help="promote although its evaluation gate failed or was undecided; the reason is audited")
        p.set_defaults(func=cmd_policy_promote)
