"""Acceptance: what rank, rating and edit projects export trains TRL's trainers as it is.

Labels go through the real queue into a SQLite database (tests/test_project_rows.py's helpers),
each format is written with the exporter and loaded back with `datasets` untouched (extra `rule`
and `margin` columns included): RewardTrainer on a rank project's reward file, DPOTrainer and
KTOTrainer on a rating project's dpo and kto files, SFTTrainer on an edit project's sft file. Each
run takes two steps on the tiny random model; the weights must move and the losses stay finite.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from db.engine import make_engine, session_scope
from feedback.export import export_rows, write_rows
from tests.test_project_rows import ASPECTS, annotators, label, ranks_shown, ratings_shown, setup_project
from tests.trl_check import causal_lm, train_and_check

pytestmark = pytest.mark.train


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """As in tests/test_stages.py: the tiny model only loses from intra-op threads on 2 busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def labelled(sqlite_url):
    """A SQLite database with a labelled rank (K=4), rating (K=3) and edit project."""
    engine = make_engine(sqlite_url)
    [user] = annotators(engine, 1)
    rng = random.Random(0)
    rank_id, rank_items, _ = setup_project(engine, "rank", "rank", 3, k=4)
    rankings = [[2, 4, 1, 3], [1, 2, 3, 4], [1, 1, 3, 2]]
    label(engine, rank_id, user, ranks_shown(dict(zip(rank_items, rankings, strict=True))), rng)
    rate_id, rate_items, _ = setup_project(engine, "rate", "rating", 4, k=3, aspects=ASPECTS)
    ratings = [[(5, 5), (2, 1), (4, 4)], [(1, 1), (5, 4), (3, 3)], [(4, 5), (4, 4), (1, 2)], [(2, 2), (3, 3), (5, 5)]]
    label(engine, rate_id, user, ratings_shown(dict(zip(rate_items, ratings, strict=True))), rng)
    edit_id, _, _ = setup_project(engine, "edit", "edit", 4)
    label(engine, edit_id, user, lambda claim: f"Here is a better answer to {claim.messages[-1]['content']}.", rng)
    yield engine
    engine.dispose()


def exported(engine, path: Path, fmt: str, project: str) -> list[dict]:
    with session_scope(engine, read_only=True) as session:
        rows = export_rows(session=session, fmt=fmt, project=project)
    write_rows(rows, path)
    return rows


def test_rank_reward_export_trains_a_reward_model(labelled, tiny_model_dir, tmp_path):
    """As training/stages/reward.py loads it: the policy with a one-output score head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    path = tmp_path / "reward.jsonl"
    rows = exported(labelled, path, "reward", "rank")
    assert len(rows) == 6 + 6 + 5 and {r["rule"] for r in rows} == {"rank:all_pairs"}
    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    train_and_check(RewardTrainer, RewardConfig, path, model, tokenizer, tmp_path / "rm",
                    center_rewards_coefficient=0.01)
    assert "score.weight" in {name for name, _ in model.named_parameters()}


def test_rating_dpo_export_trains_dpo(labelled, tiny_model_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer

    path = tmp_path / "dpo.jsonl"
    rows = exported(labelled, path, "dpo", "rate")
    assert len(rows) >= 4 and {r["rule"] for r in rows} == {"rating:mean_margin"}
    train_and_check(DPOTrainer, DPOConfig, path, *causal_lm(tiny_model_dir), tmp_path / "dpo")


def test_rating_kto_export_trains_kto(labelled, tiny_model_dir, tmp_path):
    from trl import KTOConfig, KTOTrainer

    path = tmp_path / "kto.jsonl"
    rows = exported(labelled, path, "kto", "rate")
    # KTO needs desirable and undesirable examples and a real batch (> 1) for its KL estimate
    assert len(rows) == 12 and {r["label"] for r in rows} == {True, False}
    assert {r["rule"] for r in rows} == {"rating:kto_threshold"}
    train_and_check(KTOTrainer, KTOConfig, path, *causal_lm(tiny_model_dir), tmp_path / "kto")


def test_edit_sft_export_trains_sft(labelled, tiny_model_dir, tmp_path):
    from trl import SFTConfig, SFTTrainer

    path = tmp_path / "sft.jsonl"
    rows = exported(labelled, path, "sft", "edit")
    assert len(rows) == 4 and {r["rule"] for r in rows} == {"edit:sft"}
    assert all(r["completion"][0]["content"].startswith("Here is a better answer") for r in rows)
    train_and_check(SFTTrainer, SFTConfig, path, *causal_lm(tiny_model_dir), tmp_path / "sft")
