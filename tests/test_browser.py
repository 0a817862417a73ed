"""Browser tests: the real app (`streamlit run app.py`) in headless Chromium, one test per user
journey. The app runs against a throw-away SQLite database seeded through the ORM; refills are
off (refill_below=0), so no sampling worker starts and no model is loaded."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import make_engine, session_scope
from db.migrate import upgrade
from db.models import (
    Assignment,
    AuditLog,
    Guidelines,
    Item,
    ItemDecision,
    ItemResponse,
    Label,
    Project,
    Prompt,
    Response,
    User,
    utcnow,
)
from feedback.actors import CLI
from feedback.client import Client
from feedback.conversions import edit_distance
from feedback.export import export_rows
from feedback.policies import ensure_base_policy
from feedback.projects import add_member, create_project, default_project
from feedback.prompts import canonical_messages, content_hash
from feedback.settings import PROJECT_ROOT
from feedback.tokens import create_token
from feedback.users import create_user
from testkit.browser import CHROMIUM, chromium
from testkit.factories import set_queue
from testkit.local_servers import AppDidNotStart, running_app
from tests.trl_check import causal_lm

pytestmark = [pytest.mark.browser]

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

SHOTS = Path("/tmp/shots")
PASSWORDS = {"ann": "annotator-pw", "root": "admin-password", "eve": "fresh-annotator-pw",
             "bob": "bob-annotator-pw", "cat": "cat-annotator-pw", "rev": "reviewer-pw",
             "dan": "dan-annotator-pw"}  # dan: made in the client journey, for its project only
TIMEOUT_MS = 15_000

# Four ordinary pairs and two single responses, with texts the test can find on the page.
PAIRS = [(f"Browser question {i}?", f"alpha answer {i}", f"beta answer {i}") for i in range(4)]
SINGLES = [(f"Single question {i}?", f"lone answer {i}") for i in range(2)]
XSS_PROMPT = "Is <b>bold?</b> safe?"
XSS_A = "Hello <script>window.__xss=1</script> and <img src=x onerror=\"window.__xss=2\"> done."
XSS_B = ("See ![pixel](http://127.0.0.1:9/tracker.png) and [click me](javascript:window.__xss=3) "
         "and http://127.0.0.1:9/bare and www.example.test too.")

# The three task pages that have screenshots in docs/: rank (made by an admin in its journey),
# rating and edit (seeded). Guidelines carry a link and an image that must stay inert.
DOCS = PROJECT_ROOT / "docs"
RANKED = [
    ("What is 12 x 7?", ["84.", "12 x 7 = 84 (10 x 7 = 70, plus 2 x 7 = 14).", "It is 74.",
                         "I'd rather not do arithmetic."]),
    ("Name a prime number between 20 and 30.", ["23", "23 and 29 are both primes between 20 and 30.", "25",
                                                "21 is prime."]),
]
RATED = ("Explain in one sentence why the sky is blue.", [
    "Sunlight scatters off air molecules, and blue light scatters most, so the sky looks blue.",
    "Because it reflects the ocean.",
    "Rayleigh scattering: shorter (blue) wavelengths scatter much more than red ones in the atmosphere.",
])
TO_EDIT = ("Give a one-line definition of a mutex.",
           ["A mutex is a lock that lets only one thread at a time use a shared thing, sort of."])
RANK_GUIDELINES = ("Rank every answer: **1 is the best**; equal ranks for ties. Wrong answers go to the bottom. "
                   "See [the handbook](http://127.0.0.1:9/handbook) ![logo](http://127.0.0.1:9/logo.png)")
PROJECTS = [
    ("rated", "rating", 3, "Score each answer **1-5** on every aspect. [More](http://127.0.0.1:9/more)"),
    ("fixes", "edit", None, "Fix errors first, then cut padding; keep what is good."),
]

if not Path(CHROMIUM).exists():
    pytestmark.append(pytest.mark.skip(reason=f"{CHROMIUM} not installed (scripts/system-packages.sh)"))



def _prompt(session, text: str) -> Prompt:
    messages = canonical_messages(text, None)
    prompt = Prompt(text=text, messages=messages, content_hash=content_hash(messages), split="train")
    session.add(prompt)
    session.flush()
    return prompt


def add_k_item(s, *, project: Project, question: str, answers: list[str], policy_id: int) -> int:
    """One item of the project's kind on a new prompt: its K answers by position (rank, rating),
    or its one answer (edit). Stands in for sampling (tested on its own): no model here."""
    prompt = _prompt(s, question)
    responses = [Response(prompt_id=prompt.id, policy_version_id=policy_id, text=a, params={}) for a in answers]
    s.add_all(responses)
    s.flush()
    item = Item(kind=project.task_type, project_id=project.id, prompt_id=prompt.id, response_a_id=responses[0].id)
    s.add(item)
    s.flush()
    if project.task_type in ("rank", "rating"):
        s.add_all([ItemResponse(item_id=item.id, position=p, response_id=r.id) for p, r in enumerate(responses)])
    return item.id


def _seed(url: str) -> None:
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            v0 = ensure_base_policy(session=s, actor=CLI)
            users = {name: create_user(session=s, username=name, role=role, password=PASSWORDS[name], actor=CLI)
                     for name, role in (("ann", "annotator"), ("root", "admin"), ("eve", "annotator"),
                                        ("bob", "annotator"), ("cat", "annotator"), ("rev", "reviewer"))}
            # Refills would start a real sampling worker; the items are seeded here instead.
            set_queue(s, kind='pair', overlap=1, refill_below=0)
            set_queue(s, kind='single', overlap=1, refill_below=0)
            PAIR, SINGLE = default_project(session=s).id, default_project(session=s, kind='single').id

            def response(prompt: Prompt, text: str) -> Response:
                r = Response(prompt_id=prompt.id, policy_version_id=v0.id, text=text, params={})
                s.add(r)
                s.flush()
                return r

            # The hostile pair has the lowest id, so it is the first pair a fresh annotator (eve)
            # gets; everybody else had it already (skipped), so whatever order the journeys run
            # in, only eve is shown it.
            prompt = _prompt(s, XSS_PROMPT)
            xss = Item(kind="pair", project_id=PAIR, prompt_id=prompt.id,
                       response_a_id=response(prompt, XSS_A).id, response_b_id=response(prompt, XSS_B).id)
            s.add(xss)
            s.flush()
            for name in ("ann", "root", "bob", "cat"):
                s.add(Assignment(item_id=xss.id, user_id=users[name].id, shown_order="ab", status="skipped",
                                 expires_at=utcnow(), finished_at=utcnow()))
            for question, a, b in PAIRS:
                prompt = _prompt(s, question)
                s.add(Item(kind="pair", project_id=PAIR, prompt_id=prompt.id,
                           response_a_id=response(prompt, a).id, response_b_id=response(prompt, b).id))
            for question, text in SINGLES:
                prompt = _prompt(s, question)
                s.add(Item(kind="single", project_id=SINGLE, prompt_id=prompt.id,
                           response_a_id=response(prompt, text).id))
            # A rating and an edit project for ann (the rank project is made by an admin in a journey).
            for name, task, k, guidelines in PROJECTS:
                project = create_project(session=s, actor=CLI, name=name, task_type=task, k=k,
                                         guidelines=guidelines)
                set_queue(s, project=project, refill_below=0)
                add_member(session=s, actor=CLI, project=project, username="ann")
            for name, question, answers in (("rated", *RATED), ("fixes", *TO_EDIT)):
                add_k_item(s, project=s.scalar(select(Project).where(Project.name == name)), question=question,
                           answers=answers, policy_id=v0.id)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """`streamlit run app.py` on a free loopback port against a freshly seeded SQLite file;
    yields (base URL, database URL)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'app.sqlite3'}"
    upgrade(url)
    _seed(url)
    log = tmp_path_factory.mktemp("browser-log") / "streamlit.log"
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
    # Only loopback: anything else the page tries to fetch is refused (and counted).
    page.outside_requests = []
    page.requested = []
    page.dialogs = []
    page.on("request", lambda request: page.requested.append(request.url))

    def on_dialog(dialog):
        page.dialogs.append((dialog.type, dialog.message))
        dialog.dismiss()

    page.on("dialog", on_dialog)

    def guard(route):
        host = route.request.url.split("/")[2].rsplit(":", 1)[0] if "://" in route.request.url else ""
        if host in ("127.0.0.1", "localhost", "[::1]") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            page.outside_requests.append(route.request.url)  # the app must not call anywhere else
            route.abort()

    context.route("**/*", guard)
    yield page
    context.close()


# ---------------------------------------------------------------------------------- helpers


def settled(page) -> None:
    """Wait until the current script run has finished drawing: no stale or placeholder elements."""
    expect(page.locator('[data-stale="true"]')).to_have_count(0)
    expect(page.locator('[data-testid="stSkeleton"]')).to_have_count(0)
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def sign_in(page, base: str, username: str) -> None:
    page.goto(base)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()
    # The default page after signing in is Compare.
    expect(page.get_by_role("heading", name="Compare responses")).to_be_visible()
    expect(page.get_by_test_id("stSidebar").get_by_text(username, exact=True)).to_be_visible()


def response_box(page, title: str):
    """The bordered box show_response draws: its title in bold, then the (untrusted) text."""
    return page.locator(f'xpath=//strong[normalize-space()="{title}"]'
                        '/ancestor::div[@data-testid="stElementContainer"][1]/parent::div')


def drawn_text(locator) -> str:
    """The locator's text once the browser has drawn some: a read mid-render can see an empty element."""
    expect(locator).to_have_text(re.compile(r"\S"))
    return locator.inner_text().strip()


def response_text(page, title: str) -> str:
    return drawn_text(response_box(page, title).get_by_test_id("stMarkdownContainer").nth(1))


def prompt_bubble(page):
    return page.get_by_test_id("stChatMessageContent")


def progress_caption(page):
    return page.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(r"^You: "))


def shown_pair(page) -> dict[str, str]:
    settled(page)
    expect(response_box(page, "Response B")).to_be_visible()
    return {"prompt": drawn_text(prompt_bubble(page)), "left": response_text(page, "Response A"),
            "right": response_text(page, "Response B")}


def wait_for_next_pair(page, *, previous_prompt: str, labelled: int) -> None:
    expect(progress_caption(page)).to_contain_text(f", {labelled} in all")
    expect(prompt_bubble(page)).not_to_have_text(previous_prompt)
    settled(page)


# ---------------------------------------------------------------------------------- journeys


def test_annotator_labels_pairs_and_a_single(page, app_server):
    base, url = app_server
    sign_in(page, base, "ann")
    expect(progress_caption(page)).to_contain_text("0 in all")

    # 1) Click "A is better" (with a strength): the left response is the chosen one.
    first = shown_pair(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)
    page.get_by_role("radio", name="much better").click()
    expect(page.get_by_role("radio", name="much better")).to_be_checked()
    settled(page)
    page.get_by_role("button", name=re.compile(r"^A is better")).click()
    wait_for_next_pair(page, previous_prompt=first["prompt"], labelled=1)

    # 2) The keyboard shortcut "2" = B is better: the right response is the chosen one.
    second = shown_pair(page)
    page.get_by_role("heading", name="Compare responses").click()  # focus on the page, not a field
    page.keyboard.press("2")
    wait_for_next_pair(page, previous_prompt=second["prompt"], labelled=2)

    # 3) Tie, with a rationale.
    third = shown_pair(page)
    page.get_by_label("Why? (optional)").fill("equally good, both correct")
    page.get_by_role("button", name=re.compile(r"^Tie")).click()
    wait_for_next_pair(page, previous_prompt=third["prompt"], labelled=3)
    shown_pair(page)  # the fourth pair is on screen, not yet labelled

    # The Rate page, through the sidebar: one thumbs up.
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name="default-binary · binary").click()
    expect(page.get_by_role("heading", name="Rate a response")).to_be_visible()
    settled(page)
    expect(progress_caption(page)).to_contain_text("0 in all")
    single = {"prompt": drawn_text(prompt_bubble(page)), "text": response_text(page, "Response")}
    page.screenshot(path=str(SHOTS / "rate.png"), full_page=True)
    page.get_by_role("radio", name="Thumbs up").click()
    expect(progress_caption(page)).to_contain_text("1 in all")
    settled(page)

    engine = make_engine(url)
    try:
        with session_scope(engine, read_only=True) as s:
            ann = s.scalar(select(User).where(User.username == "ann"))
            labels = s.scalars(select(Label).where(Label.user_id == ann.id).order_by(Label.id)).all()
            assert [label.kind for label in labels] == ["pairwise"] * 3 + ["binary"]
            assert all(label.source == "human" for label in labels)
            for label, shown, preferred in zip(labels, (first, second, third), ("left", "right", "tie"), strict=False):
                item = s.get(Item, label.item_id)
                a, b = item.response_a.text, item.response_b.text
                assert item.prompt.text == shown["prompt"]
                # The order recorded is the order that was on the screen ...
                assert (shown["left"], shown["right"]) == ((a, b) if label.shown_order == "ab" else (b, a))
                # ... and left/right went through it to the item's own a/b.
                left, right = ("a", "b") if label.shown_order == "ab" else ("b", "a")
                assert label.choice == {"left": left, "right": right, "tie": "tie"}[preferred]
                if preferred != "tie":
                    chosen = a if label.choice == "a" else b
                    assert chosen == shown[preferred]
            assert (labels[0].strength, labels[1].strength, labels[2].strength) == ("much", None, None)
            assert labels[2].rationale == "equally good, both correct"
            assert labels[0].rationale is None and labels[1].rationale is None
            binary = labels[3]
            item = s.get(Item, binary.item_id)
            assert (item.kind, binary.thumb) == ("single", "up")
            assert (item.prompt.text, item.response_a.text) == (single["prompt"], single["text"])
    finally:
        engine.dispose()
    assert page.outside_requests == []


def test_untrusted_text_is_inert(page, app_server):
    base, _ = app_server
    sign_in(page, base, "eve")
    shown = shown_pair(page)
    assert "bold?" in shown["prompt"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "xss.png"), full_page=True)
    page.wait_for_timeout(500)  # give any injected handler (onerror, a late script) a chance to run

    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.dialogs == []
    boxes = [response_box(page, "Response A"), response_box(page, "Response B")]
    untrusted = [*boxes, prompt_bubble(page)]
    for area in untrusted:
        expect(area).to_have_count(1)
        assert area.locator("script").count() == 0
        assert area.locator("img").count() == 0  # no remote image, no onerror
        assert area.locator("a").count() == 0  # no link at all, javascript: or otherwise
        assert area.locator("b").count() == 0
    main = page.get_by_test_id("stMain")
    assert page.locator('a[href^="javascript:" i]').count() == 0
    assert main.locator('img[src^="http" i]').count() == 0
    assert main.locator("script").count() == 0
    # The markup is shown as text, whichever side each response landed on.
    both = " ".join((shown["left"], shown["right"]))
    assert "<script>window.__xss=1</script>" in both
    assert "onerror" in both and "pixel" in both and "click me" in both
    expect(page.get_by_text("<script>window.__xss=1</script>", exact=False)).to_be_visible()
    expect(prompt_bubble(page)).to_contain_text("<b>bold?</b>")
    assert not [u for u in page.requested if "tracker.png" in u or u.startswith("javascript:")]
    assert page.outside_requests == []


def test_admin_opens_the_data_page(page, app_server):
    base, _ = app_server
    sign_in(page, base, "root")
    page.get_by_test_id("stSidebar").get_by_role("link", name="Data", exact=True).click()
    expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible()
    tabs = page.get_by_role("tab")
    expect(tabs).to_have_text(["Import prompts", "Browse", "Sample", "Export"])
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text="prompts").first).to_contain_text("9 prompts")
    page.get_by_role("tab", name="Browse").click()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    settled(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "data.png"), full_page=True)
    assert page.outside_requests == []


def pick_project(page, name: str, heading: str) -> None:
    """Choose a project in the sidebar; the Label page becomes that project's task page."""
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name=re.compile(rf"^{re.escape(name)} · ")).click()
    expect(page.get_by_role("heading", name=heading)).to_be_visible()
    settled(page)


def shown_responses(page, k: int) -> list[str]:
    expect(response_box(page, f"Response {k}")).to_be_visible()
    return [response_text(page, f"Response {i + 1}") for i in range(k)]


def by_position(s, item_id: int) -> list[str]:
    return list(s.scalars(select(Response.text).join(ItemResponse, ItemResponse.response_id == Response.id)
                          .where(ItemResponse.item_id == item_id).order_by(ItemResponse.position)))


def expect_guidelines_inert(page, version: int) -> None:
    """The guidelines expander names the version; its link and image are words, not markup."""
    expander = page.get_by_test_id("stExpander").filter(has_text=f"version {version}")
    expect(expander).to_have_count(1)
    expander.locator("summary").click()
    expect(expander.get_by_test_id("stMarkdownContainer").first).to_be_visible()
    assert expander.locator("a").count() == 0 and expander.locator("img").count() == 0


def test_admin_makes_a_rank_project_and_two_annotators_rank_it(browser, page, app_server):
    """The rank journey: an admin creates a K=4 project with guidelines, adds two annotators and
    asks for two labels per item; both rank every item in their own browser; exactly their ranks,
    mapped back through the order each was shown, are in the database, and the project's reward
    export has rows."""
    base, url = app_server
    sign_in(page, base, "root")
    page.get_by_test_id("stSidebar").get_by_role("link", name="Projects", exact=True).click()
    expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
    page.get_by_text("New project").click()
    page.get_by_label("Name", exact=True).fill("ranked")
    page.get_by_label("Task type").click()
    page.get_by_role("option", name=re.compile(r"^rank: ")).click()
    page.get_by_label(re.compile(r"^Guidelines \(markdown; shown")).fill(RANK_GUIDELINES)
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_text("Created rank project ranked.")).to_be_visible()
    settled(page)
    page.get_by_role("tab", name="Members").click()
    for name in ("bob", "cat"):
        page.get_by_label("Username").fill(name)
        page.get_by_role("button", name="Add member").click()
        expect(page.get_by_text(f"Added {name} to ranked.")).to_be_visible()
        settled(page)
    page.get_by_role("tab", name="Queue").click()
    page.get_by_label("Overlap: different annotators per item").fill("2")
    page.get_by_label("Refill when fewer open items than").fill("0")  # seeded below: no sampling worker
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("Saved the queue settings of ranked.")).to_be_visible()

    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            project = s.scalar(select(Project).where(Project.name == "ranked"))
            assert (project.task_type, project.k, project.overlap, project.refill_below) == ("rank", 4, 2, 0)
            v0 = ensure_base_policy(session=s, actor=CLI)
            for question, answers in RANKED:
                add_k_item(s, project=project, question=question, answers=answers, policy_id=v0.id)
    finally:
        engine.dispose()

    # Each annotator ranks by the text: the answers' qualities are fixed, whatever order they come in.
    quality = {text: rank for _, answers in RANKED for text, rank in zip(answers, (1, 1, 3, 4), strict=True)}
    quality["84."] = 2  # the terse right answer second; the second item keeps its tie at the top
    given: dict[tuple[str, str], dict[str, int]] = {}
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1400}) for _ in range(2)]
    try:
        pages = dict(zip(("bob", "cat"), (c.new_page() for c in contexts), strict=True))
        for name, p in pages.items():
            p.set_default_timeout(TIMEOUT_MS)
            sign_in(p, base, name)
            pick_project(p, "ranked", "Rank responses")
        for round_no in range(1, 3):
            for name, p in pages.items():
                question = drawn_text(prompt_bubble(p))
                texts = shown_responses(p, 4)
                if round_no == 1 and name == "bob":
                    expect_guidelines_inert(p, 1)
                    # Submitting before every response has a rank is refused and writes nothing.
                    p.get_by_role("button", name="Submit", exact=True).click()
                    expect(p.get_by_text("Give every response a rank first")).to_be_visible()
                    settled(p)
                for i, text in enumerate(texts):
                    response_box(p, f"Response {i + 1}").get_by_role("radio", name=str(quality[text]),
                                                                     exact=True).click()
                    settled(p)
                given[(name, question)] = {text: quality[text] for text in texts}
                if round_no == 1 and name == "bob":
                    p.screenshot(path=str(DOCS / "rank.png"), full_page=True)
                p.get_by_role("button", name="Submit", exact=True).click()
                expect(progress_caption(p)).to_contain_text(f", {round_no} in all")
                settled(p)
        for p in pages.values():
            expect(progress_caption(p)).to_contain_text("0 items left for you")
    finally:
        for c in contexts:
            c.close()

    engine = make_engine(url)
    try:
        with session_scope(engine, read_only=True) as s:
            project = s.scalar(select(Project).where(Project.name == "ranked"))
            v1 = s.scalar(select(Guidelines.id).where(Guidelines.project_id == project.id, Guidelines.version == 1))
            labels = s.execute(select(Label, User.username, Prompt.text).join(User, User.id == Label.user_id)
                               .join(Item, Item.id == Label.item_id).join(Prompt, Prompt.id == Item.prompt_id)
                               .where(Item.project_id == project.id)).all()
            assert len(labels) == 4 and {(u, q) for _, u, q in labels} == set(given)
            for label, username, question in labels:
                texts = by_position(s, label.item_id)
                assert label.kind == "rank" and label.guidelines_id == v1
                # Shown i-th was position shown_permutation[i]; the rank recorded per position is
                # exactly the one given to that text on the screen.
                assert sorted(label.shown_permutation) == [0, 1, 2, 3]
                assert label.ranking == [given[(username, question)][text] for text in texts]
            rows = export_rows(session=s, fmt="reward", project="ranked")
        # Both annotators agree: the first item strictly ordered (6 pairs), the second with a tie (5).
        assert len(rows) == 11 and {r["rule"] for r in rows} == {"rank:all_pairs"}
        assert all(quality[r["chosen"][0]["content"]] < quality[r["rejected"][0]["content"]] for r in rows)
    finally:
        engine.dispose()
    assert page.outside_requests == []


def test_annotator_rates_every_aspect(page, app_server):
    base, url = app_server
    page.set_viewport_size({"width": 1400, "height": 2600})  # the whole page in docs/rating.png
    sign_in(page, base, "ann")
    pick_project(page, "rated", "Rate responses")
    expect_guidelines_inert(page, 1)
    texts = shown_responses(page, 3)
    aspects = ("Instruction following", "Truthfulness", "Honesty", "Helpfulness")
    # Scores by text (the order on screen is random): the ocean answer is poor on every aspect.
    wanted = {text: (2 if "ocean" in text else 5 if "Rayleigh" in text else 4) for text in texts}
    for i, text in enumerate(texts):
        box = response_box(page, f"Response {i + 1}")
        for aspect in aspects[:-1] if i == 0 else aspects:  # the first one's last aspect left out at first
            box.get_by_role("radiogroup", name=aspect).get_by_role("radio", name=str(wanted[text])).click()
            settled(page)
    page.get_by_role("button", name="Submit", exact=True).click()
    expect(page.get_by_text(re.compile(r"Rate every aspect of every response first"))).to_be_visible()
    settled(page)
    first = response_box(page, "Response 1")
    first.get_by_role("radiogroup", name="Helpfulness").get_by_role("radio", name=str(wanted[texts[0]])).click()
    settled(page)
    first.get_by_label("Why, for truthfulness? (optional)").fill("checked it")
    settled(page)
    page.screenshot(path=str(DOCS / "rating.png"), full_page=True)
    page.get_by_role("button", name="Submit", exact=True).click()
    expect(progress_caption(page)).to_contain_text(", 1 in all")
    settled(page)

    engine = make_engine(url)
    try:
        with session_scope(engine, read_only=True) as s:
            ann = s.scalar(select(User).where(User.username == "ann"))
            (label,) = s.scalars(select(Label).where(Label.user_id == ann.id, Label.kind == "rating")).all()
            by_pos = by_position(s, label.item_id)
            keys = ("instruction_following", "truthfulness", "honesty", "helpfulness")
            assert [r["scores"] for r in label.ratings] == [{k: wanted[t] for k in keys} for t in by_pos]
            first_position = label.shown_permutation[0]
            assert label.ratings[first_position]["rationales"] == {"truthfulness": "checked it"}
            assert [by_pos[p] for p in label.shown_permutation] == texts
    finally:
        engine.dispose()
    assert page.outside_requests == []


def test_annotator_rewrites_a_response(page, app_server):
    base, url = app_server
    sign_in(page, base, "ann")
    pick_project(page, "fixes", "Edit a response")
    original = TO_EDIT[1][0]
    rewrite = "A mutex is a lock that lets only one thread at a time use a shared resource."
    box = page.get_by_label("Your rewrite")
    expect(box).to_have_value(original)
    box.fill(rewrite)
    box.blur()  # the text area reports its value when it loses focus
    settled(page)
    diff = page.get_by_test_id("stCode")
    expect(diff).to_contain_text("+" + rewrite)
    expect(diff).to_contain_text("-" + original)
    expect(page.get_by_text(f"Edit distance: {edit_distance(original, rewrite)} characters")).to_be_visible()
    page.screenshot(path=str(DOCS / "edit.png"), full_page=True)
    page.get_by_role("button", name="Submit", exact=True).click()
    expect(progress_caption(page)).to_contain_text(", 1 in all")

    engine = make_engine(url)
    try:
        with session_scope(engine, read_only=True) as s:
            ann = s.scalar(select(User).where(User.username == "ann"))
            (label,) = s.scalars(select(Label).where(Label.user_id == ann.id, Label.kind == "edit")).all()
            assert (label.edited_text, label.edit_distance) == (rewrite, edit_distance(original, rewrite))
            rows = export_rows(session=s, fmt="sft", project="fixes")
            pairs = export_rows(session=s, fmt="dpo", project="fixes")
        assert [r["completion"][0]["content"] for r in rows] == [rewrite]
        assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in pairs] == \
            [(rewrite, original)]
    finally:
        engine.dispose()
    assert page.outside_requests == []


# A pair two annotators and the AI judge disagree on, in a project nobody is served from.
DISPUTE = ("At what temperature does water boil at sea level?",
           "At sea level water boils at 100 °C (212 °F).",
           "Water boils at 90 °C at sea level; see [the chart](http://127.0.0.1:9/chart).")


def test_reviewer_settles_a_dispute(page, app_server):
    """A reviewer opens Review, picks the project, reads the disputed pair and its labels, and
    settles it with an answer, a note and a gold mark; the decision and its audit row are stored."""
    base, url = app_server
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            v0 = ensure_base_policy(session=s, actor=CLI)
            project = create_project(session=s, actor=CLI, name="disputed", task_type="pairwise")
            set_queue(s, project=project, refill_below=0)
            question, a, b = DISPUTE
            prompt = _prompt(s, question)
            ra, rb = (Response(prompt_id=prompt.id, policy_version_id=v0.id, text=t, params={}) for t in (a, b))
            s.add_all([ra, rb])
            s.flush()
            item = Item(kind="pair", project_id=project.id, prompt_id=prompt.id, response_a_id=ra.id,
                        response_b_id=rb.id)
            s.add(item)
            s.flush()
            item_id = item.id
            users = dict(s.execute(select(User.username, User.id)).all())
            s.add_all([
                Label(item_id=item_id, kind="pairwise", choice="a", source="human", user_id=users["ann"],
                      shown_order="ab", submission_id="dispute-ann", rationale="B gets the temperature wrong."),
                Label(item_id=item_id, kind="pairwise", choice="b", source="human", user_id=users["bob"],
                      shown_order="ba", submission_id="dispute-bob"),
                Label(item_id=item_id, kind="pairwise", choice="a", source="judge", producer="local:smollm2",
                      submission_id="dispute-judge", rationale="A is correct."),
            ])
    finally:
        engine.dispose()

    page.set_viewport_size({"width": 1400, "height": 1300})  # the whole page in docs/review.png
    sign_in(page, base, "rev")
    page.get_by_test_id("stSidebar").get_by_role("link", name="Review", exact=True).click()
    expect(page.get_by_role("heading", name="Review", exact=True)).to_be_visible()
    settled(page)
    page.get_by_test_id("stMain").get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="disputed · pairwise").click()
    settled(page)
    expect(page.get_by_text("1 disputed item,")).to_be_visible()
    expect(response_box(page, "Response A")).to_contain_text(DISPUTE[1])
    assert response_box(page, "Response B").locator("a").count() == 0  # the model's link stays text
    page.get_by_text("A is better", exact=True).click()
    page.get_by_label(re.compile(r"^Note \(required")).fill("A is right: 100 °C at sea level; B is wrong.")
    page.get_by_text(re.compile(r"^Make it gold")).click()
    expect(page.get_by_role("checkbox", name=re.compile(r"^Make it gold"))).to_be_checked()
    page.screenshot(path=str(DOCS / "review.png"), full_page=True)
    page.get_by_role("button", name="Settle", exact=True).click()
    expect(page.get_by_text(f"Settled item {item_id}: A is better, now gold.")).to_be_visible()
    expect(page.get_by_text("No disputed items in disputed")).to_be_visible()
    settled(page)
    # Settled and gold: the Gold tab counts it; the Annotators tab has no admin buttons for a reviewer.
    page.get_by_role("tab", name="Gold").click()
    expect(page.get_by_test_id("stMetric").filter(has_text="Settled and gold")).to_contain_text("1")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-gold.png"), full_page=True)
    page.get_by_role("tab", name="Annotators").click()
    expect(page.get_by_role("heading", name="Standings from gold answers")).to_be_visible()
    expect(page.get_by_role("button", name="Lift pause")).to_have_count(0)
    measures = page.get_by_test_id("stTabPanel").filter(visible=True).get_by_test_id("stDataFrame")
    expect(measures).to_have_count(1)  # no standings yet (a sentence says so); the annotators' measures
    expect(measures).to_be_visible()
    page.screenshot(path=str(SHOTS / "review-annotators.png"), full_page=True)

    engine = make_engine(url)
    try:
        with session_scope(engine, read_only=True) as s:
            decision = s.get(ItemDecision, item_id)
            audit = s.scalar(select(AuditLog).where(AuditLog.action == "decision.adjudication",
                                                    AuditLog.target == f"item:{item_id}"))
            assert (decision.origin, decision.choice, decision.gold) == ("adjudication", "a", True)
            assert decision.note == "A is right: 100 °C at sea level; B is wrong."
            assert audit.actor == "app:rev"
    finally:
        engine.dispose()
    assert page.outside_requests == []


def test_two_annotators_at_once_never_get_the_same_pair(browser, app_server):
    """Two people signed in at the same time label a fresh pool between them: each pair is shown
    to one of them only (overlap 1) and labelled exactly once. Runs last: it adds its own pairs,
    and by then the earlier journeys hold every other pair."""
    base, url = app_server
    team = [(f"Team question {i}?", f"first team answer {i}", f"second team answer {i}") for i in range(6)]
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            v0 = ensure_base_policy(session=s, actor=CLI)
            for question, a, b in team:
                prompt = _prompt(s, question)
                ra, rb = (Response(prompt_id=prompt.id, policy_version_id=v0.id, text=t, params={}) for t in (a, b))
                s.add_all([ra, rb])
                s.flush()
                s.add(Item(kind="pair", project_id=default_project(session=s).id, prompt_id=prompt.id,
                           response_a_id=ra.id, response_b_id=rb.id))
    finally:
        engine.dispose()

    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    try:
        bob, cat = (c.new_page() for c in contexts)
        for p in (bob, cat):
            p.set_default_timeout(TIMEOUT_MS)
        sign_in(bob, base, "bob")
        sign_in(cat, base, "cat")
        seen: dict[str, list[str]] = {"bob": [], "cat": []}
        for round_no in range(1, 4):
            shown = {name: shown_pair(p)["prompt"] for name, p in (("bob", bob), ("cat", cat))}
            # Both screens show a pair at the same moment: never the same one.
            assert shown["bob"] != shown["cat"], shown
            for name in shown:
                seen[name].append(shown[name])
            # Click in both browsers without waiting in between: the two votes are in flight together.
            bob.get_by_role("button", name=re.compile(r"^A is better")).click()
            cat.get_by_role("button", name=re.compile(r"^B is better")).click()
            for name, p in (("bob", bob), ("cat", cat)):
                expect(progress_caption(p)).to_contain_text(f", {round_no} in all")
                if round_no < 3:
                    expect(prompt_bubble(p)).not_to_have_text(shown[name])
        # Six pairs, three each: the pool is empty for both now.
        for p in (bob, cat):
            settled(p)
            expect(progress_caption(p)).to_contain_text("0 pairs left for you")
    finally:
        for c in contexts:
            c.close()

    assert sorted(seen["bob"] + seen["cat"]) == sorted(q for q, _, _ in team)
    engine = make_engine(url)
    try:
        with session_scope(engine, read_only=True) as s:
            rows = s.execute(select(Prompt.text, User.username, Label.choice, Label.shown_order)
                             .join(Item, Item.id == Label.item_id).join(Prompt, Prompt.id == Item.prompt_id)
                             .join(User, User.id == Label.user_id)
                             .where(Prompt.text.like("Team question %"))).all()
    finally:
        engine.dispose()
    assert len(rows) == 6 and len({text for text, *_ in rows}) == 6  # each pair labelled exactly once
    assert {text: user for text, user, *_ in rows} == {q: name for name in seen for q in seen[name]}
    for _, user, choice, shown_order in rows:  # bob chose left, cat right, mapped through the shown order
        left, right = ("a", "b") if shown_order == "ab" else ("b", "a")
        assert choice == (left if user == "bob" else right)


# The "done when": records pushed from a script, labelled in the browser, trained on.
SCRIPTED = "client-records"  # sorts before "default": the first project dan (a member of it only) is given


@pytest.fixture
def one_torch_thread():
    """As in tests/test_stages.py: the tiny model only loses from intra-op threads on 2 busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.train
def test_records_from_the_client_labelled_in_the_browser_train_dpo(page, app_server, tmp_path, tiny_model_dir,
                                                                    one_torch_thread):
    """A script using only feedback.client pushes 10 records (two named models' answers each)
    into a pairwise project; an annotator labels all 10 on the Compare page, by keyboard and by
    button; the script reads the 10 labels back by its own client ids, writes a datasets
    directory, and TRL's DPOTrainer trains on `load_from_disk(DIR)["train"]`. Runs after the other
    journeys: its 10 prompts would change the Data page's prompt count; its project is members-only
    (dan alone), so nobody else is served its pairs."""
    base, url = app_server
    # The admin's part: a members-only pairwise project for dan (no refills: no sampling worker),
    # and an API token for the script (what `python -m feedback tokens create --user root` makes).
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            create_user(session=s, username="dan", role="annotator", password=PASSWORDS["dan"], actor=CLI)
            project = create_project(session=s, actor=CLI, name=SCRIPTED, task_type="pairwise",
                                     guidelines="Prefer the correct answer.")
            set_queue(s, project=project, overlap=1, refill_below=0)
            add_member(session=s, actor=CLI, project=project, username="dan")
            _, token = create_token(session=s, actor=CLI, username="root", name="done-when script")
    finally:
        engine.dispose()

    # The script, part 1: only the client, over HTTP.
    api = Client(base, token)
    assert api.me()["role"] == "admin"
    good = {f"Scripted question {i}?": f"correct scripted answer {i}" for i in range(10)}
    pushed = {}  # client id -> (prompt, position of the correct answer in the record)
    for i, (question, right) in enumerate(good.items()):
        wrong = f"mistaken scripted answer {i}"
        responses, models = (([right, wrong], ["model-good", "model-bad"]) if i % 2 == 0
                             else ([wrong, right], ["model-bad", "model-good"]))
        record = api.compare(question, responses, models=models, project=SCRIPTED, metadata={"run": "done-when"})
        assert record["created"] and len(record["item_ids"]) == 1
        pushed[record["client_id"]] = (question, responses.index(right), models)
    assert len(pushed) == 10

    # The annotator, in Chromium: every pair, the correct answer chosen; keys for half, buttons for half.
    sign_in(page, base, "dan")
    expect(page.get_by_test_id("stSidebar").get_by_role("combobox", name="Project")).to_have_value(
        f"{SCRIPTED} · pairwise")
    expect(progress_caption(page)).to_contain_text("0 in all")
    seen = []
    for n in range(1, 11):
        shown = shown_pair(page)
        assert shown["prompt"] in good and shown["prompt"] not in seen
        seen.append(shown["prompt"])
        side = "left" if shown["left"] == good[shown["prompt"]] else "right"
        assert shown[side] == good[shown["prompt"]]
        if n % 2:
            page.get_by_role("heading", name="Compare responses").click()  # focus on the page, not a field
            page.keyboard.press("1" if side == "left" else "2")
        else:
            page.get_by_role("button", name=re.compile(r"^A is better" if side == "left" else r"^B is better")).click()
        if n < 10:
            wait_for_next_pair(page, previous_prompt=shown["prompt"], labelled=n)
    expect(progress_caption(page)).to_contain_text(", 10 in all")
    settled(page)
    expect(progress_caption(page)).to_contain_text("0 pairs left for you")
    assert sorted(seen) == sorted(good)
    assert page.outside_requests == []

    # The script, part 2: the labels back by client id, then a datasets directory.
    labels = list(api.labels(project=SCRIPTED, page_size=4))
    assert len(labels) == 10 and {label["client_id"] for label in labels} == set(pushed)
    for label in labels:
        question, right_at, models = pushed[label["client_id"]]
        assert (label["kind"], label["source"], label["annotator"], label["project"]) == \
            ("pairwise", "human", "dan", SCRIPTED)
        assert label["choice"] == "ab"[right_at]  # in the record's own terms: a = responses[0]
        assert [r["policy_version"] for r in label["responses"]] == [f"ext:{m}" for m in models]
    directory = api.export_dataset("dpo", tmp_path / "dpo-dataset", project=SCRIPTED)

    from datasets import load_from_disk
    from trl import DPOConfig, DPOTrainer

    train = load_from_disk(str(directory))["train"]
    assert train.num_rows == 10 and {"prompt", "chosen", "rejected"} <= set(train.column_names)
    by_prompt = {row["prompt"][-1]["content"]: row for row in train}
    assert set(by_prompt) == set(good)
    assert all(row["chosen"][-1]["content"] == good[q] and row["rejected"][-1]["content"].startswith("mistaken")
               for q, row in by_prompt.items())

    # TRL's DPOTrainer on the directory as load_from_disk gives it: two steps of the tiny model.
    import torch

    model, tokenizer = causal_lm(tiny_model_dir)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), use_cpu=True, bf16=False, max_steps=2,
                     per_device_train_batch_size=2, learning_rate=1e-3, report_to=[], save_strategy="no",
                     logging_steps=1, max_length=128, activation_checkpointing=False, dataloader_num_workers=0,
                     seed=0)
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(math.isfinite(loss) for loss in [*losses, result.training_loss]), losses
    changed = [name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())]
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} parameters moved"
