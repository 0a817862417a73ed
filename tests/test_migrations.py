"""Migrations are the only way the schema changes: upgrading an empty database must give exactly
the models' schema, on SQLite and on Postgres, and downgrading must undo it. Data migrations move
what the old schema held (0005: pairs and singles into the default projects, the queue settings
onto them, every user into both)."""
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.dialects.postgresql import JSONB

from db.engine import make_engine, session_scope
from db.migrate import alembic_config, current_revision, upgrade
from db.models import Base, Item, ItemResponse, Label, Project, ProjectMember, Response, User


def test_upgrade_matches_models(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []
    assert current_revision(db_url) is not None


def test_downgrade_to_empty_and_back(db_url):
    from alembic import command

    command.downgrade(alembic_config(db_url), "base")
    engine = make_engine(db_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    command.upgrade(alembic_config(db_url), "head")
    engine = make_engine(db_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_sqlite_pragmas(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


# --- 0005: data written under the 0004 schema survives the move into projects --------------------

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path) -> str:
    """An empty database, not migrated, on SQLite and on Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.sqlite3'}"
    from testkit.local_servers import new_database

    return new_database(request.getfixturevalue("postgres_server"))


def _insert(conn, sql: str, **values) -> int:
    """Raw SQL as the old code wrote it; JSON and timestamps bound with their column types."""
    params = [sa.bindparam(k, type_=JSON) for k, v in values.items() if isinstance(v, list | dict)]
    params += [sa.bindparam(k, type_=sa.DateTime(timezone=True)) for k, v in values.items() if isinstance(v, datetime)]
    statement = sa.text(sql + " RETURNING id").bindparams(*params)
    return conn.execute(statement, values).scalar_one()


def seed_0004(url: str) -> dict[str, int]:
    """A database at revision 0004 holding what the old schema could: a user, a prompt, v0, two
    responses, a pair and a single item, a pairwise label and the one queue_settings row."""
    upgrade(url, "0004")
    assert current_revision(url) == "0004"
    engine = make_engine(url)
    with engine.begin() as conn:
        ids = {}
        ids["user"] = _insert(conn, "INSERT INTO users (username, password_hash, role, active, created_at)"
                                    " VALUES ('olga', '!', 'annotator', true, :at)", at=NOW)
        ids["prompt"] = _insert(
            conn, "INSERT INTO prompts (text, messages, split, tags, source, content_hash, created_at)"
                  " VALUES ('What is 2+2?', :messages, 'train', :tags, 'old', :hash, :at)",
            messages=[{"role": "user", "content": "What is 2+2?"}], tags=["math"], hash="h" * 64, at=NOW)
        ids["policy"] = _insert(conn, "INSERT INTO policy_versions (name, base_model, status, created_at)"
                                      " VALUES ('v0', 'base', 'active', :at)", at=NOW)
        for side, text in (("a", "4"), ("b", "5")):
            ids[side] = _insert(conn, "INSERT INTO responses (prompt_id, policy_version_id, text, params, created_at)"
                                      " VALUES (:p, :v, :text, :params, :at)",
                                p=ids["prompt"], v=ids["policy"], text=text, params={"temperature": 0.7}, at=NOW)
        ids["pair"] = _insert(conn, "INSERT INTO items (kind, prompt_id, response_a_id, response_b_id, created_at)"
                                    " VALUES ('pair', :p, :a, :b, :at)", p=ids["prompt"], a=ids["a"], b=ids["b"],
                              at=NOW)
        ids["single"] = _insert(conn, "INSERT INTO items (kind, prompt_id, response_a_id, created_at)"
                                      " VALUES ('single', :p, :a, :at)", p=ids["prompt"], a=ids["a"], at=NOW)
        ids["label"] = _insert(
            conn, "INSERT INTO labels (item_id, kind, choice, strength, source, user_id, shown_order, submission_id,"
                  " created_at) VALUES (:i, 'pairwise', 'a', 'much', 'human', :u, 'ba', 'old-sub-1', :at)",
            i=ids["pair"], u=ids["user"], at=NOW)
        conn.execute(sa.text(
            "INSERT INTO queue_settings (id, overlap, lease_seconds, prompt_tags, policy_version_ids, refill_below,"
            " refill_prompts, updated_at) VALUES (1, 3, 900, :tags, :versions, 5, 12, :at)").bindparams(
            sa.bindparam("tags", type_=JSON), sa.bindparam("versions", type_=JSON),
            sa.bindparam("at", type_=sa.DateTime(timezone=True))),
            {"tags": ["math"], "versions": [ids["policy"]], "at": NOW})
    engine.dispose()
    return ids


def _json_types(conn, table: str, column: str) -> set[str]:
    """The JSON types the database sees in a column: a list stored as a string of JSON would be 'string'."""
    fn = "jsonb_typeof" if conn.dialect.name == "postgresql" else "json_type"
    return set(conn.execute(sa.text(f"SELECT {fn}({column}) FROM {table}")).scalars())


def test_0005_moves_existing_data_into_default_projects(empty_url):
    ids = seed_0004(empty_url)
    upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        with session_scope(engine) as s:
            projects = {p.name: p for p in s.scalars(select(Project))}
            assert set(projects) == {"default", "default-binary"}
            default, binary = projects["default"], projects["default-binary"]
            assert (default.task_type, default.k, default.open_to_all) == ("pairwise", 2, True)
            assert (binary.task_type, binary.k, binary.open_to_all) == ("binary", 1, True)
            for project in (default, binary):  # the old queue's settings, on both
                assert (project.overlap, project.lease_seconds, project.refill_below, project.refill_prompts) == (
                    3, 900, 5, 12)
                assert project.prompt_tags == ["math"] and type(project.prompt_tags) is list
                assert project.policy_version_ids == [ids["policy"]]
                assert project.aspects == [] and project.created_at.tzinfo is not None
            assert s.get(Item, ids["pair"]).project_id == default.id
            # 0006: no gold served, oldest first, every item at key 0 (behaviour as before it).
            assert (default.gold_rate, default.gold_min_answers, default.queue_order) == (0.0, 5, "oldest")
            assert s.get(Item, ids["pair"]).queue_key == 0.0
            assert s.get(Item, ids["single"]).project_id == binary.id
            members = {(m.project_id, m.user_id) for m in s.scalars(select(ProjectMember))}
            assert members == {(default.id, ids["user"]), (binary.id, ids["user"])}
            assert all(m.added_at.tzinfo is not None for m in s.scalars(select(ProjectMember)))
            label = s.get(Label, ids["label"])
            assert (label.kind, label.choice, label.strength, label.shown_order, label.user_id) == (
                "pairwise", "a", "much", "ba", ids["user"])
            assert label.ranking is None and label.guidelines_id is None
            assert label.created_at == NOW
            assert not inspect(s.connection()).has_table("queue_settings")

            # The new kinds fit the new constraints: a rank item of two responses and its label.
            rank = Project(name="ranked", task_type="rank", k=3, aspects=[], overlap=1, lease_seconds=600,
                           prompt_tags=[], policy_version_ids=[])
            s.add(rank)
            s.flush()
            third = Response(prompt_id=ids["prompt"], policy_version_id=ids["policy"], text="four")
            s.add(third)
            s.flush()
            item = Item(kind="rank", project_id=rank.id, prompt_id=ids["prompt"], response_a_id=ids["a"])
            s.add(item)
            s.flush()
            s.add_all([ItemResponse(item_id=item.id, position=p, response_id=r)
                       for p, r in enumerate((ids["a"], ids["b"], third.id))])
            s.add(Label(item_id=item.id, kind="rank", ranking=[1, 3, 2], shown_permutation=[2, 0, 1], source="human",
                        user_id=ids["user"], submission_id="new-sub-1"))
            rank_item_id = item.id
        with engine.connect() as conn:
            assert _json_types(conn, "projects", "prompt_tags") == {"array"}  # a JSON list, not a string of one
        with session_scope(engine, read_only=True) as s:
            assert s.scalar(select(Label.ranking).where(Label.item_id == rank_item_id)) == [1, 3, 2]
            assert s.get(User, ids["user"]).username == "olga"
    finally:
        engine.dispose()

    from alembic import command

    # The old schema cannot hold a rank item: downgrading says so and changes nothing.
    command.downgrade(alembic_config(empty_url), "0005")
    with pytest.raises(RuntimeError, match="rank, rating or edit items"):
        command.downgrade(alembic_config(empty_url), "0004")
    assert current_revision(empty_url) == "0005"


def test_0005_downgrade_gives_back_the_queue_settings(empty_url):
    from alembic import command

    ids = seed_0004(empty_url)
    upgrade(empty_url)
    command.downgrade(alembic_config(empty_url), "0004")
    assert current_revision(empty_url) == "0004"
    engine = make_engine(empty_url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert "queue_settings" in tables and not tables & {"projects", "project_members", "guidelines",
                                                                 "item_responses"}
            assert "project_id" not in {c["name"] for c in inspect(conn).get_columns("items")}
            assert "ranking" not in {c["name"] for c in inspect(conn).get_columns("labels")}
            settings = conn.execute(sa.select(
                sa.column("overlap"), sa.column("lease_seconds"), sa.column("prompt_tags", JSON),
                sa.column("policy_version_ids", JSON)).select_from(sa.table("queue_settings"))).one()
            assert tuple(settings) == (3, 900, ["math"], [ids["policy"]])
            assert _json_types(conn, "queue_settings", "prompt_tags") == {"array"}
            items = dict(conn.execute(sa.text("SELECT id, kind FROM items")).all())
            assert items == {ids["pair"]: "pair", ids["single"]: "single"}
            assert conn.execute(sa.text("SELECT item_id, choice FROM labels")).all() == [(ids["pair"], "a")]
    finally:
        engine.dispose()
    upgrade(empty_url)  # and up again
    engine = make_engine(empty_url)
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(Project.lease_seconds).where(Project.name == "default")) == 900
        assert s.get(Item, ids["single"]).project_id == s.scalar(
            select(Project.id).where(Project.name == "default-binary"))
    engine.dispose()


def test_0005_on_an_empty_database_makes_only_the_default_project(empty_url):
    """No singles before: no default-binary project (it is made when one is first needed)."""
    upgrade(empty_url, "0004")
    upgrade(empty_url)
    engine = make_engine(empty_url)
    with session_scope(engine, read_only=True) as s:
        [default] = s.scalars(select(Project)).all()
        assert (default.name, default.overlap, default.lease_seconds, default.prompt_tags) == ("default", 1, 600, [])
    engine.dispose()
