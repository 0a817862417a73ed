"""AppTest on the Training page's ReFT tab and the round form's mixed rewards: what the admin fills
in reaches the job's config through the real services and the (recording) launcher, and a bad
reward spec is refused on the page with nothing queued."""
from __future__ import annotations

from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Job
from tests.test_app_admin import LAUNCHED
from tests.test_app_loop import admin_app  # noqa: F401 - a fixture

__all__ = ["admin_app"]


def _jobs(engine, kind: str) -> list[Job]:
    with session_scope(engine, read_only=True) as s:
        return list(s.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


def _click(at, label: str):
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    return at


def test_a_reft_job_started_from_its_tab_names_both_stages(admin_app, engine):  # noqa: F811
    at = admin_app
    assert any("reference answers" in c.value for c in at.caption)
    next(s for s in at.selectbox if s.key == "reft-rl-stage").select("ppo").run()
    next(n for n in at.number_input if n.label == "max_steps" and str(n.key).startswith("reft-sft")).set_value(3)
    next(n for n in at.number_input if n.label == "max_steps" and str(n.key).startswith("reft-ppo")).set_value(2)
    next(t for t in at.text_input if t.key == "reft-grader").input("exact")
    _click(at, "Start ReFT")
    [job] = _jobs(engine, "reft")
    assert any(f"ReFT started as job {job.id}" in m.value for m in at.success), [e.value for e in at.error]
    assert LAUNCHED == [(job.id, "reft")]
    assert (job.config["rl_stage"], job.config["grader"], job.config["sft"], job.config["rl"]) == (
        "ppo", "exact", {"max_steps": 3}, {"max_steps": 2})
    assert job.config["parent"] == "v0"
    # One training job at a time, across both kinds: a round is refused while the ReFT job is queued.
    next(s for s in at.selectbox if s.label == "Stage").select("grpo").run()
    _click(at, "Start round")
    assert any("one round at a time" in e.value for e in at.error), [e.value for e in at.error]
    assert _jobs(engine, "train") == []


def test_rewards_typed_in_the_round_form_reach_the_round(admin_app, engine):  # noqa: F811
    at = admin_app
    next(s for s in at.selectbox if s.label == "Stage").select("grpo").run()
    area = next(t for t in at.text_area if t.label.startswith("Rewards mixed by weight"))
    area.input("numeric\n\n0.5*exact\n")
    _click(at, "Start round")
    [job] = _jobs(engine, "train")
    assert job.config["rewards"] == ["numeric", "0.5*exact"]
    assert job.config["stage_config"]["reward_weights"] == [1.0, 0.5]


def test_a_bad_reward_spec_is_refused_on_the_page(admin_app, engine):  # noqa: F811
    at = admin_app
    next(s for s in at.selectbox if s.label == "Stage").select("grpo").run()
    next(t for t in at.text_area if t.label.startswith("Rewards mixed by weight")).input("0.5*no-such-grader")
    _click(at, "Start round")
    assert at.error and "no-such-grader" in at.error[0].value
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.kind == "train")) == 0
