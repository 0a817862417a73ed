"""Every page, as each role sees it, in a real browser over a lived-in workspace
(testkit/showcase.py): each must draw without an error, and its screenshot goes to docs/ for the
README. The labelling journeys make rank.png, rating.png, edit.png and review.png themselves
(tests/test_browser.py); this test makes the rest."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from db.engine import make_engine
from db.migrate import upgrade
from feedback.settings import PROJECT_ROOT
from testkit.browser import CHROMIUM, chromium
from testkit.local_servers import AppDidNotStart, running_app
from testkit.showcase import PASSWORDS, seed_showcase

pytestmark = [pytest.mark.browser]

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

DOCS = PROJECT_ROOT / "docs"
TIMEOUT_MS = 20_000
# Pages whose screenshots the labelling journeys make, with the data they need.
MADE_ELSEWHERE = {"rank", "rate-aspects", "edit", "review"}  # by title

if not Path(CHROMIUM).exists():
    pytestmark.append(pytest.mark.skip(reason=f"{CHROMIUM} not installed (scripts/system-packages.sh)"))


@pytest.fixture(scope="module")
def showcase_app(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('showcase') / 'app.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        seed_showcase(engine)
    finally:
        engine.dispose()
    log = tmp_path_factory.mktemp("showcase-log") / "streamlit.log"
    try:
        with running_app(url, log) as base:
            yield base
    except AppDidNotStart as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def settled(page) -> None:
    """Wait until the script run has finished and its elements are drawn."""
    page.wait_for_load_state("networkidle")
    drawn = page.locator('[data-testid="stMain"] [data-testid="stElementContainer"]')
    counts = []
    # A page that imports torch draws its title long before the rest: wait until the number of
    # drawn elements has stopped changing for 1.5 s, with nothing stale or running.
    while len(counts) < 3 or len(set(counts[-3:])) > 1:
        expect(page.locator('[data-stale="true"]')).to_have_count(0)
        expect(page.locator('[data-testid="stSkeleton"]')).to_have_count(0)
        page.wait_for_timeout(500)
        counts.append(drawn.count() if page.get_by_test_id("stStatusWidget").count() == 0 else -len(counts))
        assert len(counts) < 120, "the page kept changing for a minute"


def no_error(page, where: str) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, f"an exception on {where}"


def sign_in(page, base: str, username: str) -> None:
    page.goto(base)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[username])
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_test_id("stSidebar").get_by_text(username, exact=True)).to_be_visible()
    settled(page)


def nav_pages(page) -> list[tuple[str, str]]:
    """(slug of its title, url path) of each page in the sidebar navigation, in order."""
    links = page.get_by_test_id("stSidebarNavLink")
    expect(links.first).to_be_visible()
    # A link's text is its icon's name, then its title, on separate lines.
    return [(re.sub(r"[^a-z]+", "-", links.nth(i).inner_text().strip().splitlines()[-1].lower()).strip("-"),
             re.sub(r"^https?://[^/]+/?", "", links.nth(i).get_attribute("href") or ""))
            for i in range(links.count())]


def shoot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main block, so the window grows to fit it."""
    height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": min(max(height, 700), 4000)})
    settled(page)
    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)
    page.set_viewport_size({"width": width, "height": 1000})


def visit_all(page, *, role: str, skip: set[str]) -> list[str]:
    seen = []
    for i, (slug, path) in enumerate(nav_pages(page)):
        page.get_by_test_id("stSidebarNavLink").nth(i).click()
        expect(page).to_have_url(re.compile(f"/{re.escape(path)}$"))
        expect(page.get_by_test_id("stSidebar")).to_be_visible()
        settled(page)
        no_error(page, f"{slug} as {role}")
        seen.append(slug)
        if slug not in skip:
            shoot(page, slug if slug != "home" else f"home-{role}")
    return seen


def test_sign_in_page(browser, showcase_app):
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    page.goto(showcase_app)
    expect(page.get_by_label("Username")).to_be_visible()
    settled(page)
    no_error(page, "the sign-in page")
    shoot(page, "sign-in")
    page.close()


def test_every_page_as_each_role(browser, showcase_app):
    base = showcase_app
    seen = {}
    for username, role in (("ann", "annotator"), ("rev", "reviewer"), ("root", "admin")):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            sign_in(page, base, username)
            # Screenshots of the shared pages come from the role that sees the most on them.
            skip = MADE_ELSEWHERE | ({"compare"} if role != "annotator" else set())
            seen[role] = visit_all(page, role=role, skip=skip)
            if role == "annotator":  # the thumbs page belongs to another project
                page.get_by_test_id("stSidebarNavLink").first.click()
                settled(page)
                page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click()
                page.get_by_role("option", name=re.compile(r"^demo-thumbs · ")).click()
                expect(page.get_by_role("heading", name="Rate a response")).to_be_visible()
                settled(page)
                no_error(page, "Rate")
                shoot(page, "rate")
            if role == "admin":
                page.get_by_test_id("stSidebarNavLink").filter(has_text="AI judge").click()
                page.get_by_role("tab", name="Calibration").click()
                settled(page)
                no_error(page, "the Calibration tab")
                shoot(page, "calibration")
        finally:
            context.close()
    # Each role sees what it should, and the admin sees every page.
    assert "home" in seen["annotator"] and "users" not in seen["annotator"]
    assert {"review", "labels"} <= set(seen["reviewer"]) and "users" not in seen["reviewer"]
    assert {"projects", "data", "ai-judge", "training", "users", "webhooks"} <= set(seen["admin"])
