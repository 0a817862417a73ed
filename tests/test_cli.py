"""The CLI end to end: import -> sample -> label -> export, and clear errors for user mistakes."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from sqlalchemy import select

from cli import main
from db.engine import session_scope
from db.models import AuditLog, Item, Label, PolicyVersion, Project, User
from feedback.actors import CLI
from feedback.settings import PROJECT_ROOT


@pytest.fixture
def cli_db(use_db, engine, tiny_model_dir):
    """A migrated database with v0 pointing at the tiny model."""
    from feedback.policies import ensure_base_policy

    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI).model_path = str(tiny_model_dir)
    return engine


def test_import_sample_export_flow(cli_db, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Question {i}?", "split": "train"}) for i in range(3)))
    assert main(["prompts", "import", str(prompts)]) == 0
    assert "Imported 3" in capsys.readouterr().out
    assert main(["sample", "--limit", "3", "--max-new-tokens", "6", "--seed", "1", "--temperature", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "3 prompts, 6 responses" in out and " items in default (" in out
    assert main(["jobs", "list"]) == 0
    assert "sample" in capsys.readouterr().out

    with session_scope(cli_db) as s:
        user = User(username="ann", password_hash="x", role="annotator")
        s.add(user)
        s.flush()
        for i, item in enumerate(s.scalars(select(Item).where(Item.kind == "pair"))):
            s.add(Label(item_id=item.id, kind="pairwise", choice="a", source="human", user_id=user.id,
                        submission_id=f"sub-{i}"))
        n_pairs = i + 1
    out_file = tmp_path / "dpo.jsonl"
    assert main(["export", "--format", "dpo", "--out", str(out_file)]) == 0
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == n_pairs
    assert set(rows[0]) == {"prompt", "chosen", "rejected", "rule"}
    assert {row["rule"] for row in rows} == {"pairwise:majority"}
    assert rows[0]["chosen"][0]["role"] == "assistant"
    assert f"wrote {n_pairs} dpo rows to {out_file} ({n_pairs} pairwise:majority)" in capsys.readouterr().out


def test_user_mistakes_exit_2_without_traceback(cli_db, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{not json\n{"tags": 3}\n')
    assert main(["prompts", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "line 3" in err and "nothing was imported" in err
    assert "Traceback" not in err

    assert main(["prompts", "import", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["sample", "--limit", "1", "--policy-version", "v7"]) == 2
    assert "No policy version 'v7'" in capsys.readouterr().err
    assert main(["export", "--format", "kto", "--out", str(tmp_path / "k.jsonl")]) == 2
    assert "No labels" in capsys.readouterr().err


def test_users_add_generates_or_reads_password(cli_db, capsys, monkeypatch):
    from feedback.users import authenticate

    assert main(["users", "add", "alice", "--role", "reviewer"]) == 0
    out = capsys.readouterr().out
    password = out.strip().splitlines()[-1].split(": ", 1)[1]
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert main(["users", "add", "bob", "--role", "annotator", "--password-stdin"]) == 0
    assert "correct horse" not in capsys.readouterr().out
    assert main(["users", "add", "bob", "--role", "annotator"]) == 2
    assert "already exists" in capsys.readouterr().err
    with session_scope(cli_db) as s:
        assert authenticate(session=s, username="alice", password=password).role == "reviewer"
        assert authenticate(session=s, username="bob", password="correct horse battery") is not None
        assert authenticate(session=s, username="bob", password="wrong password") is None
        stored = s.scalar(select(User.password_hash).where(User.username == "bob"))
        assert stored.startswith("$argon2id$") and "correct horse" not in stored
        # The audit log says who was created, never the password.
        details = json.dumps([a.details for a in s.scalars(select(AuditLog))])
        assert "correct horse" not in details and password not in details


def test_unmigrated_database_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    assert main(["jobs", "list"]) == 2
    assert "db upgrade" in capsys.readouterr().err


def test_setup_is_idempotent_and_prints_admin_once(tmp_path, default_model_dir):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path / 'setup.sqlite3'}",
           "MODEL_CACHE_DIR": str(default_model_dir.parent)}

    def run():
        return subprocess.run([sys.executable, "-m", "feedback", "setup", "--demo"], cwd=PROJECT_ROOT,
                              env=env, capture_output=True, text=True, check=True).stdout

    first, second = run(), run()
    assert "password:" in first and "demo prompts: 25 new" in first
    assert "password:" not in second and "demo prompts: 0 new" in second
    from db.engine import make_engine

    engine = make_engine(env["DATABASE_URL"])
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(PolicyVersion.status).where(PolicyVersion.name == "v0")) == "active"
        assert len(s.scalars(select(User).where(User.role == "admin")).all()) == 1
    engine.dispose()


def test_judge_and_grade_commands(cli_db, tmp_path, capsys, tiny_model_dir):
    prompts = tmp_path / "math.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"What is {i}+{i}?", "reference": str(2 * i), "split": "train"})
                                 for i in range(3)))
    assert main(["prompts", "import", str(prompts)]) == 0
    assert main(["sample", "--limit", "3", "--max-new-tokens", "6", "--seed", "2", "--temperature", "1.5"]) == 0
    capsys.readouterr()
    # The local judge on the tiny model: real forward passes, both orders.
    assert main(["judge", "--backend", "local", "--model", tiny_model_dir.name, "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 pairs" in out and "(tiny-smollm2-test, default v1)." in out  # the job's summary sentence
    assert main(["grade", "--grader", "numeric"]) == 0
    assert "'pairs': " in capsys.readouterr().out
    assert main(["grade", "--grader", "nonsense"]) == 2
    assert main(["judge", "--constitution", "nope"]) == 2
    assert "No constitution 'nope'" in capsys.readouterr().err


def test_train_flags_come_from_the_stage_config(cli_db, registered, monkeypatch, capsys):
    """`train STAGE --field value`: only the flags given reach the round, as stage_config."""
    from db.models import Job
    from feedback.launchers import LAUNCHERS

    launched = []

    class Recording:
        def launch(self, *, job_id, **_):
            launched.append(job_id)
            return "recorded"

    registered(LAUNCHERS, "recording", Recording)
    monkeypatch.setenv("JOB_LAUNCHER", "recording")
    with pytest.raises(SystemExit):  # a RoundConfig field is not a stage flag: it goes in --config
        main(["train", "sft", "--sft-source", "reference"])
    capsys.readouterr()
    assert main(["train", "grpo", "--learning-rate", "1e-4", "--no-use-lora", "--detach"]) == 0
    with session_scope(cli_db, read_only=True) as s:
        job = s.scalar(select(Job).where(Job.kind == "train"))
    assert job.config["stage"] == "grpo" and job.config["stage_config"] == {"learning_rate": 1e-4, "use_lora": False}
    assert launched == [job.id]
    with pytest.raises(SystemExit):
        main(["train", "dpo", "--loss-type", "nonsense"])
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_run_stage_takes_the_stage_flags(tmp_path):
    from feedback.config_fields import flag_values
    from training.run_stage import make_parser
    from training.stages import STAGES

    argv = ["--stage", "dpo", "--rows", "r.jsonl", "--model-dir", "m", "--output-dir", "o", "--beta", "0.25",
            "--ld-alpha", "none"]
    args = make_parser("dpo").parse_args(argv)
    assert flag_values(args, STAGES.get("dpo").config) == {"beta": 0.25, "ld_alpha": None}
    help_text = make_parser("dpo").format_help()
    assert "--label-smoothing" in help_text and "(default: 0.1)" in help_text


# --- projects ------------------------------------------------------------------------------------


def _list_rows(out: str) -> dict[str, list[str]]:
    """`projects list` as {name: [task, K, items, guidelines, members...]}."""
    lines = out.strip().splitlines()
    assert lines[0].split() == ["name", "task", "K", "items", "guidelines", "members"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def test_projects_add_list_members_guidelines(cli_db, tmp_path, capsys):
    from db.models import Guidelines, Project, ProjectMember

    guide = tmp_path / "rank.md"
    guide.write_text("# Ranking\n\nBest first; equal ranks for ties.\n", encoding="utf-8")
    assert main(["projects", "add", "rank-p", "--task", "rank", "--k", "5", "--guidelines", str(guide)]) == 0
    assert capsys.readouterr().out.strip() == "created rank project 'rank-p' (K=5, guidelines v1)"
    assert main(["projects", "add", "rate-p", "--task", "rating", "--aspects", "helpfulness, honesty", "--open",
                 "--description", "Rate answers"]) == 0
    assert capsys.readouterr().out.strip() == "created rating project 'rate-p' (K=4, aspects helpfulness, honesty)"
    assert main(["projects", "add", "edit-p", "--task", "edit"]) == 0
    assert "created edit project 'edit-p' (K=1)" in capsys.readouterr().out

    assert main(["users", "add", "alice", "--role", "annotator", "--project", "rank-p", "--project", "edit-p"]) == 0
    out = capsys.readouterr().out
    assert "created annotator 'alice' in rank-p, edit-p" in out and "password (shown once): " in out
    assert main(["users", "add", "bob", "--role", "annotator"]) == 0
    capsys.readouterr()
    assert main(["projects", "members", "add", "rank-p", "bob", "alice"]) == 0
    assert capsys.readouterr().out.strip() == "rank-p: added bob"  # alice was a member already
    assert main(["projects", "members", "add", "rank-p", "alice"]) == 0
    assert capsys.readouterr().out.strip() == "rank-p: added nobody new"

    assert main(["projects", "list"]) == 0
    listed = _list_rows(capsys.readouterr().out)
    assert listed["rank-p"] == ["rank", "5", "0", "v1", "alice,", "bob"]
    assert listed["rate-p"] == ["rating", "4", "0", "-", "everyone"]
    assert listed["edit-p"] == ["edit", "1", "0", "-", "alice"]
    assert listed["default"][:2] == ["pairwise", "2"]

    new_guide = tmp_path / "rank-v2.md"
    new_guide.write_text("# Ranking\n\nBest first. Correctness before style.\n", encoding="utf-8")
    assert main(["projects", "guidelines", "rank-p", str(new_guide)]) == 0
    assert capsys.readouterr().out.strip() == "rank-p: guidelines are at v2"
    assert main(["projects", "guidelines", "rank-p", str(new_guide)]) == 0  # the same text: no new version
    assert capsys.readouterr().out.strip() == "rank-p: guidelines are at v2"
    assert main(["projects", "guidelines", "edit-p", str(guide)]) == 0
    assert capsys.readouterr().out.strip() == "edit-p: guidelines are at v1"

    assert main(["projects", "members", "remove", "rank-p", "bob"]) == 0
    assert capsys.readouterr().out.strip() == "rank-p: bob removed"
    assert main(["projects", "members", "remove", "rank-p", "bob"]) == 0
    assert capsys.readouterr().out.strip() == "rank-p: bob was not a member"

    with session_scope(cli_db, read_only=True) as s:
        projects = {p.name: p for p in s.scalars(select(Project))}
        assert (projects["rank-p"].k, projects["rank-p"].open_to_all, projects["rank-p"].aspects) == (5, False, [])
        assert projects["rate-p"].aspects == ["helpfulness", "honesty"] and projects["rate-p"].open_to_all
        assert projects["rate-p"].description == "Rate answers"
        members = set(s.execute(select(Project.name, User.username).join(ProjectMember, ProjectMember.project_id
                                == Project.id).join(User, User.id == ProjectMember.user_id)).all())
        assert members == {("rank-p", "alice"), ("edit-p", "alice")}
        versions = s.execute(select(Guidelines.version, Guidelines.text).where(
            Guidelines.project_id == projects["rank-p"].id).order_by(Guidelines.version)).all()
        assert versions == [(1, guide.read_text().strip()), (2, new_guide.read_text().strip())]
        actions = [a.action for a in s.scalars(select(AuditLog).where(AuditLog.actor == "cli"))]
        assert actions.count("project.create") == 3 and actions.count("project.guidelines") == 3
        assert actions.count("project.member_add") == 3 and actions.count("project.member_remove") == 1


def test_sample_into_rank_and_edit_projects(cli_db, tmp_path, capsys):
    from db.models import ItemResponse, Project

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Name a colour, {i}.", "split": "train"}) for i in range(2)))
    assert main(["prompts", "import", str(prompts)]) == 0
    assert main(["projects", "add", "rank-p", "--task", "rank", "--k", "3"]) == 0
    assert main(["projects", "add", "edit-p", "--task", "edit"]) == 0
    capsys.readouterr()
    assert main(["sample", "--project", "rank-p", "--limit", "2", "--max-new-tokens", "8", "--seed", "3",
                 "--temperature", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "2 prompts, 6 responses" in out and " items in rank-p (" in out  # K=3 samples per prompt
    n_rank = int(out.split("6 responses, ")[1].split(" items")[0])
    assert main(["sample", "--project", "edit-p", "--limit", "2", "--n-per-prompt", "1", "--max-new-tokens", "8",
                 "--seed", "3"]) == 0
    assert "2 prompts, 2 responses, 2 items in edit-p (0 prompts gave no item" in capsys.readouterr().out
    with session_scope(cli_db, read_only=True) as s:
        ids = {name: s.scalar(select(Project.id).where(Project.name == name)) for name in ("rank-p", "edit-p")}
        rank_items = s.scalars(select(Item).where(Item.project_id == ids["rank-p"])).all()
        assert len(rank_items) == n_rank >= 1 and {i.kind for i in rank_items} == {"rank"}
        for item in rank_items:
            positions = s.execute(select(ItemResponse.position, ItemResponse.response_id)
                                  .where(ItemResponse.item_id == item.id).order_by(ItemResponse.position)).all()
            assert 2 <= len(positions) <= 3 and [p for p, _ in positions] == list(range(len(positions)))
            assert positions[0][1] == item.response_a_id and item.response_b_id is None
        edit_items = s.scalars(select(Item).where(Item.project_id == ids["edit-p"])).all()
        assert len(edit_items) == 2 and {i.kind for i in edit_items} == {"edit"}
    assert main(["sample", "--project", "rank-p", "--limit", "1", "--versus", "v0"]) == 2
    assert "Versus mode makes pairs" in capsys.readouterr().err


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_a_project_in_every_format(cli_db, tmp_path, capsys):
    import random

    from feedback.projects import get_project
    from testkit.factories import make_project_items, make_users
    from tests.test_project_rows import ASPECTS, label, position, ranks_shown, ratings_shown

    assert main(["projects", "add", "rank-p", "--task", "rank", "--k", "4", "--open"]) == 0
    assert main(["projects", "add", "rate-p", "--task", "rating", "--k", "3", "--aspects", ",".join(ASPECTS),
                 "--open"]) == 0
    assert main(["projects", "add", "edit-p", "--task", "edit", "--open"]) == 0
    with session_scope(cli_db) as s:
        projects = {name: get_project(session=s, name=name).id for name in ("rank-p", "rate-p", "edit-p")}
        items = {name: make_project_items(s, project=get_project(session=s, name=name), count=2)
                 for name in projects}
        [uid] = make_users(s, 1)
    rng = random.Random(9)
    label(cli_db, projects["rank-p"], uid, ranks_shown({i: [3, 1, 4, 2] for i in items["rank-p"]}), rng)
    label(cli_db, projects["rate-p"], uid, ratings_shown({i: [(5, 5), (3, 3), (4, 4)] for i in items["rate-p"]}), rng)
    label(cli_db, projects["edit-p"], uid, lambda claim: claim.responses[0] + " Fixed.", rng)
    capsys.readouterr()

    def export(*flags) -> list[dict]:
        out = tmp_path / f"export-{len(list(tmp_path.iterdir()))}.jsonl"
        assert main(["export", *flags, "--out", str(out)]) == 0
        rows = _jsonl(out)
        assert f"wrote {len(rows)} " in capsys.readouterr().out
        return rows

    reward = export("--project", "rank-p", "--format", "reward")
    assert len(reward) == 2 * 6 and {r["rule"] for r in reward} == {"rank:all_pairs"}
    assert all(set(r) == {"prompt", "chosen", "rejected", "margin", "rule"} for r in reward)
    dpo = export("--project", "rank-p", "--format", "dpo")
    assert [(position(r["chosen"][0]["content"]), position(r["rejected"][0]["content"])) for r in dpo] == [(1, 2)] * 2
    assert {r["rule"] for r in export("--project", "rank-p", "--format", "dpo", "--rank-pairs", "best_vs_rest")} == {
        "rank:best_vs_rest"}

    rating_dpo = export("--project", "rate-p", "--format", "dpo")  # scores 5, 3, 4: 5 > 3, 5 > 4, 4 > 3
    assert len(rating_dpo) == 2 * 3 and {r["rule"] for r in rating_dpo} == {"rating:mean_margin"}
    assert len(export("--project", "rate-p", "--format", "dpo", "--rating-min-margin", "1.5")) == 2  # only 5 > 3
    kto = export("--project", "rate-p", "--format", "kto", "--rating-kto-threshold", "4.5")
    assert sorted(r["label"] for r in kto) == [False] * 4 + [True] * 2
    assert all(set(r) == {"prompt", "completion", "label", "rule"} for r in kto)

    sft = export("--project", "edit-p", "--format", "sft")
    assert len(sft) == 2 and {r["rule"] for r in sft} == {"edit:sft"}
    assert all(r["completion"][0]["content"].endswith(" Fixed.") for r in sft)
    edit_dpo = export("--project", "edit-p", "--format", "dpo")
    assert {r["rule"] for r in edit_dpo} == {"edit:over_original"} and len(edit_dpo) == 2

    everything = export("--format", "reward")
    assert len(everything) == len(reward) + len(rating_dpo) + len(edit_dpo)
    out = tmp_path / "x.jsonl"
    assert main(["export", "--project", "rank-p", "--format", "kto", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: No labels in project rank-p to export as kto yet (label some " \
                                              "items first)."
    assert main(["export", "--project", "rank-p", "--format", "dpo", "--rank-pairs", "best", "--out", str(out)]) == 2
    assert "rank_pairs is one of all_pairs, best_vs_rest, best_vs_worst" in capsys.readouterr().err
    assert main(["export", "--project", "rate-p", "--format", "dpo", "--rating-min-margin", "0", "--out",
                 str(out)]) == 2
    assert "rating_min_margin must be positive" in capsys.readouterr().err
    assert not out.exists()


def _one_line_error(capsys, expected: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    return err


@pytest.mark.parametrize(("argv", "expected"), [
    (["projects", "add", "r", "--task", "rank", "--k", "9"], "A rank project shows 3 to 8 responses per item"),
    (["projects", "add", "r", "--task", "rating", "--k", "2"], "in that range, not 2"),
    (["projects", "add", "r", "--task", "pairwise", "--k", "3"], "A pairwise project shows 2 responses per item"),
    (["projects", "add", "r", "--task", "edit", "--k", "2"], "edit project shows 1 response per item, not 2"),
    (["projects", "add", "r", "--task", "rank", "--aspects", "helpfulness"], "Only rating projects have aspects"),
    (["projects", "add", "r", "--task", "rating", "--aspects", "Helpful Ness"], "Aspects are distinct names"),
    (["projects", "add", "r", "--task", "rating", "--aspects", "a,a"], "Aspects are distinct names"),
    (["projects", "add", "r", "--task", "rank", "--guidelines", "missing-guidelines.md"], "no such file"),
    (["projects", "add", "r", "--task", "rank", "--guidelines", "EMPTY"], "EMPTY: the guidelines file is empty"),
    (["projects", "add", "r", "--task", "rank", "--guidelines", "BLANK"], "BLANK: the guidelines file is empty"),
    (["projects", "add", "r", "--task", "rank", "--guidelines", "."], ".: no such file"),
    (["projects", "add", "Not OK", "--task", "rank"], "A project name is 1-64 characters"),
    (["projects", "add", "default", "--task", "pairwise"], "There is already a project called 'default'"),
    (["projects", "members", "add", "nope", "alice"], "No project called 'nope' (projects: default)"),
    (["projects", "members", "add", "default", "nobody"], "No user called 'nobody'"),
    (["projects", "members", "remove", "nope", "alice"], "No project called 'nope'"),
    (["projects", "guidelines", "default", "missing-guidelines.md"], "no such file"),
    (["projects", "guidelines", "nope", "GUIDE"], "No project called 'nope'"),
    (["users", "add", "carol", "--role", "annotator", "--project", "nope"], "No project called 'nope'"),
    (["export", "--project", "nope", "--format", "dpo", "--out", "x.jsonl"], "No project called 'nope'"),
])
def test_project_mistakes_are_one_line_errors(cli_db, tmp_path, monkeypatch, capsys, argv, expected):
    from db.models import Project

    monkeypatch.chdir(tmp_path)
    (tmp_path / "GUIDE").write_text("Be kind.", encoding="utf-8")
    (tmp_path / "EMPTY").write_text("", encoding="utf-8")
    (tmp_path / "BLANK").write_text("  \n\n", encoding="utf-8")
    with session_scope(cli_db) as s:
        s.add(User(username="alice", password_hash="!", role="annotator"))
    capsys.readouterr()
    assert main(argv) == 2
    _one_line_error(capsys, expected)
    with session_scope(cli_db, read_only=True) as s:  # nothing was made of it
        assert list(s.scalars(select(Project.name))) == ["default"]
        assert s.scalar(select(User.id).where(User.username == "carol")) is None
    assert not (tmp_path / "x.jsonl").exists()


def test_bad_task_is_refused_by_the_parser(cli_db, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["projects", "add", "r", "--task", "ranking"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --task: invalid choice: 'ranking' (choose from" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("python -m feedback projects add: error: argument --task")


def test_sampling_an_unknown_project(cli_db, capsys):
    """Refused before any job exists, with the projects there are."""
    from db.models import Job

    assert main(["sample", "--project", "nope", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: No project called 'nope' (projects: default)."
    with session_scope(cli_db, read_only=True) as s:
        assert s.scalar(select(Job.id)) is None


def test_one_worker_runs_several_jobs_in_turn(cli_db, tmp_path, capsys):
    """`jobs work A B C`: what the demo's single background worker does. A job cancelled
    meanwhile is reported and passed over; the others still run."""
    from dataclasses import asdict

    from db.models import Job
    from feedback import jobs
    from feedback.sampling import SamplingConfig

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Question {i}?", "split": "train"}) for i in range(2)))
    assert main(["prompts", "import", str(prompts)]) == 0
    with session_scope(cli_db) as s:
        ids = [jobs.create_job(session=s, kind="sample", actor=CLI, config=asdict(
            SamplingConfig(limit=1, max_new_tokens=4, seed=n))).id for n in range(3)]
        jobs.request_cancel(session=s, job_id=ids[1], actor=CLI)
    assert main(["jobs", "work", *map(str, ids)]) == 0
    captured = capsys.readouterr()
    assert f"job {ids[0]} succeeded" in captured.out and f"job {ids[2]} succeeded" in captured.out
    assert f"job {ids[1]}: Job {ids[1]} is cancelled, not queued." in captured.err
    with session_scope(cli_db, read_only=True) as s:
        assert [s.get(Job, i).status for i in ids] == ["succeeded", "cancelled", "succeeded"]


def test_simulate_command(cli_db, capsys):
    from tests.test_simulated import arithmetic_pairs

    arithmetic_pairs(cli_db, 4)
    assert main(["simulate", "--annotators", "grader:1,left:1", "--labels", "3"]) == 0
    assert capsys.readouterr().out.startswith("3 simulated labels in default: ")
    assert main(["simulate", "--annotators", "psychic:1", "--labels", "3"]) == 2
    assert "Unknown simulated annotator 'psychic'" in capsys.readouterr().err


def test_quality_command(cli_db, capsys):
    from tests.test_simulated import arithmetic_pairs

    assert main(["quality"]) == 2
    assert "No pairwise or binary labels yet." in capsys.readouterr().err
    arithmetic_pairs(cli_db, 3)
    assert main(["simulate", "--annotators", "grader:1", "--labels", "3"]) == 0
    capsys.readouterr()
    assert main(["quality", "--project", "default"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["annotator", "kind", "labels"]
    assert out[1].split()[:3] == ["sim-grader-1", "pairwise", "3"]


def test_gold_and_review_commands(cli_db, capsys):
    from db.models import ItemDecision
    from tests.test_simulated import arithmetic_pairs

    arithmetic_pairs(cli_db, 6)
    assert main(["gold", "attention", "--project", "default", "--count", "2", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("2 attention checks in default")
    assert main(["gold", "settings", "--project", "default", "--rate", "0.5", "--min-answers", "1"]) == 0
    assert "gold rate 0.5, warn below 0.7 after 1 gold answers, pause after 2" in capsys.readouterr().out
    assert main(["gold", "settings", "--project", "default", "--rate", "2"]) == 2
    assert "shares, from 0 to 1" in capsys.readouterr().err
    with session_scope(cli_db) as s:
        s.scalar(select(Project).where(Project.name == "default")).overlap = 3
    assert main(["simulate", "--annotators", "grader:2,random:1,adversarial:1", "--labels", "100", "--seed", "2"]) == 0
    assert "paused by gold checks: adversarial 1" in capsys.readouterr().out
    assert main(["gold", "standings", "--project", "default"]) == 0
    standings = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert standings["sim-adversarial-1"] == "paused" and standings["sim-grader-1"] == "ok"
    assert main(["gold", "lift", "--project", "default", "--user", "sim-adversarial-1"]) == 0
    assert "may label in default again" in capsys.readouterr().out
    assert main(["review", "list", "--project", "default"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:2] == ["item", "reasons"]
    disputed = int(listing[1].split()[0])
    assert main(["review", "decide", str(disputed), "--answer", "sideways", "--note", "x"]) == 2
    assert "not 'sideways'" in capsys.readouterr().err
    assert main(["review", "decide", str(disputed), "--answer", "A", "--note", "checked", "--gold"]) == 0
    assert capsys.readouterr().out.strip() == f"item {disputed} settled: a (now gold)"
    assert main(["gold", "unmark", str(disputed)]) == 0
    assert capsys.readouterr().out.strip() == f"item {disputed} is no longer gold"
    with session_scope(cli_db, read_only=True) as s:
        decision = s.get(ItemDecision, disputed)
        assert (decision.origin, decision.choice, decision.gold) == ("adjudication", "a", False)
    assert main(["gold", "mark", str(disputed)]) == 0  # promote the adjudicated answer again
    assert capsys.readouterr().out.strip() == f"item {disputed} is gold, answer a"
