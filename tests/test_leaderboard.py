"""The leaderboard of policy versions (feedback/leaderboard.py) on SQLite and Postgres: ratings
in the order of known strengths with honest intervals, sources apart and together, exact win
matrices, decisions and attention checks, connectivity; and arena mode (feedback/projects.py
set_arena, feedback/refill.py arena_pair): refused without two versions, refills that run a
versus job over the pair that met least, and that job run for real with a fake policy client."""
from __future__ import annotations

import json
import math
import random
import uuid

import pytest
from sqlalchemy import func, select

from db.engine import engine_for, session_scope
from db.models import AuditLog, Item, ItemDecision, Job, Label, PolicyVersion, Project, Prompt, Response, User
from feedback import jobs
from feedback.actors import CLI, Actor
from feedback.errors import PermissionDenied, UserError
from feedback.launchers import LAUNCHERS
from feedback.leaderboard import EMPTY, Comparison, leaderboard, rate, win_matrix
from feedback.policy.base import Completion
from feedback.projects import create_project, default_project, set_arena
from feedback.prompts import canonical_messages, content_hash
from feedback.refill import _refill_config, arena_pair, maybe_refill
from feedback.sampling import SamplingConfig, run_sampling, stored_config
from testkit.factories import make_users, set_queue

# --- data: versions, head-to-head items, labels ---------------------------------------------------


def versions(s, *names: str, status: str = "candidate") -> dict[str, PolicyVersion]:
    made = {name: PolicyVersion(name=name, base_model="tiny", status=status) for name in names}
    s.add_all(made.values())
    s.flush()
    return made


def prompt(s, text: str | None = None) -> Prompt:
    text = text or f"prompt {uuid.uuid4().hex[:12]}"
    messages = canonical_messages(text, None)
    made = Prompt(text=text, messages=messages, content_hash=content_hash(messages), split="train", tags=[])
    s.add(made)
    return made


def head_to_head(s, project: Project, a: PolicyVersion, b: PolicyVersion) -> Item:
    """A pair item on a new prompt: response A from version a, B from version b."""
    p = prompt(s)
    ra = Response(prompt=p, policy_version_id=a.id, text=f"{a.name} answers")
    rb = Response(prompt=p, policy_version_id=b.id, text=f"{b.name} answers")
    item = Item(kind="pair", project_id=project.id, prompt=p, response_a=ra, response_b=rb)
    s.add(item)
    s.flush()
    return item


def label(s, item: Item, choice: str, *, source: str = "human", user_id: int | None = None) -> None:
    s.add(Label(item_id=item.id, kind="pairwise", choice=choice, source=source, user_id=user_id,
                producer=None if source == "human" else "fake-judge", submission_id=uuid.uuid4().hex))
    s.flush()


def vote(s, project, winner: PolicyVersion, loser: PolicyVersion, *, rng: random.Random, **kw) -> Item:
    """One decisive comparison, with the winner on a random side."""
    if rng.random() < 0.5:
        item = head_to_head(s, project, winner, loser)
        label(s, item, "a", **kw)
    else:
        item = head_to_head(s, project, loser, winner)
        label(s, item, "b", **kw)
    return item


def by_name(board) -> dict:
    return {row.name: row for row in board.standings}


@pytest.fixture
def setup(engine):
    with session_scope(engine) as s:
        project = default_project(session=s)
        vs = versions(s, "v0", "v1", "v2")
        [user] = make_users(s, 1)
        return engine, project.id, {n: v.id for n, v in vs.items()}, user


def loaded(s, project_id, ids):
    return s.get(Project, project_id), {n: s.get(PolicyVersion, i) for n, i in ids.items()}


# --- ratings ---------------------------------------------------------------------------------------


def test_ratings_follow_known_strengths_with_intervals(setup):
    """v2 beats v1 in 24 of 30, v1 beats v0 in 24 of 30: v2 > v1 > v0, each rating inside its own
    interval, and the best and worst intervals apart."""
    engine, project_id, ids, user = setup
    rng = random.Random(0)
    with session_scope(engine) as s:
        project, v = loaded(s, project_id, ids)
        for strong, weak in ((v["v2"], v["v1"]), (v["v1"], v["v0"])):
            outcomes = [True] * 24 + [False] * 6
            rng.shuffle(outcomes)
            for strong_wins in outcomes:
                winner, loser = (strong, weak) if strong_wins else (weak, strong)
                vote(s, project, winner, loser, rng=rng, user_id=user)
    with session_scope(engine, read_only=True) as s:
        board = leaderboard(session=s, bootstrap=200, seed=0)
    assert [row.name for row in board.standings] == ["v2", "v1", "v0"]
    assert board.comparisons == 60 and board.note is None
    rows = by_name(board)
    for row in board.standings:
        assert row.connected and row.low <= row.rating <= row.high
    assert rows["v2"].low > rows["v0"].high  # the intervals do not all overlap
    assert (rows["v1"].comparisons, rows["v1"].wins, rows["v1"].losses, rows["v1"].ties) == (60, 30, 30, 0)
    assert (rows["v2"].wins, rows["v2"].losses) == (24, 6) and (rows["v0"].wins, rows["v0"].losses) == (6, 24)
    # Elo-like scale: the versions average 1000, and 80% against a neighbour is roughly 240 points.
    assert sum(row.rating for row in board.standings) / 3 == pytest.approx(1000, abs=1e-6)
    assert 180 < rows["v2"].rating - rows["v1"].rating < 300
    # The same seed gives the same intervals; another seed other ones.
    with session_scope(engine, read_only=True) as s:
        again = leaderboard(session=s, bootstrap=200, seed=0)
        other = leaderboard(session=s, bootstrap=200, seed=1)
    assert again.standings == board.standings and other.standings != board.standings


def test_people_and_the_judge_apart_and_together(setup):
    engine, project_id, ids, user = setup
    rng = random.Random(1)
    with session_scope(engine) as s:
        project, v = loaded(s, project_id, ids)
        for _ in range(6):  # people prefer v1; the judge, on the same items, prefers v0
            item = vote(s, project, v["v1"], v["v0"], rng=rng, user_id=user)
            label(s, item, {"a": "b", "b": "a"}[s.scalar(select(Label.choice).where(Label.item_id == item.id))],
                  source="judge")
        for _ in range(2):  # and only the judge saw these
            vote(s, project, v["v2"], v["v0"], rng=rng, source="judge")
    with session_scope(engine, read_only=True) as s:
        people = leaderboard(session=s, sources=("human",), bootstrap=20)
        judge = leaderboard(session=s, sources=("judge",), bootstrap=20)
        both = leaderboard(session=s, sources=("human", "judge"), bootstrap=20)
        with pytest.raises(UserError, match="Sources are some of"):
            leaderboard(session=s, sources=("crowd",))
    assert [r.name for r in people.standings] == ["v1", "v0"] and people.comparisons == 6
    assert by_name(people)["v1"].wins == 6
    assert judge.comparisons == 8 and by_name(judge)["v0"].wins == 6 and by_name(judge)["v1"].losses == 6
    assert "v2" in by_name(judge) and "v2" not in by_name(people)
    assert both.comparisons == 14 and both.sources == ("human", "judge")
    assert (by_name(both)["v1"].wins, by_name(both)["v1"].losses) == (6, 6)


def test_win_matrix_is_exact_on_a_small_set(setup):
    """v1 against v0: won twice (once on each side), lost once, a tie and a both-bad (half a win
    each way): 3 of 5. A same-version pair and a pair nobody labelled are no comparison."""
    engine, project_id, ids, user = setup
    with session_scope(engine) as s:
        project, v = loaded(s, project_id, ids)
        label(s, head_to_head(s, project, v["v0"], v["v1"]), "b", user_id=user)
        label(s, head_to_head(s, project, v["v1"], v["v0"]), "a", user_id=user)
        label(s, head_to_head(s, project, v["v0"], v["v1"]), "a", user_id=user)
        label(s, head_to_head(s, project, v["v0"], v["v1"]), "tie", user_id=user)
        label(s, head_to_head(s, project, v["v1"], v["v0"]), "both_bad", user_id=user)
        label(s, head_to_head(s, project, v["v2"], v["v1"]), "a", user_id=user)
        label(s, head_to_head(s, project, v["v0"], v["v0"]), "a", user_id=user)  # one version: no comparison
        head_to_head(s, project, v["v2"], v["v0"])  # never labelled
    with session_scope(engine, read_only=True) as s:
        cells = {(c.row, c.column): c for c in win_matrix(session=s)}
        board = leaderboard(session=s, bootstrap=10)
    assert set(cells) == {("v0", "v1"), ("v1", "v0"), ("v1", "v2"), ("v2", "v1")}
    c = cells[("v1", "v0")]
    assert (c.wins, c.losses, c.ties, c.n, c.share) == (2, 1, 2, 5, 0.6)
    c = cells[("v0", "v1")]
    assert (c.wins, c.losses, c.ties, c.n, c.share) == (1, 2, 2, 5, 0.4)
    assert (cells[("v2", "v1")].share, cells[("v2", "v1")].n, cells[("v1", "v2")].share) == (1.0, 1, 0.0)
    assert board.comparisons == 6 and {c.row for c in board.cells} == {"v0", "v1", "v2"}
    assert by_name(board)["v0"].ties == 2 and by_name(board)["v1"].comparisons == 6


def test_decided_items_count_once_with_their_answer_and_attention_checks_never(setup):
    engine, project_id, ids, _ = setup
    with session_scope(engine) as s:
        project, v = loaded(s, project_id, ids)
        people = make_users(s, 3, prefix="rater")
        adjudicated = head_to_head(s, project, v["v0"], v["v1"])
        gold = head_to_head(s, project, v["v0"], v["v1"])
        attention = head_to_head(s, project, v["v1"], v["v2"])
        label(s, adjudicated, "a", source="judge")
        for uid in people:
            label(s, adjudicated, "a", user_id=uid)  # three votes for v0 ...
            label(s, gold, "tie", user_id=uid)
            label(s, attention, "a", user_id=uid)
        s.add_all([  # ... settled for v1; the gold answer: v1; an attention check's answer: v1 (A)
            ItemDecision(item_id=adjudicated.id, project_id=project.id, origin="adjudication", choice="b"),
            ItemDecision(item_id=gold.id, project_id=project.id, origin="gold", gold=True, choice="b"),
            ItemDecision(item_id=attention.id, project_id=project.id, origin="attention", gold=True, choice="a"),
        ])
    with session_scope(engine, read_only=True) as s:
        board = leaderboard(session=s, bootstrap=10)
        judged = leaderboard(session=s, sources=("judge",), bootstrap=10)
    rows = by_name(board)
    assert board.comparisons == 2 and set(rows) == {"v0", "v1"}  # v2 met v1 only in the attention check
    assert (rows["v1"].wins, rows["v1"].losses, rows["v1"].ties) == (2, 0, 0)
    # The judge labelled only the adjudicated item: it counts, once, with the reviewer's answer.
    assert judged.comparisons == 1 and (by_name(judged)["v1"].wins, by_name(judged)["v0"].losses) == (1, 1)


def test_absent_and_unconnected_versions(setup):
    """A version with no comparisons is not listed; two that only met each other are listed
    without a rating, and the leaderboard says why."""
    engine, project_id, ids, user = setup
    rng = random.Random(2)
    with session_scope(engine) as s:
        project, v = loaded(s, project_id, ids)
        v.update(versions(s, "v3", "v4", "idle"))
        for _ in range(5):
            vote(s, project, v["v1"], v["v0"], rng=rng, user_id=user)
        for _ in range(2):
            vote(s, project, v["v4"], v["v3"], rng=rng, user_id=user)
        label(s, head_to_head(s, project, v["idle"], v["idle"]), "a", user_id=user)
    with session_scope(engine, read_only=True) as s:
        board = leaderboard(session=s, bootstrap=10)
    assert [r.name for r in board.standings] == ["v1", "v0", "v3", "v4"]  # no v2, no idle
    rows = by_name(board)
    assert rows["v3"].rating is None and rows["v4"].low is None and not rows["v4"].connected
    assert rows["v4"].wins == 2 and rows["v0"].connected
    assert "v3, v4 never met any of v1, v0" in board.note


def test_project_filter_and_the_empty_board(setup):
    engine, project_id, ids, user = setup
    with session_scope(engine, read_only=True) as s:
        empty = leaderboard(session=s)
    assert empty.standings == [] and empty.cells == [] and empty.comparisons == 0
    with session_scope(engine) as s:
        project, v = loaded(s, project_id, ids)
        other = create_project(session=s, actor=CLI, name="arena-two", task_type="pairwise")
        label(s, head_to_head(s, project, v["v0"], v["v1"]), "a", user_id=user)
        label(s, head_to_head(s, other, v["v2"], v["v1"]), "a", user_id=user)
        other_id = other.id
    with session_scope(engine, read_only=True) as s:
        here = leaderboard(session=s, project_id=project_id, bootstrap=5)
        there = leaderboard(session=s, project_id=other_id, bootstrap=5)
        everywhere = leaderboard(session=s, bootstrap=5)
    assert {r.name for r in here.standings} == {"v0", "v1"}
    assert {r.name for r in there.standings} == {"v1", "v2"}
    assert everywhere.comparisons == 2


def test_cli_leaderboard(setup, use_db, capsys):
    from cli import main

    engine, project_id, ids, user = setup
    assert main(["leaderboard"]) == 2
    assert EMPTY in capsys.readouterr().err
    with session_scope(engine) as s:
        project, v = loaded(s, project_id, ids)
        label(s, head_to_head(s, project, v["v0"], v["v1"]), "b", user_id=user)
        label(s, head_to_head(s, project, v["v0"], v["v1"]), "tie", source="judge")
    assert main(["leaderboard", "--project", "default", "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("v1") and "1 comparisons from human labels" in out
    assert "v1" in out and "100% (1)" in out
    assert main(["leaderboard", "--source", "all", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sources"] == ["human", "judge"] and data["comparisons"] == 2
    assert {row["name"]: row["ties"] for row in data["standings"]} == {"v0": 1, "v1": 1}
    assert {(c["row"], c["column"]): c["share"] for c in data["win_matrix"]} == {("v1", "v0"): 0.75,
                                                                               ("v0", "v1"): 0.25}
    assert main(["leaderboard", "--project", "nope"]) == 2


# --- arena mode ------------------------------------------------------------------------------------


def test_arena_needs_a_pairwise_project_with_two_versions_and_an_admin(setup):
    engine, project_id, ids, _ = setup
    with session_scope(engine) as s:
        project, v = loaded(s, project_id, ids)
        outside = versions(s, "imported-model", status="external")["imported-model"]
        for chosen in ([], [v["v0"].id], [v["v0"].id, outside.id]):
            project.policy_version_ids = chosen
            with pytest.raises(UserError, match="choose at least two"):
                set_arena(session=s, actor=CLI, project=project, arena=True)
        ranks = create_project(session=s, actor=CLI, name="ranks", task_type="rank")
        ranks.policy_version_ids = [v["v0"].id, v["v1"].id]
        with pytest.raises(UserError, match="Arena mode makes pairs"):
            set_arena(session=s, actor=CLI, project=ranks, arena=True)
        annotator = User(username="ann", role="annotator", password_hash="!")
        s.add(annotator)
        project.policy_version_ids = [v["v0"].id, v["v1"].id]
        with pytest.raises(PermissionDenied):
            set_arena(session=s, actor=Actor.signed_in(annotator), project=project, arena=True)
        assert not project.arena
        set_arena(session=s, actor=CLI, project=project, arena=True)
    with session_scope(engine) as s:
        project = s.get(Project, project_id)
        assert project.arena
        log = s.scalar(select(AuditLog).where(AuditLog.action == "project.arena"))
        assert log.target == "project:default" and log.details == {"arena": True, "versions": ["v0", "v1"]}
        project.policy_version_ids = []
        set_arena(session=s, actor=CLI, project=project, arena=False)  # off needs no versions
    with session_scope(engine, read_only=True) as s:
        assert not s.get(Project, project_id).arena


def test_arena_pair_is_the_pair_that_met_least(setup):
    engine, project_id, ids, user = setup
    with session_scope(engine) as s:
        project, v = loaded(s, project_id, ids)
        project.policy_version_ids = sorted(ids.values())
        set_arena(session=s, actor=CLI, project=project, arena=True)
        for a, b in (("v0", "v1"), ("v1", "v0"), ("v2", "v0")):  # v0-v1 twice (either side), v0-v2 once
            head_to_head(s, project, v[a], v[b])
        picks = {frozenset(p.name for p in arena_pair(session=s, project=project, rng=random.Random(k)))
                 for k in range(20)}
        assert picks == {frozenset({"v1", "v2"})}
        head_to_head(s, project, v["v1"], v["v2"])  # now v0-v2 and v1-v2 tie: either, at random
        picks = [arena_pair(session=s, project=project, rng=random.Random(k)) for k in range(40)]
        assert {frozenset(p.name for p in pair) for pair in picks} == {frozenset({"v0", "v2"}),
                                                                    frozenset({"v1", "v2"})}
        assert {pair[0].name for pair in picks} == {"v0", "v1", "v2"}  # which samples first (A) varies too
        config = _refill_config(s, project, rng=random.Random(3))
        assert {config.policy_version, config.versus_version} in ({"v0", "v2"}, {"v1", "v2"})
        assert config.n_per_prompt == 1 and config.project == "default"
        project.arena = False
        plain = _refill_config(s, project)
        assert plain.versus_version is None and plain.policy_version is None and plain.n_per_prompt == 2


def test_refill_of_an_arena_project_queues_a_versus_job(setup, db_url, registered, monkeypatch):
    engine, project_id, ids, _ = setup
    launched = []

    class Recording:
        def launch(self, *, job_id, **_):
            launched.append(job_id)
            return "recorded"

    registered(LAUNCHERS, "recording", Recording)
    monkeypatch.setenv("JOB_LAUNCHER", "recording")
    with session_scope(engine) as s:
        project = s.get(Project, project_id)
        set_queue(s, project=project, refill_below=4, refill_prompts=3, policy_version_ids=[ids["v0"], ids["v2"]])
        set_arena(session=s, actor=CLI, project=project, arena=True)
    job_id = maybe_refill(engine=engine, database_url=db_url, project_id=project_id)
    assert launched == [job_id]
    with session_scope(engine, read_only=True) as s:
        job = s.get(Job, job_id)
    assert job.kind == "sample"
    assert {job.config["policy_version"], job.config["versus_version"]} == {"v0", "v2"}
    assert job.config["n_per_prompt"] == 1 and job.config["limit"] == 3 and job.config["project"] == "default"


def _answer(text: str) -> Completion:
    return Completion(text=text, finish_reason="stop", prompt_tokens=3, completion_tokens=2, latency_ms=1.0, seed=0)


class FakePolicy:
    """Each version answers every prompt in its own words."""

    def __init__(self, version: PolicyVersion):
        self.name = version.name
        self.description = f"fake:{version.name}"

    def generate(self, conversations, params):
        return [[_answer(f"{self.name} on {c[-1]['content']} #{i}") for i in range(params.n)] for c in conversations]


def _fake_sampling_job(*, engine, job, reporter):
    """The sample job kind as installed, but its policy clients are FakePolicy."""
    return run_sampling(engine=engine, config=stored_config(job.config), job_id=job.id,
                        on_progress=lambda done, total: reporter.progress(done, total), client_factory=FakePolicy)


class InlineLauncher:
    """Runs the job in this process at once, as a worker would."""

    def launch(self, *, job_id, database_url, **_):
        jobs.run_job(engine=engine_for(database_url), job_id=job_id)
        return "inline"


def test_an_arena_refill_samples_two_versions_on_the_same_prompts(setup, db_url, registered, monkeypatch):
    engine, project_id, ids, _ = setup
    registered(LAUNCHERS, "inline", InlineLauncher)
    registered(jobs.JOB_KINDS, "sample", jobs.JobKind(runner=_fake_sampling_job, config=SamplingConfig))
    monkeypatch.setenv("JOB_LAUNCHER", "inline")
    with session_scope(engine) as s:
        for n in range(4):
            prompt(s, f"question {n}")
        project = s.get(Project, project_id)
        set_queue(s, project=project, refill_below=2, refill_prompts=4, policy_version_ids=sorted(ids.values()))
        set_arena(session=s, actor=CLI, project=project, arena=True)
    job_id = maybe_refill(engine=engine, database_url=db_url, project_id=project_id)
    with session_scope(engine, read_only=True) as s:
        job = s.get(Job, job_id)
        assert job.status == "succeeded", job.error
        assert job.result["items"] == 4 and job.result["responses"] == 8
        pair = {job.config["policy_version"], job.config["versus_version"]}
        items = list(s.scalars(select(Item).where(Item.job_id == job_id)))
        assert len(items) == 4
        for item in items:
            a, b = item.response_a, item.response_b
            assert a.prompt_id == b.prompt_id == item.prompt_id
            assert {a.policy_version.name, b.policy_version.name} == pair
            assert a.text.startswith(a.policy_version.name) and b.text.startswith(b.policy_version.name)
        assert s.scalar(select(func.count(func.distinct(Item.prompt_id))).where(Item.job_id == job_id)) == 4
    # The next refill pits another pair: the one just sampled has met four times, the others never.
    with session_scope(engine) as s:
        set_queue(s, project=s.get(Project, project_id), refill_below=10)
    second = maybe_refill(engine=engine, database_url=db_url, project_id=project_id)
    with session_scope(engine, read_only=True) as s:
        config = s.get(Job, second).config
    assert {config["policy_version"], config["versus_version"]} != pair and config["n_per_prompt"] == 1


def test_cli_projects_arena(setup, use_db, capsys):
    from cli import main

    engine, project_id, ids, _ = setup
    assert main(["projects", "arena", "default", "--on"]) == 2
    assert "choose at least two" in capsys.readouterr().err
    with session_scope(engine) as s:
        s.get(Project, project_id).policy_version_ids = [ids["v1"], ids["v2"]]
    assert main(["projects", "arena", "default", "--on"]) == 0
    assert "arena mode on" in capsys.readouterr().out
    with session_scope(engine, read_only=True) as s:
        assert s.get(Project, project_id).arena
    assert main(["projects", "arena", "default", "--off"]) == 0
    with session_scope(engine, read_only=True) as s:
        assert not s.get(Project, project_id).arena


def test_a_tie_weighs_half_a_win_in_the_ratings_as_in_the_matrix():
    # 3 wins and 2 ties: 80% in the win matrix, so odds of 4 to 1, 400*log10(4) = 241 points apart.
    found = [Comparison(item_id=i, first=1, second=2, winner=1 if i < 3 else None, source="human") for i in range(5)]
    board = rate(found, names={1: "v1", 2: "v0"}, bootstrap=0)
    top, bottom = board.standings
    assert (top.name, bottom.name) == ("v1", "v0")
    assert top.rating - bottom.rating == pytest.approx(400 * math.log10(4), abs=3)
