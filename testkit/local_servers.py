"""Servers the tests and benchmarks start for themselves: a free loopback port, and a throw-away
Postgres cluster from the Debian binaries (fsync off, `trust` authentication on loopback: for
testing and measuring the application, never for keeping data)."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root; CI and these machines run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def throwaway_cluster(prefix: str = "pgtest-") -> Iterator[str]:
    """Start a cluster on a free port, yield its admin URL (no database), then stop and delete it."""
    if not PG_BIN_DIRS:
        raise FileNotFoundError("Postgres binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    bin_dir = PG_BIN_DIRS[0]
    root = Path(tempfile.mkdtemp(prefix=prefix))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    try:
        subprocess.run(_as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                                          "--auth=trust", "-E", "UTF8", "--no-instructions"]),
                       check=True, capture_output=True)
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(_as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                                          "-l", str(root / "log"), "-w", "start"]), check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                           capture_output=True, check=False)  # best effort: the directory goes anyway
        shutil.rmtree(root, ignore_errors=True)


def new_database(server_url: str, prefix: str = "t_") -> str:
    """Create an empty database with a fresh name on the server; its URL."""
    import psycopg

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"
