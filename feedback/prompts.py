"""Prompt import: JSON Lines, CSV, parquet, or a directory saved by `datasets.save_to_disk`.

One row is one prompt: exactly one of `prompt` (a string) or `messages` (a chat: a list of
{role, content} whose last message is from the user), and optionally `reference` (an answer for
graders), `split` ('train' | 'val'), `tags` and `source`. Other columns are ignored.

The error rule:

- on_error="abort" (the default): all or nothing. Every row is read and checked before anything
  is written; if any row is bad, nothing is inserted, every bad row is reported with its line
  (or row) number, and the report says committed=False.
- on_error="skip": the good rows are inserted and every bad row is reported.
- Duplicates are never errors. A prompt whose content hash is already in the database, or that
  appeared earlier in the same file, is counted in `duplicates` and skipped (the first copy wins;
  a later copy's tags or split do not update it). One exception, when asked
  (`update_references=True`): a stored prompt whose row brings a different reference gets that
  reference (counted in `updated`); without it such rows are counted in `stale_references`.
- Problems with the file as a whole (unknown format, over IMPORT_MAX_BYTES or IMPORT_MAX_ROWS,
  a CSV without a prompt/messages column, an unreadable parquet file) raise UserError.

Inserts go through the caller's session and are flushed, never committed here: the caller's
transaction decides. A committed import writes its audit log entry (who, what, counts) itself.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from db.models import SPLITS, Prompt
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.prompt_files import RowInvalid, format_of, read_rows, type_name
from feedback.settings import Settings, get_settings

MESSAGE_ROLES = ("system", "user", "assistant")
SOURCE_MAX_CHARS = 255  # the width of prompts.source
# Hashes per `IN (...)` query: well under SQLite's and Postgres' bound-parameter limits.
HASH_CHUNK = 500
# Rows per INSERT executemany, so a 100k-row import does not build one giant statement.
INSERT_CHUNK = 1000

OnError = Literal["abort", "skip"]


@dataclass(frozen=True)
class RowError:
    where: str  # "line 7", "row 3"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class ImportReport:
    inserted: int = 0
    duplicates: int = 0  # already in the database, or repeated within the file
    updated: int = 0  # stored prompts given the row's new reference (update_references=True)
    stale_references: int = 0  # stored prompts whose row brings another reference, left as they are
    errors: list[RowError] = field(default_factory=list)
    # True when the good rows were written to the session (the caller's transaction commits them);
    # False when an abort-mode import found bad rows and wrote nothing.
    committed: bool = False

    def summary(self) -> str:
        shown = "; ".join(str(e) for e in self.errors[:3])
        if len(self.errors) > 3:
            shown += f"; and {len(self.errors) - 3} more"
        bad = f"{_plural(len(self.errors), 'bad row')} ({shown})" if self.errors else ""
        if not self.committed:
            return f"Nothing imported: {bad}. Fix them, or choose to skip bad rows."
        parts = [f"Imported {_plural(self.inserted, 'prompt')}"]
        if self.updated:
            parts.append(f"updated {_plural(self.updated, 'reference')}")
        if self.duplicates:
            parts.append(f"skipped {_plural(self.duplicates, 'duplicate')}")
        if bad:
            parts.append(f"skipped {bad}")
        stale = ""
        if self.stale_references:
            it = "it" if self.stale_references == 1 else "them"
            stale = (f" The file gives {_plural(self.stale_references, 'stored prompt')} another reference, "
                     f"not applied (`python -m feedback import FILE --update` applies {it}).")
        return ", ".join(parts) + "." + stale


@dataclass(frozen=True)
class PromptRow:
    """One validated row, ready to insert."""

    text: str
    messages: list[dict[str, str]]
    content_hash: str
    reference: str | None
    split: str | None  # None: assigned from the hash at import time
    tags: list[str]
    source: str | None


# --- canonical form and hashing ---------------------------------------------------------------


def canonical_messages(prompt: str | None, messages: list | None) -> list[dict]:
    """The chat a prompt stands for: a plain prompt is one user message.

    Messages keep only `role` and `content` so that extra keys (a `name`, ids from an export)
    neither reach the model nor make two copies of the same chat hash differently.
    Raises RowInvalid with a short reason.
    """
    if prompt is not None and messages is not None:
        raise RowInvalid("give either 'prompt' or 'messages', not both")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise RowInvalid("'prompt' must be a string (use 'messages' for a chat)")
        if not prompt.strip():
            raise RowInvalid("'prompt' is empty")
        return [{"role": "user", "content": prompt}]
    if messages is None:
        raise RowInvalid("missing 'prompt' or 'messages'")
    if not isinstance(messages, list):
        raise RowInvalid("'messages' must be a list of {role, content} objects")
    if not messages:
        raise RowInvalid("'messages' is empty")
    out = []
    for i, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise RowInvalid(f"message {i} must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in MESSAGE_ROLES:
            raise RowInvalid(f"message {i}: 'role' must be one of {', '.join(MESSAGE_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise RowInvalid(f"message {i}: 'content' must be a string")
        out.append({"role": role, "content": content})
    # The policy answers the last turn, so it has to be a user turn with something in it.
    if out[-1]["role"] != "user":
        raise RowInvalid(f"the last message must be from the user, not the {out[-1]['role']}")
    if not out[-1]["content"].strip():
        raise RowInvalid("the last user message is empty")
    return out


def content_hash(messages: list[dict]) -> str:
    """sha256 of the canonical JSON: key order and whitespace cannot make two copies differ."""
    payload = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def assign_split(hash_hex: str, val_fraction: float = 0.1) -> str:
    """'val' for about val_fraction of hashes, else 'train'. It depends on the content only,
    so a re-import (or the same prompt in another file) always lands in the same split."""
    return "val" if int(hash_hex[:8], 16) / 0xFFFFFFFF < val_fraction else "train"


# --- one row ----------------------------------------------------------------------------------


def validate_row(raw: Any, *, max_prompt_chars: int) -> PromptRow:
    """Check one raw row (a dict from any reader); raise RowInvalid with a short reason."""
    if not isinstance(raw, dict):
        raise RowInvalid(f"expected an object with a 'prompt' or 'messages', got {type_name(raw)}")
    messages = canonical_messages(raw.get("prompt"), raw.get("messages"))

    chars = sum(len(m["content"]) for m in messages)
    if chars > max_prompt_chars:
        raise RowInvalid(f"prompt is {chars} characters, the limit is {max_prompt_chars}")
    # Postgres text columns cannot hold NUL; refuse it here rather than fail the whole insert.
    if any("\x00" in m["content"] for m in messages):
        raise RowInvalid("prompt contains a NUL character")

    reference = raw.get("reference")
    if reference is not None:
        if not isinstance(reference, str):
            raise RowInvalid("'reference' must be a string")
        if len(reference) > max_prompt_chars:
            raise RowInvalid(f"reference is {len(reference)} characters, the limit is {max_prompt_chars}")
        if "\x00" in reference:
            raise RowInvalid("reference contains a NUL character")

    source = raw.get("source")
    if source is not None:
        if not isinstance(source, str):
            raise RowInvalid("'source' must be a string")
        if len(source) > SOURCE_MAX_CHARS:
            raise RowInvalid(f"'source' is longer than {SOURCE_MAX_CHARS} characters")

    return PromptRow(
        text=messages[-1]["content"],
        messages=messages,
        content_hash=content_hash(messages),
        reference=reference,
        split=_parse_split(raw.get("split")),
        tags=_parse_tags(raw.get("tags")),
        source=source or None,
    )


def _parse_split(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        normalised = value.strip().lower()
        normalised = "val" if normalised == "validation" else normalised
        if normalised in SPLITS:
            return normalised
    raise RowInvalid(f"'split' must be 'train' or 'val', got {value!r}")


def _parse_tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        # A spreadsheet cell or a hand-written file: "math; easy" or "math,easy".
        value = value.replace(",", ";").split(";")
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise RowInvalid("'tags' must be a list of strings")
    tags = [t.strip() for t in value if t.strip()]
    return list(dict.fromkeys(tags))  # drop repeats, keep order


# --- importing --------------------------------------------------------------------------------


def import_prompts(
    *,
    session: Session,
    actor: Actor,
    path: Path,
    source: str | None = None,
    on_error: OnError = "abort",
    val_fraction: float = 0.1,
    settings: Settings | None = None,
    what: str | None = None,
) -> ImportReport:
    """Import the prompts in `path` (see the module docstring for formats and the error rule).
    `what` names the input in the audit log (default: the path).

    `source` (default: the file name) is stored on rows that do not name their own.
    """
    settings = settings or get_settings()
    path = Path(path)
    rows = read_rows(path, max_bytes=settings.import_max_bytes, max_rows=settings.import_max_rows)
    word = "row" if format_of(path) in ("parquet", "dataset") else "line"
    return import_prompt_rows(
        session=session,
        actor=actor,
        what=what or str(path),
        rows=((f"{word} {n}", row) for n, row in rows),
        source=path.name if source is None else source,
        on_error=on_error,
        val_fraction=val_fraction,
        settings=settings,
    )


def import_prompt_file_bytes(
    *,
    session: Session,
    actor: Actor,
    data: bytes,
    filename: str,
    source: str | None = None,
    on_error: OnError = "abort",
    val_fraction: float = 0.1,
    settings: Settings | None = None,
) -> ImportReport:
    """Import an uploaded file's bytes; the format comes from `filename`'s suffix."""
    settings = settings or get_settings()
    # A browser may send a path (even C:\fakepath\...); only the name means anything, and
    # PureWindowsPath splits on both kinds of slash.
    name = PureWindowsPath(filename).name
    if Path(name).suffix.lower() not in (".jsonl", ".json", ".csv", ".parquet"):
        raise UserError(f"Cannot import {name!r}: upload a .jsonl, .json (JSON Lines), .csv or .parquet file.")
    # Check the size before writing a temp copy; error messages name the upload, not the temp file.
    if len(data) > settings.import_max_bytes:
        raise UserError(
            f"{name} is {len(data):,} bytes; the import limit is {settings.import_max_bytes:,} bytes "
            "(IMPORT_MAX_BYTES). Split it into smaller files."
        )
    with tempfile.TemporaryDirectory(prefix="prompt-import-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return import_prompts(
            session=session,
            actor=actor,
            what=f"upload:{name}",
            path=path,
            source=name if source is None else source,
            on_error=on_error,
            val_fraction=val_fraction,
            settings=settings,
        )


def import_prompt_rows(
    *,
    session: Session,
    actor: Actor,
    rows: Iterable[tuple[str, dict | Exception]],
    source: str = "",
    on_error: OnError = "abort",
    val_fraction: float = 0.1,
    settings: Settings | None = None,
    what: str | None = None,
    update_references: bool = False,
) -> ImportReport:
    """Import (where, raw row) pairs; an Exception in place of a row is a read error for it.
    `what` names the input in the audit log (default: the source). With `update_references`,
    a row whose prompt is stored already replaces that prompt's reference when it brings a
    different one (a row without a reference changes nothing).

    Everything is read and checked before the first insert, which is what makes abort mode
    all-or-nothing. Rows are flushed into `session`, not committed.
    """
    actor.require("admin")
    if on_error not in ("abort", "skip"):
        raise UserError(f"on_error must be 'abort' or 'skip', not {on_error!r}.")
    if not 0.0 <= val_fraction <= 1.0:
        raise UserError(f"val_fraction must be between 0 and 1, not {val_fraction}.")
    settings = settings or get_settings()
    report = ImportReport()

    good: dict[str, PromptRow] = {}  # by content hash: the first copy in the file wins
    count = 0
    for where, raw in rows:
        count += 1
        if count > settings.import_max_rows:
            raise UserError(f"More than {settings.import_max_rows:,} rows, the import limit (IMPORT_MAX_ROWS).")
        if isinstance(raw, Exception):
            report.errors.append(RowError(where, str(raw)))
            continue
        try:
            row = validate_row(raw, max_prompt_chars=settings.import_max_prompt_chars)
        except RowInvalid as e:
            report.errors.append(RowError(where, str(e)))
            continue
        if row.content_hash in good:
            report.duplicates += 1
        else:
            good[row.content_hash] = row

    existing = _existing_references(session, list(good))
    changed = {h: (prompt_id, good[h].reference) for h, (prompt_id, reference) in existing.items()
               if good[h].reference is not None and good[h].reference != reference}
    if update_references:
        report.updated = len(changed)
        report.duplicates += len(existing) - len(changed)
    else:
        report.stale_references = len(changed)
        report.duplicates += len(existing)
    if report.errors and on_error == "abort":
        return report  # committed=False, nothing written

    new = [
        {
            "text": row.text,
            "messages": row.messages,
            "reference": row.reference,
            "split": row.split or assign_split(row.content_hash, val_fraction),
            "tags": row.tags,
            "source": (row.source or source or "")[:SOURCE_MAX_CHARS],
            "content_hash": row.content_hash,
        }
        for h, row in good.items()
        if h not in existing
    ]
    for i in range(0, len(new), INSERT_CHUNK):
        session.execute(insert(Prompt), new[i : i + INSERT_CHUNK])
    updates = [{"id": prompt_id, "reference": reference} for prompt_id, reference in changed.values()]
    if update_references and updates:
        for i in range(0, len(updates), INSERT_CHUNK):
            session.execute(update(Prompt), updates[i : i + INSERT_CHUNK])  # by primary key
    session.flush()
    report.inserted = len(new)
    report.committed = True
    actor.record(session=session, action="prompts.import", target=(what or source or "rows")[:128],
                 details={"inserted": report.inserted, "duplicates": report.duplicates, "errors": len(report.errors),
                          **({"references_updated": report.updated} if report.updated else {})})
    return report


def _existing_references(session: Session, hashes: list[str]) -> dict[str, tuple[int, str | None]]:
    """content hash -> (id, reference) of the stored prompts among `hashes`."""
    found: dict[str, tuple[int, str | None]] = {}
    for i in range(0, len(hashes), HASH_CHUNK):
        chunk = hashes[i : i + HASH_CHUNK]
        rows = session.execute(select(Prompt.content_hash, Prompt.id, Prompt.reference)
                               .where(Prompt.content_hash.in_(chunk)))
        found.update((h, (prompt_id, reference)) for h, prompt_id, reference in rows)
    return found


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
