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
  a later copy's tags or split do not update it).
- Problems with the file as a whole (unknown format, over IMPORT_MAX_BYTES or IMPORT_MAX_ROWS,
  a CSV without a prompt/messages column, an unreadable parquet file) raise UserError.

Inserts go through the caller's session and are flushed, never committed here: the caller's
transaction decides, and the caller writes the audit log entry.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Literal

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from db.models import SPLITS, Prompt
from feedback.errors import UserError
from feedback.settings import Settings, get_settings

MESSAGE_ROLES = ("system", "user", "assistant")
SUPPORTED_FORMATS = (
    ".jsonl or .json (JSON Lines: one object per line), .csv, .parquet, "
    "or a directory saved with datasets' save_to_disk"
)
# Names under which a Hugging Face DatasetDict usually keeps its held-out data.
DATASET_SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "val"}
SOURCE_MAX_CHARS = 255  # the width of prompts.source
# Hashes per `IN (...)` query: well under SQLite's and Postgres' bound-parameter limits.
HASH_CHUNK = 500
# Rows per INSERT executemany, so a 100k-row import does not build one giant statement.
INSERT_CHUNK = 1000

OnError = Literal["abort", "skip"]


class RowInvalid(ValueError):
    """One row is bad; the message is the short reason shown to the user."""


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
        if self.duplicates:
            parts.append(f"skipped {_plural(self.duplicates, 'duplicate')}")
        if bad:
            parts.append(f"skipped {bad}")
        return ", ".join(parts) + "."


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
        raise RowInvalid(f"expected an object with a 'prompt' or 'messages', got {_type_name(raw)}")
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


# --- reading files ----------------------------------------------------------------------------


def read_rows(path: Path, *, max_bytes: int, max_rows: int) -> Iterator[tuple[int, dict | Exception]]:
    """(line or row number, raw row) for each row of `path`; a row that cannot be read at all
    comes as an Exception in place of the dict, so the other rows are still checked.

    Numbers are 1-based: file lines for JSON Lines and CSV, rows for parquet and datasets
    (counted across the splits of a DatasetDict). The format, existence and size are checked
    now; too many rows raises UserError while iterating, before any row is inserted.
    """
    path = Path(path)
    kind = _format_of(path)
    if not path.exists():
        raise UserError(f"{path} does not exist.")
    size = _size_of(path)
    if size > max_bytes:
        raise UserError(
            f"{path.name} is {size:,} bytes; the import limit is {max_bytes:,} bytes (IMPORT_MAX_BYTES). "
            "Split it into smaller files."
        )
    reader = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet, "dataset": _read_dataset}[kind]
    return reader(path, max_rows=max_rows)


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "dataset"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".csv", ".parquet"):
        return suffix[1:]
    raise UserError(f"Cannot import {path.name!r}: supported formats are {SUPPORTED_FORMATS}.")


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _too_many_rows(path: Path, max_rows: int) -> UserError:
    return UserError(
        f"{path.name} has more than {max_rows:,} rows, the import limit (IMPORT_MAX_ROWS). "
        "Split it into smaller files."
    )


def _read_jsonl(path: Path, *, max_rows: int) -> Iterator[tuple[int, dict | Exception]]:
    rows = 0
    with path.open("rb") as f:
        for number, raw_line in enumerate(f, start=1):
            if not raw_line.strip():
                continue
            rows += 1
            if rows > max_rows:
                raise _too_many_rows(path, max_rows)
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, RowInvalid(f"not valid UTF-8 (byte 0x{raw_line[e.start]:02x} at position {e.start + 1})")
                continue
            if number == 1:
                line = line.lstrip("\ufeff")  # a byte-order mark some editors write
            try:
                obj = json.loads(line.strip())  # without the newline, a cut-off string reads as such
            except json.JSONDecodeError as e:
                # json's messages read "Expecting value", "Unterminated string starting at" ...
                where = "" if e.msg.endswith(" at") else " at"
                yield number, RowInvalid(f"not valid JSON ({e.msg}{where} column {e.colno})")
                continue
            if not isinstance(obj, dict):
                hint = "; write one object per line, not a JSON array" if isinstance(obj, list) else ""
                yield number, RowInvalid(f"expected a JSON object, got {_type_name(obj)}{hint}")
                continue
            yield number, obj


def _read_csv(path: Path, *, max_rows: int) -> Iterator[tuple[int, dict | Exception]]:
    data = path.read_bytes()  # already known to be under IMPORT_MAX_BYTES
    try:
        text = data.decode("utf-8-sig")  # accept the BOM that spreadsheet programs write
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        yield line, RowInvalid(f"not valid UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8 and retry")
        return
    # The default 128 KiB field cap would turn an over-long prompt into a parse error instead of
    # the clear "prompt is N characters" reason; the file size cap already bounds a field.
    csv.field_size_limit(max(csv.field_size_limit(), len(data) + 1))

    # newline="": the csv module handles line ends itself (and newlines inside quoted cells).
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows = 0
    while True:
        start = reader.line_num + 1  # a quoted cell may span lines: report where the row starts
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            # The reader starts afresh on the next call, so the other rows are still read.
            yield start, RowInvalid(f"cannot parse CSV ({e})")
            continue
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            # Spreadsheets like "Prompt"; match columns case-insensitively.
            header = [c.strip().lower() for c in cells]
            if "prompt" not in header and "messages" not in header:
                raise UserError(
                    f"{path.name}: the first row must be a header with a 'prompt' or 'messages' column "
                    f"(found: {', '.join(repr(h) for h in header)})."
                )
            continue
        rows += 1
        if rows > max_rows:
            raise _too_many_rows(path, max_rows)
        if len(cells) > len(header):
            yield start, RowInvalid(f"{len(cells)} cells but the header has {len(header)} columns")
            continue
        try:
            yield start, _csv_row(dict(zip(header, cells)))
        except RowInvalid as e:
            yield start, e


def _csv_row(cells: dict[str, str]) -> dict:
    # An empty cell means "not given", so a file with both prompt and messages columns works.
    row: dict[str, Any] = {k: v for k, v in cells.items() if v.strip()}
    if "messages" in row:
        try:
            row["messages"] = json.loads(row["messages"])
        except json.JSONDecodeError as e:
            raise RowInvalid(f"'messages' is not valid JSON ({e.msg})") from None
    if "tags" in row:
        tags = row["tags"].strip()
        if tags.startswith("["):
            try:
                row["tags"] = json.loads(tags)
            except json.JSONDecodeError as e:
                raise RowInvalid(f"'tags' is not valid JSON ({e.msg})") from None
        else:
            row["tags"] = tags.split(";")
    return row


def _read_parquet(path: Path, *, max_rows: int) -> Iterator[tuple[int, dict | Exception]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path.name} is not a readable parquet file ({e}).") from None
    if parquet.metadata.num_rows > max_rows:
        raise _too_many_rows(path, max_rows)
    number = 0
    for batch in parquet.iter_batches(batch_size=1000):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _read_dataset(path: Path, *, max_rows: int) -> Iterator[tuple[int, dict | Exception]]:
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except Exception as e:  # datasets raises several kinds for "not a saved dataset"
        raise UserError(f"{path.name} is not a directory saved with datasets' save_to_disk ({e}).") from None
    parts = list(loaded.items()) if isinstance(loaded, DatasetDict) else [(None, loaded)]
    if sum(ds.num_rows for _, ds in parts) > max_rows:
        raise _too_many_rows(path, max_rows)
    number = 0
    for split_name, ds in parts:
        split = DATASET_SPLIT_NAMES.get(split_name.lower()) if split_name else None
        for row in ds:
            number += 1
            # The split a DatasetDict keeps a row in is its split, unless the row says otherwise.
            if split and not row.get("split"):
                row["split"] = split
            yield number, row


# --- importing --------------------------------------------------------------------------------


def import_prompts(
    *,
    session: Session,
    path: Path,
    source: str | None = None,
    on_error: OnError = "abort",
    val_fraction: float = 0.1,
    settings: Settings | None = None,
) -> ImportReport:
    """Import the prompts in `path` (see the module docstring for formats and the error rule).

    `source` (default: the file name) is stored on rows that do not name their own.
    """
    settings = settings or get_settings()
    path = Path(path)
    rows = read_rows(path, max_bytes=settings.import_max_bytes, max_rows=settings.import_max_rows)
    word = "row" if _format_of(path) in ("parquet", "dataset") else "line"
    return import_prompt_rows(
        session=session,
        rows=((f"{word} {n}", row) for n, row in rows),
        source=path.name if source is None else source,
        on_error=on_error,
        val_fraction=val_fraction,
        settings=settings,
    )


def import_prompt_file_bytes(
    *,
    session: Session,
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
            path=path,
            source=name if source is None else source,
            on_error=on_error,
            val_fraction=val_fraction,
            settings=settings,
        )


def import_prompt_rows(
    *,
    session: Session,
    rows: Iterable[tuple[str, dict | Exception]],
    source: str = "",
    on_error: OnError = "abort",
    val_fraction: float = 0.1,
    settings: Settings | None = None,
) -> ImportReport:
    """Import (where, raw row) pairs; an Exception in place of a row is a read error for it.

    Everything is read and checked before the first insert, which is what makes abort mode
    all-or-nothing. Rows are flushed into `session`, not committed.
    """
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

    existing = _existing_hashes(session, list(good))
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
    session.flush()
    report.inserted = len(new)
    report.committed = True
    return report


def _existing_hashes(session: Session, hashes: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(hashes), HASH_CHUNK):
        chunk = hashes[i : i + HASH_CHUNK]
        found.update(session.scalars(select(Prompt.content_hash).where(Prompt.content_hash.in_(chunk))))
    return found


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
