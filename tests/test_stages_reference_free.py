"""The reference-free preference stages, ORPO and SimPO (TRL's experimental ORPO and CPO trainers
behind training/stages/experimental_trl.py): each trains the tiny model for a few real steps, moves
its LoRA weights and its loss, and builds no reference model, not even when the round asks for one
or fine-tunes all weights (where DPO loads a second model); bad settings are user errors; the CLI
draws their flags; a round trains them on a snapshot's preference pairs."""
from __future__ import annotations

import gc
import math
import warnings

import pytest
import torch
from transformers import PreTrainedModel

from db.engine import session_scope
from db.models import PolicyVersion
from feedback import jobs
from feedback.actors import CLI
from feedback.errors import UserError
from tests.test_rounds import TINY_GATE, labelled  # noqa: F401 - labelled is a fixture
from tests.test_stages import TINY, Recorder, as_parameter_name, assert_adapter, assert_trained, pair_rows, run
from training.stages import STAGES
from training.stages.base import CommonConfig, StageInputs

REFERENCE_FREE = ("orpo", "simpo")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """As in test_stages: intra-op threads only contend on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def causal_lms_alive() -> int:
    """Models in memory, each counted once (not again for the PreTrainedModel backbone inside it)."""
    gc.collect()
    with warnings.catch_warnings():  # isinstance on some of torch's deprecated module aliases warns
        warnings.simplefilter("ignore", FutureWarning)
        models = [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)]
    inner = {id(m) for model in models for m in model.modules() if m is not model and isinstance(m, PreTrainedModel)}
    return sum(id(model) not in inner for model in models)


class ModelCounter(Recorder):
    """Also counts the models in memory once the trainer is built: the policy, plus any reference."""

    def __init__(self, before: int) -> None:
        super().__init__()
        self.before_training = before
        self.models_built: int | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        super().on_train_begin(args, state, control, model=model, **kwargs)
        self.models_built = causal_lms_alive() - self.before_training


def run_counting(name: str, model_dir, output_dir, **overrides):
    """`run`, with the number of models the stage built while it trained."""
    before = causal_lms_alive()
    counter = ModelCounter(before)
    cfg = STAGES.get(name).config(**{**TINY, "max_steps": 3, **overrides.pop("settings", {})})
    inputs = StageInputs(model_dir=str(model_dir), output_dir=output_dir, train_rows=pair_rows(),
                         callbacks=[counter], **overrides)
    return STAGES.get(name).main(cfg, inputs), counter


# --- registry, configs, CLI --------------------------------------------------------------------


def test_registry_lists_both_after_kto_with_documented_configs():
    names = STAGES.names()
    assert names[names.index("kto") + 1:names.index("kto") + 3] == ["orpo", "simpo"]
    for name in REFERENCE_FREE:
        config_cls = STAGES.get(name).config
        assert issubclass(config_cls, CommonConfig) and callable(STAGES.get(name).main)
        assert not [f for f, text in config_cls.help().items() if not text], name
        config_cls()  # the defaults are valid
    simpo = STAGES.get("simpo").config()
    assert (simpo.beta, simpo.gamma, simpo.cpo_alpha) == (2.0, 1.0, 0.0)  # the SimPO paper's range, no NLL term


@pytest.mark.parametrize("name, settings, match", [
    ("orpo", {"beta": 0.0}, "beta must be > 0"),
    ("orpo", {"beta": -0.1}, "beta must be > 0"),
    ("simpo", {"beta": 0.0}, "beta must be > 0"),
    ("simpo", {"gamma": -0.5}, "gamma"),
    ("simpo", {"cpo_alpha": -1.0}, "cpo_alpha"),
])
def test_bad_settings_are_user_errors(name, settings, match):
    with pytest.raises(UserError, match=match):
        STAGES.get(name).config(**settings)


def test_a_trainer_trl_no_longer_has_is_a_user_error_naming_the_installed_trl():
    import trl

    from training.stages.experimental_trl import _experimental

    with pytest.raises(UserError, match=f"installed TRL {trl.__version__}"):
        _experimental("no_such_trainer", "NoSuchConfig")
    with pytest.raises(UserError, match="CPOConfg"):  # a renamed class, in a module that is still there
        _experimental("cpo", "CPOConfg")


def test_cli_flags_come_from_their_configs():
    from cli import make_parser as cli_parser
    from feedback.config_fields import flag_values
    from training.run_stage import make_parser

    argv = ["--stage", "simpo", "--rows", "r.jsonl", "--model-dir", "m", "--output-dir", "o", "--gamma", "0.5",
            "--cpo-alpha", "0.1"]
    assert flag_values(make_parser("simpo").parse_args(argv), STAGES.get("simpo").config) == {
        "gamma": 0.5, "cpo_alpha": 0.1}
    assert "odds-ratio" in make_parser("orpo").format_help()
    # `train orpo`: a label stage, so the snapshot's flags (which labels, how they become rows) are offered too
    args = cli_parser().parse_args(["train", "orpo", "--beta", "0.2", "--rule", "drop"])
    assert flag_values(args, STAGES.get("orpo").config) == {"beta": 0.2}


# --- they train, without a reference ---------------------------------------------------------------


@pytest.mark.train
@pytest.mark.parametrize("name", REFERENCE_FREE)
def test_trains_a_lora_adapter_and_moves_its_loss(tiny_model_dir, tmp_path, name):
    result, recorder = run(name, tiny_model_dir, tmp_path, pair_rows())
    assert_trained(result, recorder, 3)  # every LoRA tensor moved; the logged loss moved, first to last
    assert_adapter(result)
    assert result.metrics["first_loss"] != result.metrics["last_loss"]
    assert result.metrics["reference_model"] is None and "ref" not in recorder.adapters
    for key in ("rewards/chosen", "rewards/margins", "rewards/accuracies", "nll_loss"):
        assert math.isfinite(result.metrics[key]), key
    if name == "simpo":  # pure SimPO: no NLL term in the loss (TRL logs it as 0)
        assert result.metrics["nll_loss"] == 0.0
    else:
        assert math.isfinite(result.metrics["log_odds_ratio"]) and result.metrics["nll_loss"] > 0


@pytest.mark.train
def test_cpo_simpo_adds_the_nll_term(tiny_model_dir, tmp_path):
    result, _ = run("simpo", tiny_model_dir, tmp_path, pair_rows(), cpo_alpha=0.5, max_steps=1)
    assert result.metrics["nll_loss"] > 0


@pytest.mark.train
@pytest.mark.parametrize("name", REFERENCE_FREE)
def test_a_round_asking_for_the_parent_as_reference_gets_none(tiny_model_dir, tmp_path, name):
    """Continuing from a parent adapter with reference = that parent: training starts from the parent,
    and neither a "ref" adapter nor a second model is set up."""
    from safetensors.torch import load_file

    parent, _ = run("sft", tiny_model_dir, tmp_path / "parent", [
        {"prompt": r["prompt"], "completion": r["chosen"]} for r in pair_rows()], save_steps=100)
    parent_dir = str(parent.adapter_dir)
    result, counter = run_counting(name, tiny_model_dir, tmp_path / name, parent_adapter=parent_dir,
                                   reference_adapter=parent_dir)
    assert_trained(result, counter, 3)
    start = {as_parameter_name(k): v for k, v in load_file(f"{parent_dir}/adapter_model.safetensors").items()}
    assert all(torch.equal(start[n], counter.before[n]) for n in start), "training did not start from the parent"
    assert counter.adapters == ["default"] and counter.models_built == 1
    assert result.metrics["reference_model"] is None


@pytest.mark.train
def test_a_full_fine_tune_builds_one_model_where_dpo_builds_two(tiny_model_dir, tmp_path):
    # The control: DPO fine-tuning all weights loads a frozen reference copy, and the counter sees it.
    _, dpo = run_counting("dpo", tiny_model_dir, tmp_path / "dpo", settings={"use_lora": False, "max_steps": 1})
    assert dpo.models_built == 2
    for name in REFERENCE_FREE:
        result, counter = run_counting(name, tiny_model_dir, tmp_path / name,
                                       settings={"use_lora": False, "max_steps": 1})
        assert counter.models_built == 1, name
        assert result.model_dir is not None and result.metrics["reference_model"] is None


# --- a round ------------------------------------------------------------------------------------


@pytest.mark.train
@pytest.mark.parametrize("name", REFERENCE_FREE)
def test_a_round_trains_on_the_snapshots_preference_pairs(labelled, name):  # noqa: F811 - the fixture
    from sqlalchemy import select

    from training.rounds import RoundConfig, start_round

    config = RoundConfig(stage=name, stage_config={"max_steps": 2, "learning_rate": 1e-3, "max_length": 64,
                                                   "per_device_train_batch_size": 2, "save_steps": 2},
                         reference="parent", gate=TINY_GATE, snapshot={"sources": ["human"]})
    with session_scope(labelled) as s:
        job = start_round(session=s, config=config, actor=CLI)
    done = jobs.run_job(engine=labelled, job_id=job.id)
    assert done.status == "succeeded", done.error
    assert done.result["policy_version"] == "v1" and done.config["snapshot_id"] is not None
    with session_scope(labelled, read_only=True) as s:
        v1 = s.scalar(select(PolicyVersion).where(PolicyVersion.name == "v1"))
        assert v1.stage == name and v1.parent.name == "v0" and v1.snapshot_id == done.config["snapshot_id"]
        assert v1.metrics["global_step"] == 2 and v1.metrics["reference_model"] is None
        assert v1.adapter_path and v1.evaluation["decision"] in ("passed", "failed", "undecided")
