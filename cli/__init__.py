"""`python -m feedback ...`: the headless way to do everything the app does.

Each command is a thin shell over the same service functions the pages call. A user mistake
ends with a one-line message and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from cli import imports, job_kinds, judging, leaderboard, priority, projects, quality, tokens, training, webhooks
from cli.common import get_engine, read_password_stdin, run_job_inline
from feedback.errors import UserError


def cmd_db_upgrade(args) -> None:
    from db.migrate import upgrade
    from feedback.settings import get_settings

    upgrade(get_settings().database_url)
    print("database is at the latest schema")


def cmd_model_prepare(args) -> None:
    from feedback.model_cache import prepare_default_model

    print(f"default model ready in {prepare_default_model(force=args.force)}")


def cmd_setup(args) -> None:
    """Everything `make run` needs before starting the app; safe to run again."""
    from cli.demo import ADMIN_USERNAME, seed_demo
    from db.engine import session_scope
    from db.migrate import upgrade
    from feedback.settings import get_settings

    settings = get_settings()
    upgrade(settings.database_url)
    if settings.policy_backend == "local":
        from feedback.model_cache import prepare_default_model

        print(f"default model ready in {prepare_default_model()}")
    with session_scope(get_engine()) as session:
        result = seed_demo(session=session, with_prompts=args.demo)
    if args.demo:
        print(f"demo prompts: {result.prompts_inserted} new")
    if result.admin_password:
        print("\n  Admin account created (the password is shown only this once):")
        print(f"    username: {ADMIN_USERNAME}\n    password: {result.admin_password}\n")
    else:
        print(f"admin account exists (reset with: python -m feedback users reset-password {ADMIN_USERNAME})")
    if args.sample_demo:
        _sample_demo_in_background(settings.database_url)


def _sample_demo_in_background(database_url: str) -> None:
    """First run only: fill each demo project's pool so there is something to label."""
    from dataclasses import asdict

    from sqlalchemy import func, select

    from cli.demo import DEMO_PROJECTS
    from db.engine import session_scope
    from db.models import Item, Job
    from feedback import jobs
    from feedback.actors import SETUP
    from feedback.launchers import start_local_worker
    from feedback.sampling import SamplingConfig
    from feedback.settings import PROJECT_ROOT

    with session_scope(get_engine()) as session:
        has_items = session.scalar(select(func.count()).select_from(Item)) > 0
        running = session.scalar(select(Job.id).where(Job.kind == "sample", Job.status.in_(jobs.ACTIVE)))
        if has_items or running:
            return
        created = [jobs.create_job(session=session, kind="sample", actor=SETUP, config=asdict(
            SamplingConfig(project=name, limit=limit, tags=["demo"], max_new_tokens=96, seed=0)))
            for name, _, _, limit in DEMO_PROJECTS]
    # One local worker takes the projects in turn: five at once would share two cores and all
    # finish late, where in turn the Compare page has its pairs within a minute.
    ids = [job.id for job in created]
    log_dir = PROJECT_ROOT / "var" / "jobs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**jobs.child_env("sample"), "DATABASE_URL": database_url}
    start_local_worker(*ids, env=env, log_path=log_dir / f"job-{ids[0]}-{ids[-1]}.log")
    print(f"sampling the demo prompts into {len(ids)} projects in the background, one after another "
          f"(jobs {', '.join(map(str, ids))}); the Data page shows their progress")


def cmd_users_add(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.users import create_user, generate_password

    password = read_password_stdin() if args.password_stdin else generate_password()
    from feedback.projects import add_member, get_project

    with session_scope(get_engine()) as session:
        create_user(session=session, username=args.name, role=args.role, password=password, actor=CLI)
        for name in args.project:
            add_member(session=session, actor=CLI, project=get_project(session=session, name=name), username=args.name)
    print(f"created {args.role} {args.name!r}" + (f" in {', '.join(args.project)}" if args.project else ""))
    if not args.password_stdin:
        print(f"password (shown once): {password}")


def cmd_users_reset_password(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.users import generate_password, set_password

    password = read_password_stdin() if args.password_stdin else generate_password()
    with session_scope(get_engine()) as session:
        set_password(session=session, username=args.name, password=password, actor=CLI)
    print(f"password of {args.name!r} changed")
    if not args.password_stdin:
        print(f"new password (shown once): {password}")


def cmd_prompts_import(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.prompts import import_prompts

    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory.")
    with session_scope(get_engine()) as session:
        report = import_prompts(session=session, path=path, source=args.source, actor=CLI,
                                on_error="skip" if args.skip_invalid else "abort", val_fraction=args.val_fraction)
    for error in report.errors[:50]:
        print(f"  {error.where}: {error.reason}", file=sys.stderr)
    if len(report.errors) > 50:
        print(f"  ... and {len(report.errors) - 50} more", file=sys.stderr)
    print(report.summary())
    if report.errors and not report.committed:
        raise UserError("nothing was imported (fix the rows above, or pass --skip-invalid to import the valid ones)")


def cmd_sample(args) -> None:
    from dataclasses import asdict

    from db.engine import session_scope
    from feedback.config_fields import flag_values
    from feedback.projects import get_project
    from feedback.sampling import SamplingConfig

    config = SamplingConfig(**flag_values(args, SamplingConfig))
    with session_scope(get_engine(), read_only=True) as session:  # a wrong project: no job at all
        config.check_for(get_project(session=session, name=config.project))
    job = run_job_inline("sample", asdict(config), args.detach, "prompt")
    if job is None:
        return
    r = job.result
    print(f"job {job.id}: {r['prompts']} prompts, {r['responses']} responses, {r['items']} items in "
          f"{r['project']} ({r['prompts_without_item']} prompts gave no item: too few distinct responses)")


def cmd_export(args) -> None:
    from collections import Counter

    from db.engine import session_scope
    from db.models import LABEL_SOURCES
    from feedback.config_fields import flag_values
    from feedback.export import export_dataset, export_rows, write_rows
    from feedback.rows import RowSettings

    to_file, to_dataset = args.out is not None, args.to_dataset is not None or args.push_to_hub is not None
    if to_file == to_dataset:
        raise UserError("Say where the export goes: --out FILE, or --to-dataset DIR and/or --push-to-hub REPO.")
    if args.with_test and to_file:
        raise UserError("--with-test adds a test split to a dataset (--to-dataset / --push-to-hub), not to a file.")
    common = dict(fmt=args.format, sources=args.source or LABEL_SOURCES, project=args.project,
                  policy_versions=args.policy_version or (), since=args.since, metadata=args.metadata,
                  settings=RowSettings(**flag_values(args, RowSettings)))
    with session_scope(get_engine(), read_only=True) as session:
        if to_dataset:
            dataset = export_dataset(session=session, to_dir=args.to_dataset, with_test=args.with_test,
                                     push_to_hub=args.push_to_hub, split=args.split, include_val=args.include_val,
                                     **common)
            sizes = ", ".join(f"{len(split)} {name}" for name, split in dataset.items())
            where = [f"saved to {args.to_dataset}"] if args.to_dataset else []
            where += [f"pushed to the hub as {args.push_to_hub}"] if args.push_to_hub else []
            print(f"{args.format} dataset of {sizes} rows {' and '.join(where)}")
            return
        rows = export_rows(session=session, split=args.split, include_val=args.include_val, **common)
    if not rows:
        where = f" in project {args.project}" if args.project else ""
        filtered = " matching these filters" if args.policy_version or args.since or args.split else ""
        raise UserError(f"No labels{where}{filtered} to export as {args.format} yet (label some items first).")
    write_rows(rows, Path(args.out))
    rules = ", ".join(f"{n} {rule}" for rule, n in sorted(Counter(r["rule"] for r in rows).items()))
    print(f"wrote {len(rows)} {args.format} rows to {args.out} ({rules})")


def cmd_jobs_resume(args) -> None:
    from db.engine import session_scope
    from feedback import jobs
    from feedback.actors import CLI
    from feedback.settings import get_settings

    with session_scope(get_engine()) as session:
        job = jobs.resume(session=session, job_id=args.id, actor=CLI)
    pid = jobs.start_detached(job=job, database_url=get_settings().database_url)
    print(f"job {args.id} resumed in the background (pid {pid})")


def cmd_jobs_list(args) -> None:
    from db.engine import session_scope
    from feedback.jobs import list_jobs

    with session_scope(get_engine()) as session:
        rows = list_jobs(session=session, limit=args.limit)
        print(f"{'id':>5}  {'kind':<8} {'status':<11} {'progress':<10} created")
        for job in rows:
            progress = f"{job.progress_done}/{job.progress_total}" if job.progress_total else str(job.progress_done)
            print(f"{job.id:>5}  {job.kind:<8} {job.status:<11} {progress:<10} {job.created_at:%Y-%m-%d %H:%M:%S}")


def cmd_jobs_cancel(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.jobs import request_cancel

    with session_scope(get_engine()) as session:
        changed = request_cancel(session=session, job_id=args.id, actor=CLI)
    print(f"job {args.id}: {'cancel requested' if changed else 'already finished'}")


def cmd_jobs_work(args) -> None:
    from feedback.jobs import run_job

    for job_id in args.ids:  # in turn: a worker given several jobs shares the machine with nobody
        try:
            job = run_job(engine=get_engine(), job_id=job_id)
        except UserError as exc:  # cancelled meanwhile, say: the others still run
            if len(args.ids) == 1:
                raise
            print(f"job {job_id}: {exc}", file=sys.stderr)
            continue
        print(f"job {job.id} {job.status}")


def make_parser() -> argparse.ArgumentParser:
    from feedback.config_fields import add_arguments
    from feedback.rows import RowSettings
    from feedback.sampling import SamplingConfig

    parser = argparse.ArgumentParser(prog="python -m feedback", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply all migrations").set_defaults(func=cmd_db_upgrade)

    model = sub.add_parser("model", help="the default local model").add_subparsers(dest="model_command", required=True)
    p = model.add_parser("prepare", help="convert the shipped GGUF to a safetensors directory")
    p.add_argument("--force", action="store_true", help="convert again even if already done")
    p.set_defaults(func=cmd_model_prepare)

    p = sub.add_parser("setup", help="migrate, prepare the model, create v0 and the admin (idempotent)")
    p.add_argument("--demo", action="store_true", help="also import the demo prompts")
    p.add_argument("--sample-demo", action="store_true",
                   help="if nothing has been sampled yet, sample the demo prompts in a background job")
    p.set_defaults(func=cmd_setup)

    users = sub.add_parser("users", help="accounts").add_subparsers(dest="users_command", required=True)
    p = users.add_parser("add", help="create an account; prints a generated password once")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("annotator", "reviewer", "admin"))
    p.add_argument("--project", action="append", default=[], metavar="PROJECT",
                   help="make them a member of this project (repeatable)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_users_add)
    p = users.add_parser("reset-password", help="set a new password; prints a generated one once")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_users_reset_password)

    prompts = sub.add_parser("prompts", help="prompt sets").add_subparsers(dest="prompts_command", required=True)
    p = prompts.add_parser("import", help="import JSONL / CSV / parquet / a datasets save_to_disk directory")
    p.add_argument("path")
    p.add_argument("--source", help="recorded with each prompt (default: the file name)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="import the valid rows and report the bad ones (default: all or nothing)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of rows without a split that go to 'val' (by content hash, stable)")
    p.set_defaults(func=cmd_prompts_import)

    p = sub.add_parser("sample", help="sample responses from a policy version and make items to label")
    add_arguments(p, SamplingConfig, skip=("chunk_prompts",))
    p.add_argument("--detach", action="store_true", help="run as a background job and return at once")
    p.set_defaults(func=cmd_sample)

    from db.models import LABEL_SOURCES, SPLITS

    p = sub.add_parser("export", help="write labels as TRL training data: a file, or a Hugging Face dataset")
    p.add_argument("--format", required=True, choices=("dpo", "kto", "reward", "sft"))
    p.add_argument("--out", help="a .jsonl or .parquet file")
    p.add_argument("--to-dataset", metavar="DIR",
                   help="a datasets DatasetDict directory (save_to_disk): train, and test with --with-test")
    p.add_argument("--with-test", action="store_true",
                   help="the dataset's test split, from the val prompts (held out for the gate: only when asked)")
    p.add_argument("--push-to-hub", metavar="REPO",
                   help="push the DatasetDict to this Hugging Face hub repository (created private; needs HF_TOKEN)")
    p.add_argument("--metadata", action="store_true",
                   help="add the metadata columns: prompt/item/label ids, policy versions, sources, producers, "
                        "strength, votes, agreement, split, finish reasons, project")
    p.add_argument("--project", help="only this project's labels (default: every project)")
    p.add_argument("--source", action="append", choices=LABEL_SOURCES,
                   help="only labels from this source (repeatable; default: all)")
    p.add_argument("--policy-version", action="append", metavar="NAME",
                   help="only items whose responses all come from this policy version (repeatable: any of them)")
    p.add_argument("--since", metavar="DATE", help="only labels made at or after this ISO date or date-time (UTC)")
    p.add_argument("--split", choices=SPLITS, help="only prompts of this split (val: the gate's held-out prompts)")
    p.add_argument("--include-val", action="store_true",
                   help="also labels on val prompts (held out for the evaluation gate; never in a snapshot)")
    add_arguments(p, RowSettings)
    p.set_defaults(func=cmd_export)

    projects.add_commands(sub)
    judging.add_commands(sub)
    priority.add_commands(sub)
    quality.add_commands(sub)
    leaderboard.add_commands(sub)
    training.add_commands(sub)
    tokens.add_commands(sub)
    webhooks.add_commands(sub)
    imports.add_commands(sub)

    job_cmds = sub.add_parser("jobs", help="background jobs").add_subparsers(dest="jobs_command", required=True)
    p = job_cmds.add_parser("list", help="recent jobs")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_jobs_list)
    p = job_cmds.add_parser("cancel", help="ask a job to stop")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_jobs_cancel)
    p = job_cmds.add_parser("resume", help="queue an interrupted or failed job again, in the background")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_jobs_resume)
    p = job_cmds.add_parser("work", help="run queued jobs in this process, one after another (what detached "
                                         "workers do)")
    p.add_argument("ids", type=int, nargs="+", metavar="ID")
    p.set_defaults(func=cmd_jobs_work)
    return parser


def main(argv: list[str] | None = None) -> int:
    job_kinds.install()
    args = make_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        # A database that is unreachable or not migrated is the user's to fix, not a crash.
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        print(f"error: database: {detail} (is DATABASE_URL right, and has `db upgrade` run?)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
