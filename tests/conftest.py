"""Shared fixtures: real SQLite files, a real Postgres server started for the session, and a tiny
random-weight model built locally from the default model's config and real tokenizer."""
from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import pytest

from cli import job_kinds
from db.engine import make_engine
from db.migrate import upgrade
from testkit.local_servers import PG_BIN_DIRS, new_database, throwaway_cluster

REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"


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
    with throwaway_cluster() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'test.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def postgres_url(postgres_server) -> str:
    url = new_database(postgres_server)
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
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


# The composition root's job kinds, as every entry point installs them.
job_kinds.install()


@pytest.fixture
def registered():
    """`registered(REGISTRY, name, entry)`: an entry (a fake backend, grader, launcher, job kind,
    stage) in a real registry for this test only; what was there before comes back afterwards."""
    with ExitStack() as stack:
        yield lambda registry, name, entry: stack.enter_context(registry.override(name, entry))
