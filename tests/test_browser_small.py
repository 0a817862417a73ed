"""Browser tests of the small things annotators notice: the Rate page's keyboard shortcuts, the
Compare page's two response boxes of one height (a short and a long response, nothing cut off),
and the "Saved" confirmation with its undo. The real app (`streamlit run app.py`) in headless
Chromium over a throw-away SQLite database; one annotator per test, so the tests do not depend
on each other's order (overlap 3: each of them gets the same items, in the same order)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import make_engine, session_scope
from db.migrate import upgrade
from db.models import Item, Label, Prompt, Response, User
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.projects import default_project
from feedback.prompts import canonical_messages, content_hash
from feedback.users import create_user
from testkit.browser import CHROMIUM, chromium
from testkit.factories import set_queue
from testkit.local_servers import AppDidNotStart, running_app

pytestmark = [pytest.mark.browser]

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

SHOTS = Path("/tmp/shots")
TIMEOUT_MS = 15_000
PASSWORDS = {"tall": "tall-annotator-pw", "keys": "keys-annotator-pw", "undo": "undo-annotator-pw"}

SHORT = "Paris."
LONG = " ".join(f"Sentence {i} of a long answer about the capital of France, which is Paris." for i in range(40))
PAIRS = [("What is the capital of France?", SHORT, LONG), ("Name a colour.", "Blue.", "Green."),
         ("Name a fruit.", "An apple.", "A pear.")]
SINGLES = [("Say hello.", "Hello!"), ("Say goodbye.", "Goodbye!")]

if not Path(CHROMIUM).exists():
    pytestmark.append(pytest.mark.skip(reason=f"{CHROMIUM} not installed (scripts/system-packages.sh)"))


def _seed(url: str) -> None:
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            v0 = ensure_base_policy(session=s, actor=CLI)
            for name, password in PASSWORDS.items():
                create_user(session=s, username=name, role="annotator", password=password, actor=CLI)
            # Refills would start a real sampling worker; the items are seeded here instead.
            for kind in ("pair", "single"):
                set_queue(s, kind=kind, overlap=len(PASSWORDS), refill_below=0)
            for kind, rows in (("pair", PAIRS), ("single", SINGLES)):
                project_id = default_project(session=s, kind=kind).id
                for question, *texts in rows:
                    messages = canonical_messages(question, None)
                    prompt = Prompt(text=question, messages=messages, content_hash=content_hash(messages),
                                    split="train")
                    responses = [Response(prompt=prompt, policy_version_id=v0.id, text=t, params={}) for t in texts]
                    s.add(Item(kind=kind, project_id=project_id, prompt=prompt, response_a=responses[0],
                               response_b=responses[1] if kind == "pair" else None))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('browser-small') / 'app.sqlite3'}"
    upgrade(url)
    _seed(url)
    log = tmp_path_factory.mktemp("browser-small-log") / "streamlit.log"
    try:
        with running_app(url, log) as base:
            yield base, url
    except AppDidNotStart as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, app_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    yield page
    context.close()


def settled(page) -> None:
    """The current script run has finished drawing: no stale or placeholder elements."""
    expect(page.locator('[data-stale="true"]')).to_have_count(0)
    expect(page.locator('[data-testid="stSkeleton"]')).to_have_count(0)
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def sign_in(page, base: str, username: str) -> None:
    page.goto(base)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Compare responses")).to_be_visible()
    settled(page)


def response_box(page, title: str):
    """The box a response is drawn in: the bordered grid cell around its bold title."""
    return page.locator(f'xpath=//strong[normalize-space()="{title}"]/ancestor::div[@data-testid="stGridCell"][1]')


def prompt_text(page) -> str:
    bubble = page.get_by_test_id("stChatMessageContent")
    expect(bubble).to_have_text(re.compile(r"\S"))
    return bubble.inner_text().strip()


def labels_of(url: str, username: str) -> list[Label]:
    engine = make_engine(url)
    try:
        with session_scope(engine, read_only=True) as s:
            user_id = s.scalar(select(User.id).where(User.username == username))
            return list(s.scalars(select(Label).where(Label.user_id == user_id).order_by(Label.id)))
    finally:
        engine.dispose()


def progress(page):
    return page.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(r"^You: "))


def test_compare_shows_a_short_and_a_long_response_in_boxes_of_one_height(page, app_server):
    base, _ = app_server
    sign_in(page, base, "tall")
    assert prompt_text(page) == PAIRS[0][0]
    boxes = [response_box(page, "Response A"), response_box(page, "Response B")]
    for box in boxes:
        expect(box).to_have_count(1)
        expect(box.get_by_test_id("stMarkdownContainer").nth(1)).to_have_text(re.compile(r"\S"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "compare-heights.png"), full_page=True)
    (a, b) = [box.bounding_box() for box in boxes]
    assert abs(a["height"] - b["height"]) <= 1, (a, b)
    assert abs(a["y"] - b["y"]) <= 1 and a["x"] < b["x"]  # side by side
    texts = {side: box.get_by_test_id("stMarkdownContainer").nth(1) for side, box in zip("AB", boxes, strict=True)}
    heights = {side: t.bounding_box()["height"] for side, t in texts.items()}
    long_side = "A" if LONG.startswith(texts["A"].inner_text()[:20]) else "B"
    short_side = "B" if long_side == "A" else "A"
    # The long text sets the height (so the short box was stretched to it) and none of it is cut off.
    assert heights[long_side] > 4 * heights[short_side]
    long_box, long_text = {"A": a, "B": b}[long_side], texts[long_side].bounding_box()
    assert long_text["y"] + long_text["height"] <= long_box["y"] + long_box["height"] + 1
    assert boxes["AB".index(long_side)].evaluate("e => e.scrollHeight <= e.clientHeight + 1")  # no scrolling
    assert texts[long_side].inner_text().strip().endswith("which is Paris.")


def test_rate_records_a_thumb_from_the_keyboard(page, app_server):
    base, url = app_server
    sign_in(page, base, "keys")
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name=re.compile(r"^default-binary · ")).click()
    expect(page.get_by_role("heading", name="Rate a response")).to_be_visible()
    settled(page)
    expect(page.get_by_text("1 = thumbs up · 2 = thumbs down · S = skip")).to_be_visible()
    first = prompt_text(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "rate-keys.png"), full_page=True)
    page.get_by_role("heading", name="Rate a response").click()  # focus on the page, not a field
    page.keyboard.press("1")
    expect(progress(page)).to_contain_text("1 in all")
    expect(page.get_by_test_id("stChatMessageContent")).not_to_have_text(first)
    settled(page)
    page.get_by_role("heading", name="Rate a response").click()
    page.keyboard.press("2")
    expect(progress(page)).to_contain_text("2 in all")
    labels = labels_of(url, "keys")
    assert [(label.kind, label.thumb) for label in labels] == [("binary", "up"), ("binary", "down")]


def test_a_vote_is_confirmed_and_undo_brings_the_pair_back(page, app_server):
    base, url = app_server
    sign_in(page, base, "undo")
    first = prompt_text(page)
    left = response_box(page, "Response A").get_by_test_id("stMarkdownContainer").nth(1).inner_text()
    page.get_by_role("button", name=re.compile(r"^A is better")).click()
    expect(page.get_by_test_id("stToast").filter(has_text="Saved.")).to_be_visible()
    banner = page.get_by_test_id("stCaptionContainer").filter(has_text="Saved ·")
    expect(banner).to_be_visible()
    expect(progress(page)).to_contain_text("1 in all")
    expect(page.get_by_test_id("stChatMessageContent")).not_to_have_text(first)
    settled(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "saved-banner.png"), full_page=True)
    assert len(labels_of(url, "undo")) == 1

    page.get_by_role("button", name=re.compile("Undo last label")).click()
    expect(page.get_by_test_id("stToast").filter(has_text="Undone")).to_be_visible()
    expect(page.get_by_test_id("stChatMessageContent")).to_have_text(first)
    expect(progress(page)).to_contain_text("0 in all")
    expect(banner).to_have_count(0)
    settled(page)
    # The same pair in the same order.
    expect(response_box(page, "Response A").get_by_test_id("stMarkdownContainer").nth(1)).to_have_text(left)
    assert labels_of(url, "undo") == []

    page.get_by_role("button", name=re.compile(r"^B is better")).click()
    expect(progress(page)).to_contain_text("1 in all")
    (label,) = labels_of(url, "undo")
    engine = make_engine(url)
    try:
        with session_scope(engine, read_only=True) as s:
            assert s.get(Item, label.item_id).prompt.text == first
    finally:
        engine.dispose()
