"""`python -m feedback import`: existing preference data as imported labels, prompt datasets as
prompts; each format from a small file written here, on SQLite and Postgres."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cli import main
from db.engine import session_scope
from db.models import AuditLog, Item, ItemResponse, Label, PolicyVersion, Project, Prompt, Response
from feedback.actors import CLI
from feedback.conversions import DEFAULT_ASPECTS
from feedback.errors import UserError
from feedback.export import export_rows
from feedback.imports.common import shown
from feedback.imports.formats import detect
from feedback.imports.importer import import_file
from feedback.imports.pairs import parse_hh, parse_trl
from feedback.imports.ratings import parse_ultrafeedback
from feedback.projects import create_project
from feedback.prompt_files import RowInvalid

MAX = 32_000


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def hh(*turns: str) -> str:
    """An HH-RLHF transcript from alternating human and assistant turns."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


HH_ROWS = [
    {"chosen": hh("What is 2+2?", "It is 4."), "rejected": hh("What is 2+2?", "It is 5.")},
    {"chosen": hh("Hi", "Hello!", "Name a colour.", "Blue."), "rejected": hh("Hi", "Hello!", "Name a colour.", "No.")},
    {"chosen": hh("Capital of France?", "Paris."), "rejected": hh("Capital of France?", "Lyon.")},
    {"chosen": hh("Say yes.", "Yes."), "rejected": hh("Say yes.", "Maybe later.")},
    {"chosen": hh("Spell cat.", "C-A-T."), "rejected": hh("Spell cat.", "K-A-T.")},
    {"chosen": hh("Is ice cold?", "Yes, ice is cold."), "rejected": hh("Is ice cold?", "Ice is hot.")},
]
CHOSEN = {"It is 4.", "Blue.", "Paris.", "Yes.", "C-A-T.", "Yes, ice is cold."}


def counts(engine) -> dict[str, int]:
    with session_scope(engine, read_only=True) as s:
        return {m.__name__: s.scalar(select(func.count()).select_from(m))
                for m in (Prompt, Response, Item, ItemResponse, Label, PolicyVersion, Project)}


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["import", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def completion(model: str, text: str, scores: dict[str, object], **extra) -> dict:
    annotations = {a: {"Rating": str(r) if isinstance(r, int) else r, "Rationale": f"{a} of {text}"}
                   for a, r in scores.items()}
    return {"model": model, "response": text, "annotations": annotations, **extra}


def uf_row(instruction: str, ratings: list[int], **extra) -> dict:
    models = ["gpt-4", "llama-2-7b-chat", "alpaca-7b", "falcon-40b-instruct", "bard"][: len(ratings)]
    return {"source": "evol_instruct", "instruction": instruction, "models": models, "completions": [
        completion(m, f"{instruction} answer by {m}", {a: r for a in DEFAULT_ASPECTS}, critique="fine",
                   **{"fine-grained_score": float(r), "overall_score": 2.0 * r})
        for m, r in zip(models, ratings, strict=True)], **extra}


# --- reading rows: no database ----------------------------------------------------------------


def test_detection_by_columns():
    assert detect(["chosen", "rejected"], HH_ROWS) == "hh-rlhf"
    assert detect(["prompt", "chosen", "rejected"], [{"prompt": "p", "chosen": "a", "rejected": "b"}]) == "trl"
    implicit = [{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": []}]
    assert detect(["chosen", "rejected"], implicit) == "trl"
    assert detect(["chosen", "rejected"], [{"chosen": "plain text", "rejected": "other"}]) is None
    assert detect(["source", "instruction", "models", "completions"], []) == "ultrafeedback"
    assert detect(["id", "conversations"], []) == "sharegpt"
    assert detect(["question_id", "category", "turns"], []) == "mt-bench"
    assert detect(["instruction", "input", "output"], []) == "alpaca"
    assert detect(["prompt", "reference"], []) == "prompts"
    assert detect(["text", "label"], []) is None


def test_hh_rlhf_transcripts_split_into_prompt_and_answers():
    row = parse_hh(HH_ROWS[1], max_chars=MAX)
    assert row.prompt.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                   {"role": "user", "content": "Name a colour."}]
    assert (row.chosen, row.rejected) == ("Blue.", "No.")
    with pytest.raises(RowInvalid, match="differ before their last answer"):
        parse_hh({"chosen": hh("A?", "x"), "rejected": hh("B?", "y")}, max_chars=MAX)
    with pytest.raises(RowInvalid, match="does not end with an 'Assistant:' answer"):
        parse_hh({"chosen": hh("A?", "x", "more?"), "rejected": hh("A?", "y")}, max_chars=MAX)
    with pytest.raises(RowInvalid, match="same answer"):
        parse_hh({"chosen": hh("A?", "x  y"), "rejected": hh("A?", "x y")}, max_chars=MAX)
    with pytest.raises(RowInvalid, match="'rejected' content is empty"):
        parse_hh({"chosen": hh("A?", "x"), "rejected": hh("A?", "")}, max_chars=MAX)


def test_every_trl_form_gives_the_same_pair():
    user = [{"role": "user", "content": "What colour is the sky?"}]
    blue, green = {"role": "assistant", "content": "Blue."}, {"role": "assistant", "content": "Green."}
    forms = [
        {"prompt": "What colour is the sky?", "chosen": "Blue.", "rejected": "Green."},  # standard
        {"prompt": user, "chosen": [blue], "rejected": [green]},  # conversational
        {"chosen": [*user, blue], "rejected": [*user, green]},  # implicit prompt
        {"prompt": "What colour is the sky?", "chosen": [*user, blue], "rejected": [*user, green]},  # repeated
        {"prompt": json.dumps(user), "chosen": json.dumps([blue]), "rejected": json.dumps([green])},  # CSV cells
    ]
    for raw in forms:
        row = parse_trl(raw, max_chars=MAX)
        assert (row.prompt.messages, row.chosen, row.rejected) == (user, "Blue.", "Green."), raw
    with pytest.raises(RowInvalid, match="2 messages after the prompt"):
        parse_trl({"prompt": user, "chosen": [blue, blue], "rejected": [green]}, max_chars=MAX)
    with pytest.raises(RowInvalid, match="use the hh-rlhf format|not conversations"):
        parse_trl({"chosen": "Blue.", "rejected": "Green."}, max_chars=MAX)
    with pytest.raises(RowInvalid, match="last message must be from the user"):
        parse_trl({"prompt": [blue], "chosen": "a", "rejected": "b"}, max_chars=MAX)
    with pytest.raises(RowInvalid, match="'chosen' is 11 characters, the limit is 10"):
        parse_trl({"prompt": "q", "chosen": "x" * 11, "rejected": "b"}, max_chars=10)


def test_ultrafeedback_rows_and_their_ratings():
    raw = uf_row("Name a prime.", [5, 3, 1, 4])
    raw["completions"][0]["annotations"]["honesty"] = [{"Rating": "4", "Rationale": "list-wrapped, as some releases"}]
    raw["completions"][1]["annotations"]["helpfulness"]["Rationale For Rating"] = "explains the rating"
    row = parse_ultrafeedback(raw, max_chars=MAX)
    assert row.prompt.messages == [{"role": "user", "content": "Name a prime."}]
    assert row.prompt.source == "evol_instruct"
    assert row.models == ("gpt-4", "llama-2-7b-chat", "alpaca-7b", "falcon-40b-instruct")
    assert row.ratings[0]["scores"] == {"instruction_following": 5, "truthfulness": 5, "honesty": 4, "helpfulness": 5}
    assert row.ratings[0]["rationales"]["honesty"] == "list-wrapped, as some releases"
    assert row.ratings[1]["rationales"]["helpfulness"] == "explains the rating"

    na = uf_row("Q?", [5, 3, 1])
    na["completions"][2]["annotations"]["honesty"]["Rating"] = "N/A"
    with pytest.raises(RowInvalid, match="completion 3: honesty is rated N/A; a rating label needs every aspect"):
        parse_ultrafeedback(na, max_chars=MAX)
    with pytest.raises(RowInvalid, match="2 completions; a rating item holds 3 to 8 responses"):
        parse_ultrafeedback(uf_row("Q?", [5, 3]), max_chars=MAX)
    odd = uf_row("Q?", [5, 3, 1])
    del odd["completions"][1]["annotations"]["truthfulness"]
    with pytest.raises(RowInvalid, match="completion 2 is rated on other aspects"):
        parse_ultrafeedback(odd, max_chars=MAX)


def test_untrusted_values_are_escaped_and_cut():
    assert shown("gpt") == "gpt"
    assert shown("\x1b[31mred") == repr("\x1b[31mred")
    long = shown("x" * 500)
    assert len(long) < 50 and long.endswith("...")


def test_import_file_takes_a_keyword_only_actor():
    parameter = inspect.signature(import_file).parameters["actor"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is inspect.Parameter.empty


# --- preference formats ------------------------------------------------------------------------


def test_hh_rlhf_file_imports_pairs_with_provenance_and_exports_as_dpo(use_db, engine, tmp_path, capsys):
    path = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    code, out, err = run([str(path)], capsys)
    assert code == 0, err
    assert "Format: hh-rlhf (Anthropic HH-RLHF transcripts), detected from its columns: chosen, rejected." in out
    assert "Every column is used." in out
    assert "Into pairwise project 'default'" in out
    assert "Imported 6 pairs as labels with source 'imported' (12 responses, 6 new prompts)" in out

    with session_scope(engine, read_only=True) as s:
        labels = list(s.scalars(select(Label).order_by(Label.id)))
        assert {(x.kind, x.source, x.producer, x.user_id) for x in labels} == {
            ("pairwise", "imported", "import:hh-rlhf", None)}
        for number, label in enumerate(labels, start=1):
            assert label.provenance["file"] == "hh.jsonl" and label.provenance["format"] == "hh-rlhf"
            assert (label.provenance["row"], label.provenance["where"]) == (number, f"line {number}")
            assert len(label.provenance["sha256"]) == 64 and len(label.submission_id) == 64
            item = label.item
            assert item.project_id == s.scalar(select(Project.id).where(Project.name == "default"))
            chosen = item.response_a if label.choice == "a" else item.response_b
            assert chosen.text in CHOSEN
        # which side is chosen varies, so no position wins by construction
        assert {x.choice for x in labels} == {"a", "b"}
        version = s.scalar(select(PolicyVersion).where(PolicyVersion.name == "ext:imported"))
        assert version.status == "external"
        assert {r.policy_version_id for r in s.scalars(select(Response))} == {version.id}
        assert s.scalar(select(AuditLog).where(AuditLog.action == "import")).details["labels"] == 6

        rows = export_rows(session=s, fmt="dpo", include_val=True)
    assert len(rows) == 6 and {r["rule"] for r in rows} == {"pairwise:majority"}
    assert {r["chosen"][0]["content"] for r in rows} == CHOSEN
    assert all(r["rejected"][0]["content"] not in CHOSEN for r in rows)
    multi = next(r for r in rows if r["chosen"][0]["content"] == "Blue.")
    assert [m["role"] for m in multi["prompt"]] == ["user", "assistant", "user"]


def test_reimporting_the_same_file_writes_nothing(use_db, engine, tmp_path, capsys):
    path = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    assert run([str(path)], capsys)[0] == 0
    before = counts(engine)
    # the same rows again, one of them twice, in a file of another name
    again = write_jsonl(tmp_path / "copy.jsonl", [*HH_ROWS, HH_ROWS[0]])
    code, out, _ = run([str(again), "--format", "hh-rlhf"], capsys)
    assert code == 0
    assert "as asked; columns: chosen, rejected" in out
    assert "Imported no new pairs, skipped 6 already imported, 1 repeated in the file." in out
    assert counts(engine) == before


def test_trl_conversational_parquet_lists_unused_columns(use_db, engine, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def msg(role, content):
        return {"role": role, "content": content}

    rows = [
        {"id": "r1", "prompt": [msg("system", "Be brief."), msg("user", "Largest planet?")],
         "chosen": [msg("assistant", "Jupiter.")], "rejected": [msg("assistant", "Mars.")], "score_chosen": 9.0},
        {"id": "r2", "prompt": [msg("user", "Smallest prime?")],
         "chosen": [msg("assistant", "2.")], "rejected": [msg("assistant", "1.")], "score_chosen": 8.0},
    ]
    path = tmp_path / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    code, out, err = run([str(path), "--project", "imported-pairs"], capsys)
    assert code == 0, err
    assert "Format: trl (TRL preference: prompt, chosen, rejected), detected from its columns: " \
           "id, prompt, chosen, rejected, score_chosen." in out
    assert "Columns not used: id, score_chosen." in out
    assert "Into pairwise project 'imported-pairs' (created)." in out
    with session_scope(engine, read_only=True) as s:
        project = s.scalar(select(Project).where(Project.name == "imported-pairs"))
        assert project.task_type == "pairwise"
        labels = list(s.scalars(select(Label).order_by(Label.id)))
        assert [x.provenance["where"] for x in labels] == ["row 1", "row 2"]
        rows_out = export_rows(session=s, fmt="dpo", project="imported-pairs", include_val=True)
    by_chosen = {r["chosen"][0]["content"]: r for r in rows_out}
    assert set(by_chosen) == {"Jupiter.", "2."}
    assert by_chosen["Jupiter."]["rejected"][0]["content"] == "Mars."
    assert by_chosen["Jupiter."]["prompt"][0] == {"role": "system", "content": "Be brief."}


def test_trl_implicit_prompt_jsonl(use_db, engine, tmp_path, capsys):
    user = {"role": "user", "content": "Two plus two?"}
    path = write_jsonl(tmp_path / "implicit.jsonl", [
        {"chosen": [user, {"role": "assistant", "content": "Four."}],
         "rejected": [user, {"role": "assistant", "content": "Five."}]}])
    code, out, _ = run([str(path)], capsys)
    assert code == 0 and "Format: trl" in out
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(Prompt.messages)) == [user]
        rows = export_rows(session=s, fmt="dpo", include_val=True)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [("Four.", "Five.")]


def test_ultrafeedback_becomes_rating_items_under_external_models(use_db, engine, tmp_path, capsys):
    path = write_jsonl(tmp_path / "uf.jsonl", [uf_row("Name a prime.", [5, 3, 1, 4]),
                                                uf_row("Name a colour.", [2, 4, 5, 1]),
                                                uf_row("Too few.", [5, 1])])
    before = counts(engine)
    code, out, err = run([str(path)], capsys)
    assert code == 2
    assert "line 3: 2 completions; a rating item holds 3 to 8 responses" in err
    assert "Nothing imported: 1 bad row" in out
    assert counts(engine) == before

    code, out, err = run([str(path), "--skip-invalid"], capsys)
    assert code == 0, err
    assert "Format: ultrafeedback (UltraFeedback: completions with their ratings), detected from its columns: " \
           "source, instruction, models, completions." in out
    assert "Columns not used: models." in out
    assert "Fields not used: completions[].critique, completions[].fine-grained_score, " \
           "completions[].overall_score." in out
    assert ("Into rating project 'ultrafeedback' (created; aspects instruction_following, truthfulness, honesty, "
            "helpfulness; K=4).") in out
    assert "Imported 2 rated items" in out and "skipped 1 bad row (line 3:" in out
    with session_scope(engine, read_only=True) as s:
        project = s.scalar(select(Project).where(Project.name == "ultrafeedback"))
        assert (project.task_type, project.k, project.aspects) == ("rating", 4, list(DEFAULT_ASPECTS))
        label = s.scalar(select(Label).order_by(Label.id).limit(1))
        assert (label.kind, label.source, label.producer) == ("rating", "imported", "import:ultrafeedback")
        assert [r["scores"]["helpfulness"] for r in label.ratings] == [5, 3, 1, 4]
        assert label.ratings[0]["rationales"]["honesty"] == "honesty of Name a prime. answer by gpt-4"
        positions = s.execute(select(ItemResponse.position, Response.text, PolicyVersion.name)
                              .join(Response, Response.id == ItemResponse.response_id)
                              .join(PolicyVersion, PolicyVersion.id == Response.policy_version_id)
                              .where(ItemResponse.item_id == label.item_id).order_by(ItemResponse.position)).all()
        assert [(p, name) for p, _, name in positions] == [(0, "ext:gpt-4"), (1, "ext:llama-2-7b-chat"),
                                                           (2, "ext:alpaca-7b"), (3, "ext:falcon-40b-instruct")]
        assert positions[0][1] == "Name a prime. answer by gpt-4"
        assert {v.status for v in s.scalars(select(PolicyVersion))} == {"external"}
        rows = export_rows(session=s, fmt="dpo", project="ultrafeedback", include_val=True)
    assert {r["rule"] for r in rows} == {"rating:mean_margin"}
    assert {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows} >= {
        ("Name a prime. answer by gpt-4", "Name a prime. answer by alpaca-7b")}


def test_ultrafeedback_into_a_project_that_does_not_fit(use_db, engine, tmp_path, capsys):
    with session_scope(engine) as s:
        create_project(session=s, actor=CLI, name="ranked", task_type="rank")
        create_project(session=s, actor=CLI, name="two-aspects", task_type="rating", aspects=["helpfulness", "honesty"])
    path = write_jsonl(tmp_path / "uf.jsonl", [uf_row("Name a prime.", [5, 3, 1, 4])])
    code, _, err = run([str(path), "--project", "ranked"], capsys)
    assert code == 2 and "Project 'ranked' is a rank project; rated completions go into a rating project" in err
    code, out, err = run([str(path), "--project", "two-aspects"], capsys)
    assert code == 2
    assert "Into rating project 'two-aspects' (aspects helpfulness, honesty)." in out
    assert "line 1: rated on instruction_following, truthfulness, honesty, helpfulness; project 'two-aspects' " \
           "rates helpfulness, honesty" in err
    path = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS[:1])
    code, _, err = run([str(path), "--project", "two-aspects"], capsys)
    assert code == 2 and "preference pairs go into a pairwise project" in err
    assert counts(engine)["Label"] == 0


# --- the error rule, caps and empty files -----------------------------------------------------


def test_a_bad_row_imports_nothing_and_skip_invalid_imports_the_rest(use_db, engine, tmp_path, capsys):
    rows = [{"prompt": "Q1?", "chosen": "yes", "rejected": "no"},
            {"prompt": "Q2?", "chosen": "same", "rejected": "same"},
            "not an object",
            {"prompt": "Q3?", "chosen": "good", "rejected": "bad"}]
    path = write_jsonl(tmp_path / "trl.jsonl", rows)
    before = counts(engine)
    code, out, err = run([str(path), "--project", "new-pairs"], capsys)
    assert code == 2
    assert "line 2: 'chosen' and 'rejected' are the same answer" in err
    assert "line 3: expected a JSON object, got a string" in err
    assert "Format: trl" in out and "Nothing imported: 2 bad rows" in out
    assert "nothing was imported (fix the rows above, or pass --skip-invalid" in err
    assert counts(engine) == before  # no prompt, response, item, version or project

    code, out, err = run([str(path), "--project", "new-pairs", "--skip-invalid"], capsys)
    assert code == 0, err
    assert "Imported 2 pairs" in out and "skipped 2 bad rows" in out
    assert counts(engine)["Label"] == 2


def test_skip_invalid_that_imports_nothing_fails(use_db, engine, tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Q?", "chosen": "x", "rejected": "x"},
                                                {"prompt": "", "chosen": "a", "rejected": "b"}])
    before = counts(engine)
    code, out, err = run([str(path), "--skip-invalid"], capsys)
    assert code == 2
    assert "Nothing imported: no row is valid (2 bad rows (line 1:" in out
    assert "error: nothing was imported: no row of the file is valid" in err
    assert counts(engine) == before
    # prompt formats likewise
    path = write_jsonl(tmp_path / "bad-alpaca.jsonl", [{"instruction": "", "output": "x"}])
    code, out, err = run([str(path), "--skip-invalid"], capsys)
    assert code == 2 and "no row of the file is valid" in err


def test_empty_files_and_caps(use_db, engine, tmp_path, capsys, monkeypatch):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    code, _, err = run([str(tmp_path / "empty.jsonl")], capsys)
    assert code == 2 and "empty.jsonl is empty: there are no rows to import" in err
    (tmp_path / "header.csv").write_text("prompt,chosen,rejected\n")
    code, _, err = run([str(tmp_path / "header.csv")], capsys)
    assert code == 2 and "header.csv is empty" in err

    path = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    monkeypatch.setenv("IMPORT_MAX_ROWS", "5")
    code, _, err = run([str(path)], capsys)
    assert code == 2 and "more than 5 rows, the import limit (IMPORT_MAX_ROWS)" in err
    monkeypatch.setenv("IMPORT_MAX_ROWS", "100")
    monkeypatch.setenv("IMPORT_MAX_BYTES", "100")
    code, _, err = run([str(path)], capsys)
    assert code == 2 and "IMPORT_MAX_BYTES" in err
    monkeypatch.delenv("IMPORT_MAX_BYTES")

    weird = write_jsonl(tmp_path / "weird.jsonl", [{"text": "x", "\x1b[2Jlabel": 1}])
    code, _, err = run([str(weird)], capsys)
    assert code == 2 and "Cannot tell the format of weird.jsonl from its columns (text, '\\x1b[2Jlabel')" in err
    code, _, err = run([str(weird), "--format", "ultrafeedback"], capsys)
    assert code == 2 and "not in the ultrafeedback format: it has no instruction and no completions column" in err
    code, _, err = run([str(path), "--update"], capsys)
    assert code == 2 and "--update replaces prompts' references, which hh-rlhf files do not carry" in err
    assert counts(engine)["Label"] == 0


# --- prompt formats ----------------------------------------------------------------------------


def test_mt_bench_sharegpt_and_alpaca_become_prompts(use_db, engine, tmp_path, capsys):
    mt = write_jsonl(tmp_path / "question.jsonl", [
        {"question_id": 81, "category": "writing", "turns": ["Write a haiku about rain.", "Now one about sun."]},
        {"question_id": 111, "category": "math", "turns": ["What is 7 * 6?", "And 7 * 7?"], "reference": ["42", "49"]},
    ])
    code, out, err = run([str(mt)], capsys)
    assert code == 0, err
    assert "Format: mt-bench (FastChat / MT-bench questions), detected from its columns: " \
           "question_id, category, turns, reference." in out
    assert "Columns not used: question_id." in out
    assert "2 questions have more than one turn: only the first turn of each is imported" in out
    assert "Imported 2 prompts." in out

    sharegpt = write_jsonl(tmp_path / "sharegpt.jsonl", [
        {"id": "c1", "conversations": [{"from": "human", "value": "Hi!"}, {"from": "gpt", "value": "Hello."},
                                       {"from": "human", "value": "Tell a joke."},
                                       {"from": "gpt", "value": "Knock knock."}]},
        {"id": "c2", "conversations": [{"from": "system", "value": "Be terse."}, {"from": "human", "value": "Why?"}]},
    ])
    code, out, err = run([str(sharegpt)], capsys)
    assert code == 0, err
    assert "Format: sharegpt (ShareGPT conversations)" in out and "Columns not used: id." in out
    assert "The final gpt answer of 1 row became the prompt's reference." in out

    alpaca = tmp_path / "alpaca.csv"  # CSV: a header without a prompt column is fine here
    alpaca.write_text("instruction,input,output\nTranslate to French.,cat,chat\nName a fruit.,,apple\n")
    code, out, err = run([str(alpaca)], capsys)
    assert code == 0, err
    assert "Format: alpaca (Alpaca instructions), detected from its columns: instruction, input, output." in out
    assert "Every column is used." in out and "Imported 2 prompts." in out

    with session_scope(engine, read_only=True) as s:
        prompts = {p.text: p for p in s.scalars(select(Prompt))}
    assert prompts["Write a haiku about rain."].tags == ["writing"]
    assert (prompts["What is 7 * 6?"].tags, prompts["What is 7 * 6?"].reference) == (["math"], "42")
    assert prompts["Write a haiku about rain."].reference is None
    joke = prompts["Tell a joke."]
    assert [m["role"] for m in joke.messages] == ["user", "assistant", "user"] and joke.reference == "Knock knock."
    assert prompts["Why?"].messages == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Why?"}]
    assert prompts["Translate to French.\n\ncat"].reference == "chat"
    assert prompts["Name a fruit."].reference == "apple"
    assert counts(engine)["Label"] == 0

    code, _, err = run([str(alpaca), "--project", "default"], capsys)
    assert code == 2 and "belong to no project" in err


def test_update_replaces_changed_references(use_db, engine, tmp_path, capsys):
    path = write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "2+2?", "output": "5"},
                                                   {"instruction": "3+3?", "output": "6"}])
    assert run([str(path)], capsys)[0] == 0
    path = write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "2+2?", "output": "4"},
                                                   {"instruction": "3+3?", "output": "6"},
                                                   {"instruction": "4+4?"}])
    code, out, _ = run([str(path)], capsys)
    assert code == 0
    assert "Imported 1 prompt, skipped 2 duplicates. The file gives 1 stored prompt another reference, not applied " \
           "(`python -m feedback import FILE --update` applies it)." in out
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(Prompt.reference).where(Prompt.text == "2+2?")) == "5"
    code, out, _ = run([str(path), "--update"], capsys)
    assert code == 0 and "Imported 0 prompts, updated 1 reference, skipped 2 duplicates." in out
    with session_scope(engine, read_only=True) as s:
        assert {p.text: p.reference for p in s.scalars(select(Prompt))} == {"2+2?": "4", "3+3?": "6", "4+4?": None}


def test_a_prompt_row_with_an_escape_sequence_is_reported_escaped(use_db, engine, tmp_path, capsys):
    path = write_jsonl(tmp_path / "sharegpt.jsonl", [
        {"conversations": [{"from": "\x1b[31m" + "x" * 100, "value": "hi"}]}])
    code, _, err = run([str(path)], capsys)
    assert code == 2
    line = next(x for x in err.splitlines() if "line 1" in x)
    assert "\x1b" not in line and "\\x1b[31m" in line and len(line) < 140


def test_the_service_refuses_an_annotator_and_unknown_formats(engine, tmp_path):
    from feedback.actors import Actor
    from feedback.errors import PermissionDenied
    from feedback.users import create_user

    path = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS)
    with session_scope(engine) as s:
        ann = create_user(session=s, username="ann", role="annotator", password="long enough pw", actor=CLI)
    with pytest.raises(PermissionDenied), session_scope(engine) as s:
        import_file(session=s, actor=Actor.signed_in(ann), path=path)
    with pytest.raises(UserError, match="Unknown import format"), session_scope(engine) as s:
        import_file(session=s, actor=CLI, path=path, fmt="csv")


def test_an_external_model_is_never_promoted_or_sampled(engine):
    from dataclasses import replace

    from feedback.policies import ensure_base_policy, promote
    from feedback.sampling import SamplingConfig, run_sampling

    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        s.add(PolicyVersion(name="ext:gpt-x", base_model="gpt-x", status="external"))
    with session_scope(engine) as s, pytest.raises(UserError, match="outside model"):
        promote(session=s, name="ext:gpt-x", actor=CLI)
    with pytest.raises(UserError, match="outside model"):
        run_sampling(engine=engine, config=replace(SamplingConfig(limit=1), policy_version="ext:gpt-x"))
