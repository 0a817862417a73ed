"""AppTest on the Training page's Loop tab: a loop started from its form goes through the launcher,
and its Pause, Cancel and Resume buttons (only those that apply to its status) call the loop's
services. No worker runs here: a recording launcher is registered through the real registry, and a
worker's doings (a round done, a worker that died) are written to the job row as a worker would."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Job, utcnow
from tests.test_app_admin import LAUNCHED, sign_in_admin


@pytest.fixture
def admin_app(use_db, engine, monkeypatch, registered):
    return sign_in_admin(engine, monkeypatch, registered).switch_page("pages/training.py").run()


def buttons(at: AppTest) -> list[str]:
    """The loop's buttons on the page now (the Loop tab's, by their keys)."""
    return [b.label for b in at.button if str(b.key).startswith("loop-")]


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label and str(b.key).startswith("loop-")).click().run()
    assert not at.exception, at.exception
    return at


def loop_field(at: AppTest, kind: str, label: str):
    return next(w for w in getattr(at, kind) if w.label == label and str(w.key).startswith("loop-"))


def the_loop(engine) -> Job:
    with session_scope(engine, read_only=True) as s:
        return s.scalar(select(Job).where(Job.kind == "loop").order_by(Job.id.desc()))


def start(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Start loop").click().run()
    assert not at.exception, at.exception
    return at


def progress_texts(at: AppTest) -> list[str]:
    return [p.text for p in at.get("progress")]


def test_the_empty_loop_tab_says_what_will_appear(admin_app):
    at = admin_app
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs][-2:] == ["Loop", "ReFT"]
    assert any(i.value.startswith("No loop has run yet.") and "Policy versions" in i.value for i in at.info)
    assert buttons(at) == []
    # The form is LoopConfig's own: its fields, with their defaults.
    assert loop_field(at, "number_input", "rounds").value == 3
    assert loop_field(at, "selectbox", "labeler").options == ["grader", "judge", "reward", "people"]
    assert loop_field(at, "selectbox", "reference").options == ["base", "parent"]


def test_a_loop_started_from_the_tab_goes_through_the_launcher(admin_app, engine):
    at = admin_app
    loop_field(at, "number_input", "rounds").set_value(2)
    loop_field(at, "text_input", "grader").input("similarity")
    loop_field(at, "selectbox", "reference").select("parent")
    next(n for n in at.number_input if n.label == "max_steps" and str(n.key).startswith("loop-stage-dpo")).set_value(2)
    next(n for n in at.number_input if n.label == "min_graded" and str(n.key).startswith("loop-gate")).set_value(1)
    start(at)
    job = the_loop(engine)
    assert any(f"Loop started as job {job.id}" in m.value for m in at.success), [e.value for e in at.error]
    assert job.status == "queued" and LAUNCHED == [(job.id, "loop")]
    # Only what was changed is sent; the config's own defaults apply to the rest.
    assert (job.config["rounds"], job.config["grader"], job.config["reference"], job.config["stage"]) == (
        2, "similarity", "parent", "dpo")
    assert job.config["stage_config"] == {"max_steps": 2} and job.config["gate"] == {"min_graded": 1}
    assert any(t.startswith(f"Loop job {job.id} · queued · 0 of 2 rounds") for t in progress_texts(at))
    assert buttons(at) == ["Pause", "Cancel"]
    # Round 1 has not sampled yet: the tab says what comes.
    assert any("Round 1 is on its way" in c.value for c in at.caption)

    start(at)  # one loop at a time
    assert at.error and len(LAUNCHED) == 1


def test_a_people_loop_names_its_project_and_label_count(admin_app, engine):
    at = admin_app
    next(s for s in at.selectbox if s.label == "Loop stage").select("kto").run()  # outside the form: at once
    assert any(str(n.key).startswith("loop-stage-kto-") for n in at.number_input)  # kto's own settings now
    loop_field(at, "selectbox", "labeler").select("people")
    next(s for s in at.selectbox if s.label.startswith("People labeler")).select("default")
    loop_field(at, "number_input", "labels_per_round").set_value(4)
    start(at)
    config = the_loop(engine).config
    assert (config["labeler"], config["project"], config["labels_per_round"], config["stage"]) == (
        "people", "default", 4, "kto")


def test_cancel_stops_the_loop_and_leaves_nothing_to_press(admin_app, engine):
    at = start(admin_app)
    job = the_loop(engine)
    click(at, "Cancel")
    assert the_loop(engine).status == "cancelled"  # a queued job is cancelled at once
    assert buttons(at) == []
    assert any(f"Loop job {job.id} · cancelled" in t for t in progress_texts(at))


def test_pause_then_resume_goes_on_with_a_new_worker(admin_app, engine):
    at = start(admin_app)
    job = the_loop(engine)
    click(at, "Pause")
    assert the_loop(engine).status == "paused"  # queued: no worker holds it, so paused at once
    assert buttons(at) == ["Resume", "Cancel"]
    click(at, "Resume")
    assert the_loop(engine).status == "queued"
    assert LAUNCHED == [(job.id, "loop"), (job.id, "loop")]  # the same job, a new worker
    assert buttons(at) == ["Pause", "Cancel"]
    # A paused loop still holds its round: a new one is refused until it is resumed or cancelled.
    click(at, "Pause")
    start(at)
    assert any("resume or cancel it" in e.value for e in at.error)
    click(at, "Cancel")
    assert the_loop(engine).status == "cancelled" and buttons(at) == []


def test_a_running_loop_pauses_at_its_next_safe_point(admin_app, engine):
    at = start(admin_app)
    job = the_loop(engine)
    with session_scope(engine) as s:  # its worker claimed it and is sampling round 1
        row = s.get(Job, job.id)
        row.status, row.heartbeat_at = "running", utcnow()
    at.run()
    click(at, "Pause")
    assert (the_loop(engine).status, the_loop(engine).pause_requested) == ("running", True)
    assert buttons(at) == ["Cancel"]  # pausing already: cancel still can
    assert any("pausing at the next safe point" in t for t in progress_texts(at))


def test_a_loop_whose_worker_died_can_be_resumed(admin_app, engine):
    at = start(admin_app)
    job = the_loop(engine)
    with session_scope(engine) as s:
        row = s.get(Job, job.id)
        row.status, row.error = "interrupted", "worker stopped heartbeating"
    at.run()
    assert buttons(at) == ["Resume"]
    assert any(c.value == "worker stopped heartbeating" for c in at.code)
    click(at, "Resume")
    assert the_loop(engine).status == "queued" and LAUNCHED[-1] == (job.id, "loop")


def test_a_refused_action_is_shown(admin_app, engine):
    at = start(admin_app)
    job = the_loop(engine)
    with session_scope(engine) as s:  # it ended between the page's run and the click
        s.get(Job, job.id).status = "succeeded"
    click(at, "Pause")
    assert any(f"Loop job {job.id} is succeeded" in w.value for w in at.warning)
    assert buttons(at) == []


def a_round(number: int, **figures) -> dict:
    """One row of a loop job's result as its worker saves it (training/loop.py)."""
    return {"round": number, "phase": "done", "parent": f"v{number - 1}", "policy": f"v{number}", "pairs": 2,
            "labels": 2, "labels_needed": 2, "train_job": None, "win_rate": None, "win_rate_ci95": None,
            "accuracy": None, "parent_accuracy": None, "gate": None, "promoted": None, "kl": None,
            "mean_length": None, "mean_chars": None, **figures}


def charts(at: AppTest) -> list[tuple[dict, list]]:
    """Each Altair chart on the page: its Vega-Lite spec and the rows of its datasets."""
    found = []
    for chart in at.get("vega_lite_chart"):
        rows = [row for d in chart.proto.datasets for row in
                convert_arrow_bytes_to_pandas_df(d.data.data).to_dict("records")]
        found.append((json.loads(chart.proto.spec), rows))
    return found


def test_each_round_shows_in_the_chart_and_the_table_with_its_version(admin_app, engine):
    at = start(admin_app)
    job = the_loop(engine)
    rounds = [a_round(1, accuracy=0.5, parent_accuracy=0.25, win_rate=0.6, gate="passed", promoted=True,
                      mean_length=5.5),
              a_round(2, accuracy=0.25, parent_accuracy=0.5, win_rate=0.4, gate="failed", promoted=False,
                      mean_length=6.0, kl=0.02),
              a_round(3, policy=None, pairs=0, labels=None, note="no informative pairs"),
              {**a_round(4, policy=None, labels=None, pairs=None), "phase": "sampling"}]
    with session_scope(engine) as s:
        row = s.get(Job, job.id)
        row.status, row.result = "running", {"rounds": rounds, "config": job.config}
        row.heartbeat_at = utcnow()
    at.run()
    assert not at.exception, at.exception
    assert any("round 4: sampling" in t for t in progress_texts(at))
    assert any(c.value == "round 1: v1, gate passed, promoted · round 2: v2, gate failed, held back · "
                          "round 3: no informative pairs · round 4: sampling" for c in at.caption)
    frame = at.dataframe[-1].value  # the Loop tab's (Policy versions, before it, has one too)
    assert list(frame["version"][:2]) == ["v1", "v2"] and list(frame["outcome"]) == [
        "promoted", "held back", "skipped", "in progress"]
    (spec, data), = charts(at)
    figures = {(r["figure"], r["round"]): (r["value"], r["gate result"], r["outcome"]) for r in data}
    assert figures[("held-out accuracy", 1)] == (0.5, "passed", "promoted")
    assert figures[("win rate vs parent", 2)] == (0.4, "failed", "held back")
    assert figures[("KL to reference", 2)][0] == 0.02 and ("KL to reference", 1) not in figures
    assert {f for f, _ in figures} == {"labels trained on", "held-out accuracy", "win rate vs parent",
                                       "KL to reference", "mean length (tokens)"}
    assert [panel["title"] for panel in spec["concat"]] == [
        "labels trained on", "held-out accuracy", "win rate vs parent", "KL to reference", "mean length (tokens)"]
