"""Hugging Face datasets out, metadata columns and export filters (issue 12, part 4), on real
SQLite and Postgres databases: every row kind can carry ids that join back to the database, the
policy versions and finish reasons of its completions, its labels' sources and producers, votes,
agreement and strength, split and project; the filters narrow by policy version, time and split;
`export_dataset` writes a DatasetDict (test from val only when asked) and pushes it to the hub
only with HF_TOKEN (the hub is unreachable here: the push is recorded at DatasetDict.push_to_hub).
The acceptance tests train TRL's trainers on metadata-carrying files and on `load_from_disk`.
"""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from cli import main
from db.engine import make_engine, session_scope
from db.models import Item, ItemResponse, Label, PolicyVersion, Prompt, Response
from feedback.actors import CLI
from feedback.errors import UserError
from feedback.export import export_dataset, export_rows, to_jsonl, write_rows
from feedback.policies import ensure_base_policy
from feedback.projects import create_project, default_project
from feedback.prompts import content_hash
from feedback.rows import METADATA_COLUMNS
from feedback.users import create_user
from tests.trl_check import causal_lm, train_and_check

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
TRL_COLUMNS = {"dpo": ["prompt", "chosen", "rejected"], "reward": ["prompt", "chosen", "rejected", "margin"],
               "kto": ["prompt", "completion", "label"], "sft": ["prompt", "completion"]}

# --- fixture data -----------------------------------------------------------------------------


def fill_database(engine) -> dict[str, int]:
    """Two policy versions (v0, v1) and, with the ids the tests join back to:
    - pair1 (train): a by v0 (finish "stop") vs b by v1 ("length"), voted 2-1 for a: alice much,
      bob slight, the judge for b (much);
    - pair2 (train): both by v1, both votes for b (no strength), made long ago;
    - pair3 (val): both by v0, one vote for a;
    - thumbs (train): pair1's response a alone, thumbs up, up, down;
    - rank (train, project "ranked"): K=3 by v0, v1, v0; position 0 best, position 1 worst;
    - edit (train, project "fixes"): a v0 response, rewritten by alice."""
    ids: dict[str, int] = {}
    with session_scope(engine) as s:
        users = {name: create_user(session=s, username=name, role="annotator", password="correct-horse-1",
                                   actor=CLI).id for name in ("alice", "bob", "carol")}
        v0 = ensure_base_policy(session=s, actor=CLI)
        v1 = PolicyVersion(name="v1", base_model=v0.base_model, parent_id=v0.id, stage="dpo")
        s.add(v1)
        s.flush()
        version = {"v0": v0.id, "v1": v1.id}

        def prompt(name: str, split: str = "train") -> Prompt:
            messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Question {name}?"}]
            p = Prompt(text=messages[-1]["content"], messages=messages, content_hash=content_hash(messages),
                       split=split)
            s.add(p)
            s.flush()
            ids[f"{name}.prompt"] = p.id
            return p

        def response(p: Prompt, by: str, text: str, finish: str | None = "stop") -> Response:
            r = Response(prompt_id=p.id, policy_version_id=version[by], text=text, finish_reason=finish)
            s.add(r)
            s.flush()
            return r

        def item(name: str, **columns) -> Item:
            i = Item(**columns)
            s.add(i)
            s.flush()
            ids[name] = i.id
            return i

        def label(name: str, on: Item, voter: str, **values) -> None:
            human = voter in users
            row = Label(item_id=on.id, source="human" if human else "judge", user_id=users.get(voter),
                        producer=None if human else "test-judge", submission_id=f"sub-{name}", **values)
            s.add(row)
            s.flush()
            ids[name] = row.id

        pairs = default_project(session=s).id
        p1 = prompt("one")
        a1, b1 = response(p1, "v0", "Paris."), response(p1, "v1", "Lyon, I think, because", "length")
        pair1 = item("pair1", kind="pair", project_id=pairs, prompt_id=p1.id, response_a_id=a1.id,
                     response_b_id=b1.id)
        label("pair1.alice", pair1, "alice", kind="pairwise", choice="a", strength="much", shown_order="ab")
        label("pair1.bob", pair1, "bob", kind="pairwise", choice="a", strength="slight", shown_order="ba")
        label("pair1.judge", pair1, "judge", kind="pairwise", choice="b", strength="much", shown_order="ab")

        p2 = prompt("two")
        a2, b2 = response(p2, "v1", "Four."), response(p2, "v1", "Two plus two is four.")
        pair2 = item("pair2", kind="pair", project_id=pairs, prompt_id=p2.id, response_a_id=a2.id,
                     response_b_id=b2.id)
        label("pair2.alice", pair2, "alice", kind="pairwise", choice="b", shown_order="ab", created_at=LONG_AGO)
        label("pair2.bob", pair2, "bob", kind="pairwise", choice="b", shown_order="ba", created_at=LONG_AGO)

        p3 = prompt("three", split="val")
        a3, b3 = response(p3, "v0", "Blue."), response(p3, "v0", "Green.")
        pair3 = item("pair3", kind="pair", project_id=pairs, prompt_id=p3.id, response_a_id=a3.id,
                     response_b_id=b3.id)
        label("pair3.alice", pair3, "alice", kind="pairwise", choice="a", shown_order="ab")

        thumbs = item("thumbs", kind="single", project_id=default_project(session=s, kind="single").id,
                      prompt_id=p1.id, response_a_id=a1.id)
        for voter, thumb in (("alice", "up"), ("bob", "up"), ("carol", "down")):
            label(f"thumbs.{voter}", thumbs, voter, kind="binary", thumb=thumb)

        ranked = create_project(session=s, actor=CLI, name="ranked", task_type="rank", k=3)
        p4 = prompt("four")
        ranks = [response(p4, by, f"Answer {n}.") for n, by in enumerate(("v0", "v1", "v0"))]
        rank = item("rank", kind="rank", project_id=ranked.id, prompt_id=p4.id, response_a_id=ranks[0].id)
        s.add_all([ItemResponse(item_id=rank.id, position=n, response_id=r.id) for n, r in enumerate(ranks)])
        label("rank.alice", rank, "alice", kind="rank", ranking=[1, 3, 2], shown_permutation=[0, 1, 2])

        fixes = create_project(session=s, actor=CLI, name="fixes", task_type="edit")
        p5 = prompt("five")
        original = response(p5, "v0", "Teh answer.", finish=None)
        edit = item("edit", kind="edit", project_id=fixes.id, prompt_id=p5.id, response_a_id=original.id)
        label("edit.alice", edit, "alice", kind="edit", edited_text="The answer.", edit_distance=2)
    return ids


@pytest.fixture
def filled(engine):
    return engine, fill_database(engine)


def rows(engine, fmt: str, **kwargs) -> list[dict]:
    with session_scope(engine, read_only=True) as s:
        return export_rows(session=s, fmt=fmt, **kwargs)


def by_item(found: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in found:
        out.setdefault(row["item_id"], []).append(row)
    return out


def text(messages: list[dict]) -> str:
    [message] = messages
    assert message["role"] == "assistant"
    return message["content"]


# --- metadata columns (SQLite and Postgres) -----------------------------------------------------


def test_preference_rows_carry_metadata_that_joins_back(filled):
    engine, ids = filled
    dpo = rows(engine, "dpo", metadata=True)
    for row in dpo:  # TRL's columns and rule first, then the metadata columns in their order
        assert list(row) == [*TRL_COLUMNS["dpo"], "rule", *METADATA_COLUMNS]
    got = by_item(dpo)
    assert set(got) == {ids["pair1"], ids["pair2"], ids["rank"], ids["edit"]}  # pair3 is val

    [pair1] = got[ids["pair1"]]
    assert pair1["prompt_id"] == ids["one.prompt"]
    assert pair1["label_ids"] == [ids["pair1.alice"], ids["pair1.bob"], ids["pair1.judge"]]
    assert (pair1["votes"], pair1["agreement"]) == (3, pytest.approx(2 / 3))  # 2-1 for a
    assert pair1["strength"] == pytest.approx(0.75)  # the agreeing votes: much 1.0, slight 0.5
    assert (pair1["sources"], pair1["producers"]) == (["human", "judge"], ["test-judge"])
    assert text(pair1["chosen"]) == "Paris."
    assert pair1["policy_versions"] == ["v0", "v1"] and pair1["finish_reasons"] == ["stop", "length"]
    assert (pair1["split"], pair1["project"]) == ("train", "default")

    [pair2] = got[ids["pair2"]]  # chosen is b: the columns follow the row's completions
    assert text(pair2["chosen"]) == "Two plus two is four."
    assert pair2["policy_versions"] == ["v1", "v1"]
    assert (pair2["votes"], pair2["agreement"], pair2["strength"]) == (2, 1.0, 0.0)  # no strength given
    assert pair2["sources"] == ["human"] and pair2["producers"] == []

    [rank] = got[ids["rank"]]  # best (position 0, v0) over worst (position 1, v1)
    assert (text(rank["chosen"]), text(rank["rejected"])) == ("Answer 0.", "Answer 1.")
    assert rank["policy_versions"] == ["v0", "v1"]
    assert (rank["votes"], rank["agreement"], rank["strength"]) == (1, 1.0, None)  # strength: pairwise only
    assert (rank["project"], rank["label_ids"]) == ("ranked", [ids["rank.alice"]])

    [edit] = got[ids["edit"]]  # the rewrite was made by a person, not a policy
    assert edit["policy_versions"] == [None, "v0"] and edit["finish_reasons"] == [None, None]
    assert (edit["project"], edit["label_ids"], edit["votes"]) == ("fixes", [ids["edit.alice"]], 1)

    with session_scope(engine, read_only=True) as s:  # every id joins back to what the row says
        for row in dpo:
            item = s.get(Item, row["item_id"])
            assert item.prompt_id == row["prompt_id"]
            assert [m["content"] for m in s.get(Prompt, row["prompt_id"]).messages] == [
                m["content"] for m in row["prompt"]]
            labels = s.scalars(select(Label).where(Label.id.in_(row["label_ids"]))).all()
            assert len(labels) == row["votes"] and {label.item_id for label in labels} == {item.id}
            assert sorted({label.source for label in labels}) == row["sources"]


@pytest.mark.parametrize("fmt", ["dpo", "reward", "kto", "sft"])
def test_without_metadata_rows_are_unchanged(filled, fmt):
    """The metadata columns are added and nothing else changes; without them, rows are as before."""
    engine, _ = filled
    settings = {"kto_from_pairs": True} if fmt == "kto" else {}
    plain, rich = rows(engine, fmt, **settings), rows(engine, fmt, metadata=True, **settings)
    assert plain and all(list(row) == [*TRL_COLUMNS[fmt], "rule"] for row in plain)
    stripped = [{k: v for k, v in row.items() if k not in METADATA_COLUMNS} for row in rich]
    assert to_jsonl(stripped) == to_jsonl(plain)
    assert all(set(row) - set(METADATA_COLUMNS) == set(TRL_COLUMNS[fmt]) | {"rule"} for row in rich)


def test_kto_and_sft_rows_carry_their_completions_metadata(filled):
    engine, ids = filled
    kto = by_item(rows(engine, "kto", metadata=True, kto_from_pairs=True))
    [thumbs] = kto[ids["thumbs"]]
    assert thumbs["label"] is True and thumbs["rule"] == "binary:majority"
    assert (thumbs["votes"], thumbs["agreement"], thumbs["strength"]) == (3, pytest.approx(2 / 3), None)
    assert thumbs["policy_versions"] == ["v0"] and thumbs["finish_reasons"] == ["stop"]
    assert thumbs["label_ids"] == [ids["thumbs.alice"], ids["thumbs.bob"], ids["thumbs.carol"]]
    assert thumbs["project"] == "default-binary"
    # An unpaired pair: chosen desirable (a, by v0), rejected not (b, by v1), each with its own version.
    unpaired = {row["label"]: row for row in kto[ids["pair1"]]}
    assert unpaired[True]["policy_versions"] == ["v0"] and unpaired[False]["policy_versions"] == ["v1"]
    assert unpaired[False]["finish_reasons"] == ["length"]
    assert unpaired[True]["agreement"] == unpaired[False]["agreement"] == pytest.approx(2 / 3)
    edits = {row["label"]: row for row in kto[ids["edit"]]}
    assert edits[True]["policy_versions"] == [None] and edits[False]["policy_versions"] == ["v0"]

    sft = by_item(rows(engine, "sft", metadata=True))
    assert {item_id: [r["policy_versions"] for r in found] for item_id, found in sft.items()} == {
        ids["edit"]: [[None]], ids["pair1"]: [["v0"]], ids["pair2"]: [["v1"]], ids["rank"]: [["v0"]]}
    assert sft[ids["pair1"]][0]["votes"] == 3 and sft[ids["rank"]][0]["project"] == "ranked"


def test_soft_rows_each_carry_their_direction_s_agreement(filled):
    engine, ids = filled
    pair1 = by_item(rows(engine, "dpo", metadata=True, rule="soft"))[ids["pair1"]]
    towards = sorted((r["agreement"], r["policy_versions"][0], r["strength"]) for r in pair1)
    assert towards == [(pytest.approx(1 / 3), "v1", 1.0), (pytest.approx(2 / 3), "v0", 0.75),
                       (pytest.approx(2 / 3), "v0", 0.75)]


# --- filters ------------------------------------------------------------------------------------


def test_policy_version_filter_keeps_items_made_only_by_those_versions(filled):
    engine, ids = filled
    assert set(by_item(rows(engine, "dpo", metadata=True, policy_versions=["v1"]))) == {ids["pair2"]}
    # pair1 (v0 against v1) and the rank item (v0, v1, v0) have a response by another version
    assert set(by_item(rows(engine, "dpo", metadata=True, policy_versions=["v0"]))) == {ids["edit"]}
    assert set(by_item(rows(engine, "kto", metadata=True, policy_versions=["v0"]))) == {ids["thumbs"], ids["edit"]}
    both = by_item(rows(engine, "dpo", metadata=True, policy_versions=["v0", "v1"]))
    assert set(both) == {ids["pair1"], ids["pair2"], ids["rank"], ids["edit"]}
    with pytest.raises(UserError, match="No policy version called v9"):
        rows(engine, "dpo", policy_versions=["v1", "v9"])


def test_since_filter_counts_only_later_labels(filled):
    engine, ids = filled
    assert ids["pair2"] in by_item(rows(engine, "dpo", metadata=True))
    for since in ("2021-01-01", "2021-01-01T00:00:00+00:00", datetime(2021, 1, 1)):
        later = by_item(rows(engine, "dpo", metadata=True, since=since))
        assert set(later) == {ids["pair1"], ids["rank"], ids["edit"]}  # pair2's votes are from 2020
    with pytest.raises(UserError, match="not an ISO date"):
        rows(engine, "dpo", since="last tuesday")


def test_split_source_and_project_filters(filled):
    engine, ids = filled
    [val] = rows(engine, "dpo", metadata=True, split="val")
    assert (val["item_id"], val["split"], val["label_ids"]) == (ids["pair3"], "val", [ids["pair3.alice"]])
    assert rows(engine, "dpo", split="train") == rows(engine, "dpo")
    assert {r["split"] for r in rows(engine, "dpo", metadata=True, include_val=True)} == {"train", "val"}
    with pytest.raises(UserError, match="split"):
        rows(engine, "dpo", split="test")

    [judge] = rows(engine, "dpo", metadata=True, sources=["judge"])  # the judge alone prefers b
    assert (judge["label_ids"], judge["votes"], judge["agreement"]) == ([ids["pair1.judge"]], 1, 1.0)
    assert judge["policy_versions"] == ["v1", "v0"] and judge["producers"] == ["test-judge"]
    assert {r["item_id"] for r in rows(engine, "reward", metadata=True, project="ranked")} == {ids["rank"]}


# --- datasets: save_to_disk, test split, push to hub --------------------------------------------


def dataset(engine, **kwargs):
    with session_scope(engine, read_only=True) as s:
        return export_dataset(session=s, **kwargs)


def test_dataset_dict_round_trips_through_load_from_disk(filled, tmp_path):
    from datasets import List, Value, load_from_disk

    engine, ids = filled
    out = tmp_path / "ds"
    made = dataset(engine, fmt="dpo", to_dir=out, metadata=True)
    back = load_from_disk(str(out))
    assert list(back) == list(made) == ["train"]  # no test split unless asked
    assert not out.with_name("ds.tmp").exists()
    chat = List({"role": Value("string"), "content": Value("string")})
    features = back["train"].features
    assert features["prompt"] == features["chosen"] == features["rejected"] == chat
    assert features["policy_versions"] == features["finish_reasons"] == List(Value("string"))
    assert features["label_ids"] == List(Value("int64")) and features["strength"] == Value("float64")
    assert back["train"].to_list() == rows(engine, "dpo", metadata=True)

    with_test = dataset(engine, fmt="dpo", to_dir=out, with_test=True, metadata=True)  # replaces the first
    back = load_from_disk(str(out))
    assert list(back) == ["train", "test"] and back["train"].num_rows == with_test["train"].num_rows == 4
    [val] = back["test"].to_list()
    assert (val["item_id"], val["split"]) == (ids["pair3"], "val")
    assert back["test"].features == back["train"].features

    # A split without labels is empty but typed like train; KTO's label stays a bool.
    kto = dataset(engine, fmt="kto", to_dir=tmp_path / "kto", with_test=True, metadata=True, project="fixes")
    assert kto["test"].num_rows == 0 and kto["test"].features == kto["train"].features
    assert kto["train"].features["label"] == Value("bool")
    plain = dataset(engine, fmt="sft", to_dir=tmp_path / "sft")  # without metadata: TRL's columns and rule
    assert plain["train"].column_names == ["prompt", "completion", "rule"]


def test_dataset_refusals(filled, tmp_path):
    engine, _ = filled
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not a dataset directory"):
        dataset(engine, fmt="dpo", to_dir=tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    for wrong in ({"split": "val"}, {"include_val": True}):
        with pytest.raises(UserError, match="--with-test"):
            dataset(engine, fmt="dpo", to_dir=tmp_path / "x", **wrong)
    with pytest.raises(UserError, match="Say where"):
        dataset(engine, fmt="dpo")
    with pytest.raises(UserError, match="No labels on train prompts"):
        dataset(engine, fmt="dpo", to_dir=tmp_path / "x", policy_versions=["v0"], project="ranked")


@pytest.fixture
def hub(monkeypatch):
    """DatasetDict.push_to_hub, recorded instead of sent (the hub is unreachable here)."""
    from datasets import DatasetDict

    calls = []
    monkeypatch.setattr(DatasetDict, "push_to_hub", lambda self, repo_id, **kw: calls.append((self, repo_id, kw)))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return calls


def test_push_to_hub_needs_hf_token(filled, hub, tmp_path, monkeypatch):
    from feedback.jobs import secret_env_vars

    engine, _ = filled
    with pytest.raises(UserError, match="HF_TOKEN"):
        dataset(engine, fmt="dpo", to_dir=tmp_path / "ds", push_to_hub="team/prefs")
    assert hub == [] and not (tmp_path / "ds").exists()  # refused before any work

    monkeypatch.setenv("HF_TOKEN", "hf_test_not_a_real_token")
    made = dataset(engine, fmt="dpo", push_to_hub="team/prefs", with_test=True, metadata=True)
    [(pushed, repo, options)] = hub
    assert pushed is made and repo == "team/prefs" and list(pushed) == ["train", "test"]
    assert options == {"token": "hf_test_not_a_real_token", "private": True}
    assert "HF_TOKEN" in secret_env_vars()  # so workers never inherit it


def test_cli_export_flags(filled, use_db, hub, tmp_path, capsys, monkeypatch):
    from datasets import load_from_disk

    engine, ids = filled
    out = tmp_path / "v1.jsonl"
    assert main(["export", "--format", "dpo", "--metadata", "--policy-version", "v1", "--out", str(out)]) == 0
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert (row["item_id"], row["policy_versions"]) == (ids["pair2"], ["v1", "v1"])
    assert main(["export", "--format", "dpo", "--split", "val", "--out", str(out)]) == 0
    assert "wrote 1 dpo rows" in capsys.readouterr().out

    ds = tmp_path / "ds"
    assert main(["export", "--format", "dpo", "--metadata", "--since", "2021-01-01", "--to-dataset", str(ds),
                 "--with-test"]) == 0
    assert capsys.readouterr().out.strip() == f"dpo dataset of 3 train, 1 test rows saved to {ds}"
    assert {r["item_id"] for r in load_from_disk(str(ds))["train"]} == {ids["pair1"], ids["rank"], ids["edit"]}

    monkeypatch.setenv("HF_TOKEN", "hf_test_not_a_real_token")
    assert main(["export", "--format", "kto", "--source", "human", "--push-to-hub", "team/prefs"]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == "kto dataset of 3 train rows pushed to the hub as team/prefs"
    assert "hf_test" not in printed.out + printed.err and hub[0][1] == "team/prefs"

    for flags, message in [
        (["--out", str(out), "--to-dataset", str(ds)], "Say where"),
        ([], "Say where"),
        (["--out", str(out), "--with-test"], "--with-test adds a test split"),
        (["--to-dataset", str(ds), "--split", "val"], "--split and --include-val are for file exports"),
        (["--out", str(out), "--since", "yesterday"], "not an ISO date"),
        (["--out", str(out), "--policy-version", "v7"], "No policy version called v7"),
        (["--out", str(out), "--policy-version", "v1", "--project", "ranked"], "matching these filters"),
    ]:
        assert main(["export", "--format", "dpo", *flags]) == 2, flags
        assert message in capsys.readouterr().err


# --- acceptance: metadata-carrying files and dataset dirs train TRL's trainers -------------------


@pytest.fixture
def sqlite_filled(sqlite_url):
    engine = make_engine(sqlite_url)
    fill_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def one_torch_thread():
    """As in tests/test_stages.py: the tiny model only loses from intra-op threads on 2 busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_on_dataset(trainer_cls, config_cls, dataset, model, tokenizer, out_dir: Path) -> None:
    """tests/trl_check.py's check, on a Dataset as `load_from_disk` gives it (not a file)."""
    import torch

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = config_cls(
        output_dir=str(out_dir), use_cpu=True, bf16=False, max_steps=2, per_device_train_batch_size=2,
        learning_rate=1e-3, report_to=[], save_strategy="no", logging_steps=1, max_length=128,
        activation_checkpointing=False, dataloader_num_workers=0, seed=0,
    )
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses), losses
    changed = [name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())]
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} parameters moved"


@pytest.mark.train
def test_metadata_jsonl_and_dataset_dir_train_dpo(sqlite_filled, tiny_model_dir, tmp_path, one_torch_thread):
    from datasets import load_from_disk
    from trl import DPOConfig, DPOTrainer

    path, out = tmp_path / "dpo.jsonl", tmp_path / "dpo-ds"
    with session_scope(sqlite_filled, read_only=True) as s:
        found = export_rows(session=s, fmt="dpo", metadata=True)
        export_dataset(session=s, fmt="dpo", to_dir=out, with_test=True, metadata=True)
    write_rows(found, path)
    assert len(found) == 4 and any(None in row["policy_versions"] for row in found)  # nulls in nested lists
    train_and_check(DPOTrainer, DPOConfig, path, *causal_lm(tiny_model_dir), tmp_path / "dpo")
    train_on_dataset(DPOTrainer, DPOConfig, load_from_disk(str(out))["train"], *causal_lm(tiny_model_dir),
                     tmp_path / "dpo-from-disk")


@pytest.mark.train
def test_metadata_files_train_kto_reward_and_sft(sqlite_filled, tiny_model_dir, tmp_path, one_torch_thread):
    """`label_ids` and the other metadata columns next to KTO's `label`, the reward model's
    `margin` and SFT's completion: each trainer still takes the file as it is."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import KTOConfig, KTOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    paths = {}
    with session_scope(sqlite_filled, read_only=True) as s:
        for fmt in ("kto", "reward", "sft"):
            found = export_rows(session=s, fmt=fmt, metadata=True, kto_from_pairs=True)
            assert found and all("label_ids" in row for row in found)
            write_rows(found, paths.setdefault(fmt, tmp_path / f"{fmt}.jsonl"))
    assert {json.loads(line)["label"] for line in paths["kto"].read_text().splitlines()} == {True, False}

    train_and_check(KTOTrainer, KTOConfig, paths["kto"], *causal_lm(tiny_model_dir), tmp_path / "kto")
    train_and_check(SFTTrainer, SFTConfig, paths["sft"], *causal_lm(tiny_model_dir), tmp_path / "sft")
    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    train_and_check(RewardTrainer, RewardConfig, paths["reward"], model, tokenizer, tmp_path / "rm",
                    center_rewards_coefficient=0.01)
