"""Shared fixtures: real SQLite files, a real Postgres server started for the session, and a tiny
random-weight model built locally from the default model's config and real tokenizer."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from db.engine import make_engine
from db.migrate import upgrade

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root; CI and these machines run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres_server():
    """A throw-away Postgres cluster on a free loopback port; yields an admin URL (no database)."""
    if url := os.environ.get("TEST_POSTGRES_URL"):
        yield url
        return
    if not PG_BIN_DIRS:
        if REQUIRE_POSTGRES:
            pytest.fail("Postgres binaries not found (apt-get install postgresql); REQUIRE_POSTGRES=1")
        pytest.skip("Postgres is not installed")
    bin_dir = PG_BIN_DIRS[0]
    root = Path(tempfile.mkdtemp(prefix="pgtest-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = _free_port()
    subprocess.run(_as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                                      "--auth=trust", "-E", "UTF8", "--no-instructions"]),
                   check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(_as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                                      "-l", str(root / "log"), "-w", "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_postgres_database(server_url: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'test.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def postgres_url(postgres_server) -> str:
    url = new_postgres_database(postgres_server)
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request) -> str:
    """A migrated, empty database: each test using it runs on SQLite and on Postgres."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def use_db(db_url, monkeypatch):
    """Point the settings (read at call time) at the test database."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    return db_url


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted once into the project's model cache."""
    from feedback.model_cache import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir(default_model_dir) -> Path:
    """A 2-layer random-weight model with the default model's architecture and real tokenizer:
    fast enough to generate and train on in every test."""
    target = default_model_dir.parent / "tiny-smollm2-test"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(default_model_dir)
    config.update(dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(default_model_dir).save_pretrained(tmp)
    tmp.rename(target)
    return target
