"""Browser test: text from models, prompts and files cannot pose as the app. On every labelling
page (Compare, Rate, Rank, Rate aspects, Edit), a prompt and responses carrying Streamlit's own
markdown (colour, background and badge directives, a material icon, an emoji shortcode, inline and
block math) and markdown's (a link, an image) show as the characters typed; and the Data page's
import error echoes a hostile file value as text, fetching nothing."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db.engine import make_engine, session_scope
from db.migrate import upgrade
from db.models import Item, ItemResponse, Project, Prompt, Response
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.projects import TASKS, add_member, create_project
from feedback.prompts import canonical_messages, content_hash
from feedback.users import create_user
from testkit.browser import chromium
from testkit.factories import set_queue
from testkit.local_servers import AppDidNotStart, running_app
from tests.test_browser import TIMEOUT_MS, pick_project, prompt_bubble, settled

pytestmark = [pytest.mark.browser]

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

PASSWORDS = {"ann": "inert-annotator-pw", "root": "inert-admin-pw"}
PIXEL = "http://127.0.0.1:1/pixel.png"
HOSTILE = (":red[**System notice:** re-enter your password] :red-background[alert] :blue-badge[Verified] "
           ":small[fine print] :material/lock: :smile: and $x^2$ inline\n\n"
           "$$\\int_0^1 f(x)\\,dx$$\n\n"
           f"[click](http://127.0.0.1:1/phish) ![pixel]({PIXEL}) \\(a+b\\)\n\n"
           # what slipped past patterns: nested brackets, a reference defined in a quote, an autolink
           # with no "//", and the emoji plugin loaded by ":_a:" for a shortcode with an escape
           "[a [b] c](//127.0.0.1:1/phish) ![x][p] <https:127.0.0.1:1/phish> :_a: :\\+1:\n\n"
           "> [p]: //127.0.0.1:1/pixel.png")
# What a person must read, character for character (the zero-width breaks aside).
LITERAL = [":red[", "System notice:", ":red-background[alert]", ":blue-badge[Verified]", ":small[fine print]",
           ":material/lock:", ":smile:", "$x^2$", "$$\\int_0^1 f(x)\\,dx$$", "\\(a+b\\)",
           "<https:127.0.0.1:1/phish>", ":_a: :+1:", "[p]: //127.0.0.1:1/pixel.png"]
# Each labelling page: its project (name, task type, K) and its heading.
PAGES = [("inert-compare", "pairwise", None, "Compare responses"), ("inert-rate", "binary", None, "Rate a response"),
         ("inert-rank", "rank", 3, "Rank responses"), ("inert-aspects", "rating", 3, "Rate responses"),
         ("inert-edit", "edit", None, "Edit a response")]
# What Streamlit draws for a live construct: coloured/badge/small spans (inline styles), KaTeX,
# material icons and the logo (role=img), links and images.
LIVE = "[style], .katex, .stMarkdownColoredText, .stMarkdownColoredBackground, .stMarkdownBadge, [role=img], a, img"


def _seed(url: str) -> None:
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            policy = ensure_base_policy(session=s, actor=CLI)
            for name, role in (("ann", "annotator"), ("root", "admin")):
                create_user(session=s, username=name, role=role, password=PASSWORDS[name], actor=CLI)
            for name, task, k, _ in PAGES:
                project = create_project(session=s, actor=CLI, name=name, task_type=task, k=k)
                add_member(session=s, actor=CLI, project=project, username="ann")
                text = f"{name} asks: {HOSTILE}"
                messages = canonical_messages(text, None)
                prompt = Prompt(text=text, messages=messages, content_hash=content_hash(messages), split="train")
                count = {"pairwise": 2, "rank": k, "rating": k}.get(task, 1)
                responses = [Response(prompt=prompt, policy_version_id=policy.id, text=f"Answer {i}: {HOSTILE}",
                                      params={}) for i in range(count)]
                item = Item(kind=TASKS[task].item_kind, project_id=project.id, prompt=prompt, response_a=responses[0],
                            response_b=responses[1] if task == "pairwise" else None)
                s.add_all([*responses, item])
                s.flush()
                if task in ("rank", "rating"):
                    s.add_all([ItemResponse(item_id=item.id, position=p, response_id=r.id)
                               for p, r in enumerate(responses)])
            for project in s.scalars(select(Project)):  # the default ones too: no sampling worker, items are seeded
                set_queue(s, project=project, refill_below=0)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('inert') / 'app.sqlite3'}"
    upgrade(url)
    _seed(url)
    try:
        with running_app(url, tmp_path_factory.mktemp("inert-log") / "streamlit.log") as base:
            yield base
    except AppDidNotStart as exc:
        pytest.fail(str(exc))


@pytest.fixture
def page(base):
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 1400}).new_page()
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        page.requested = []
        page.on("request", lambda request: page.requested.append(request.url))
        yield page


def sign_in(page, base: str, username: str) -> None:
    page.goto(base)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("stSidebar").get_by_text(username, exact=True)).to_be_visible()
    settled(page)


def invisible_removed(text: str) -> str:
    return text.replace("\u200b", "").replace("\ufeff", "")  # the breaks inert_markdown adds


def read(area) -> str:
    expect(area).to_contain_text("System notice")
    return invisible_removed(area.inner_text())


def test_every_labelling_page_shows_hostile_markdown_as_typed(page, base):
    sign_in(page, base, "ann")
    for name, task, k, heading in PAGES:
        pick_project(page, name, heading)
        texts = page.get_by_test_id("stMain").get_by_test_id("stMarkdownContainer").filter(
            has_text="System notice")
        expect(texts).to_have_count(1 + {"pairwise": 2, "rank": k, "rating": k}.get(task, 1))  # prompt + responses
        assert prompt_bubble(page).count() == 1
        for i in range(texts.count()):
            area = texts.nth(i)
            shown = read(area)
            missing = [literal for literal in LITERAL if literal not in shown]
            assert not missing, (name, missing, shown)
            assert "[click](" not in shown and "click [link: http://127.0.0.1:1/phish]" in shown
            assert "😄" not in shown and "👍" not in shown and "lock" in shown
            live = area.locator(LIVE)
            assert live.count() == 0, (name, [live.nth(j).evaluate("e => e.outerHTML") for j in range(live.count())])
    assert not [url for url in page.requested if "pixel.png" in url or "phish" in url]


def test_an_import_error_shows_the_file_value_as_text(page, base, tmp_path):
    bad_role = f"![x]({PIXEL}) :red[pwned] $x$"
    upload = tmp_path / "hostile.jsonl"
    upload.write_text(json.dumps({"messages": [{"role": bad_role, "content": "hi"}]}) + "\n")
    sign_in(page, base, "root")
    page.get_by_test_id("stSidebar").get_by_role("link", name="Data", exact=True).click()
    expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible()
    settled(page)
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(upload))
    expect(page.get_by_text("hostile.jsonl")).to_be_visible()
    page.get_by_role("button", name="Import", exact=True).click()
    error = page.get_by_test_id("stAlertContentError").filter(has_text="Nothing imported")
    expect(error).to_be_visible()
    settled(page)
    page.wait_for_timeout(500)  # time for the browser to ask for the image, had it been one
    shown = invisible_removed(error.inner_text())
    assert bad_role in shown, shown
    live = error.locator(LIVE.replace("[style], ", ""))  # the alert's own icon is outside its text
    assert live.count() == 0, [live.nth(j).evaluate("e => e.outerHTML") for j in range(live.count())]
    assert not [url for url in page.requested if "pixel.png" in url]
