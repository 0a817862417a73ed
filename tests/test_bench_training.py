"""bench/training.py's parts on the tiny model: our round timed phase by phase, bare TRL on the
rows that round trained on with the same configuration, the detached worker's start, and the
report's arithmetic."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from bench.training import (
    ratio_line,
    render_phases,
    round_config,
    round_phases,
    run_bare,
    run_ours,
    seed_labelled_pairs,
    settings_differences,
    time_worker_start,
)
from db.engine import make_engine, session_scope
from db.migrate import upgrade
from db.models import Item, Job, Label, Prompt, Snapshot
from training.snapshot import rows_for_stage
from training.stages.dpo import DPOStageConfig

TINY_STAGE = {"per_device_train_batch_size": 2, "max_length": 64, "save_steps": 1}
TINY_GATE = {"prompts": 2, "max_new_tokens": 4, "judge_model": "tiny-smollm2-test"}


@pytest.fixture
def seeded(engine, db_url, tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", db_url)  # read at call time by the round, its gate and workers
    monkeypatch.setenv("POLICIES_DIR", str(tmp_path / "policies"))
    seed_labelled_pairs(engine, pairs=6, val_prompts=2, base_model=str(tiny_model_dir))
    return engine


@pytest.mark.train
@pytest.mark.slow  # two DPO runs and a gate: TRL's CPU steps take seconds even on the tiny model
def test_our_round_is_timed_by_phase_and_bare_trl_trains_the_same_rows_with_the_same_config(
        seeded, tiny_model_dir, tmp_path):
    config = round_config(steps=2, stage_config=TINY_STAGE, gate=TINY_GATE)
    ours = run_ours(seeded, config)

    assert ours.status == "succeeded" and ours.result["policy_version"] == "v1"
    assert ours.steps == 2 and len(ours.step_s) == 2 and all(s > 0 for s in ours.step_s)
    assert all(seconds >= 0 for seconds in ours.phases.values())
    assert ours.phases["trainer.train()"] == ours.train_s > 0
    assert ours.phases["gate (evaluate)"] > 0 and ours.phases["model load (rows as a Dataset, policy + tokenizer)"] > 0
    # The rows captured are the snapshot's rows, as rows_for_stage gives them.
    with session_scope(seeded, read_only=True) as s:
        snapshot = s.get(Snapshot, s.get(Job, ours.job_id).config["snapshot_id"])
        assert ours.rows == rows_for_stage(session=s, snapshot=snapshot, stage="dpo")
    assert len(ours.rows) == 6

    bare = run_bare(model_dir=str(tiny_model_dir), rows=ours.rows, cfg=DPOStageConfig(max_steps=2, **TINY_STAGE),
                    output_dir=tmp_path / "bare")
    assert bare.steps == 2 and bare.train_s > 0
    assert (tmp_path / "bare" / "adapter" / "adapter_config.json").exists()
    # What our stage builds and what a user writes by hand agree on every setting.
    assert settings_differences(ours.settings, bare.settings) == {}
    assert ours.settings["lora"]["r"] == 8 and ours.settings["args"]["beta"] == 0.1


@pytest.mark.train
@pytest.mark.slow  # a real worker process: a cold Python start with the training imports
def test_a_detached_worker_is_timed_from_spawn_to_claim_and_then_cancelled(seeded, db_url, tmp_path):
    worker = time_worker_start(seeded, database_url=db_url, log_dir=tmp_path,
                               config=round_config(steps=2, stage_config=TINY_STAGE, gate=TINY_GATE))
    assert worker["status"] == "cancelled"
    assert 0 < worker["spawn_to_claim_s"] < 60 and worker["claim_to_ready_s"] >= 0
    with session_scope(seeded, read_only=True) as s:
        assert s.get(Job, worker["job_id"]).started_at is not None  # a worker claimed it: not cancelled while queued


def test_settings_differences_names_each_differing_setting():
    ours = {"args": {"beta": 0.1, "max_length": 384}, "lora": {"r": 8}}
    bare = {"args": {"beta": 0.2, "max_length": 384, "seed": 1}, "lora": {"r": 8}}
    assert settings_differences(ours, bare) == {"args.beta": (0.1, 0.2), "args.seed": (None, 1)}


def test_the_round_table_puts_the_detached_worker_in_place_of_the_in_process_claim():
    in_process = {"snapshot (start_round: freeze the labels, queue the job)": 1.0,
                  "claim + round inputs (rows_for_stage)": 0.5, "trainer.train()": 7.0}
    phases = round_phases(in_process, {"spawn_to_claim_s": 1.5, "claim_to_ready_s": 0.5}, trl_import_s=None)
    assert list(phases)[1] == "worker start (detached: spawn -> claim)"
    text = render_phases(phases)
    assert "| **round wall time** | **10.0** | 100% |" in text
    assert "| trainer.train() | 7.00 | 70.0% |" in text
    assert "| (in-process claim + inputs, warm: not in the sum) | 0.50 | - |" in text


def test_ratio_line_is_the_mean_trainer_time_of_ours_over_bare():
    assert ratio_line([2.0, 2.4], [2.0, 2.0]) == "ours/bare TRL = 1.100"


def test_seeded_labels_prefer_the_concise_response_and_val_prompts_get_no_items(tmp_path):
    url = f"sqlite:///{tmp_path / 'seed.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        seed_labelled_pairs(engine, pairs=5, val_prompts=3)
        with session_scope(engine, read_only=True) as s:
            labels = list(s.scalars(select(Label)))
            assert len(labels) == 5
            for label in labels:
                item = s.get(Item, label.item_id)
                chosen, other = ((item.response_a, item.response_b) if label.choice == "a"
                                 else (item.response_b, item.response_a))
                assert len(chosen.text) < len(other.text)
            assert {label.choice for label in labels} == {"a", "b"}  # both positions, seed 0
            val = list(s.scalars(select(Prompt).where(Prompt.split == "val")))
            assert len(val) == 3 and not s.scalars(select(Item).where(Item.prompt_id.in_([p.id for p in val]))).all()
    finally:
        engine.dispose()


# --- bench/memory.py's measuring parts ------------------------------------------------------------


def test_the_peak_sampler_and_the_kernels_peak_see_a_child_that_allocates_200_mib():
    import subprocess
    import sys

    from bench.memory import MIB, PeakSampler, vm_hwm

    child = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(200 * 1024 * 1024); "
                              "b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with PeakSampler(child.pid, interval_s=0.01) as sampler:
            assert child.stdout.readline().strip() == "ready"
            sampler.sample()
            hwm = vm_hwm(child.pid)
    finally:
        child.communicate("")
    assert sampler.peak_own >= 200 * MIB and sampler.peak_tree >= sampler.peak_own
    assert hwm is not None and hwm >= 200 * MIB
    assert vm_hwm(child.pid) is None  # gone: nothing to read
