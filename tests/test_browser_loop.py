"""The journey issue 15 names: an admin starts a 3-round loop from the Training page's Loop tab with
the grader labeler and sees each round promote or hold back its version. The real app (`streamlit
run app.py`) in headless Chromium; the page starts the loop's worker through the real local
launcher, and the worker really samples, labels, trains and gates the tiny test model."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import make_engine, session_scope
from db.migrate import upgrade
from db.models import Job, PolicyVersion, Project, Prompt
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.prompts import canonical_messages, content_hash
from feedback.users import create_user
from judges.constitutions import ensure_shipped
from testkit.browser import CHROMIUM, chromium
from testkit.factories import set_queue
from testkit.local_servers import AppDidNotStart, running_app

pytestmark = [pytest.mark.browser, pytest.mark.train]

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

PASSWORD = "loop-admin-pw"
TIMEOUT_MS = 45_000  # the page is long, and the machine busy
LOOP_TIMEOUT_MS = 420_000  # three real rounds on two busy cores
SHOT = Path("/tmp/loop_tab.png")

if not Path(CHROMIUM).exists():
    pytestmark.append(pytest.mark.skip(reason=f"{CHROMIUM} not installed (scripts/system-packages.sh)"))


def _seed(url: str, model_dir: Path) -> None:
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            ensure_shipped(session=s)
            ensure_base_policy(session=s, actor=CLI).base_model = str(model_dir)
            create_user(session=s, username="root", role="admin", password=PASSWORD, actor=CLI)
            for project in s.scalars(select(Project)):  # no refills: the loop's worker is the only one
                set_queue(s, kind="pair" if project.task_type == "pairwise" else "single", refill_below=0)
            # Train prompts with references for the grader labeler, val ones for the gate's accuracy.
            # Sentences, not bare numbers: the tiny model's random words are each a little similar to
            # a sentence, by different amounts, so every prompt yields a best-vs-worst pair.
            for i in range(8):
                messages = canonical_messages(f"What is {i} + 1?", None)
                s.add(Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                             reference=f"The answer is {i + 1}, because {i} plus one makes {i + 1}.",
                             split="val" if i >= 6 else "train"))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, tiny_model_dir):
    """The app over a seeded SQLite file whose base policy is the tiny model; its workers write
    their policy versions under a throw-away POLICIES_DIR (they inherit the app's environment)."""
    root = tmp_path_factory.mktemp("browser-loop")
    url = f"sqlite:///{root / 'app.sqlite3'}"
    upgrade(url)
    _seed(url, tiny_model_dir)
    before = os.environ.get("POLICIES_DIR")
    os.environ["POLICIES_DIR"] = str(root / "policies")
    try:
        with running_app(url, root / "streamlit.log") as base:
            yield base, url
    except AppDidNotStart as exc:
        pytest.fail(str(exc))
    finally:
        if before is None:
            os.environ.pop("POLICIES_DIR", None)
        else:
            os.environ["POLICIES_DIR"] = before


@pytest.fixture
def page(app_server):
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1200})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        yield page
        context.close()


def settled(page) -> None:
    expect(page.locator('[data-stale="true"]')).to_have_count(0)
    expect(page.locator('[data-testid="stSkeleton"]')).to_have_count(0)
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def fill(scope, label: str, value: str) -> None:
    """Type into field `label` of `scope` (the Loop tab, or one of its expanders). The loop's own
    fields come first: the gate has a grader and a max_new_tokens of its own, further down."""
    field = scope.get_by_label(label, exact=True).first
    field.fill(value)
    field.press("Tab")


def test_admin_runs_a_three_round_grader_loop_from_the_page(page, app_server, tiny_model_dir):
    base, url = app_server
    page.goto(base)
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Compare responses")).to_be_visible()
    settled(page)  # Compare reruns once to start polling: a click during that rerun is lost
    page.get_by_test_id("stSidebar").get_by_role("link", name="Training", exact=True).click()
    expect(page.get_by_role("heading", name="Training", exact=True)).to_be_visible()
    page.get_by_role("tab", name="Loop").click()
    panel = page.locator('[role="tabpanel"]:visible')
    expect(panel.get_by_text("No loop has run yet.")).to_be_visible()

    # Tiny settings: two prompts of two answers per round, a few training steps, a small gate.
    fill(panel, "grader", "similarity")
    for label, value in (("prompts_per_round", "2"), ("samples_per_prompt", "2"), ("max_new_tokens", "6"),
                         ("temperature", "1.5")):
        fill(panel, label, value)
    panel.get_by_text("Gate settings").click()
    gate = panel.get_by_test_id("stExpander").filter(has_text="Gate settings")
    for label, value in (("prompts", "2"), ("max_new_tokens", "4"), ("judge_model", tiny_model_dir.name),
                         ("grader", "similarity"), ("min_decisive", "1"), ("min_graded", "1")):
        fill(gate, label, value)
    panel.get_by_text("Advanced: dpo settings").click()
    advanced = panel.get_by_test_id("stExpander").filter(has_text="Advanced: dpo settings")
    for label, value in (("max_steps", "2"), ("per_device_train_batch_size", "2"), ("learning_rate", "0.001"),
                         ("max_length", "64")):
        fill(advanced, label, value)
    panel.get_by_role("button", name="Start loop").click()
    expect(panel.get_by_text(re.compile(r"Loop started as job \d+"))).to_be_visible()
    expect(panel.get_by_role("button", name="Pause")).to_be_visible()
    expect(panel.get_by_role("button", name="Cancel")).to_be_visible()

    # The worker runs on its own; the tab follows it until the loop has ended.
    expect(panel.get_by_text(re.compile(r"Loop job \d+ · succeeded"))).to_be_visible(timeout=LOOP_TIMEOUT_MS)
    settled(page)
    expect(panel.get_by_role("button", name="Pause")).to_have_count(0)
    expect(panel.get_by_role("button", name="Resume")).to_have_count(0)
    table = panel.get_by_test_id("stDataFrame")
    expect(table).to_be_visible()
    expect(panel.get_by_test_id("stVegaLiteChart")).to_be_visible()
    outcomes = panel.get_by_test_id("stCaptionContainer").filter(has_text="round 1: ").inner_text()

    # Coming back later, the tab opens on the finished loop (the screenshot: tall enough for all of it).
    page.set_viewport_size({"width": 1400, "height": 1600})
    page.reload()
    page.get_by_role("tab", name="Loop").click()
    expect(panel.get_by_test_id("stVegaLiteChart")).to_be_visible()
    settled(page)
    page.screenshot(path=str(SHOT))

    engine = make_engine(url)
    try:
        with session_scope(engine, read_only=True) as s:
            loop = s.scalar(select(Job).where(Job.kind == "loop"))
            rounds = loop.result["rounds"]
            lineage = {v.name: (v.parent.name if v.parent else None, v.stage) for v in s.scalars(select(PolicyVersion))}
    finally:
        engine.dispose()
    assert loop.status == "succeeded" and [r["round"] for r in rounds] == [1, 2, 3]
    trained = [r for r in rounds if r.get("policy")]
    assert trained, rounds  # every round with informative pairs made a version with its lineage
    for r in trained:
        assert lineage[r["policy"]] == (r["parent"], "dpo")
        # Promoted (the version is or was active) exactly when the gate passed: promote = gate.
        assert r["promoted"] == (r["gate"] == "passed"), r
    # The page said, round by round, which version each made and whether it was promoted or held back.
    for r in rounds:
        outcome = ("promoted" if r["promoted"] else "held back") if r.get("policy") else r.get("note")
        made = f"{r['policy']}, gate {r['gate']}, " if r.get("policy") else ""
        assert f"round {r['round']}: {made}{outcome}" in outcomes, (r, outcomes)
