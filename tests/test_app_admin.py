"""AppTest on the admin pages that start jobs: the AI judge page and the training page. Workers
are not started here: a recording launcher is registered through the real launcher registry."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Constitution, Job, PolicyVersion
from feedback.launchers import LAUNCHERS, register_launcher
from feedback.policies import ensure_base_policy
from feedback.settings import PROJECT_ROOT
from feedback.users import create_user
from judges.constitutions import ensure_shipped

LAUNCHED: list[tuple[int, str]] = []


class RecordingLauncher:
    name = "recording"

    def launch(self, *, job_id, kind, database_url, env, log_path):
        LAUNCHED.append((job_id, kind))
        return "recorded"


@pytest.fixture
def admin_app(use_db, engine, monkeypatch):
    register_launcher("recording")(RecordingLauncher)
    monkeypatch.setitem(LAUNCHERS, "recording", RecordingLauncher)
    monkeypatch.setenv("JOB_LAUNCHER", "recording")
    LAUNCHED.clear()
    with session_scope(engine) as s:
        ensure_base_policy(session=s)
        ensure_shipped(session=s)
        create_user(session=s, username="root", role="admin", password="admin-password")
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    at.text_input[0].input("root")
    at.text_input[1].input("admin-password")
    at.button[0].click().run()
    return at


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


def test_training_page_starts_one_round_and_refuses_a_second(admin_app, engine):
    from db.models import Item, Label, Prompt, Response, User
    from feedback.prompts import canonical_messages, content_hash

    with session_scope(engine) as s:  # one labelled pair so the snapshot is not empty
        v0 = s.scalar(select(PolicyVersion))
        messages = canonical_messages("q", None)
        prompt = Prompt(text="q", messages=messages, content_hash=content_hash(messages))
        s.add(prompt)
        s.flush()
        a = Response(prompt_id=prompt.id, policy_version_id=v0.id, text="good", params={})
        b = Response(prompt_id=prompt.id, policy_version_id=v0.id, text="bad", params={})
        s.add_all([a, b])
        s.flush()
        item = Item(kind="pair", prompt_id=prompt.id, response_a_id=a.id, response_b_id=b.id)
        s.add(item)
        s.flush()
        annotator = s.scalar(select(User))
        s.add(Label(item_id=item.id, kind="pairwise", choice="a", source="human", user_id=annotator.id,
                    submission_id="x"))
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
