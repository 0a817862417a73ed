"""Export of labels as TRL training data, against real SQLite and Postgres databases, and the
acceptance test: the exported files, loaded as they are, train TRL's DPOTrainer and KTOTrainer."""
from __future__ import annotations

import pytest

from db.engine import make_engine, session_scope
from db.models import Item, Label, Prompt, Response
from feedback.actors import CLI
from feedback.errors import UserError
from feedback.export import export_rows, write_rows
from feedback.policies import ensure_base_policy
from feedback.projects import default_project
from feedback.prompts import content_hash
from feedback.users import create_user
from tests.trl_check import causal_lm, train_and_check

# --- fixture data -----------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": "Answer in one short sentence."}


def _messages(i: int) -> list[dict[str, str]]:
    user = {"role": "user", "content": f"Question {i}: what is {i} + {i}?"}
    # One multi-turn chat with a system message: the export must pass the whole chat through.
    return ([SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, user]
            if i == 1 else [user])


def answer(i: int, side: str) -> str:
    return f"{i} + {i} is {2 * i}." if side == "a" else f"I think it is {2 * i + 1}."


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# Pairwise votes per prompt: (voter, choice, strength). Voters: alice/bob are human annotators,
# "judge" is an AI judge label (user_id None, producer "test-judge").
PAIR_VOTES: dict[int, list[tuple[str, str, str | None]]] = {
    1: [("alice", "a", "much"), ("bob", "a", "slight"), ("judge", "b", "much")],  # majority 2:1 -> A
    2: [("alice", "b", "much"), ("bob", "b", None)],  # unanimous B; one vote without strength
    3: [("alice", "a", "much"), ("bob", "b", "much")],  # split -> excluded
    4: [("alice", "tie", None), ("bob", "tie", None)],  # tie -> excluded
    5: [("alice", "both_bad", None), ("bob", "both_bad", None)],  # both bad -> excluded
    6: [("alice", "a", "slight")],  # a single vote -> A
}
PRODUCERS = {"judge": "test-judge", "grader": "grader:numeric"}
# Thumbs per (prompt, response side) single item.
THUMBS: dict[tuple[int, str], list[tuple[str, str]]] = {
    (1, "a"): [("alice", "up")],
    (2, "a"): [("alice", "down")],
    (3, "a"): [("alice", "up"), ("bob", "down")],  # split -> excluded
    (4, "a"): [("alice", "up"), ("bob", "up")],
    (5, "a"): [("alice", "down"), ("bob", "down")],
    (6, "a"): [("judge", "up")],
    (6, "b"): [("judge", "down")],
}


def fill_database(engine) -> None:
    """Users, v0, six prompts with two responses each, a pair item per prompt, single items, and
    the labels above (plus a grader score label and an unlabelled pair that must be ignored)."""
    with session_scope(engine) as session:
        users = {name: create_user(session=session, username=name, role="annotator", password="correct-horse-1",
                                   actor=CLI)
                 for name in ("alice", "bob")}
        policy = ensure_base_policy(session=session, actor=CLI)
        n = 0

        def label(item: Item, voter: str, **values) -> None:
            nonlocal n
            n += 1
            human = voter in users
            session.add(Label(
                item_id=item.id, source="human" if human else voter, user_id=users[voter].id if human else None,
                producer=None if human else PRODUCERS[voter], submission_id=f"sub-{n}", **values,
            ))

        for i in range(1, 7):
            messages = _messages(i)
            prompt = Prompt(text=messages[-1]["content"], messages=messages, content_hash=content_hash(messages))
            session.add(prompt)
            session.flush()
            responses = {side: Response(prompt_id=prompt.id, policy_version_id=policy.id, text=answer(i, side),
                                        params={"temperature": 0.7}, seed=i) for side in "ab"}
            session.add_all(responses.values())
            session.flush()
            pairs_in = default_project(session=session).id
            singles_in = default_project(session=session, kind="single").id
            pair = Item(kind="pair", project_id=pairs_in, prompt_id=prompt.id, response_a_id=responses["a"].id,
                        response_b_id=responses["b"].id)
            singles = {side: Item(kind="single", project_id=singles_in, prompt_id=prompt.id, response_a_id=r.id)
                       for side, r in responses.items()}
            session.add_all([pair, *singles.values()])
            session.flush()
            for voter, choice, strength in PAIR_VOTES[i]:
                label(pair, voter, kind="pairwise", choice=choice, strength=strength,
                      shown_order="ba" if i % 2 else "ab")
            for side, single in singles.items():
                for voter, thumb in THUMBS.get((i, side), []):
                    label(single, voter, kind="binary", thumb=thumb)
        # A grader score says nothing binary or pairwise: no export may pick it up.
        label(singles["b"], "grader", kind="score", score=0.9)
        # An unlabelled pair (b vs a order) must not appear either.
        session.add(Item(kind="pair", project_id=default_project(session=session).id, prompt_id=prompt.id,
                         response_a_id=responses["b"].id, response_b_id=responses["a"].id))


def export(engine, fmt: str, **kwargs) -> list[dict]:
    """The rows, each without its `rule` column once checked (the tests below compare TRL's columns)."""
    with session_scope(engine, read_only=True) as session:
        rows = export_rows(session=session, fmt=fmt, **kwargs)
    for row in rows:
        assert row.pop("rule") in RULES[fmt]
    return rows


# What made each row of the fixture's data: pairs by majority; thumbs; pairs unpaired never (off by default).
RULES = {"dpo": {"pairwise:majority"}, "reward": {"pairwise:majority"}, "kto": {"binary:majority"}}


def by_question(rows: list[dict]) -> dict[int, dict]:
    """Rows keyed by prompt number (the export does not promise an order)."""
    out = {}
    for row in rows:
        i = int(row["prompt"][-1]["content"].split(":")[0].removeprefix("Question "))
        assert i not in out, f"prompt {i} exported twice"
        out[i] = row
    return out


@pytest.fixture
def filled(engine):
    fill_database(engine)
    return engine


# --- unit tests (SQLite and Postgres) ---------------------------------------------------------


def test_dpo_rows(filled):
    rows = export(filled, "dpo")
    assert all(set(row) == {"prompt", "chosen", "rejected"} for row in rows)
    got = by_question(rows)
    assert set(got) == {1, 2, 6}  # split, tie and both-bad pairs and the unlabelled pair are left out
    assert got[1] == {"prompt": _messages(1), "chosen": assistant(answer(1, "a")),
                      "rejected": assistant(answer(1, "b"))}
    assert got[2] == {"prompt": _messages(2), "chosen": assistant(answer(2, "b")),
                      "rejected": assistant(answer(2, "a"))}
    assert got[6] == {"prompt": _messages(6), "chosen": assistant(answer(6, "a")),
                      "rejected": assistant(answer(6, "b"))}
    # Chat messages keep their role/content structure (Postgres JSONB reorders keys; content is what matters).
    assert [m["role"] for m in got[1]["prompt"]] == ["system", "user", "assistant", "user"]


def test_reward_margins(filled):
    got = by_question(export(filled, "reward"))
    assert set(got) == {1, 2, 6}
    assert all(set(row) == {"prompt", "chosen", "rejected", "margin"} for row in got.values())
    # Averaged over the labels that agree with the majority only: (much 1.0 + slight 0.5) / 2;
    # the judge's disagreeing 'much' does not count.
    assert got[1]["margin"] == pytest.approx(0.75)
    assert got[2]["margin"] == pytest.approx(0.5)  # (much 1.0 + no strength 0.0) / 2
    assert got[6]["margin"] == pytest.approx(0.5)  # slight
    assert got[2]["chosen"] == assistant(answer(2, "b"))


def test_kto_rows(filled):
    rows = export(filled, "kto")
    assert all(set(row) == {"prompt", "completion", "label"} for row in rows)
    got = {(by_question([r]).popitem()[0], r["completion"][0]["content"]): r["label"] for r in rows}
    assert got == {
        (1, answer(1, "a")): True,
        (2, answer(2, "a")): False,
        (4, answer(4, "a")): True,
        (5, answer(5, "a")): False,
        (6, answer(6, "a")): True,
        (6, answer(6, "b")): False,
    }  # (3, a) is a split vote; the grader's score label is not binary
    assert all(type(r["label"]) is bool for r in rows)
    assert by_question([r for r in rows if r["completion"] == assistant(answer(1, "a"))])[1]["prompt"] == _messages(1)


def test_source_filter(filled):
    human = by_question(export(filled, "reward", sources=["human"]))
    assert set(human) == {1, 2, 6}
    assert human[1]["chosen"] == assistant(answer(1, "a"))
    assert human[1]["margin"] == pytest.approx(0.75)

    judge = by_question(export(filled, "dpo", sources=("judge",)))
    assert set(judge) == {1}  # only the judge's label on pair 1 counts, and it prefers B
    assert judge[1]["chosen"] == assistant(answer(1, "b"))
    assert judge[1]["rejected"] == assistant(answer(1, "a"))

    human_kto = {(r["completion"][0]["content"], r["label"]) for r in export(filled, "kto", sources=["human"])}
    assert human_kto == {(answer(1, "a"), True), (answer(2, "a"), False), (answer(4, "a"), True),
                         (answer(5, "a"), False)}
    judge_kto = {(r["completion"][0]["content"], r["label"]) for r in export(filled, "kto", sources=["judge"])}
    assert judge_kto == {(answer(6, "a"), True), (answer(6, "b"), False)}

    assert export(filled, "dpo", sources=["grader"]) == []
    assert export(filled, "kto", sources=[]) == []


def test_empty_database_exports_nothing(engine):
    for fmt in ("dpo", "reward", "kto"):
        assert export(engine, fmt) == []


def test_unknown_format_or_source_is_a_user_error(filled):
    with pytest.raises(UserError, match="format"):
        export(filled, "ppo")
    with pytest.raises(UserError, match="source"):
        export(filled, "dpo", sources=["human", "crowd"])


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("fmt", ["dpo", "reward", "kto"])
def test_write_rows_round_trip(filled, tmp_path, fmt, suffix):
    import pyarrow.parquet as pq

    rows = export(filled, fmt)
    out = tmp_path / "nested" / f"{fmt}{suffix}"
    write_rows(rows, out)
    assert not out.with_name(out.name + ".tmp").exists()
    if suffix == ".jsonl":
        import json

        lines = out.read_text(encoding="utf-8").splitlines()
        back = [json.loads(line) for line in lines]
    else:
        back = pq.read_table(out).to_pylist()
    assert back == rows


def test_write_rows_keeps_non_ascii_text(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "Grüße, 世界"}], "completion": assistant("¡Hola! 👋"),
             "label": True}]
    out = tmp_path / "kto.jsonl"
    write_rows(rows, out)
    assert "世界" in out.read_text(encoding="utf-8")


# --- acceptance: exported files train TRL's DPO and KTO trainers --------------------------------


@pytest.fixture
def sqlite_filled(sqlite_url):
    engine = make_engine(sqlite_url)
    fill_database(engine)
    yield engine
    engine.dispose()


@pytest.mark.train
def test_exported_files_train_dpo_and_kto(sqlite_filled, tiny_model_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    dpo_path, kto_path = tmp_path / "export" / "dpo.jsonl", tmp_path / "export" / "kto.jsonl"
    with session_scope(sqlite_filled, read_only=True) as session:
        dpo_rows = export_rows(session=session, fmt="dpo")
        kto_rows = export_rows(session=session, fmt="kto")
        write_rows(dpo_rows, dpo_path)
        write_rows(kto_rows, kto_path)
    # KTO needs desirable and undesirable examples and a real batch (> 1) for its KL estimate.
    assert len(dpo_rows) >= 2 and {r["label"] for r in kto_rows} == {True, False} and len(kto_rows) >= 4

    train_and_check(DPOTrainer, DPOConfig, dpo_path, *causal_lm(tiny_model_dir), tmp_path / "dpo")
    train_and_check(KTOTrainer, KTOConfig, kto_path, *causal_lm(tiny_model_dir), tmp_path / "kto")
