"""AppTest on the real app: on each of the five labelling pages a submit is confirmed ("Saved", a
toast and a caption with "Undo last label"), and Undo brings the same item back, unanswered, so
the next submit writes the one label; plus the Rate page's key buttons and the pages' plurals."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Assignment, AuditLog, Label, Project
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.projects import add_member, create_project, get_project
from feedback.settings import PROJECT_ROOT
from feedback.users import create_user
from testkit.factories import make_items, make_project_items, set_queue

APP = str(PROJECT_ROOT / "app.py")
PASSWORD = "annotator-pw"
PROJECTS = {"default": "pairwise", "default-binary": "binary", "ranks": "rank", "ratings": "rating",
            "edits": "edit"}
ASPECTS = ["honesty"]


@pytest.fixture
def app_db(use_db, engine):
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        create_user(session=s, username="ann", role="annotator", password=PASSWORD, actor=CLI)
        make_items(s, pairs=2, singles=2)  # the open projects `default` and `default-binary`
        shapes = {"ranks": dict(task_type="rank", k=3), "ratings": dict(task_type="rating", k=3, aspects=ASPECTS),
                  "edits": dict(task_type="edit")}
        for name, shape in shapes.items():
            project = create_project(session=s, actor=CLI, name=name, **shape)
            add_member(session=s, actor=CLI, project=project, username="ann")
            make_project_items(s, project=project, count=2)
        # Refills would start a real sampling worker; these tests bring their own items.
        for project in s.scalars(select(Project)):
            set_queue(s, project=project, overlap=1, refill_below=0)
    return engine


def signed_in_on(engine, project: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input("ann")
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert "user_id" in at.session_state, [e.value for e in at.error]
    if project != "default":  # Compare (the default project) is where signing in lands
        with session_scope(engine, read_only=True) as s:
            project_id = get_project(session=s, name=project).id
        at.selectbox(key="project-picker").set_value(project_id).run()
    assert not at.exception, at.exception
    return at


def shown_texts(at: AppTest) -> list[str]:
    """The response texts on screen ("<prompt> :: <position or side>"), top to bottom."""
    return [m.value for m in at.markdown if " :: " in m.value]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def leased(engine, project: str) -> Assignment:
    """ann's first leased assignment in the project: the one the page shows."""
    with session_scope(engine, read_only=True) as s:
        project_id = get_project(session=s, name=project).id
        mine = select(Assignment).where(Assignment.status == "leased", Assignment.item.has(project_id=project_id))
        return s.scalar(mine.order_by(Assignment.id).limit(1))


def labels(engine) -> list[Label]:
    with session_scope(engine, read_only=True) as s:
        return list(s.scalars(select(Label).order_by(Label.id)))


def submit_on(at: AppTest, project: str) -> None:
    """Give a complete answer the way an annotator does on that project's page."""
    task = PROJECTS[project]
    if task == "pairwise":
        button(at, "A is better").click().run()
    elif task == "binary":
        at.feedback[0].set_value(0).run()  # thumbs down
    elif task == "rank":
        for i in range(3):
            next(c for c in at.segmented_control if c.label == f"Rank of response {i + 1}").set_value(i + 1)
        button(at, "Submit").click().run()
    elif task == "rating":
        for control in at.segmented_control:
            control.set_value(4)
        button(at, "Submit").click().run()
    else:
        button(at, "Submit").click().run()  # unchanged: "fine as it is"
    assert not at.exception, at.exception


def saved_caption(at: AppTest) -> bool:
    return any(c.value.startswith(":material/check: Saved") for c in at.caption)


@pytest.mark.parametrize("project", list(PROJECTS))
def test_submit_is_confirmed_and_undo_shows_the_same_item_again(app_db, project):
    at = signed_in_on(app_db, project)
    first = leased(app_db, project)
    before = shown_texts(at)
    assert before and not saved_caption(at)

    submit_on(at, project)
    (label,) = labels(app_db)
    assert label.item_id == first.item_id
    assert [t.value for t in at.toast] == ["Saved."]
    assert saved_caption(at)
    assert shown_texts(at) != before  # on to the next item

    button(at, "Undo last label").click().run()
    assert not at.exception, at.exception
    assert labels(app_db) == []
    assert shown_texts(at) == before  # the same item, in the same order
    assert leased(app_db, project).id == first.id
    assert any(t.value.startswith("Undone") for t in at.toast)
    assert not saved_caption(at) and not any(b.label == "Undo last label" for b in at.button)
    if PROJECTS[project] == "binary":
        assert at.feedback[0].value is None  # the thumb comes back unchosen: choosing it again records it

    submit_on(at, project)
    (again,) = labels(app_db)
    assert again.item_id == first.item_id and again.submission_id != label.submission_id
    assert saved_caption(at)
    with session_scope(app_db, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "label.undo")) == 1


def test_a_refused_undo_says_why_and_the_banner_goes(app_db):
    at = signed_in_on(app_db, "default")
    first = leased(app_db, "default")
    submit_on(at, "default")
    with session_scope(app_db) as s:  # the lease ran out meanwhile
        s.get(Assignment, first.id).expires_at = s.get(Assignment, first.id).leased_at
    button(at, "Undo last label").click().run()
    assert any("Too late to undo" in w.value for w in at.warning)
    assert len(labels(app_db)) == 1
    assert not saved_caption(at)


def test_the_banner_belongs_to_the_project_labelled_in(app_db):
    at = signed_in_on(app_db, "default")
    submit_on(at, "default")
    assert saved_caption(at)
    with session_scope(app_db, read_only=True) as s:
        at.selectbox(key="project-picker").set_value(get_project(session=s, name="edits").id).run()
    assert not saved_caption(at)  # the Edit page does not offer to undo a Compare label


def test_rate_key_buttons_record_a_thumb(app_db):
    at = signed_in_on(app_db, "default-binary")
    assert "1 = thumbs up · 2 = thumbs down · S = skip" in " ".join(c.value for c in at.caption)
    keys = {b.label: b.proto.shortcut for b in at.button if b.label.startswith("Thumbs")}
    assert keys == {"Thumbs up": "1", "Thumbs down": "2"}
    button(at, "Thumbs up").click().run()
    assert [(label.kind, label.thumb) for label in labels(app_db)] == [("binary", "up")]


def test_counts_on_the_labelling_pages_are_singular_for_one(app_db):
    at = signed_in_on(app_db, "default")
    assert any("2 pairs left for you" in c.value for c in at.caption)
    submit_on(at, "default")
    assert any("1 pair left for you" in c.value for c in at.caption)
    at = signed_in_on(app_db, "edits")
    editor = next(t for t in at.text_area if t.label == "Your rewrite")
    editor.input(editor.value + "!").run()
    assert any(c.value == "Edit distance: 1 character" for c in at.caption)
