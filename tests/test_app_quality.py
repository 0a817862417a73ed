"""AppTest on the real app for label quality: the Review page (disputes settled by a reviewer,
gold items, standings), what reviewers may not do there, the gold and queue-order settings on the
Projects page, and what a warned or paused annotator sees on the annotate pages."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import AnnotatorStanding, AuditLog, Item, ItemDecision, Label, Response, User
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.projects import default_project, get_project
from feedback.settings import PROJECT_ROOT
from feedback.users import create_user
from pages.common import WARNED
from testkit.factories import make_items, set_queue

APP = str(PROJECT_ROOT / "app.py")
PASSWORDS = {"ann": "annotator-pw", "bob": "bob-annotator-pw", "rev": "reviewer-pw", "root": "admin-password"}
ROLES = {"ann": "annotator", "bob": "annotator", "rev": "reviewer", "root": "admin"}
# A model's answer with a link and a remote image: neither may reach the page as markdown syntax.
HOSTILE = "Sure. See [the docs](https://evil.example/x) ![px](https://evil.example/t.png)"


def label(s, item_id: int, username: str, value: str, rationale: str | None = None) -> None:
    """A person's label, written straight through the ORM (the queue's own path is tested elsewhere)."""
    user_id = s.scalar(select(User.id).where(User.username == username))
    kind, field = ("pairwise", "choice") if value in ("a", "b", "tie", "both_bad") else ("binary", "thumb")
    s.add(Label(item_id=item_id, kind=kind, source="human", user_id=user_id, submission_id=uuid.uuid4().hex,
                rationale=rationale, shown_order="ab" if kind == "pairwise" else None, **{field: value}))


@pytest.fixture
def app_db(use_db, engine):
    """Pairs and singles in the open default projects; ann and bob disagree on the first pair
    (the dispute) and agree on the second."""
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        for name, role in ROLES.items():
            create_user(session=s, username=name, role=role, password=PASSWORDS[name], actor=CLI)
        pairs = make_items(s, pairs=4)
        make_items(s, singles=2)
        s.get(Response, s.get(Item, pairs[0]).response_a_id).text = HOSTILE
        label(s, pairs[0], "ann", "a", rationale="A links its sources")
        label(s, pairs[0], "bob", "b")
        label(s, pairs[1], "ann", "a")
        label(s, pairs[1], "bob", "a")
        # Refills would start a real sampling worker; these tests bring their own items.
        for kind in ("pair", "single"):
            set_queue(s, kind=kind, overlap=1, refill_below=0)
    return engine


def pairs(engine) -> list[int]:
    """The pair items, in the order made: the first is the dispute, the second agreed on."""
    with session_scope(engine, read_only=True) as s:
        return list(s.scalars(select(Item.id).where(Item.kind == "pair").order_by(Item.id)))


def as_user(name: str) -> AppTest:
    """Sign in through the real form; Streamlit then shows the default page (Label)."""
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input(name)
    at.text_input[1].input(PASSWORDS[name])
    at.button[0].click().run()
    assert "user_id" in at.session_state, [e.value for e in at.error]
    assert not at.exception, at.exception
    return at


def review(name: str) -> AppTest:
    at = as_user(name).switch_page("pages/review.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Review"
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def labels_of(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def set_standing(engine, username: str, status: str, *, project: str = "default") -> None:
    with session_scope(engine) as s:
        user_id = s.scalar(select(User.id).where(User.username == username))
        s.add(AnnotatorStanding(project_id=get_project(session=s, name=project).id, user_id=user_id, status=status,
                                gold_answers=10, gold_correct=2))


def test_reviewer_settles_a_dispute(app_db):
    disputed, agreed = pairs(app_db)[:2]
    at = review("rev")
    assert [t.label for t in at.tabs] == ["Disputes", "Gold", "Annotators"]
    disputes = at.tabs[0].dataframe[0].value
    assert disputes["item"].tolist() == [disputed]  # the agreed pair is no dispute
    assert "annotators disagree" in disputes["reasons"][0] and disputes["votes"][0] == "a: 1, b: 1"
    # The item as the reviewer settles it: the model's text inert, every label in a table.
    shown = [m.value for m in at.markdown]
    assert any("Sure. See the docs" in text for text in shown)
    assert not any("](" in text or "https://evil" in text for text in shown)
    votes = at.tabs[0].dataframe[1].value
    assert set(zip(votes["annotator"], votes["value"], strict=True)) == {("ann", "a"), ("bob", "b")}
    assert "A links its sources" in votes["rationale"].tolist()
    assert at.radio[0].options == ["A is better", "B is better", "Tie", "Both bad"]

    # Without a note: refused, nothing stored.
    at.radio[0].set_value("b")
    button(at, "Settle").click().run()
    assert any("Say in a note why" in e.value for e in at.error)
    with session_scope(app_db, read_only=True) as s:
        assert s.get(ItemDecision, disputed) is None

    at.radio[0].set_value("b")
    next(t for t in at.text_area if t.label.startswith("Note")).input("B answers the question; A only links.")
    next(c for c in at.checkbox if c.label.startswith("Make it gold")).check()
    button(at, "Settle").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(f"Settled item {disputed}: B is better, now gold." in m.value for m in at.success)
    assert any("No disputed items in default" in i.value for i in at.info)  # and on to the next: none left
    with session_scope(app_db, read_only=True) as s:
        decision = s.get(ItemDecision, disputed)
        rev_id = s.scalar(select(User.id).where(User.username == "rev"))
        audit = s.scalar(select(AuditLog).where(AuditLog.action == "decision.adjudication"))
        assert s.get(ItemDecision, agreed) is None
    assert (decision.origin, decision.choice, decision.gold, decision.decided_by_id) == ("adjudication", "b", True,
                                                                                          rev_id)
    assert decision.note == "B answers the question; A only links."
    assert (audit.actor, audit.user_id, audit.target) == ("app:rev", rev_id, f"item:{disputed}")
    assert audit.details["answer"] == "b" and audit.details["gold"] is True
    assert [m.value for m in at.tabs[1].metric] == ["0", "1", "0"]  # settled and gold


def test_reviewer_marks_and_unmarks_gold_but_sees_no_admin_controls(app_db):
    set_standing(app_db, "ann", "paused")
    at = review("rev")
    assert not any(label.startswith("Make ") for label in labels_of(at))  # attention checks: admins
    assert "Lift pause" not in labels_of(at) and "Clear warning" not in labels_of(at)
    standings = at.tabs[2].dataframe[0].value
    assert standings[["username", "status"]].values.tolist() == [["ann", "paused"]]  # but they see it

    item = pairs(app_db)[2]
    next(n for n in at.number_input if n.label == "Item id").set_value(item)
    next(s for s in at.selectbox if s.label == "Gold answer").set_value("tie")
    button(at, "Mark gold").click().run()
    assert any(f"Item {item} is gold." in m.value for m in at.success), [e.value for e in at.error]
    with session_scope(app_db, read_only=True) as s:
        decision = s.get(ItemDecision, item)
        assert (decision.origin, decision.choice, decision.gold) == ("gold", "tie", True)
    assert [m.value for m in at.tabs[1].metric] == ["1", "0", "0"]

    next(n for n in at.number_input if n.label == "Item id").set_value(item)
    button(at, "Unmark gold").click().run()
    assert any(f"Item {item} is no longer gold." in m.value for m in at.success)
    # Promoting an item with no settled answer is refused with the service's message.
    next(n for n in at.number_input if n.label == "Item id").set_value(item)
    button(at, "Mark gold").click().run()
    assert any("has no adjudicated answer to promote" in e.value for e in at.error)
    with session_scope(app_db, read_only=True) as s:
        assert s.get(ItemDecision, item) is None
        assert s.get(AnnotatorStanding, (default_project(session=s).id,
                                         s.scalar(select(User.id).where(User.username == "ann")))).status == "paused"


def test_admin_lifts_a_pause_and_makes_attention_checks(app_db):
    set_standing(app_db, "ann", "paused")
    set_standing(app_db, "bob", "warned")
    at = review("root")
    assert at.tabs[2].dataframe[0].value["status"].tolist() == ["paused", "warned"]  # paused first
    assert [t.value for t in at.tabs[2].text] == ["ann: paused", "bob: warned"]
    button(at, "Lift pause").click().run()
    assert not at.exception
    assert any("ann labels in default again" in m.value for m in at.success)
    assert at.tabs[2].dataframe[0].value[["username", "status"]].values.tolist() == [["bob", "warned"], ["ann", "ok"]]
    with session_scope(app_db, read_only=True) as s:
        audit = s.scalar(select(AuditLog).where(AuditLog.action == "standing.lift"))
    assert (audit.actor, audit.details) == ("app:root", {"user": "ann", "was": "paused"})
    # Lifted, ann gets a pair again.
    assert any(b.label == "A is better" for b in as_user("ann").button)

    next(n for n in at.number_input if n.label == "Attention checks").set_value(2).run()
    button(at, "Make 2 attention checks").click().run()
    assert any("Made 2 attention checks in default" in m.value for m in at.success), [e.value for e in at.error]
    assert [m.value for m in at.tabs[1].metric] == ["0", "0", "2"]


def test_review_page_is_for_reviewers_and_admins(app_db):
    for name, allowed in (("ann", False), ("rev", True), ("root", True)):
        at = as_user(name)
        if allowed:
            assert at.switch_page("pages/review.py").run().title[0].value == "Review"
        else:
            with pytest.raises(ValueError, match="Could not find a navigation page"):
                at.switch_page("pages/review.py")


def test_admin_saves_gold_settings_and_the_queue_order(app_db):
    at = as_user("root").switch_page("pages/projects.py").run()
    assert at.selectbox(key="manage_project").value == "default"
    next(n for n in at.number_input if n.label.startswith("Gold rate")).set_value(0.1)
    next(n for n in at.number_input if n.label.startswith("Minimum accuracy")).set_value(0.8)
    next(n for n in at.number_input if n.label.startswith("Gold answers before")).set_value(4)
    button(at, "Save gold settings").click().run()
    assert any("Saved the gold settings of default" in m.value for m in at.success), [e.value for e in at.error]
    next(s for s in at.selectbox if s.label == "Queue order").set_value("random")
    button(at, "Save").click().run()
    assert any("Saved the queue settings of default" in m.value for m in at.success), [e.value for e in at.error]
    with session_scope(app_db, read_only=True) as s:
        project = default_project(session=s)
        assert (project.gold_rate, project.gold_min_accuracy, project.gold_min_answers) == (0.1, 0.8, 4)
        assert project.queue_order == "random"
        assert s.scalar(select(AuditLog.details).where(AuditLog.action == "project.gold_settings"))["gold_rate"] == 0.1


@pytest.mark.parametrize("project,vote", [("default", "A is better"), ("default-binary", None)])
def test_a_warned_annotator_sees_a_calm_warning_and_still_labels(app_db, project, vote):
    set_standing(app_db, "ann", "warned", project=project)
    at = as_user("ann")
    if project != "default":
        with session_scope(app_db, read_only=True) as s:
            at.selectbox(key="project-picker").set_value(get_project(session=s, name=project).id).run()
    assert [w.value for w in at.warning] == [WARNED]
    assert not at.error
    assert (vote in labels_of(at)) if vote else at.feedback  # the item is there to label


@pytest.mark.parametrize("project", ["default", "default-binary"])
def test_a_paused_annotator_is_told_so_instead_of_an_item(app_db, project):
    set_standing(app_db, "ann", "paused", project=project)
    at = as_user("ann")
    if project != "default":
        with session_scope(app_db, read_only=True) as s:
            at.selectbox(key="project-picker").set_value(get_project(session=s, name=project).id).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"You are paused on project {project!r}: too many of your answers on check "
                                           "items disagreed with their known answers. An admin can lift the pause."]
    assert "A is better" not in labels_of(at) and not at.feedback
    assert not any(" :: " in m.value for m in at.markdown)  # no response shown
