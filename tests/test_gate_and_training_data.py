"""The evaluation gate can fail and can be undecided; val prompts never reach training data;
disagreement carries into training ("soft"); KTO rows come from graders and pairs too."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import Item, Label, PolicyVersion, Prompt, Response, SnapshotLabel, User
from feedback import jobs
from feedback.actors import CLI
from feedback.errors import UserError
from feedback.export import export_rows
from feedback.policies import ensure_base_policy, promote
from feedback.policy.base import Completion
from feedback.projects import default_project
from feedback.prompts import canonical_messages, content_hash
from feedback.rows import RowSettings, Scope, kto_rows, preference_rows
from judges.backends import BACKENDS, JudgeReply
from judges.constitutions import ensure_shipped
from judges.grading import run_grading
from training.evaluate import GateConfig, _checks, _win_verdict, decide, evaluate
from training.rounds import RoundConfig, start_round
from training.snapshot import SnapshotFilter, create_snapshot


def answer(text: str, finish: str = "stop") -> Completion:
    return Completion(text=text, finish_reason=finish, prompt_tokens=1, completion_tokens=1, latency_ms=0.0, seed=0)


# --- the gate's decision ----------------------------------------------------------------------


def test_an_always_inconsistent_judge_decides_nothing():
    win = _win_verdict(["inconsistent"] * 16, GateConfig())
    assert win["decisive"] == 0 and win["win_rate"] is None and win["win_verdict"] == "undecided"
    checks = _checks([answer("4")] * 16, [answer("4")] * 16, GateConfig())
    assert decide(win=win, accuracy="passed", checks=checks)[0] == "undecided"


def test_only_a_confident_win_passes():
    config = GateConfig(min_decisive=8, min_win_rate=0.5)
    assert _win_verdict(["a"] * 14 + ["b"] * 2, config)["win_verdict"] == "passed"
    assert _win_verdict(["a"] * 9 + ["b"] * 7, config)["win_verdict"] == "failed"  # 56%, interval below 0.5
    assert _win_verdict(["a"] * 7, config)["win_verdict"] == "undecided"  # too few decisive comparisons
    assert _win_verdict(["tie"] * 16, config)["win_verdict"] == "failed"  # no better than the parent
    with pytest.raises(UserError):
        GateConfig(min_decisive=0)


def test_reward_hacking_checks_fail_the_gate():
    config = GateConfig()
    parent = [answer("four")] * 10
    longer = _checks([answer("four " * 5)] * 10, parent, config)
    refusing = _checks([answer("I'm sorry, I cannot help with that.")] * 3 + [answer("four")] * 7, parent, config)
    truncated = _checks([answer("four", finish="length")] * 5 + [answer("four")] * 5, parent, config)
    for checks, word in ((longer, "as long"), (refusing, "refusal"), (truncated, "truncation")):
        decision, reasons = decide(win=None, accuracy="passed", checks=checks)
        assert decision == "failed" and any(word in r for r in reasons)
    assert decide(win=None, accuracy="passed", checks=_checks(parent, parent, config))[0] == "passed"
    assert decide(win=None, accuracy=None, checks=_checks(parent, parent, config))[0] == "undecided"


@pytest.mark.train
def test_a_gate_with_an_always_first_judge_is_undecided_and_does_not_promote(engine, tiny_model_dir, registered):
    class AlwaysFirst:
        name, model, answer_format, price_per_mtok = "always-first", "always-first", "json", (0.0, 0.0)

        def complete(self, request):
            verdict = {"reasoning": "first", "winner": "1"}
            return JudgeReply(text=json.dumps(verdict), structured=verdict, model=self.model)

    registered(BACKENDS, "always-first", lambda **kw: AlwaysFirst())
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        v0 = ensure_base_policy(session=s, actor=CLI)
        v0.base_model = str(tiny_model_dir)
        s.add(PolicyVersion(name="v1", base_model=str(tiny_model_dir), parent_id=v0.id, status="candidate",
                            stage="dpo"))
        for i in range(10):
            messages = canonical_messages(f"Say {i}.", None)
            s.add(Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                         split="val"))
    evaluation = evaluate(engine=engine, candidate="v1", baseline="v0",
                          config=GateConfig(prompts=10, judge_backend="always-first", max_new_tokens=4))
    assert evaluation["inconsistent"] == 10 and evaluation["decisive"] == 0
    assert evaluation["decision"] == "undecided" and evaluation["passed"] is False
    with session_scope(engine) as s:
        s.scalar(select(PolicyVersion).where(PolicyVersion.name == "v1")).evaluation = evaluation
    with pytest.raises(UserError, match="gate is undecided"), session_scope(engine) as s:
        promote(session=s, name="v1", actor=CLI)
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(PolicyVersion.name).where(PolicyVersion.status == "active")) == "v0"


# --- data for training ------------------------------------------------------------------------


@pytest.fixture
def votes(engine):
    """Train and val prompts, each with a pair voted 3 to 1 for A by four annotators, and a single
    response with a reference (right for even i, wrong for odd i)."""
    with session_scope(engine) as s:
        v0 = ensure_base_policy(session=s, actor=CLI)
        people = [User(username=f"ann{k}", role="annotator", password_hash="!") for k in range(4)]
        s.add_all(people)
        s.flush()
        for i, split in enumerate(["train", "train", "val"]):
            messages = canonical_messages(f"What is {i} + {i}?", None)
            prompt = Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                            split=split, reference=str(2 * i))
            s.add(prompt)
            s.flush()
            a = Response(prompt_id=prompt.id, policy_version_id=v0.id, text=f"{2 * i}", params={})
            b = Response(prompt_id=prompt.id, policy_version_id=v0.id, text="no idea", params={})
            single = Response(prompt_id=prompt.id, policy_version_id=v0.id,
                              text=f"{2 * i if i % 2 == 0 else 99}", params={})
            s.add_all([a, b, single])
            s.flush()
            pair = Item(kind="pair", project_id=default_project(session=s).id, prompt_id=prompt.id,
                        response_a_id=a.id, response_b_id=b.id)
            s.add_all([pair, Item(kind="single", project_id=default_project(session=s, kind="single").id,
                                  prompt_id=prompt.id, response_a_id=single.id)])
            s.flush()
            for k, person in enumerate(people):
                s.add(Label(item_id=pair.id, kind="pairwise", choice="a" if k < 3 else "b", source="human",
                            user_id=person.id, submission_id=f"v{i}-{k}"))
    return engine


def test_val_prompts_never_reach_a_snapshot_or_an_export(votes):
    with session_scope(votes) as s:
        snapshot = create_snapshot(session=s, filters=SnapshotFilter(), actor=CLI)
        frozen = set(s.scalars(select(SnapshotLabel.label_id).where(SnapshotLabel.snapshot_id == snapshot.id)))
        splits = set(s.scalars(select(Prompt.split).join(Item, Item.prompt_id == Prompt.id)
                               .join(Label, Label.item_id == Item.id).where(Label.id.in_(frozen))))
        job = start_round(session=s, config=RoundConfig(stage="dpo", snapshot={"sources": ["human"]}), actor=CLI)
        round_splits = set(s.scalars(
            select(Prompt.split).join(Item, Item.prompt_id == Prompt.id).join(Label, Label.item_id == Item.id)
            .join(SnapshotLabel, SnapshotLabel.label_id == Label.id)
            .where(SnapshotLabel.snapshot_id == job.config["snapshot_id"])))
        val_prompts = [p.messages for p in s.scalars(select(Prompt).where(Prompt.split == "val"))]
        default = export_rows(session=s, fmt="dpo")
        with_val = export_rows(session=s, fmt="dpo", include_val=True)
    assert len(frozen) == 8 and splits == {"train"} and round_splits == {"train"}
    assert not [r for r in default if r["prompt"] in val_prompts]
    assert len(with_val) == len(default) + 1 and any(r["prompt"] in val_prompts for r in with_val)


def test_soft_keeps_each_vote_and_majority_keeps_one_row(votes):
    with session_scope(votes, read_only=True) as s:
        majority = preference_rows(session=s)
        soft = preference_rows(session=s, settings=RowSettings(rule="soft"))
    assert len(majority) == 2
    assert len(soft) == 8  # 2 train pairs x 4 votes
    towards_a = [r for r in soft if r["chosen"][0]["content"] != "no idea"]
    assert len(towards_a) == 6  # three of each pair's four votes


def test_kto_rows_from_grader_scores_and_from_pairs(votes):
    run_grading(engine=votes, spec="numeric", actor=CLI)
    with session_scope(votes, read_only=True) as s:
        from_grader = kto_rows(session=s, scope=Scope(sources=("grader",)))
        stricter = kto_rows(session=s, scope=Scope(sources=("grader",)), settings=RowSettings(kto_threshold=1.1))
        unpaired = kto_rows(session=s, scope=Scope(sources=("human",)), settings=RowSettings(kto_from_pairs=True))
    assert sorted(r["label"] for r in from_grader) == [False, True]  # train singles: 0 right, 1 wrong
    assert not any(r["label"] for r in stricter)
    assert sorted(r["label"] for r in unpaired) == [False, False, True, True]
    assert {r["rule"] for r in from_grader} == {"grader:kto_threshold"}
    assert {r["rule"] for r in unpaired} == {"pairwise:unpaired"}


@pytest.mark.train
@pytest.mark.parametrize("stage,snapshot", [
    ("dpo", {"sources": ["human"], "rule": "soft"}),
    ("kto", {"sources": ["grader"]}),
])
def test_soft_dpo_and_grader_kto_rounds_train(votes, tiny_model_dir, monkeypatch, tmp_path, stage, snapshot):
    monkeypatch.setenv("POLICIES_DIR", str(tmp_path / "policies"))
    with session_scope(votes) as s:
        s.scalar(select(PolicyVersion).where(PolicyVersion.name == "v0")).base_model = str(tiny_model_dir)
    if stage == "kto":
        run_grading(engine=votes, spec="numeric", actor=CLI)
    config = RoundConfig(stage=stage, snapshot=snapshot, evaluate=False,
                         stage_config={"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 2,
                                       "max_length": 64, "save_steps": 100})
    with session_scope(votes) as s:
        job = start_round(session=s, config=config, actor=CLI)
    done = jobs.run_job(engine=votes, job_id=job.id)
    assert done.status == "succeeded", done.error
    assert done.result["metrics"]["global_step"] == 2 and done.result["metrics"]["train_loss"] is not None
