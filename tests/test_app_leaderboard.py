"""AppTest on the real app: the Leaderboard page (reviewers and admins) empty and with data, its
source and project filters and its two charts; and the arena switch on the Projects page."""
from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Item, Label, PolicyVersion, Project, Response, User
from feedback.actors import CLI
from feedback.leaderboard import EMPTY
from feedback.policies import ensure_base_policy
from feedback.projects import create_project, default_project, get_project
from feedback.settings import PROJECT_ROOT
from feedback.users import create_user
from testkit.factories import make_items, set_queue

APP = str(PROJECT_ROOT / "app.py")
PASSWORDS = {"ann": "annotator-pw", "rev": "reviewer-pw", "root": "admin-password"}
ROLES = {"ann": "annotator", "rev": "reviewer", "root": "admin"}


@pytest.fixture
def app_db(use_db, engine):
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        s.add_all([PolicyVersion(name=name, base_model="tiny", status="candidate") for name in ("v1", "v2")])
        for name, role in ROLES.items():
            create_user(session=s, username=name, role=role, password=PASSWORDS[name], actor=CLI)
        create_project(session=s, actor=CLI, name="elsewhere", task_type="pairwise")
        for project in s.scalars(select(Project)):  # refills would start a real sampling worker
            set_queue(s, project=project, refill_below=0)
    return engine


def as_user(name: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input(name)
    at.text_input[1].input(PASSWORDS[name])
    at.button[0].click().run()
    assert "user_id" in at.session_state, [e.value for e in at.error]
    return at


def compare(s, project: Project, a: str, b: str, choice: str, source: str = "human") -> None:
    """A pair item between versions a (response A) and b, and one label on it."""
    [item_id] = make_items(s, pairs=1)
    item = s.get(Item, item_id)
    item.project_id = project.id
    names = dict(s.execute(select(PolicyVersion.name, PolicyVersion.id)).all())
    s.get(Response, item.response_a_id).policy_version_id = names[a]
    s.get(Response, item.response_b_id).policy_version_id = names[b]
    reviewer = s.scalar(select(User.id).where(User.username == "rev"))
    s.add(Label(item_id=item.id, kind="pairwise", choice=choice, source=source,
                user_id=None if source == "judge" else reviewer,
                producer="fake-judge" if source == "judge" else None, submission_id=uuid.uuid4().hex))
    s.flush()


def charts(at: AppTest) -> list[tuple[dict, list]]:
    """Each Altair chart on the page: its Vega-Lite spec and the rows of its datasets."""
    found = []
    for chart in at.get("vega_lite_chart"):
        rows = [row for d in chart.proto.datasets for row in
                convert_arrow_bytes_to_pandas_df(d.data.data).to_dict("records")]
        found.append((json.loads(chart.proto.spec), rows))
    return found


def test_the_empty_leaderboard_says_how_to_fill_it(app_db):
    at = as_user("rev").switch_page("pages/leaderboard.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Leaderboard"
    assert [i.value for i in at.info] == [EMPTY]
    assert not at.dataframe and not charts(at)


def test_ratings_table_and_charts_follow_the_filters(app_db):
    with session_scope(app_db) as s:
        default, elsewhere = default_project(session=s), get_project(session=s, name="elsewhere")
        for _ in range(4):
            compare(s, default, "v1", "v0", "a")  # people: v1 beats v0 ...
        compare(s, default, "v0", "v1", "tie")
        compare(s, default, "v2", "v1", "b", source="judge")  # ... the judge: v1 beats v2
        compare(s, elsewhere, "v2", "v0", "a")
        elsewhere_id = elsewhere.id
    at = as_user("rev").switch_page("pages/leaderboard.py").run()
    assert not at.exception, at.exception
    assert not at.info
    table = at.dataframe[0].value
    assert list(table.columns) == ["version", "rating", "low (95%)", "high (95%)", "comparisons", "wins", "losses",
                                   "ties"]
    assert table["version"].tolist()[0] == "v2"  # people: v2 beat v0, v1 beat v0 and tied once
    assert table.set_index("version")["comparisons"].to_dict() == {"v0": 6, "v1": 5, "v2": 1}
    (ratings, rating_rows), (heatmap, cells) = charts(at)
    marks = [layer["mark"]["type"] for layer in ratings["layer"]]
    assert marks == ["rule", "point"] and ratings["layer"][0]["encoding"]["x2"]["field"] == "high (95%)"
    assert {row["version"] for row in rating_rows} == {"v0", "v1", "v2"}
    assert [layer["mark"]["type"] for layer in heatmap["layer"]] == ["rect", "text"]
    labels = {(c["version"], c["against"]): c["label"] for c in cells}
    assert labels[("v1", "v0")] == "90% of 5" and labels[("v0", "v1")] == "10% of 5"

    next(r for r in at.radio if r.label == "Labels from").set_value("judge").run()
    table = at.dataframe[0].value
    assert table["version"].tolist() == ["v1", "v2"] and table["wins"].tolist() == [1, 0]

    next(r for r in at.radio if r.label == "Labels from").set_value("all").run()
    next(s for s in at.selectbox if s.label == "Project").set_value(elsewhere_id).run()
    table = at.dataframe[0].value
    assert table["version"].tolist() == ["v2", "v0"] and table["comparisons"].tolist() == [1, 1]


def test_annotators_have_no_leaderboard(app_db):
    at = as_user("ann")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/leaderboard.py")


def test_admin_turns_arena_mode_on_and_off_on_the_projects_page(app_db):
    at = as_user("root").switch_page("pages/projects.py").run()
    at.selectbox(key="manage_project").set_value("elsewhere").run()
    button = next(b for b in at.button if b.label == "Turn arena mode on")
    button.click().run()
    assert any("choose at least two" in e.value for e in at.error), [e.value for e in at.error]
    with session_scope(app_db) as s:
        project = get_project(session=s, name="elsewhere")
        assert not project.arena
        project.policy_version_ids = list(s.scalars(select(PolicyVersion.id).where(PolicyVersion.name != "v2")))
    at.run()
    next(b for b in at.button if b.label == "Turn arena mode on").click().run()
    assert not at.exception and any("Arena mode is on for elsewhere" in m.value for m in at.success)
    assert any("Arena mode is **on**" in c.value for c in at.caption)
    with session_scope(app_db, read_only=True) as s:
        assert get_project(session=s, name="elsewhere").arena
    next(b for b in at.button if b.label == "Turn arena mode off").click().run()
    with session_scope(app_db, read_only=True) as s:
        assert not get_project(session=s, name="elsewhere").arena
