"""AppTest on the real app: every page signed out and for each role, and the annotation pages'
votes landing in the database as the right labels (the new task types and the project picker:
tests/test_app_projects.py)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Assignment, Item, Label, Project, User
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.projects import default_project
from feedback.settings import PROJECT_ROOT
from feedback.users import create_user
from testkit.factories import make_items, set_queue

APP = str(PROJECT_ROOT / "app.py")
PASSWORDS = {"ann": "annotator-pw", "rev": "reviewer-pw", "root": "admin-password"}
# page -> (its title, the roles that may open it). "Label" shows the page of the project picked
# in the sidebar: the first one, `default` (pairwise); the binary page needs its project picked.
PAGES = {
    "pages/annotate_pairwise.py": ("Compare responses", ("annotator", "reviewer", "admin")),
    "pages/annotate_binary.py": ("Rate a response", ()),
    "pages/home.py": ("Preference data", ("annotator", "reviewer", "admin")),
    "pages/labels.py": ("Recent labels", ("reviewer", "admin")),
    "pages/review.py": ("Review", ("reviewer", "admin")),
    "pages/data.py": ("Data", ("admin",)),
    "pages/projects.py": ("Projects", ("admin",)),
    "pages/users.py": ("Users", ("admin",)),
    "pages/judge.py": ("AI judge", ("admin",)),
    "pages/training.py": ("Training", ("admin",)),
}


def opens(at: AppTest, page: str) -> bool:
    """Whether navigating to `page` shows it. A page missing from the navigation either cannot
    be switched to, or Streamlit shows the default page in its place."""
    try:
        at.switch_page(page)
    except ValueError:
        return False
    at.run()
    assert not at.exception, (page, at.exception)
    return bool(at.title) and at.title[0].value == PAGES[page][0]


@pytest.fixture
def app_db(use_db, engine):
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        for name, role in (("ann", "annotator"), ("rev", "reviewer"), ("root", "admin")):
            create_user(session=s, username=name, role=role, password=PASSWORDS[name], actor=CLI)
        make_items(s, pairs=3, singles=3)  # into the open projects `default` and `default-binary`
        # Refills would start a real sampling worker; these tests bring their own items.
        for kind in ("pair", "single"):
            set_queue(s, kind=kind, overlap=1, refill_below=0)
    return engine


def as_user(name: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input(name)
    at.text_input[1].input(PASSWORDS[name])
    at.button[0].click().run()
    assert "user_id" in at.session_state, [e.value for e in at.error]
    return at


def test_signed_out_every_page_is_unreachable(app_db):
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not any(opens(at, page) for page in PAGES)
    assert at.subheader[0].value == "Sign in"


@pytest.mark.parametrize("name,role", [("ann", "annotator"), ("rev", "reviewer"), ("root", "admin")])
def test_each_role_sees_exactly_its_pages(app_db, name, role):
    at = as_user(name)
    reachable = {page for page in PAGES if opens(at, page)}
    assert reachable == {page for page, (_, roles) in PAGES.items() if role in roles}


def test_pairwise_vote_records_the_shown_choice(app_db):
    at = as_user("ann").switch_page("pages/annotate_pairwise.py").run()
    texts = [m.value for m in at.markdown]
    left_text = next(t for t in texts if " :: " in t)  # Response A, as shown on the left
    at.text_area[0].input("clearer")
    at.button(key=next(b.key for b in at.button if b.label == "A is better")).click().run()
    assert not at.exception
    with session_scope(app_db, read_only=True) as s:
        label = s.scalar(select(Label))
        item = s.get(Item, label.item_id)
        chosen = item.response_a if label.choice == "a" else item.response_b
        assert chosen.text == left_text
        assert label.rationale == "clearer" and label.source == "human" and label.shown_order in ("ab", "ba")
        assert s.scalar(select(User.username).where(User.id == label.user_id)) == "ann"
    # The fragment moved on to the next pair.
    assert "1 today" in at.caption[1].value or any("1 today" in c.value for c in at.caption)


def test_pairwise_skip_and_empty_pool(app_db):
    at = as_user("rev").switch_page("pages/annotate_pairwise.py").run()
    for _ in range(3):
        at.button(key=next(b.key for b in at.button if b.label == "Skip")).click().run()
    assert any("Nothing left for you to label" in i.value for i in at.info)
    with session_scope(app_db, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Label)) == 0
        assert set(s.scalars(select(Assignment.status))) == {"skipped"}


def test_binary_thumb_records_label_with_critique(app_db):
    with session_scope(app_db, read_only=True) as s:
        binary = s.scalar(select(Project.id).where(Project.name == "default-binary"))
    at = as_user("ann").switch_page("pages/annotate_pairwise.py").run()
    at.selectbox(key="project-picker").set_value(binary).run()  # the sidebar's project picker
    assert at.title[0].value == "Rate a response"  # picking a binary project moved to its page
    at.text_area[0].input("too short")
    at.feedback[0].set_value(0).run()  # 0 = thumbs down, 1 = thumbs up
    assert not at.exception
    with session_scope(app_db, read_only=True) as s:
        label = s.scalar(select(Label))
        assert (label.kind, label.thumb, label.rationale) == ("binary", "down", "too short")


def test_admin_creates_user_and_changes_role(app_db):
    at = as_user("root").switch_page("pages/users.py").run()
    at.text_input[0].input("newbie")
    next(b for b in at.button if b.label == "Create").click().run()
    assert not at.exception
    assert any("shown once" in m.value for m in at.success)
    with session_scope(app_db, read_only=True) as s:
        assert s.scalar(select(User.role).where(User.username == "newbie")) == "annotator"


def test_admin_saves_queue_settings(app_db):
    at = as_user("root").switch_page("pages/projects.py").run()
    assert at.selectbox(key="manage_project").value == "default"
    next(n for n in at.number_input if n.label.startswith("Overlap")).set_value(3)
    next(t for t in at.text_input if t.label.startswith("Only prompts")).input("math, demo")
    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception
    assert any("Saved the queue settings of default" in m.value for m in at.success)
    with session_scope(app_db, read_only=True) as s:
        settings = default_project(session=s)
        assert (settings.overlap, settings.prompt_tags) == (3, ["demo", "math"])


def test_sign_in_is_rate_limited(app_db):
    at = AppTest.from_file(APP, default_timeout=30).run()
    for _ in range(5):
        at.text_input[0].input("ann")
        at.text_input[1].input("wrong-password")
        at.button[0].click().run()
    at.text_input[0].input("ann")
    at.text_input[1].input(PASSWORDS["ann"])
    at.button[0].click().run()
    assert "user_id" not in at.session_state
    assert any("Too many failed sign-ins" in e.value for e in at.error)


def test_reviewer_sees_per_annotator_measures(app_db):
    at = as_user("ann")
    claim_and_vote = next(b for b in at.button if b.label == "A is better")
    claim_and_vote.click().run()
    at = as_user("rev")
    at.switch_page("pages/labels.py").run()
    assert not at.exception
    assert [h.value for h in at.subheader] == ["Annotators"]
    table = at.dataframe[1].value
    assert list(table["annotator"]) == ["ann"] and table["labels"].tolist() == [1]
    assert table["left_wins"].tolist() == [1.0]  # one A/B choice, for the left side
