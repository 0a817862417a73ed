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
from db.models import AuditLog, Item, Label, PolicyVersion, User
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
    assert "3 prompts, 6 responses" in out
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
    assert set(rows[0]) == {"prompt", "chosen", "rejected"}
    assert rows[0]["chosen"][0]["role"] == "assistant"


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
