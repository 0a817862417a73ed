"""`import_file`: a dataset file in, as imported labels (preference formats) or prompts.

The file is read by the prompt import's readers (JSON Lines, CSV, parquet, a `save_to_disk`
directory) under the same caps (IMPORT_MAX_BYTES, IMPORT_MAX_ROWS, IMPORT_MAX_PROMPT_CHARS),
and every row is checked before anything is written. The error rule is the prompt import's:

- on_error="abort" (the default): all or nothing; if any row is bad, nothing is written and
  every bad row is reported with its line (or row) number.
- on_error="skip": the good rows are written and the bad ones reported; when no row is good,
  nothing is written and the report says so (committed=False), which the command line turns
  into a non-zero exit.

An empty file, a format that cannot be told from the columns (or a named format whose columns
are missing), or a project that does not fit raise UserError before anything is written. The
report names the format and the columns found, and lists every column it did not use.

Preference rows become items in a project plus one label each, with source `imported`,
producer `import:<format>` and the file (name, sha256, format, row) as provenance. Their
responses are filed under external policy versions (`ext:<model>`, or `ext:imported` when the
file names no model). Prompts are stored once by content hash, as the prompt import does;
prompt formats go through the prompt import itself.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Project
from feedback.actors import Actor
from feedback.conversions import DEFAULT_ASPECTS
from feedback.errors import UserError
from feedback.imports import FORMAT_NAMES, store
from feedback.imports.common import RatingRow, names, shown
from feedback.imports.formats import FORMATS, Format, detect
from feedback.imports.prompt_formats import later_turns
from feedback.imports.ratings import unused_fields
from feedback.projects import TASKS, create_project, default_project
from feedback.prompt_files import RowInvalid, format_of, read_rows
from feedback.prompts import ImportReport, OnError, RowError, import_prompt_rows, validate_row
from feedback.settings import Settings, get_settings

# Where an UltraFeedback file goes when no project is named: a rating project of this name.
DEFAULT_RATING_PROJECT = "ultrafeedback"


@dataclass
class FileImportReport:
    file: str
    format: str
    title: str
    detected: bool  # told from the columns (format "auto"), not named by the caller
    columns: list[str]
    unused: list[str]  # columns no part of the import reads
    unused_inside: list[str] = field(default_factory=list)  # nested fields left out (UltraFeedback)
    notes: list[str] = field(default_factory=list)
    rows: int = 0
    valid: int = 0
    errors: list[RowError] = field(default_factory=list)
    committed: bool = False
    # prompt formats: the prompt import's own report
    prompts: ImportReport | None = None
    # preference formats
    project: str | None = None
    task: str | None = None
    project_created: bool = False
    aspects: list[str] = field(default_factory=list)
    k: int | None = None  # of a rating project made by this import
    labels: int = 0  # = items written
    responses: int = 0
    new_prompts: int = 0
    already_imported: int = 0
    repeated: int = 0  # the same row earlier in the file
    versions_created: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return FORMATS[self.format].kind

    def lines(self) -> list[str]:
        how = "detected from its columns" if self.detected else "as asked; columns"
        out = [f"Format: {self.format} ({self.title}), {how}: {names(self.columns, 40)}."]
        out.append(f"Columns not used: {names(self.unused, 40)}." if self.unused else "Every column is used.")
        if self.unused_inside:
            out.append(f"Fields not used: {names(self.unused_inside, 40)}.")
        out.extend(self.notes)
        if self.project is not None:
            about = (["created"] if self.project_created else []) + (
                [f"aspects {', '.join(self.aspects)}"] if self.aspects else []) + (
                [f"K={self.k}"] if self.project_created and self.task == "rating" else [])
            out.append(f"Into {self.task} project {self.project!r}" + (f" ({'; '.join(about)})" if about else "") + ".")
        out.append(self.summary())
        return out

    def summary(self) -> str:
        shown_errors = "; ".join(str(e) for e in self.errors[:3]) + (
            f"; and {len(self.errors) - 3} more" if len(self.errors) > 3 else "")
        bad = f"{_plural(len(self.errors), 'bad row')} ({shown_errors})" if self.errors else ""
        if not self.committed:
            if self.valid == 0:
                return f"Nothing imported: no row is valid ({bad})."
            return f"Nothing imported: {bad}. Fix them, or choose to skip bad rows."
        if self.kind == "prompts":
            return dataclasses.replace(self.prompts or ImportReport(), errors=self.errors, committed=True).summary()
        what = "pair" if self.kind == "pairs" else "rated item"
        if self.labels:
            parts = [f"Imported {_plural(self.labels, what)} as labels with source 'imported' "
                     f"({_plural(self.responses, 'response')}, {_plural(self.new_prompts, 'new prompt')})"]
        else:
            parts = [f"Imported no new {what}s"]
        if self.already_imported:
            parts.append(f"skipped {self.already_imported} already imported")
        if self.repeated:
            parts.append(f"{self.repeated} repeated in the file")
        if bad:
            parts.append(f"skipped {bad}")
        if self.versions_created:
            parts.append(f"new external model{'s' * (len(self.versions_created) > 1)} "
                         f"{names(self.versions_created)}")
        return ", ".join(parts) + "."


def import_file(*, session: Session, actor: Actor, path: Path, fmt: str = "auto", project: str | None = None,
                on_error: OnError = "abort", update: bool = False, settings: Settings | None = None,
                what: str | None = None, val_fraction: float = 0.1) -> FileImportReport:
    """Import `path` (see the module docstring). `fmt` is one of FORMAT_NAMES or "auto";
    `project` names the target project of a preference format (default: `default` for pairs,
    `ultrafeedback` for ratings; created when missing); `update` lets a prompt format replace
    the reference of a stored prompt. Writes go to `session`, flushed, not committed."""
    actor.require("admin")
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"Unknown import format {shown(fmt)}; choose auto or one of {', '.join(FORMAT_NAMES)}.")
    if on_error not in ("abort", "skip"):
        raise UserError(f"on_error must be 'abort' or 'skip', not {shown(on_error)}.")
    settings = settings or get_settings()
    path = Path(path)
    read = list(read_rows(path, max_bytes=settings.import_max_bytes, max_rows=settings.import_max_rows,
                          header_needs=()))
    if not read:
        raise UserError(f"{path.name} is empty: there are no rows to import.")
    word = "row" if format_of(path) in ("parquet", "dataset") else "line"
    readable = [raw for _, raw in read if isinstance(raw, dict)]
    columns = list(dict.fromkeys(k for raw in readable for k in raw))
    spec = _format_for(fmt, columns, readable, path.name, read, word)
    report = FileImportReport(file=path.name, format=spec.name, title=spec.title, detected=fmt == "auto",
                              columns=columns, unused=[c for c in columns if c not in spec.uses], rows=len(read))
    if spec.name == "ultrafeedback":
        report.unused_inside = unused_fields(readable)
    if update and spec.kind != "prompts":
        raise UserError(f"--update replaces prompts' references, which {spec.name} files do not carry.")
    if project is not None and spec.kind == "prompts":
        raise UserError(f"{spec.name} files hold prompts, which belong to no project; import them without a "
                        "project, then sample them into one (python -m feedback sample --project NAME).")

    parsed: list[tuple[str, int, Any]] = []
    for number, raw in read:
        where = f"{word} {number}"
        if isinstance(raw, Exception):
            report.errors.append(RowError(where, str(raw)))
            continue
        try:
            if spec.kind == "prompts":
                row = spec.parse(raw)
                validate_row(row, max_prompt_chars=settings.import_max_prompt_chars)  # the prompt import's check
            else:
                row = spec.parse(raw, max_chars=settings.import_max_prompt_chars)
                if isinstance(row, RatingRow):
                    for model in row.models:
                        store.check_model_name(model)
        except (RowInvalid, ValueError) as exc:
            report.errors.append(RowError(where, str(exc)))
            continue
        parsed.append((where, number, row))

    if spec.kind == "prompts":
        return _import_prompts(session, actor, report, parsed, readable, on_error=on_error, update=update,
                               settings=settings, what=what or f"file:{path.name}", val_fraction=val_fraction)
    provenance = {"file": path.name, "sha256": _digest(path), "format": spec.name}
    if spec.kind == "pairs":
        return _import_pairs(session, actor, report, parsed, project, provenance, on_error, settings, val_fraction)
    return _import_ratings(session, actor, report, parsed, project, provenance, on_error, settings, val_fraction)


def _format_for(fmt: str, columns: list[str], readable: list[dict], name: str, read: list, word: str) -> Format:
    if fmt != "auto":
        spec = FORMATS[fmt]
        if readable and (missing := spec.missing(columns)):
            raise UserError(f"{name} is not in the {fmt} format: it has no {' and no '.join(missing)} column "
                            f"(columns: {names(columns)}).")
        return spec
    if not readable:
        first = "; ".join(f"{word} {n}: {e}" for n, e in read[:3])
        raise UserError(f"No row of {name} could be read, so its format cannot be told ({first}).")
    found = detect(columns, readable)
    if found is None:
        raise UserError(f"Cannot tell the format of {name} from its columns ({names(columns)}). Name it with "
                        f"--format, one of {', '.join(FORMAT_NAMES)}.")
    return FORMATS[found]


def _import_prompts(session: Session, actor: Actor, report: FileImportReport, parsed: list, readable: list,
                    *, on_error: OnError, update: bool, settings: Settings, what: str,
                    val_fraction: float) -> FileImportReport:
    report.valid = len(parsed)
    with_reference = sum(1 for _, _, row in parsed if row.get("reference") is not None)
    if report.format == "mt-bench" and (n := later_turns(readable)):
        report.notes.append(f"{_plural(n, 'question')} {'has' if n == 1 else 'have'} more than one turn: only the "
                            "first turn of each is imported (a later turn follows the model's own answer to the one "
                            "before, which sampling does not do), and only the first reference.")
    if report.format in ("sharegpt", "alpaca") and with_reference:
        answer = "final gpt answer" if report.format == "sharegpt" else "output"
        report.notes.append(f"The {answer} of {_plural(with_reference, 'row')} became the prompt's reference.")
    if (report.errors and on_error == "abort") or not parsed:
        return report
    report.prompts = import_prompt_rows(session=session, actor=actor, rows=[(w, row) for w, _, row in parsed],
                                        source=report.file, settings=settings, what=what[:128],
                                        update_references=update, val_fraction=val_fraction)
    report.committed = True
    return report


def _prepare(report: FileImportReport, parsed: list, project_name: str, key_of, provenance: dict) -> list:
    """The rows to write: keyed, in-file repeats counted and left out."""
    seen: set[str] = set()
    out = []
    for where, number, row in parsed:
        key = key_of(project_name, row)
        if key in seen:
            report.repeated += 1
            continue
        seen.add(key)
        out.append(store.ToWrite(key=key, row=row, provenance={**provenance, "row": number, "where": where}))
    return out


def _pair_project(session: Session, name: str | None) -> tuple[Project | None, str]:
    """The project pairs go to (None: it does not exist yet and is made when writing)."""
    name = name or "default"
    existing = session.scalar(select(Project).where(Project.name == name))
    if existing is not None and existing.task_type != "pairwise":
        raise UserError(f"Project {name!r} is a {existing.task_type} project; preference pairs go into a pairwise "
                        "project (name one with --project, or a new name to create it).")
    return existing, name


def _import_pairs(session: Session, actor: Actor, report: FileImportReport, parsed: list, project_name: str | None,
                  provenance: dict, on_error: OnError, settings: Settings, val_fraction: float) -> FileImportReport:
    project, name = _pair_project(session, project_name)
    report.project, report.task = name, "pairwise"
    report.valid = len(parsed)
    if (report.errors and on_error == "abort") or not parsed:
        return report
    rows = _prepare(report, parsed, name, store.pair_key, provenance)
    done = store.existing_keys(session, [w.key for w in rows])
    report.already_imported = len(done)
    rows = [w for w in rows if w.key not in done]
    if rows:
        if project is None:
            if name == "default":
                project = default_project(session=session, kind="pair")
            else:
                project = create_project(session=session, actor=actor, name=name, task_type="pairwise")
            report.project_created = True
        producer = f"import:{report.format}"
        prompts = _store_prompts(session, actor, report, rows, settings, val_fraction)
        versions, report.versions_created = store.external_versions(session=session, actor=actor, models=[None])
        report.responses = store.write_pairs(session=session, project=project, rows=rows, prompts=prompts,
                                             version=versions[None], producer=producer)
        report.labels = len(rows)
    return _done(session, actor, report)


def _rating_target(session: Session, name: str | None, parsed: list) -> tuple[Project | None, str, list[str], int]:
    """(the existing project or None, its name, the aspects rows must be rated on, K for a new one)."""
    name = name or DEFAULT_RATING_PROJECT
    existing = session.scalar(select(Project).where(Project.name == name))
    if existing is not None:
        if existing.task_type != "rating":
            raise UserError(f"Project {name!r} is a {existing.task_type} project; rated completions go into a rating "
                            "project (name one with --project, or a new name to create it).")
        return existing, name, list(existing.aspects), existing.k
    rows = [row for _, _, row in parsed]
    if not rows:
        return None, name, [], TASKS["rating"].k_default
    first = rows[0].aspects
    # The file's own aspect names; in the usual order when they are the usual four.
    aspects = list(DEFAULT_ASPECTS) if set(first) == set(DEFAULT_ASPECTS) else list(first)
    k = Counter(len(row.texts) for row in rows).most_common(1)[0][0]
    return None, name, aspects, k


def _import_ratings(session: Session, actor: Actor, report: FileImportReport, parsed: list,
                    project_name: str | None, provenance: dict, on_error: OnError, settings: Settings,
                    val_fraction: float) -> FileImportReport:
    project, name, aspects, k = _rating_target(session, project_name, parsed)
    report.project, report.task, report.aspects, report.k = name, "rating", aspects, k
    matching = []
    for where, number, row in parsed:
        if set(row.aspects) != set(aspects):
            report.errors.append(RowError(where, f"rated on {', '.join(shown(a) for a in row.aspects)}; project "
                                                 f"{name!r} rates {', '.join(aspects)}"))
            continue
        # The label keeps the project's aspect order.
        matching.append((where, number, dataclasses.replace(row, ratings=tuple(
            {"scores": {a: r["scores"][a] for a in aspects}, "rationales": r["rationales"]} for r in row.ratings))))
    report.errors.sort(key=lambda e: _where_number(e.where))
    report.valid = len(matching)
    if cut := sum(row.rationales_cut for _, _, row in matching):
        report.notes.append(f"{_plural(cut, 'rationale')} longer than 2000 characters {'was' if cut == 1 else 'were'} "
                            "cut to 2000.")
    if (report.errors and on_error == "abort") or not matching:
        return report
    rows = _prepare(report, matching, name, store.rating_key, provenance)
    done = store.existing_keys(session, [w.key for w in rows])
    report.already_imported = len(done)
    rows = [w for w in rows if w.key not in done]
    if rows:
        if project is None:
            project = create_project(session=session, actor=actor, name=name, task_type="rating", k=k,
                                     aspects=aspects)
            report.project_created = True
        prompts = _store_prompts(session, actor, report, rows, settings, val_fraction)
        models = {m for w in rows for m in w.row.models}
        versions, report.versions_created = store.external_versions(session=session, actor=actor, models=models)
        report.responses = store.write_ratings(session=session, project=project, rows=rows, prompts=prompts,
                                               versions=versions, producer=f"import:{report.format}")
        report.labels = len(rows)
    return _done(session, actor, report)


def _store_prompts(session: Session, actor: Actor, report: FileImportReport, rows: list, settings: Settings,
                   val_fraction: float) -> dict[str, int]:
    """Each row's prompt through the prompt import (new ones stored, known ones found); hash -> id."""
    prompt_rows = [(w.provenance["where"], {"messages": w.row.prompt.messages, "split": w.row.prompt.split,
                                            "source": w.row.prompt.source}) for w in rows]
    prompts = import_prompt_rows(session=session, actor=actor, rows=prompt_rows, source=report.file,
                                 settings=settings, what=f"file:{report.file}"[:128], val_fraction=val_fraction)
    report.new_prompts = prompts.inserted
    return store.prompt_ids(session, list({w.row.prompt.content_hash for w in rows}))


def _done(session: Session, actor: Actor, report: FileImportReport) -> FileImportReport:
    report.committed = True
    actor.record(session=session, action="import", target=f"file:{report.file}"[:128], details={
        "format": report.format, "project": report.project, "labels": report.labels, "responses": report.responses,
        "new_prompts": report.new_prompts, "already_imported": report.already_imported,
        "repeated": report.repeated, "errors": len(report.errors)})
    return report


def _digest(path: Path) -> str:
    """sha256 of the file (of a directory: of its files' names and bytes, in order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode("utf-8") + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _where_number(where: str) -> int:
    return int(where.rsplit(" ", 1)[-1]) if where.rsplit(" ", 1)[-1].isdigit() else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
