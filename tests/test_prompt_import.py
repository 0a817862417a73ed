"""Prompt import against a real SQLite database built by the migrations."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from db.engine import make_engine, session_scope
from db.migrate import upgrade
from db.models import Prompt
from feedback.actors import CLI
from feedback.errors import UserError
from feedback.prompts import (
    assign_split,
    canonical_messages,
    content_hash,
    import_prompt_file_bytes,
    import_prompts,
    read_rows,
)

# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory) -> Path:
    """Run the migrations once per module; each test gets a copy (much faster than re-migrating)."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def engine(tmp_path, migrated_template):
    db = tmp_path / "feedback.sqlite3"
    shutil.copy(migrated_template, db)
    eng = make_engine(f"sqlite:///{db}")
    yield eng
    eng.dispose()


def run(engine, path: Path, **kwargs):
    with session_scope(engine) as session:
        return import_prompts(session=session, path=path, **kwargs, actor=CLI)


def stored(engine) -> list[Prompt]:
    with session_scope(engine, read_only=True) as session:
        return list(session.scalars(select(Prompt).order_by(Prompt.id)))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
]


# --- good imports -----------------------------------------------------------------------------


def test_jsonl_import_stores_all_fields(engine, tmp_path):
    path = write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"prompt": "Say hi", "reference": "hi", "split": "val", "tags": ["greet", "easy"], "extra": 1},
            {"messages": CHAT, "tags": "math; easy,chat", "source": "gsm-like"},
            {"prompt": "Name a colour", "split": "validation"},
        ],
    )
    report = run(engine, path)
    assert (report.inserted, report.duplicates, report.errors, report.committed) == (3, 0, [], True)
    assert report.summary() == "Imported 3 prompts."

    hi, chat, colour = stored(engine)
    assert hi.messages == [{"role": "user", "content": "Say hi"}]
    assert (hi.text, hi.reference, hi.split, hi.tags, hi.source) == ("Say hi", "hi", "val", ["greet", "easy"],
                                                                      "prompts.jsonl")
    assert hi.content_hash == content_hash(hi.messages)
    assert chat.messages == CHAT
    assert chat.text == "And 3+3?"  # the last user turn
    assert chat.tags == ["math", "easy", "chat"]
    assert chat.source == "gsm-like"  # a row's own source wins over the file name
    assert colour.split == "val"


def test_csv_import(engine, tmp_path):
    path = tmp_path / "prompts.csv"
    # A BOM and capitalised headers, as spreadsheets write them; a quoted cell spanning lines.
    path.write_text(
        "\ufeffPrompt,Reference,Tags,messages,split,notes\n"
        'Say hi,hi,a;b,,train,ignored\n'
        '"Line one\nline two",,"[""x"", ""y""]",,,\n'
        f',,,"{json.dumps(CHAT).replace(chr(34), chr(34) * 2)}",val,\n',
        encoding="utf-8",
    )
    report = run(engine, path, source="sheet")
    assert (report.inserted, report.errors) == (3, [])
    hi, multi, chat = stored(engine)
    assert (hi.text, hi.reference, hi.tags, hi.split, hi.source) == ("Say hi", "hi", ["a", "b"], "train", "sheet")
    assert multi.text == "Line one\nline two"
    assert multi.tags == ["x", "y"]
    assert multi.reference is None
    assert chat.messages == CHAT and chat.split == "val"


def test_csv_reports_file_line_numbers(engine, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt,tags\n"two\nlines",a\n\n,x\nok,"[1]"\n', encoding="utf-8")
    report = run(engine, path)
    assert [str(e) for e in report.errors] == [
        "line 5: missing 'prompt' or 'messages'",
        "line 6: 'tags' must be a list of strings",
    ]
    assert report.committed is False


def test_csv_without_prompt_column_is_refused(engine, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("question,answer\nhi,there\n", encoding="utf-8")
    with pytest.raises(UserError, match="'prompt' or 'messages' column"):
        run(engine, path)


def test_parquet_import(engine, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [
            {"prompt": "p1", "messages": None, "tags": ["t"], "split": None},
            {"prompt": None, "messages": [{"role": "user", "content": "p2"}], "tags": [], "split": "val"},
            {"prompt": "   ", "messages": None, "tags": None, "split": None},
        ]
    )
    path = tmp_path / "p.parquet"
    pq.write_table(table, path)
    report = run(engine, path, on_error="skip")
    assert report.inserted == 2
    assert [str(e) for e in report.errors] == ["row 3: 'prompt' is empty"]
    p1, p2 = stored(engine)
    assert (p1.text, p1.tags, p2.text, p2.split) == ("p1", ["t"], "p2", "val")


def test_datasets_directories(engine, tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list([{"prompt": "a", "reference": "A"}, {"prompt": "b", "reference": None}]).save_to_disk(
        str(tmp_path / "plain")
    )
    report = run(engine, tmp_path / "plain")
    assert (report.inserted, report.errors) == (2, [])
    assert [(p.text, p.reference, p.source) for p in stored(engine)] == [("a", "A", "plain"), ("b", None, "plain")]

    DatasetDict(
        {
            "train": Dataset.from_list([{"prompt": "t1", "split": None}, {"prompt": "t2", "split": None}]),
            # A row's own split wins over the split it is kept in.
            "validation": Dataset.from_list([{"prompt": "v1", "split": None}, {"prompt": "v2", "split": "train"}]),
        }
    ).save_to_disk(str(tmp_path / "dict"))
    report = run(engine, tmp_path / "dict")
    assert (report.inserted, report.errors) == (4, [])
    splits = {p.text: p.split for p in stored(engine)}
    assert (splits["t1"], splits["t2"], splits["v1"], splits["v2"]) == ("train", "train", "val", "train")


def test_import_from_uploaded_bytes(engine, tmp_path):
    data = b'{"prompt": "from an upload"}\n'
    with session_scope(engine) as session:
        report = import_prompt_file_bytes(session=session, data=data, filename="C:\\fakepath\\up.jsonl", actor=CLI)
    assert report.inserted == 1
    assert stored(engine)[0].source == "up.jsonl"
    with session_scope(engine) as session, pytest.raises(UserError, match="upload a .jsonl"):
        import_prompt_file_bytes(session=session, data=data, filename="up.txt", actor=CLI)


# --- bad rows, abort and skip -----------------------------------------------------------------

BAD_LINES = [
    json.dumps({"prompt": "good one"}),  # 1
    '{"prompt": "unterminated',  # 2
    json.dumps({"reference": "no prompt"}),  # 3
    "",  # 4: blank lines are skipped, not errors
    json.dumps({"prompt": "x", "tags": 7}),  # 5
    json.dumps({"prompt": ["a", "list"]}),  # 6
    json.dumps({"prompt": "y" * 40123}),  # 7
    json.dumps({"prompt": "good two", "split": "test"}),  # 8
    json.dumps(["not", "an", "object"]),  # 9
    json.dumps({"prompt": "both", "messages": [{"role": "user", "content": "both"}]}),  # 10
    json.dumps({"prompt": "z", "reference": "r" * 32001}),  # 11
    json.dumps({"prompt": "good three", "tags": "a,b"}),  # 12
]
EXPECTED_ERRORS = [
    "line 2: not valid JSON (Unterminated string starting at column 12)",
    "line 3: missing 'prompt' or 'messages'",
    "line 5: 'tags' must be a list of strings",
    "line 6: 'prompt' must be a string (use 'messages' for a chat)",
    "line 7: prompt is 40123 characters, the limit is 32000",
    "line 8: 'split' must be 'train' or 'val', got 'test'",
    "line 9: expected a JSON object, got a list; write one object per line, not a JSON array",
    "line 10: give either 'prompt' or 'messages', not both",
    "line 11: reference is 32001 characters, the limit is 32000",
]


def test_abort_mode_writes_nothing_and_lists_every_bad_line(engine, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_LINES) + "\n", encoding="utf-8")
    report = run(engine, path)  # abort is the default
    assert report.committed is False
    assert report.inserted == 0
    assert [str(e) for e in report.errors] == EXPECTED_ERRORS
    assert stored(engine) == []
    assert report.summary().startswith("Nothing imported: 9 bad rows (line 2: not valid JSON")


def test_skip_mode_inserts_the_good_rows(engine, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_LINES) + "\n", encoding="utf-8")
    report = run(engine, path, on_error="skip")
    assert report.committed is True
    assert report.inserted == 2
    assert [str(e) for e in report.errors] == EXPECTED_ERRORS
    assert [(p.text, p.tags) for p in stored(engine)] == [("good one", []), ("good three", ["a", "b"])]
    assert report.summary().startswith("Imported 2 prompts, skipped 9 bad rows (line 2:")


def test_chat_messages_validation(engine, tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"messages": CHAT},
            {"messages": CHAT[:3]},  # ends with the assistant
            {"messages": [{"role": "bot", "content": "hi"}]},
            {"messages": [{"role": "user", "content": 5}]},
            {"messages": []},
            {"messages": "hello"},
            {"messages": [{"role": "user", "content": "hi", "name": "bob"}]},  # extra keys dropped
        ],
    )
    report = run(engine, path, on_error="skip")
    assert [str(e) for e in report.errors] == [
        "line 2: the last message must be from the user, not the assistant",
        "line 3: message 1: 'role' must be one of system, user, assistant, got 'bot'",
        "line 4: message 1: 'content' must be a string",
        "line 5: 'messages' is empty",
        "line 6: 'messages' must be a list of {role, content} objects",
    ]
    assert [p.messages for p in stored(engine)] == [CHAT, [{"role": "user", "content": "hi"}]]


# --- encodings --------------------------------------------------------------------------------


def test_non_utf8_jsonl_line_is_an_error_for_that_line(engine, tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "fine"}\n' + '{"prompt": "caf\u00e9"}\n'.encode("latin-1")
                     + b'{"prompt": "also fine"}\n')
    report = run(engine, path, on_error="skip")
    assert [str(e) for e in report.errors] == ["line 2: not valid UTF-8 (byte 0xe9 at position 16)"]
    assert [p.text for p in stored(engine)] == ["fine", "also fine"]


def test_non_utf8_csv_is_one_error_naming_the_line(engine, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"prompt\nfine\n" + "caf\u00e9\n".encode("latin-1") + b"more\n")
    report = run(engine, path, on_error="skip")
    assert [str(e) for e in report.errors] == [
        "line 3: not valid UTF-8 (byte 0xe9); save the file as UTF-8 and retry"
    ]
    assert report.inserted == 0
    assert stored(engine) == []


# --- limits and formats -----------------------------------------------------------------------


def test_file_over_max_bytes_is_refused_up_front(engine, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "big.jsonl", [{"prompt": "x" * 200}])
    monkeypatch.setenv("IMPORT_MAX_BYTES", "100")
    size = path.stat().st_size
    with pytest.raises(UserError) as caught:
        run(engine, path)
    assert f"{size:,} bytes" in str(caught.value) and "limit is 100 bytes" in str(caught.value)
    with session_scope(engine) as session, pytest.raises(UserError, match="limit is 100 bytes"):
        import_prompt_file_bytes(session=session, data=path.read_bytes(), filename="big.jsonl", actor=CLI)
    assert stored(engine) == []


def test_too_many_rows_is_refused(engine, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("IMPORT_MAX_ROWS", "2")
    path = write_jsonl(tmp_path / "many.jsonl", [{"prompt": str(i)} for i in range(3)])
    with pytest.raises(UserError, match="more than 2 rows"):
        run(engine, path)
    pq.write_table(pa.Table.from_pylist([{"prompt": str(i)} for i in range(3)]), tmp_path / "many.parquet")
    with pytest.raises(UserError, match="more than 2 rows"):
        run(engine, tmp_path / "many.parquet")
    assert stored(engine) == []


def test_unknown_suffix_lists_supported_formats(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("hello\n")
    with pytest.raises(UserError, match=r"supported formats are \.jsonl.*\.csv, \.parquet"):
        read_rows(path, max_bytes=10_000, max_rows=10)


# --- duplicates and transactions --------------------------------------------------------------


def test_duplicates_within_the_file_and_against_the_db(engine, tmp_path):
    path = write_jsonl(
        tmp_path / "dups.jsonl",
        [
            {"prompt": "same"},
            {"messages": [{"role": "user", "content": "same"}]},  # the same prompt as a chat
            {"prompt": "same", "tags": ["other"]},
            {"prompt": "different"},
        ],
    )
    first = run(engine, path)
    assert (first.inserted, first.duplicates, first.errors) == (2, 2, [])

    again = run(engine, path)
    assert (again.inserted, again.duplicates, again.errors, again.committed) == (0, 4, [], True)
    assert again.summary() == "Imported 0 prompts, skipped 4 duplicates."
    assert [p.text for p in stored(engine)] == ["same", "different"]
    assert stored(engine)[0].tags == []  # the first copy wins


def test_import_does_not_commit_the_callers_transaction(engine, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "rolled back"}])
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        assert import_prompts(session=session, path=path, actor=CLI).inserted == 1
        raise RuntimeError("the caller fails after the import")
    assert stored(engine) == []


# --- split assignment -------------------------------------------------------------------------


def test_split_is_assigned_from_the_content_hash(engine, tmp_path, migrated_template):
    rows = [{"prompt": f"prompt number {i}"} for i in range(200)]
    path = write_jsonl(tmp_path / "splits.jsonl", rows)
    run(engine, path, val_fraction=0.3)
    got = {p.text: p.split for p in stored(engine)}
    for text, split in got.items():
        assert split == assign_split(content_hash(canonical_messages(text, None)), 0.3)
    assert 30 < sum(s == "val" for s in got.values()) < 90  # roughly 30% of 200

    # A fresh database, rows in another order: every prompt lands in the same split again.
    other_db = tmp_path / "other.sqlite3"
    shutil.copy(migrated_template, other_db)
    other = make_engine(f"sqlite:///{other_db}")
    run(other, write_jsonl(tmp_path / "reversed.jsonl", rows[::-1]), val_fraction=0.3)
    assert {p.text: p.split for p in stored(other)} == got
    other.dispose()

    assert assign_split("00000000" + "0" * 56, 0.0) == "train"  # val_fraction=0: no val at all
    assert assign_split("00000000" + "0" * 56, 0.1) == "val"
    assert assign_split("ffffffff" + "0" * 56, 0.99) == "train"


# --- canonical form ---------------------------------------------------------------------------


@given(st.text(min_size=1).filter(str.strip))
def test_text_and_single_user_message_hash_the_same(text):
    as_text = canonical_messages(text, None)
    as_chat = canonical_messages(None, [{"content": text, "role": "user", "id": "ignored"}])
    assert as_text == as_chat == [{"role": "user", "content": text}]
    assert content_hash(as_text) == content_hash(as_chat) == content_hash(json.loads(json.dumps(as_text)))
    assert len(content_hash(as_text)) == 64
