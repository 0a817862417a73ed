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


class AppDidNotStart(RuntimeError):
    """`streamlit run app.py` exited or did not answer in time; the message ends with its log."""


def _answers(base: str) -> bool:
    """Both the pages (Streamlit's health check) and the API mounted next to them answer."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
            if r.read().decode().strip() != "ok":
                return False
        with urllib.request.urlopen(f"{base}/api/openapi.json", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running_app(database_url: str, log: Path, *, timeout_s: float = 90) -> Iterator[str]:
    """`streamlit run app.py` (the pages and the API on one port, as `make run` serves them) on a
    free port over `database_url`, with no Anthropic key in its environment; yields its base URL
    once both answer, and stops it afterwards. Its output goes to `log`."""
    import sys
    import time

    root = Path(__file__).resolve().parent.parent
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env["DATABASE_URL"] = database_url
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(base):
            if proc.poll() is not None:
                raise AppDidNotStart(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AppDidNotStart(f"the app did not answer in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
