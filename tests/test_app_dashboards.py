"""Home and the AI judge page's Calibration tab, through the real app (AppTest): each chart is
there with the seeded numbers in it, and without data each says what will appear instead of an
empty chart; annotators see only their own, admins the team's too."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import AnnotatorStanding, Constitution, Item, User, utcnow
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.projects import default_project
from feedback.settings import PROJECT_ROOT
from feedback.users import create_user
from judges.constitutions import ensure_shipped, save_constitution
from testkit.browser import chromium
from testkit.factories import add_judgment, add_label, add_lease, make_items, set_queue

APP = str(PROJECT_ROOT / "app.py")
CHART = "vega_lite_chart"  # the AppTest node type st.altair_chart makes in Streamlit 1.67


@pytest.fixture
def app_db(use_db, engine):
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        ensure_shipped(session=s)
        create_user(session=s, username="root", role="admin", password="admin-password", actor=CLI)
        create_user(session=s, username="ann", role="annotator", password="annotator-password", actor=CLI)
        # Signing in lands on Compare, whose empty pool would start a refill (a sampling job).
        set_queue(s, kind="pair", refill_below=0)
    return engine


def signed_in(username: str, password: str, page: str = "pages/home.py") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input(username)
    at.text_input[1].input(password)
    at.button[0].click().run()
    at.switch_page(page).run()
    assert not at.exception
    return at


def in_order(node):
    for child in getattr(node, "children", {}).values():
        yield child
        yield from in_order(child)


def chart_data(node) -> pd.DataFrame:
    (dataset,) = node.proto.datasets
    return pa.ipc.open_stream(dataset.data.data).read_all().to_pandas()


def charts(node) -> dict[str, list[tuple[dict, pd.DataFrame]]]:
    """Each chart (its spec and data) under the heading it follows, in page order."""
    heading, found = None, defaultdict(list)
    for n in in_order(node):
        if n.type in ("header", "subheader"):
            heading = n.value
        elif n.type == "markdown" and n.value.startswith("**"):  # the Calibration tab's chart titles
            heading = n.value.strip("*")
        elif n.type == CHART:
            found[heading].append((json.loads(n.proto.spec), chart_data(n)))
    return dict(found)


def texts(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in at.get(kind)]


def seed_team(engine) -> None:
    """ann: three labels an hour ago and one gold answer (right); judge, grader and imported
    labels; judgments with costs; root holds nothing, ann holds nothing (her page claims one)."""
    with session_scope(engine) as s:
        ann = s.scalar(select(User.id).where(User.username == "ann"))
        pairs = make_items(s, pairs=8)
        make_items(s, singles=1)
        constitution = s.scalar(select(Constitution.id).where(Constitution.name == "default"))
        hour_ago = utcnow() - timedelta(hours=1)
        for item in pairs[:3]:
            add_label(s, item_id=item, at=hour_ago, user_id=ann)
        add_label(s, item_id=pairs[3], at=hour_ago, source="judge", constitution_id=constitution)
        add_label(s, item_id=pairs[3], at=hour_ago, source="grader")
        add_label(s, item_id=pairs[4], at=hour_ago, source="imported")
        add_judgment(s, item_id=pairs[3], constitution_id=constitution, at=hour_ago, cost_usd=0.25)
        add_judgment(s, item_id=pairs[4], constitution_id=constitution, at=hour_ago, cost_usd=0.5, backend="openai",
                     model="gpt-test")
        s.add(AnnotatorStanding(project_id=default_project(session=s).id, user_id=ann, status="ok",
                                gold_answers=4, gold_correct=3))
        bob = create_user(session=s, username="bob", role="annotator", password="bob-password-1", actor=CLI)
        add_lease(s, item_id=pairs[7], user_id=bob.id, leased_at=utcnow(),
                  expires_at=utcnow() + timedelta(minutes=4, seconds=30))


def test_annotator_without_data_sees_what_will_appear(app_db):
    at = signed_in("ann", "annotator-password")
    assert at.title[0].value == "Preference data"
    assert not charts(at.main)
    infos = texts(at, "info")
    assert any(i.startswith("No labels yet — your labels") for i in infos)
    assert any(i.startswith("No check items answered yet") for i in infos)
    left = [(m.label, m.value) for m in at.metric if m.label.startswith("default ")]
    assert left == [("default · 0 pairs left", "0")]
    assert "Team" not in texts(at, "header")  # nothing of the team's for an annotator
    assert not at.dataframe  # not even the policy versions


def test_annotator_sees_own_labels_gold_and_what_is_left(app_db):
    seed_team(app_db)
    at = signed_in("ann", "annotator-password")
    found = charts(at.main)
    assert list(found) == ["Your labels per day"]
    ((spec, data),) = found["Your labels per day"]
    assert spec["mark"]["type"] == "bar" and len(spec["encoding"]["x"]["scale"]["domain"]) == 30
    assert data["labels"].sum() == 3 and set(data["project"]) == {"default"}
    left = {m.label.split(" · ")[0]: m.label.split(" · ")[-1] for m in at.metric if " · " in m.label}
    # pairs 3..6 were open; her sign-in landed on Compare, which handed her one: still hers to do.
    # pair 7 is bob's lease.
    assert left["default"] == "4 pairs left" and left["default-binary"] == "1 response left"
    (gold,) = at.dataframe
    assert gold.value.to_dict("records")[0]["right"] == "3 of 4"
    assert gold.value["accuracy"].tolist() == [0.75]


def test_admin_without_data_sees_empty_states(app_db):
    at = signed_in("root", "admin-password")
    assert not charts(at.main)
    infos = texts(at, "info")
    for start in ("No labels yet", "No labels in the last 30 days", "No labels from people in the last 30 days",
                  "No AI judge spend in the last 30 days"):
        assert any(i.startswith(start) for i in infos), start
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Open items"], metrics["Open leases"]) == ("0", "0")
    assert "Policy versions" in texts(at, "subheader")
    assert at.dataframe[-1].value["name"].tolist() == ["v0"]


def test_admin_sees_every_team_chart_with_its_numbers(app_db):
    seed_team(app_db)
    at = signed_in("root", "admin-password")
    found = charts(at.main)
    # root labelled nothing himself: his own chart gives way to its empty state
    assert list(found) == ["Labels per day by source", "Labels per day by project", "Throughput per annotator",
                           "Judge spend per day"]
    assert any(i.startswith("No labels yet") for i in texts(at, "info"))
    (source_spec, by_source), = found["Labels per day by source"]
    assert source_spec["encoding"]["color"]["field"] == "source"
    assert by_source.groupby("source")["labels"].sum().to_dict() == {"grader": 1, "human": 3, "imported": 1,
                                                                      "judge": 1}
    (project_spec, _), = found["Labels per day by project"]
    assert project_spec["encoding"]["color"]["field"] == "project"
    (_, throughput), = found["Throughput per annotator"]
    assert throughput.groupby("annotator")["labels"].sum().to_dict() == {"ann": 3}
    (spend_spec, spend), = found["Judge spend per day"]
    assert spend_spec["encoding"]["y"]["axis"]["format"] == "$,.3f"
    assert spend.groupby("model")["cost_usd"].sum().to_dict() == pytest.approx(
        {"anthropic:claude-test": 0.25, "openai:gpt-test": 0.5})
    metrics = {m.label: m.value for m in at.metric}
    # open pairs: 3..6 less root's own claim on landing; the single; leases: bob's and root's
    assert (metrics["Open items"], metrics["Open leases"]) == ("4", "2")
    leases = next(d.value for d in at.dataframe if "annotator" in d.value.columns and "expires" in d.value.columns)
    assert dict(zip(leases["annotator"], leases["expires"], strict=True))["bob"] == "expires in 4 min"


# --- the AI judge page's Calibration tab -------------------------------------------------------


def calibration_tab(at: AppTest):
    return next(t for t in at.tabs if t.label == "Calibration")


def test_calibration_tab_without_judgments(app_db):
    at = signed_in("root", "admin-password", "pages/judge.py")
    tab = calibration_tab(at)
    assert any(i.value.startswith("No judgments yet") for i in tab.info)
    assert not charts(tab)
    assert any("not enough data yet" in m.value for m in tab.markdown if "Krippendorff" in m.value)


def test_calibration_tab_charts_each_figure_and_says_where_data_is_short(app_db):
    """`default` judged 6 pairs people labelled this week (enough for every figure); `terse` only 2."""
    with session_scope(app_db) as s:
        humans = [create_user(session=s, username=f"h{k}", role="annotator", password="long-password-1",
                              actor=CLI).id for k in range(2)]
        terse = save_constitution(session=s, name="terse", principles=["Prefer fewer words."], actor=CLI).id
        default = s.scalar(select(Constitution.id).where(Constitution.name == "default"))
        pairs = make_items(s, pairs=8)
        when = utcnow() - timedelta(minutes=5)
        for k, item in enumerate(pairs):
            s.get(Item, item).response_a.text += " and some more words"  # a is the longer response
            human = "a" if k % 3 else "b"
            for user in humans:
                add_label(s, item_id=item, at=when, user_id=user, kind="pairwise", choice=human)
            constitution, judge = (default, "a" if k < 5 else "b") if k < 6 else (terse, "a")
            add_label(s, item_id=item, at=when, source="judge", constitution_id=constitution, kind="pairwise",
                      choice=judge)
            add_judgment(s, item_id=item, constitution_id=constitution, at=when, cost_usd=0.01,
                         outcome="inconsistent" if k == 0 else judge)
    at = signed_in("root", "admin-password", "pages/judge.py")
    tab = calibration_tab(at)
    table = tab.dataframe[0].value.set_index("constitution")
    assert table.loc["default v1", "Agreement with the human majority"].endswith("(n=6)")
    assert table.loc["terse v1", "Cohen's kappa"] == "not enough data yet (n=2)"
    found = charts(tab)
    assert list(found) == ["Agreement with the human majority", "Cohen's kappa",
                           "Flip rate (the two orders disagree)", "Longer response wins"]
    for (_, data), in found.values():
        assert set(data["constitution"]) == {"default v1"}  # terse's 2 pairs are too few to draw
        assert data["n"].tolist() == [6]
    (_, flips), = found["Flip rate (the two orders disagree)"]
    assert flips["value"].tolist() == pytest.approx([1 / 6])
    alpha = next(m.value for m in tab.markdown if "Krippendorff" in m.value)
    assert "over 8 pairs and 2 annotators" in alpha and "not enough" not in alpha


# --- in a real browser: the time zone comes from it --------------------------------------------

KATHMANDU = "Asia/Kathmandu"  # UTC+5:45: its day starts at 18:15 UTC


def label_on_the_edge(now):
    """A moment that is today in Kathmandu and not in UTC, or the other way round."""
    from datetime import UTC, datetime, time
    from zoneinfo import ZoneInfo

    local_midnight = datetime.combine(now.astimezone(ZoneInfo(KATHMANDU)).date(), time(0), ZoneInfo(KATHMANDU))
    utc_midnight = datetime.combine(now.date(), time(0), UTC)
    # While both clocks show the same date, Kathmandu's midnight came first (18:15 UTC the day
    # before); once Kathmandu is a day ahead, UTC's did. A second after the earlier midnight is
    # "today" on that clock only.
    return (min(local_midnight, utc_midnight) + timedelta(seconds=1)).astimezone(UTC)


@pytest.mark.browser
def test_the_browser_time_zone_decides_today_and_the_days(tmp_path):
    from zoneinfo import ZoneInfo

    playwright_sync = pytest.importorskip("playwright.sync_api")
    from db.engine import make_engine
    from db.migrate import upgrade
    from testkit.local_servers import running_app

    url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    now = utcnow()
    edge = label_on_the_edge(now)
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        ann = create_user(session=s, username="ann", role="annotator", password="annotator-password", actor=CLI)
        set_queue(s, kind="pair", refill_below=0)
        (item,) = make_items(s, pairs=1)
        add_label(s, item_id=item, at=edge, user_id=ann.id)
    engine.dispose()
    local_today = edge.astimezone(ZoneInfo(KATHMANDU)).date() == utcnow().astimezone(ZoneInfo(KATHMANDU)).date()
    assert local_today != (edge.date() == utcnow().date())  # the seed tells the two clocks apart
    with running_app(url, tmp_path / "streamlit.log") as base, chromium() as browser:
        page = browser.new_context(timezone_id=KATHMANDU, viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(15_000)
        expect = playwright_sync.expect
        page.goto(base)
        page.get_by_label("Username").fill("ann")
        page.get_by_label("Password", exact=True).fill("annotator-password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Compare responses")).to_be_visible()
        expect(page.get_by_text(f"You: {int(local_today)} today, 1 in all", exact=False)).to_be_visible()
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Home").click()
        # Chromium names it by its older spelling, Asia/Katmandu: a link to the same zone
        expect(page.get_by_text(re.compile(r"by day in Asia/Kath?mandu"))).to_be_visible()
        expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(1)
        expect(page.get_by_test_id("stException")).to_have_count(0)
