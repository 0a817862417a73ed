"""The OpenAI-compatible policy client against a REAL server (llama-cpp-python serving the shipped
SmolLM2 GGUF on loopback), against tiny local stub servers for retries and timeouts, and end to
end through the sampling service on SQLite and Postgres."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Item, Prompt, Response
from feedback.actors import CLI
from feedback.model_cache import shipped_gguf_path
from feedback.policies import ensure_base_policy
from feedback.policy.base import SamplingParams
from feedback.policy.openai_compat import OpenAIPolicyClient
from feedback.prompts import content_hash
from feedback.sampling import SamplingConfig, _normalised, run_sampling
from testkit.local_servers import free_port

MODEL_ALIAS = "smollm2"
STARTUP_TIMEOUT_S = 120.0
# A direct opener: loopback requests must never go through an HTTP(S)_PROXY from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))



def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- a real llama.cpp OpenAI-compatible server -------------------------------------------------


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """`python -m llama_cpp.server` on a free loopback port; yields its /v1 base URL."""
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="llama-server-"))
    log_path = log_dir / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(shipped_gguf_path()),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--model_alias", MODEL_ALIAS,
        "--n_threads", "2", "--n_threads_batch", "2",
    ]
    # Output goes to a file, not a pipe: a verbose server would block on a full, unread pipe.
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode} before answering:\n{_tail(log_path)}")
            try:
                with _NO_PROXY.open(f"{base_url}/models", timeout=2) as r:
                    if r.status == 200 and json.load(r).get("data"):
                        break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer GET /v1/models within {STARTUP_TIMEOUT_S:.0f} s:\n"
                            f"{_tail(log_path)}")
            time.sleep(0.25)
        yield base_url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log_path.unlink(missing_ok=True)
        log_dir.rmdir()


CONVERSATIONS = [
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2 + 2?"}],
]


def test_client_returns_n_completions_from_llama_cpp(llama_server):
    client = OpenAIPolicyClient(base_url=llama_server, model=MODEL_ALIAS, timeout_s=60, max_retries=1)
    assert client.description == f"openai:{MODEL_ALIAS}@{llama_server}"
    params = SamplingParams(n=3, max_new_tokens=16, seed=1, temperature=0.8)

    results = client.generate(CONVERSATIONS, params)

    assert len(results) == len(CONVERSATIONS)
    for completions in results:
        assert len(completions) == 3  # topped up: llama.cpp answers one choice per request
        for c in completions:
            assert c.text.strip()
            assert c.finish_reason in {"stop", "length"}
            assert c.latency_ms > 0
            assert c.prompt_tokens and c.prompt_tokens > 0
            # One choice per response, so per-choice token counts are known.
            assert c.completion_tokens is not None and 0 < c.completion_tokens <= params.max_new_tokens
        # Each top-up request gets its own seed, so a seeded server does not repeat itself.
        assert [c.seed for c in completions] == [1, 2, 3]


def test_llama_cpp_ignores_n(llama_server):
    """Why the top-up exists: llama.cpp's server answers n=3 with a single choice (vLLM gives 3)."""
    raw = openai.OpenAI(base_url=llama_server, api_key="EMPTY", timeout=60, max_retries=0)
    response = raw.chat.completions.create(
        model=MODEL_ALIAS, messages=CONVERSATIONS[0], n=3, max_tokens=8, seed=1, temperature=0.8,
    )
    assert len(response.choices) == 1

    # Whatever the server does with `n`, the client still returns n completions.
    client = OpenAIPolicyClient(base_url=llama_server, model=MODEL_ALIAS, timeout_s=60, max_retries=0)
    [completions] = client.generate([CONVERSATIONS[0]], SamplingParams(n=3, max_new_tokens=8, seed=1))
    assert len(completions) == 3


# --- stub servers for retries and timeouts -----------------------------------------------------


def _chat_completion(model: str, text: str = "Blue.") -> dict:
    return {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }


@contextmanager
def stub_server(statuses: list[int]) -> Iterator[tuple[str, list[dict]]]:
    """An HTTP server on loopback answering POSTs with statuses[i] for the i-th request (the last
    status repeats); yields its /v1 base URL and the list of request bodies received."""
    received: list[dict] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                received.append(json.loads(body or b"{}"))
                status = statuses[min(len(received), len(statuses)) - 1]
            if status == 200:
                payload = _chat_completion(received[-1].get("model", "?"))
            else:
                payload = {"error": {"message": f"stub status {status}", "type": "stub", "code": status}}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status in (429, 503):
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # noqa: A002 - keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_retries_after_429_then_succeeds():
    with stub_server([429, 200]) as (url, received):
        client = OpenAIPolicyClient(base_url=url, model="stub-model", timeout_s=5, max_retries=2)
        [completions] = client.generate([CONVERSATIONS[0]], SamplingParams(n=1, max_new_tokens=4, seed=7))
    assert len(received) == 2  # the 429, then the retry that succeeded
    assert [c.text for c in completions] == ["Blue."]
    c = completions[0]
    assert (c.finish_reason, c.prompt_tokens, c.completion_tokens, c.seed) == ("stop", 11, 2, 7)
    sent = received[-1]
    assert sent["model"] == "stub-model" and sent["n"] == 1 and sent["seed"] == 7 and sent["max_tokens"] == 4
    assert sent["messages"] == CONVERSATIONS[0]


def test_gives_up_after_retries_on_persistent_500():
    with stub_server([500]) as (url, received):
        client = OpenAIPolicyClient(base_url=url, model="stub-model", timeout_s=5, max_retries=1)
        t0 = time.monotonic()
        with pytest.raises(openai.InternalServerError):
            client.generate([CONVERSATIONS[0]], SamplingParams(n=1, max_new_tokens=4))
        elapsed = time.monotonic() - t0
    assert len(received) == 2  # the first try and one retry
    assert elapsed < 5


def test_timeout_when_server_never_answers():
    # A listening socket that is never accepted: the kernel completes the TCP handshake and
    # takes the request, but no response ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        client = OpenAIPolicyClient(base_url=url, model="stub-model", timeout_s=0.5, max_retries=0)
        t0 = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client.generate([CONVERSATIONS[0]], SamplingParams(n=1, max_new_tokens=4))
        elapsed = time.monotonic() - t0
    assert 0.4 < elapsed < 5


# --- end to end: the sampling service over HTTP, on SQLite and Postgres ------------------------


def test_run_sampling_through_openai_backend(llama_server, engine, monkeypatch):
    monkeypatch.setenv("POLICY_BACKEND", "openai")
    monkeypatch.setenv("POLICY_BASE_URL", llama_server)
    monkeypatch.setenv("POLICY_MODEL", MODEL_ALIAS)
    chats = [
        [{"role": "user", "content": "Write one word about the sea."}],
        [{"role": "user", "content": "Give me a fruit name."}],
    ]
    with session_scope(engine) as s:
        version = ensure_base_policy(session=s, actor=CLI)
        assert version.served_name == MODEL_ALIAS
        for messages in chats:
            s.add(Prompt(text=messages[-1]["content"], messages=messages, split="train", tags=[],
                         source="test", content_hash=content_hash(messages)))

    totals = run_sampling(engine=engine, config=SamplingConfig(limit=2, n_per_prompt=2, max_new_tokens=12, seed=3))

    assert totals["prompts"] == 2 and totals["responses"] == 4
    with session_scope(engine, read_only=True) as s:
        responses = list(s.scalars(select(Response).order_by(Response.id)))
        assert len(responses) == 4
        for r in responses:
            assert r.params["backend"].startswith("openai:")
            assert r.params["backend"] == f"openai:{MODEL_ALIAS}@{llama_server}"
            assert r.text.strip() and r.finish_reason in {"stop", "length"}
            assert r.latency_ms and r.latency_ms > 0 and r.prompt_tokens and r.prompt_tokens > 0
        by_prompt: dict[int, list[str]] = {}
        for r in responses:
            by_prompt.setdefault(r.prompt_id, []).append(r.text)
        assert all(len(texts) == 2 for texts in by_prompt.values())
        distinct = sum(_normalised(a) != _normalised(b) for a, b in by_prompt.values())
        items = list(s.scalars(select(Item)))
        assert len(items) == distinct == totals["items"]
        assert totals["prompts_without_item"] == 2 - distinct
        text_of = {r.id: r.text for r in responses}
        for item in items:
            assert item.kind == "pair"
            assert _normalised(text_of[item.response_a_id]) != _normalised(text_of[item.response_b_id])
        assert s.scalar(select(func.count()).select_from(Prompt)) == 2
