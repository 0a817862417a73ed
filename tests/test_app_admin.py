"""AppTest on the admin pages that start jobs: the AI judge page and the training page. Workers
are not started here: a recording launcher is registered through the real launcher registry."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Constitution, Job, PolicyVersion
from feedback.actors import CLI
from feedback.launchers import LAUNCHERS
from feedback.policies import ensure_base_policy
from feedback.settings import PROJECT_ROOT
from feedback.users import create_user
from judges.constitutions import ensure_shipped
from testkit.factories import set_queue

LAUNCHED: list[tuple[int, str]] = []


class RecordingLauncher:
    name = "recording"

    def launch(self, *, job_id, kind, database_url, env, log_path):
        LAUNCHED.append((job_id, kind))
        return "recorded"


def sign_in_admin(engine, monkeypatch, registered) -> AppTest:
    """The app, signed in as admin 'root', with job launches recorded in LAUNCHED (not run)."""
    registered(LAUNCHERS, "recording", RecordingLauncher)
    monkeypatch.setenv("JOB_LAUNCHER", "recording")
    LAUNCHED.clear()
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        ensure_shipped(session=s)
        create_user(session=s, username="root", role="admin", password="admin-password", actor=CLI)
        # Signing in lands on Compare, whose empty pool would start a refill (a sampling job).
        set_queue(s, kind="pair", refill_below=0)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    at.text_input[0].input("root")
    at.text_input[1].input("admin-password")
    at.button[0].click().run()
    return at


@pytest.fixture
def admin_app(use_db, engine, monkeypatch, registered):
    return sign_in_admin(engine, monkeypatch, registered)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_judge_page_saves_a_constitution_version_and_starts_a_batch(admin_app, engine):
    at = admin_app.switch_page("pages/judge.py").run()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Run a batch", "Graders", "Constitutions", "Calibration"]
    # Each tab has its own live job list (the same fragment, called twice on one page).
    captions = [c.value for c in at.caption]
    assert "No judge jobs yet." in captions and "No grade jobs yet." in captions
    principles = next(t for t in at.text_area if t.label == "Principles, one per line")
    principles.input("Prefer the answer with fewer words.\nPrefer correct answers.")
    button(at, "Save a new version").click().run()
    assert any("Saved default v2" in m.value for m in at.success)
    button(at, "Start judging").click().run()
    assert not at.exception
    with session_scope(engine, read_only=True) as s:
        job = s.scalar(select(Job).where(Job.kind == "judge"))
        versions = s.scalars(select(Constitution.version).where(Constitution.name == "default")).all()
    assert sorted(versions) == [1, 2]
    assert job.config["backend"] == "local" and job.config["constitution"] == "default"
    assert LAUNCHED == [(job.id, "judge")]
    assert any(f"Job {job.id} · queued" in p.text for p in at.get("progress"))


def one_labelled_pair(engine) -> None:
    """One human-labelled pair, so a round's snapshot is not empty."""
    from db.models import Item, Label, Prompt, Response, User
    from feedback.projects import default_project
    from feedback.prompts import canonical_messages, content_hash

    with session_scope(engine) as s:
        v0 = s.scalar(select(PolicyVersion))
        messages = canonical_messages("q", None)
        prompt = Prompt(text="q", messages=messages, content_hash=content_hash(messages))
        s.add(prompt)
        s.flush()
        a = Response(prompt_id=prompt.id, policy_version_id=v0.id, text="good", params={})
        b = Response(prompt_id=prompt.id, policy_version_id=v0.id, text="bad", params={})
        s.add_all([a, b])
        s.flush()
        item = Item(kind="pair", project_id=default_project(session=s).id, prompt_id=prompt.id,
                    response_a_id=a.id, response_b_id=b.id)
        s.add(item)
        s.flush()
        annotator = s.scalar(select(User))
        s.add(Label(item_id=item.id, kind="pairwise", choice="a", source="human", user_id=annotator.id,
                    submission_id="x"))


def test_training_page_starts_one_round_and_refuses_a_second(admin_app, engine):
    one_labelled_pair(engine)
    at = admin_app.switch_page("pages/training.py").run()
    assert not at.exception
    button(at, "Start round").click().run()
    assert any("Round started as job" in m.value for m in at.success), [e.value for e in at.error]
    button(at, "Start round").click().run()
    assert any("one round at a time" in e.value for e in at.error)
    with session_scope(engine, read_only=True) as s:
        jobs = s.scalars(select(Job).where(Job.kind == "train")).all()
    assert len(jobs) == 1 and jobs[0].config["stage"] == "dpo" and jobs[0].config["snapshot_id"]
    assert LAUNCHED == [(jobs[0].id, "train")]


def test_judge_page_starts_grading(admin_app, engine):
    at = admin_app.switch_page("pages/judge.py").run()
    next(t for t in at.text_input if t.label == "Grader").input("regex:[")
    button(at, "Start grading").click().run()
    assert at.error  # an invalid pattern is refused before any job exists
    next(t for t in at.text_input if t.label == "Grader").input("numeric")
    button(at, "Start grading").click().run()
    with session_scope(engine, read_only=True) as s:
        job = s.scalar(select(Job).where(Job.kind == "grade"))
    assert job.config == {"spec": "numeric", "limit": None}
    assert LAUNCHED == [(job.id, "grade")]


# The stages whose own default learning rate differs from CommonConfig's 5e-5: the page used to
# send its own 5e-5 for every stage.
OWN_LEARNING_RATES = {"sft": 2e-4, "reward": 1e-5}


def test_training_page_defaults_are_each_stages_own(admin_app, engine):
    """A round started from the page with its defaults sends no stage settings, so each stage
    trains with its own defaults; a changed Advanced field is the only one sent."""
    from training.rounds import RoundConfig
    from training.stages import STAGES

    one_labelled_pair(engine)
    at = admin_app.switch_page("pages/training.py").run()
    for stage in STAGES.names():
        next(s for s in at.selectbox if s.label == "Stage").select(stage).run()
        button(at, "Start round").click().run()
        assert any("Round started as job" in m.value for m in at.success), (stage, [e.value for e in at.error])
        with session_scope(engine) as s:
            job = s.scalar(select(Job).where(Job.kind == "train", Job.status == "queued"))
            job.status = "cancelled"  # one round at a time: make room for the next stage's
            config = RoundConfig(**job.config)
        assert config.stage == stage and config.stage_config == {}
        trained_with = STAGES.get(stage).config(**config.stage_config)
        assert trained_with.learning_rate == OWN_LEARNING_RATES.get(stage, 5e-5), stage

    next(s for s in at.selectbox if s.label == "Stage").select("dpo").run()
    next(n for n in at.number_input if n.label == "learning_rate").set_value(1e-4)
    next(n for n in at.number_input if n.label == "beta").set_value(0.1)  # its default: not sent
    button(at, "Start round").click().run()
    with session_scope(engine, read_only=True) as s:
        job = s.scalar(select(Job).where(Job.kind == "train", Job.status == "queued"))
    assert job.config["stage_config"] == {"learning_rate": 1e-4}


def test_training_page_limits_the_snapshot_to_a_project_with_its_conversions(admin_app, engine):
    from db.models import Snapshot

    one_labelled_pair(engine)
    at = admin_app.switch_page("pages/training.py").run()
    # Form widgets: their values go with the submit.
    next(s for s in at.selectbox if s.label == "Labels of project").select("default")
    next(s for s in at.selectbox if s.label == "rule").select("drop")
    next(t for t in at.text_input if t.label == "rank_pairs").input("best_vs_rest")
    button(at, "Start round").click().run()
    assert any("Round started as job" in m.value for m in at.success), [e.value for e in at.error]
    with session_scope(engine, read_only=True) as s:
        job = s.scalar(select(Job).where(Job.kind == "train"))
        filters = s.get(Snapshot, job.config["snapshot_id"]).filters
    assert (filters["project"], filters["rule"], filters["rank_pairs"]) == ("default", "drop", "best_vs_rest")
    assert filters["rating_min_margin"] == 1.0  # untouched settings keep their defaults
