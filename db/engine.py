"""Engines and sessions.

SQLite gets WAL (readers never block the writer), a busy timeout (writers wait instead of
failing), foreign keys, and BEGIN IMMEDIATE for write transactions: a transaction that reads and
then writes would otherwise fail with SQLITE_BUSY when another writer got there in between,
without waiting for the busy timeout.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    """A new engine for `url`, with the SQLite pragmas above when it is SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        # Take transaction control away from pysqlite so "begin" below decides the BEGIN kind.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL, much faster commits
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        mode = "DEFERRED" if conn.get_execution_options().get("read_only") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


# One writer at a time per SQLite engine, queued in this process. SQLite's own busy handler makes a
# blocked writer sleep and poll (up to 100 ms a nap), which is unfair and gives a long latency
# tail when many threads of one process (Streamlit sessions) write at once; a lock hands the turn
# over directly. Writers in other processes (job workers) still meet at busy_timeout.
_WRITE_LOCKS: WeakKeyDictionary = WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


@contextmanager
def _write_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "sqlite":
        yield
        return
    with _LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(engine)
        if lock is None:
            lock = _WRITE_LOCKS[engine] = threading.Lock()
    # Same bound as the busy timeout: a write session nested inside another one in the same
    # thread (a bug) fails loudly instead of hanging.
    if not lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
        raise TimeoutError("waited too long for the SQLite write lock (a write session inside another?)")
    try:
        yield
    finally:
        lock.release()


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One shared engine (and pool) per URL for this process."""
    return make_engine(url)


@contextmanager
def session_scope(engine: Engine, *, read_only: bool = False) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error.

    Write sessions (the default) take SQLite's write lock at BEGIN; read-only ones do not.
    """
    bind = engine.execution_options(read_only=True) if read_only else engine
    factory = sessionmaker(bind=bind, expire_on_commit=False)
    with nullcontext() if read_only else _write_lock(engine), factory() as session, session.begin():
        yield session
