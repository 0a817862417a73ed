"""The `python:PATH` grader: a user's `grade(answer, reference)` run in a locked-down child
process (time and memory limits, its own process group, no secrets in its environment)."""
from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from feedback.errors import UserError
from judges.graders import GraderError, _options

# --- python: user code in a locked-down child process ----------------------------------------

RUNNER = Path(__file__).with_name("python_grader_runner.py")
MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # the child cannot write more than this to a file (RLIMIT_FSIZE)
CHILD_ENV_KEEP = ("PATH", "LANG")  # nothing else: no API keys, no DATABASE_URL with a password


def _limit_child(memory_bytes: int, file_bytes: int) -> None:
    # Runs in the forked child just before exec (preexec_fn), so the limits hold from the
    # interpreter's first instruction. Only setrlimit calls: nothing that could take a lock
    # another parent thread (the job heartbeat) held at fork time.
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _within_hard_limit(kind: int, wanted: int) -> int:
    hard = resource.getrlimit(kind)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` s for child `pid` to exit, without reaping it. True if it exited.

    While it is an unreaped zombie its pid (which is also its process group id, as it leads a
    new session) cannot be reused, so killing the group afterwards can only hit its own
    leftovers, never an unrelated process that inherited the number."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _bound_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


class PythonGrader:
    """A file defining `grade(answer, reference) -> float`, run in a fresh child process per
    call: wall-time limit (the whole process group is killed), address-space limit, an
    environment of PATH and LANG only, an empty temporary working directory, JSON over
    stdin/stdout (see python_grader_runner.py). Failures of any kind raise GraderError.

    The source is read (and syntax-checked, without running it) when the grader is built; every
    call runs that snapshot, so `source_sha256` in the label provenance is what actually ran.
    One interpreter start per call costs ~30-50 ms.
    """

    name: ClassVar[str] = "python"
    DEFAULT_TIMEOUT_S = 5.0
    DEFAULT_MEMORY_MB = 512

    def __init__(self, path: str | Path, timeout: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB):
        if not str(path).strip():
            raise UserError("python needs a file, e.g. 'python:graders/mine.py;timeout=2'.")
        if not (0 < timeout <= 3600):
            raise UserError(f"python: timeout must be in (0, 3600] seconds, got {timeout!r}.")
        if not (64 <= memory_mb <= 1 << 20):
            raise UserError(f"python: memory_mb must be between 64 and 1048576, got {memory_mb!r}.")
        self.path = Path(path).expanduser().resolve()
        try:
            self.source = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"python: cannot read grader file {self.path}: {exc}") from exc
        try:
            tree = ast.parse(self.source, filename=str(self.path))
        except SyntaxError as exc:
            raise UserError(f"python: {self.path.name} line {exc.lineno}: {exc.msg}") from exc
        if "grade" not in _bound_names(tree):
            raise UserError(f"python: {self.path.name} defines no top-level grade(answer, reference).")
        self.timeout, self.memory_mb = timeout, memory_mb
        self.source_sha256 = hashlib.sha256(self.source.encode("utf-8")).hexdigest()
        self.spec = f"python:{self.path}"
        if timeout != self.DEFAULT_TIMEOUT_S:
            self.spec += f";timeout={timeout:g}"
        if memory_mb != self.DEFAULT_MEMORY_MB:
            self.spec += f";memory_mb={memory_mb}"

    def describe(self) -> dict[str, Any]:
        return {"source_sha256": self.source_sha256}

    def _fail(self, why: str) -> GraderError:
        return GraderError(f"python grader {self.path.name}: {why}")

    def grade(self, answer: str, reference: str) -> float:
        request = json.dumps({"source": self.source, "path": str(self.path), "answer": answer, "reference": reference})
        env = {k: os.environ[k] for k in CHILD_ENV_KEEP if k in os.environ}
        limits = partial(_limit_child, _within_hard_limit(resource.RLIMIT_AS, self.memory_mb * 1024 * 1024),
                         _within_hard_limit(resource.RLIMIT_FSIZE, MAX_OUTPUT_BYTES))
        # Files rather than pipes: nothing can block on a full pipe, and a grandchild that keeps
        # an inherited descriptor open cannot make us wait past the deadline.
        with tempfile.TemporaryDirectory(prefix="grader-") as workdir, tempfile.TemporaryFile() as stdin, \
                tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            stdin.write(request.encode("ascii"))  # json.dumps escapes non-ASCII: locale-proof
            stdin.seek(0)
            proc = subprocess.Popen(
                [sys.executable, "-I", str(RUNNER)], stdin=stdin, stdout=stdout, stderr=stderr,
                cwd=workdir, env=env, close_fds=True, start_new_session=True,
                preexec_fn=limits,  # noqa: PLW1509 - only setrlimit runs there; see _limit_child
            )
            try:
                finished = _wait_unreaped(proc.pid, self.timeout)
            finally:
                _kill_group(proc.pid)  # the child on timeout, and anything it left running in any case
                proc.wait()
            stdout.seek(0)
            out = stdout.read(MAX_OUTPUT_BYTES)
            stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - 2000))
            err_tail = stderr.read().decode("utf-8", "replace").strip()
        if not finished:
            raise self._fail(f"timed out after {self.timeout:g} s")
        return self._score_from_reply(out, proc.returncode, err_tail)

    def _score_from_reply(self, out: bytes, returncode: int, err_tail: str) -> float:
        try:
            reply = json.loads(out.decode("utf-8").strip().splitlines()[-1])
        except (ValueError, IndexError):
            reply = None
        if not isinstance(reply, dict):
            if returncode < 0:
                signame = signal.Signals(-returncode).name
                hint = f" (memory limit {self.memory_mb} MB?)" if signame in ("SIGSEGV", "SIGKILL", "SIGABRT") else ""
                raise self._fail(f"killed by {signame}{hint}")
            raise self._fail(f"exited with code {returncode} without a result{': ' + err_tail if err_tail else ''}")
        if reply.get("memory"):
            raise self._fail(f"ran out of memory (limit {self.memory_mb} MB)")
        if "error" in reply:
            raise self._fail(str(reply["error"]))
        score = reply.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise self._fail(f"grade() returned {score!r}, not a finite number")
        if not 0.0 <= score <= 1.0:
            raise self._fail(f"grade() returned {score!r}, outside [0, 1]")
        return float(score)


def make_python_grader(arg: str) -> PythonGrader:
    path, _, rest = arg.partition(";")
    return PythonGrader(path.strip(), **_options(rest, {"timeout": float, "memory_mb": int}, "python"))


