"""`import FILE`: existing preference data (TRL, HH-RLHF, UltraFeedback) as imported labels, and
prompt datasets (ShareGPT, Alpaca, MT-bench questions) as prompts."""
from __future__ import annotations

import sys
from pathlib import Path

from cli.common import get_engine
from feedback.errors import UserError
from feedback.imports import FORMAT_NAMES


def cmd_import(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.imports.importer import import_file

    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory.")
    with session_scope(get_engine()) as session:
        report = import_file(session=session, actor=CLI, path=path, fmt=args.format, project=args.project,
                             on_error="skip" if args.skip_invalid else "abort", update=args.update)
    for error in report.errors[:50]:
        print(f"  {error.where}: {error.reason}", file=sys.stderr)
    if len(report.errors) > 50:
        print(f"  ... and {len(report.errors) - 50} more", file=sys.stderr)
    for line in report.lines():
        print(line)
    if not report.committed:
        if report.valid == 0:
            raise UserError("nothing was imported: no row of the file is valid")
        raise UserError("nothing was imported (fix the rows above, or pass --skip-invalid to import the valid ones)")


def add_commands(sub) -> None:
    p = sub.add_parser(
        "import", help="import a dataset: preference pairs and ratings as labels, or prompts",
        description="Preference data (trl, hh-rlhf, ultrafeedback) becomes items with one label each, source "
                    "'imported'; prompt datasets (sharegpt, alpaca, mt-bench, prompts) become prompts. JSON Lines, "
                    "CSV, parquet or a datasets save_to_disk directory.")
    p.add_argument("path")
    p.add_argument("--format", default="auto", choices=("auto", *FORMAT_NAMES),
                   help="the file's format (default: told from its columns)")
    p.add_argument("--project", help="the project preference items go into (default: 'default' for pairs, "
                                     "'ultrafeedback' for ratings; created when missing)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="import the valid rows and report the bad ones (default: all or nothing)")
    p.add_argument("--update", action="store_true",
                   help="prompt formats: a stored prompt gets the file's reference when it differs")
    p.set_defaults(func=cmd_import)
