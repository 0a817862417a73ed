"""Reading prompt files row by row: JSON Lines, CSV, parquet, or a `datasets.save_to_disk`
directory. Each reader yields (line or row number, raw dict) and, for a row it cannot read, an
Exception in place of the dict, so one bad line never hides the others. Validation of the
rows' contents is feedback/prompts.py's job.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from feedback.errors import UserError

SUPPORTED_FORMATS = (
    ".jsonl or .json (JSON Lines: one object per line), .csv, .parquet, "
    "or a directory saved with datasets' save_to_disk"
)
# Names under which a Hugging Face DatasetDict usually keeps its held-out data.
DATASET_SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "val"}


class RowInvalid(ValueError):
    """One row is bad; the message is the short reason shown to the user."""


def read_rows(path: Path, *, max_bytes: int, max_rows: int,
              header_needs: Sequence[str] = ("prompt", "messages")) -> Iterator[tuple[int, dict | Exception]]:
    """(line or row number, raw row) for each row of `path`; a row that cannot be read at all
    comes as an Exception in place of the dict, so the other rows are still checked.

    Numbers are 1-based: file lines for JSON Lines and CSV, rows for parquet and datasets
    (counted across the splits of a DatasetDict). The format, existence and size are checked
    now; too many rows raises UserError while iterating, before any row is inserted.
    A CSV header must name one of `header_needs` (empty: any header; feedback/imports/ tells
    the formats apart by their columns itself).
    """
    path = Path(path)
    kind = format_of(path)
    if not path.exists():
        raise UserError(f"{path} does not exist.")
    size = _size_of(path)
    if size > max_bytes:
        raise UserError(
            f"{path.name} is {size:,} bytes; the import limit is {max_bytes:,} bytes (IMPORT_MAX_BYTES). "
            "Split it into smaller files."
        )
    if kind == "csv":
        return _read_csv(path, max_rows=max_rows, header_needs=tuple(header_needs))
    reader = {"jsonl": _read_jsonl, "parquet": _read_parquet, "dataset": _read_dataset}[kind]
    return reader(path, max_rows=max_rows)


def format_of(path: Path) -> str:
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
                yield number, RowInvalid(f"expected a JSON object, got {type_name(obj)}{hint}")
                continue
            yield number, obj


def _read_csv(path: Path, *, max_rows: int,
              header_needs: tuple[str, ...] = ("prompt", "messages")) -> Iterator[tuple[int, dict | Exception]]:
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
            if header_needs and not set(header_needs) & set(header):
                wanted = " or ".join(repr(h) for h in header_needs)
                raise UserError(
                    f"{path.name}: the first row must be a header with a {wanted} column "
                    f"(found: {', '.join(repr(h[:40]) for h in header[:20])}{' ...' if len(header) > 20 else ''})."
                )
            continue
        rows += 1
        if rows > max_rows:
            raise _too_many_rows(path, max_rows)
        if len(cells) > len(header):
            yield start, RowInvalid(f"{len(cells)} cells but the header has {len(header)} columns")
            continue
        try:
            yield start, _csv_row(dict(zip(header, cells, strict=False)))
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


def type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
