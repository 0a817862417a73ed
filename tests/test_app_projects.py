"""AppTest on the real app with labelling projects: the sidebar's project picker, the rank, rating
and edit pages for each role, their labels as written (mapped through the order shown), refused
incomplete submits, guidelines shown inert, and the admin's Projects page."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Assignment, Guidelines, Label, Project, ProjectMember, User
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.projects import add_member, create_project, get_project
from feedback.settings import PROJECT_ROOT
from feedback.users import create_user
from testkit.factories import make_items, make_project_items, set_queue

APP = str(PROJECT_ROOT / "app.py")
PASSWORDS = {"ann": "annotator-pw", "out": "outsider-pw", "rev": "reviewer-pw", "root": "admin-password"}
ROLES = {"ann": "annotator", "out": "annotator", "rev": "reviewer", "root": "admin"}
# Closed projects and who is a member; admins label anywhere, everyone in the open defaults.
MEMBERS = {"ranks": ["ann"], "ratings": ["ann"], "edits": ["ann", "rev"]}
TITLES = {"rank": "Rank responses", "rating": "Rate responses", "edit": "Edit a response",
          "pairwise": "Compare responses", "binary": "Rate a response"}
ASPECTS = ["instruction_following", "honesty"]
# Guidelines with a link and a remote image: neither may reach the page as markdown syntax.
GUIDELINES = "Prefer correct answers. See [the policy](https://evil.example/policy) ![px](https://evil.example/t.png)"


@pytest.fixture
def app_db(use_db, engine):
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        for name, role in ROLES.items():
            create_user(session=s, username=name, role=role, password=PASSWORDS[name], actor=CLI)
        make_items(s, pairs=2, singles=2)  # the open projects `default` and `default-binary`
        shapes = {"ranks": dict(task_type="rank", k=4), "ratings": dict(task_type="rating", k=3, aspects=ASPECTS),
                  "edits": dict(task_type="edit")}
        for name, shape in shapes.items():
            project = create_project(session=s, actor=CLI, name=name, guidelines=GUIDELINES, **shape)
            for member in MEMBERS[name]:
                add_member(session=s, actor=CLI, project=project, username=member)
            make_project_items(s, project=project, count=2)
        # Refills would start a real sampling worker; these tests bring their own items.
        for project in s.scalars(select(Project)):
            set_queue(s, project=project, overlap=1, refill_below=0)
    return engine


def as_user(name: str) -> AppTest:
    """Sign in through the real form; Streamlit then shows the default page (Label)."""
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input(name)
    at.text_input[1].input(PASSWORDS[name])
    at.button[0].click().run()
    assert "user_id" in at.session_state, [e.value for e in at.error]
    assert not at.exception, at.exception
    return at


def project_id(engine, name: str) -> int:
    with session_scope(engine, read_only=True) as s:
        return get_project(session=s, name=name).id


def pick(at: AppTest, engine, name: str) -> AppTest:
    """Choose a project in the sidebar's picker."""
    at.selectbox(key="project-picker").set_value(project_id(engine, name)).run()
    assert not at.exception, at.exception
    return at


def picker_names(at: AppTest) -> list[str]:
    return [option.split(" · ")[0] for option in at.selectbox(key="project-picker").options]


def title(at: AppTest) -> str | None:
    return at.title[0].value if at.title else None


def label_count(engine) -> int:
    with session_scope(engine, read_only=True) as s:
        return s.scalar(select(func.count()).select_from(Label))


def current_assignment(engine, username: str, project: str) -> Assignment:
    """The item this user holds in `project` (landing on Compare leased them a pair as well)."""
    with session_scope(engine, read_only=True) as s:
        user_id = s.scalar(select(User.id).where(User.username == username))
        return s.scalar(select(Assignment).where(Assignment.user_id == user_id, Assignment.status == "leased",
                                                 Assignment.item.has(project_id=project_id(engine, project))))


def shown_positions(at: AppTest) -> list[int]:
    """The item position of each response on screen, top to bottom (texts end in ':: <position>')."""
    texts = [m.value for m in at.markdown if " :: " in m.value]
    return [int(text.rsplit(":: ", 1)[1]) for text in texts]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def warnings(at: AppTest) -> str:
    return " ".join(w.value for w in at.warning)


# ------------------------------------------------------------------ who sees which page


@pytest.mark.parametrize("project,task", [("ranks", "rank"), ("ratings", "rating"), ("edits", "edit")])
@pytest.mark.parametrize("name", list(ROLES))
def test_each_role_gets_the_task_page_or_is_refused(app_db, project, task, name):
    at = as_user(name)
    allowed = ROLES[name] == "admin" or name in MEMBERS[project]
    assert (project in picker_names(at)) == allowed
    assert {"default", "default-binary"} <= set(picker_names(at))  # open to everyone
    if allowed:
        pick(at, app_db, project)
        assert title(at) == TITLES[task]
        assert at.caption and any("left for you in " + project in c.value for c in at.caption)
    else:
        # A stale or forged pick of a project the user is not in gives way to one they are in.
        at.session_state["project_id"] = project_id(app_db, project)
        at.run()
        assert title(at) == TITLES["pairwise"]
        with session_scope(app_db, read_only=True) as s:
            assert s.scalar(select(func.count()).select_from(Assignment)
                            .where(Assignment.item.has(project_id=project_id(app_db, project)))) == 0
        # Opening the task's page itself lands on the picked project's page instead.
        at.switch_page({"rank": "pages/annotate_rank.py", "rating": "pages/annotate_rating.py",
                        "edit": "pages/annotate_edit.py"}[task]).run()
        assert title(at) == TITLES["pairwise"]


def test_changing_project_moves_to_its_page(app_db):
    at = as_user("ann")
    assert title(at) == TITLES["pairwise"]  # the first project, `default`
    assert [p.label for p in at.sidebar.selectbox] == ["Project"]
    pick(at, app_db, "ranks")
    assert title(at) == TITLES["rank"]
    pick(at, app_db, "default-binary")
    assert title(at) == TITLES["binary"]
    pick(at, app_db, "edits")
    assert title(at) == TITLES["edit"]
    pick(at, app_db, "default")
    assert title(at) == TITLES["pairwise"]
    # The pick outlives a visit to another page.
    pick(at, app_db, "ratings")
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/annotate_rating.py").run()
    assert title(at) == TITLES["rating"]


def test_someone_in_no_project_is_told_so(app_db):
    with session_scope(app_db) as s:
        for name in ("default", "default-binary"):
            get_project(session=s, name=name).open_to_all = False
    at = as_user("out")
    assert title(at) == "Label"
    assert any("You are not in any project yet; an admin can add you" in i.value for i in at.info)
    assert not at.sidebar.selectbox  # no picker: nothing to pick


# ------------------------------------------------------------------ the task pages' labels


def test_rank_submit_maps_the_shown_order_to_item_positions(app_db):
    at = pick(as_user("ann"), app_db, "ranks")
    assignment = current_assignment(app_db, "ann", "ranks")
    assert shown_positions(at) == assignment.shown_permutation  # the page shows the leased order
    assert [f"Response {i}" for i in range(1, 5)] == [m.value.strip("*") for m in at.markdown
                                                      if m.value.startswith("**Response")]

    # Nothing ranked, then one short: refused with a message, nothing written.
    button(at, "Submit").click().run()
    assert "Give every response a rank first" in warnings(at)
    shown_ranks = [2, 1, 4, 2]  # ranks in the order shown, with a tie
    for i, rank in enumerate(shown_ranks[:3]):
        next(c for c in at.segmented_control if c.label == f"Rank of response {i + 1}").set_value(rank)
    button(at, "Submit").click().run()
    assert "missing: response 4" in warnings(at)
    assert label_count(app_db) == 0

    next(c for c in at.segmented_control if c.label == "Rank of response 4").set_value(shown_ranks[3])
    at.text_area[0].input("the second one is best")
    button(at, "Submit").click().run()
    assert not at.exception
    with session_scope(app_db, read_only=True) as s:
        label = s.scalar(select(Label))
        guidelines = s.scalar(select(Guidelines).where(Guidelines.project_id == project_id(app_db, "ranks")))
    assert label_count(app_db) == 1
    expected = [None] * 4
    for shown, position in enumerate(assignment.shown_permutation):
        expected[position] = shown_ranks[shown]
    assert (label.kind, label.ranking, label.shown_permutation) == ("rank", expected, assignment.shown_permutation)
    assert label.rationale == "the second one is best" and label.guidelines_id == guidelines.id
    assert "1 in all" in " ".join(c.value for c in at.caption)  # and on to the next item


def test_rating_submit_needs_every_aspect_and_maps_the_shown_order(app_db):
    at = pick(as_user("root"), app_db, "ratings")
    assignment = current_assignment(app_db, "root", "ratings")
    assert shown_positions(at) == assignment.shown_permutation
    controls = {c.label for c in at.segmented_control}
    assert controls == {"Instruction following", "Honesty"}  # humanised aspect names
    assert len(at.segmented_control) == 3 * len(ASPECTS)

    scores = [{"instruction_following": 5, "honesty": 4}, {"instruction_following": 2, "honesty": 3},
              {"instruction_following": 1, "honesty": 1}]  # in the order shown
    for i, shown in enumerate(scores):
        for aspect, value in shown.items():
            if (i, aspect) != (2, "honesty"):  # leave one out
                at.segmented_control(key=f"score-{assignment.id}-{i}-{aspect}").set_value(value)
    at.text_input(key=f"why-{assignment.id}-0-honesty").input("admits a doubt")
    button(at, "Submit").click().run()
    assert "Rate every aspect of every response first (missing response 3: Honesty)" in warnings(at)
    assert label_count(app_db) == 0

    at.segmented_control(key=f"score-{assignment.id}-2-honesty").set_value(1)
    button(at, "Submit").click().run()
    assert not at.exception
    with session_scope(app_db, read_only=True) as s:
        label = s.scalar(select(Label))
    expected = [None] * 3
    for shown, position in enumerate(assignment.shown_permutation):
        expected[position] = {"scores": scores[shown],
                              "rationales": {"honesty": "admits a doubt"} if shown == 0 else {}}
    assert (label.kind, label.ratings, label.shown_permutation) == ("rating", expected, assignment.shown_permutation)
    assert label_count(app_db) == 1


def test_edit_shows_the_diff_and_records_the_rewrite(app_db):
    at = pick(as_user("rev"), app_db, "edits")
    original = next(m.value for m in at.markdown if " :: " in m.value)
    editor = next(t for t in at.text_area if t.label == "Your rewrite")
    assert editor.value == original
    assert "no changes" in at.code[0].value and at.code[0].language == "diff"

    editor.input("   ").run()  # an empty rewrite is refused, nothing written
    button(at, "Submit").click().run()
    assert "The rewrite is empty" in warnings(at)
    assert label_count(app_db) == 0

    rewrite = original + "\nand a second line [with a link](https://evil.example)"
    next(t for t in at.text_area if t.label == "Your rewrite").input(rewrite).run()
    diff = at.code[0].value
    assert "+and a second line" in diff and at.code[0].language == "diff"  # shown as code, never markdown
    assert not any("with a link" in m.value for m in at.markdown)
    distance = len(rewrite) - len(original)
    assert any(f"Edit distance: {distance} characters" in c.value for c in at.caption)
    button(at, "Submit").click().run()
    with session_scope(app_db, read_only=True) as s:
        label = s.scalar(select(Label))
    assert (label.kind, label.edited_text, label.edit_distance) == ("edit", rewrite, distance)

    # The next one, unchanged: "fine as it is", distance 0.
    button(at, "Submit").click().run()
    with session_scope(app_db, read_only=True) as s:
        distances = s.scalars(select(Label.edit_distance).order_by(Label.id)).all()
    assert distances == [distance, 0]


def test_guidelines_are_shown_inert_with_their_version(app_db):
    for project in ("ranks", "ratings", "edits"):
        at = pick(as_user("ann"), app_db, project)
        assert [e.label for e in at.expander] == ["Guidelines · version 1"]
        shown = [m.value for m in at.expander[0].markdown]
        assert any("Prefer correct answers" in text for text in shown)
        assert not any("](" in text for text in shown)  # no markdown link or image left
        assert not any("https://evil" in text for text in shown)  # nor an autolink


def test_pairwise_and_binary_still_label_through_the_picker(app_db):
    at = as_user("ann")
    button(at, "Tie").click().run()
    at = pick(at, app_db, "default-binary")
    at.feedback[0].set_value(1).run()
    with session_scope(app_db, read_only=True) as s:
        kinds = s.execute(select(Label.kind, Label.choice, Label.thumb).order_by(Label.id)).all()
    assert kinds == [("pairwise", "tie", None), ("binary", None, "up")]


# ------------------------------------------------------------------ the Projects page


def test_admin_creates_a_project_adds_guidelines_and_a_member(app_db):
    at = as_user("root").switch_page("pages/projects.py").run()
    assert title(at) == "Projects"
    assert set(at.dataframe[0].value["name"]) == {"default", "default-binary", "ranks", "ratings", "edits"}

    next(t for t in at.text_input if t.label == "Name").input("support-rank")
    next(s for s in at.selectbox if s.label == "Task type").set_value("rank")
    next(n for n in at.number_input if n.label.startswith("K")).set_value(5)
    next(t for t in at.text_area if t.label.startswith("Guidelines (markdown; shown")).input("Version one.")
    button(at, "Create project").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Created rank project support-rank" in m.value for m in at.success)
    assert at.selectbox(key="manage_project").value == "support-rank"  # managed below at once
    with session_scope(app_db, read_only=True) as s:
        project = get_project(session=s, name="support-rank")
        assert (project.task_type, project.k, project.open_to_all) == ("rank", 5, False)

    editor = next(t for t in at.text_area if t.label == "Guidelines (markdown)")
    assert editor.value == "Version one."
    editor.input("Version two: see [here](https://evil.example/x).")
    button(at, "Save as a new version").click().run()
    assert any("Guidelines v2 of support-rank are current" in m.value for m in at.success)
    assert any("Current: version 2" in c.value for c in at.caption)
    rendered = [m.value for m in at.markdown if "Version two" in m.value]
    assert rendered and not any("](" in text for text in rendered)

    next(t for t in at.text_input if t.label == "Username").input("out")
    button(at, "Add member").click().run()
    assert any("Added out to support-rank" in m.value for m in at.success)
    with session_scope(app_db, read_only=True) as s:
        versions = s.scalars(select(Guidelines.version).where(Guidelines.project_id == project.id)).all()
        members = s.scalars(select(User.username).join(ProjectMember, ProjectMember.user_id == User.id)
                            .where(ProjectMember.project_id == project.id)).all()
    assert sorted(versions) == [1, 2] and members == ["out"]

    # A bad name is refused with the service's message.
    next(t for t in at.text_input if t.label == "Name").input("Bad Name!")
    button(at, "Create project").click().run()
    assert any("A project name is 1-64 characters" in e.value for e in at.error)


def test_admin_saves_a_projects_queue_settings(app_db):
    at = as_user("root").switch_page("pages/projects.py").run()
    at.selectbox(key="manage_project").set_value("ranks").run()
    next(n for n in at.number_input if n.label.startswith("Overlap")).set_value(2)
    button(at, "Save").click().run()
    with session_scope(app_db, read_only=True) as s:
        assert get_project(session=s, name="ranks").overlap == 2
        assert get_project(session=s, name="default").overlap == 1


@pytest.mark.parametrize("name", ["ann", "rev"])
def test_non_admins_cannot_open_the_projects_page(app_db, name):
    at = as_user(name)
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/projects.py")
    assert title(at) != "Projects"


# ------------------------------------------------------------------ the Data page, per project


def test_admin_samples_into_a_project(app_db, monkeypatch):
    from db.models import Job

    monkeypatch.setattr("feedback.jobs.start_detached", lambda **kw: 1)
    at = as_user("root").switch_page("pages/data.py").run()
    next(s for s in at.selectbox if s.label == "Project").set_value("ranks")
    button(at, "Start sampling job").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    with session_scope(app_db, read_only=True) as s:
        config = s.scalar(select(Job.config).where(Job.kind == "sample"))
    assert config["project"] == "ranks" and "items" not in config


def test_export_per_project_with_row_settings_shows_rows_as_text(app_db):
    from feedback import queue

    with session_scope(app_db) as s:  # one ranking of the project's first item: 4 > 3 > 2 > 1
        ann = s.scalar(select(User).where(User.username == "ann"))
        claim = queue.claim_next(session=s, user=ann, project=get_project(session=s, name="ranks"))
        queue.submit_rank(session=s, user=ann, assignment_id=claim.assignment_id, submission_id="r1",
                          ranks=[1, 2, 3, 4])
    at = as_user("root").switch_page("pages/data.py").run()
    export = at.tabs[3]
    export.selectbox[0].set_value("ranks").run()
    export = at.tabs[3]
    assert export.radio[0].options == ["DPO (prompt/chosen/rejected)", "KTO (prompt/completion/label)",
                                       "Reward model (prompt/chosen/rejected/margin)", "SFT (prompt/completion)"]
    assert any(m.value == "1 rows" for m in export.markdown)  # DPO: best over worst
    assert '"rule"' in export.code[0].value and export.code[0].language == "json"
    assert not any(" :: " in m.value for m in at.markdown)  # response texts only as code
    next(t for t in export.text_input if t.label == "rank_pairs").input("all_pairs")
    button(at, "Apply").click().run()
    assert any(m.value == "6 rows" for m in at.tabs[3].markdown), [m.value for m in at.tabs[3].markdown]
    at.tabs[3].selectbox[0].set_value("default").run()
    assert any(m.value == "0 rows" for m in at.tabs[3].markdown)
