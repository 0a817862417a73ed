"""The Python client (feedback.client) against real servers:

- the app itself, `streamlit run app.py` on a free port, serving the pages and the API on that
  one port (a module fixture, as in tests/test_browser.py; no page is opened, no model loaded);
- for jobs, the API alone under uvicorn in this process, so a test job kind and a launcher that
  runs it in a thread can stand in for a worker (no model, no process left behind).
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from db.engine import make_engine, session_scope
from db.migrate import upgrade
from db.models import Item, Job, Prompt, Response, User
from feedback import jobs, queue
from feedback.actors import CLI
from feedback.client import ApiError, Client, JobFailed, record_id
from feedback.launchers import LAUNCHERS
from feedback.policies import ensure_base_policy
from feedback.projects import create_project, default_project
from feedback.tokens import create_token
from testkit.local_servers import AppDidNotStart, free_port, running_app


def _seed(url: str) -> dict[str, str]:
    """v0, the default project, an admin, a reviewer and an annotator; a token for each."""
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            ensure_base_policy(session=s, actor=CLI)
            default_project(session=s)
            s.add_all([User(username=n, role=r, password_hash="!")
                       for n, r in (("root", "admin"), ("rev", "reviewer"), ("ann", "annotator"))])
            s.flush()
            return {r: create_token(session=s, actor=CLI, username=n)[1]
                    for n, r in (("root", "admin"), ("rev", "reviewer"), ("ann", "annotator"))}
    finally:
        engine.dispose()


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """`streamlit run app.py` (what `make run` starts) on a free port against a fresh SQLite file;
    yields its base URL, the database URL, the tokens and the server's log file."""
    url = f"sqlite:///{tmp_path_factory.mktemp('client') / 'app.sqlite3'}"
    upgrade(url)
    tokens = _seed(url)
    log = tmp_path_factory.mktemp("client-log") / "streamlit.log"
    try:
        with running_app(url, log) as base:
            yield {"base": base, "db": url, "tokens": tokens, "log": log}
    except AppDidNotStart as exc:
        pytest.fail(str(exc))


def test_the_pages_and_the_api_are_served_by_one_process_on_one_port(app_server):
    base = app_server["base"]
    status, index = _get(base + "/")
    assert status == 200 and "streamlit" in index.lower()  # the pages' own index
    status, docs = _get(base + "/api/docs")
    assert status == 200 and "/api/openapi.json" in docs and "swagger" in docs.lower()
    assert "cdn" not in docs and _get(base + "/api/static/swagger-ui-bundle.js")[0] == 200  # works offline
    schema = json.loads(_get(base + "/api/openapi.json")[1])
    assert {"/v1/records", "/v1/labels", "/v1/exports/{fmt}", "/v1/jobs"} <= set(schema["paths"])
    assert schema["servers"] == [{"url": "/api"}]
    status, body = _get(base + "/api/v1/me", app_server["tokens"]["admin"])
    assert status == 200 and json.loads(body)["username"] == "root"
    status, body = _get(base + "/api/v1/me")
    assert status == 401 and "No API token" in json.loads(body)["error"]


def test_push_label_read_export_with_the_client(app_server, tmp_path):
    """The issue's script: push 10 records, people label them, read the labels, export DPO rows."""
    api = Client(app_server["base"], app_server["tokens"]["admin"])
    assert api.me()["role"] == "admin"
    report = api.push_prompts(["A prompt for later.", {"prompt": "With a reference.", "reference": "42"}])
    assert report["inserted"] == 2 and report["committed"]
    assert api.push_prompts(["A prompt for later."])["duplicates"] == 1
    pushed = [api.compare(f"Client question {i}?", [f"short answer {i}", f"a longer answer {i}"],
                          models=["small-model", "large-model"], metadata={"run": "client-test"})
              for i in range(10)]
    assert all(p["created"] for p in pushed) and len({p["item_ids"][0] for p in pushed}) == 10
    again = api.compare("Client question 0?", ["short answer 0", "a longer answer 0"],
                        models=["small-model", "large-model"])
    assert again["created"] is False and again["item_ids"] == pushed[0]["item_ids"]
    assert again["client_id"] == record_id("default", "Client question 0?", ["short answer 0", "a longer answer 0"],
                                           ["small-model", "large-model"])

    # People label them (the queue services the Compare page calls, on the server's database).
    engine = make_engine(app_server["db"])
    with session_scope(engine) as s:
        root = s.scalar(select(User).where(User.username == "root"))
        project = default_project(session=s).id
    for i in range(10):
        with session_scope(engine) as s:
            claim = queue.claim_next(session=s, user=root, project=project)
            queue.submit_pairwise(session=s, user=root, assignment_id=claim.assignment_id,
                                  submission_id=uuid.uuid4().hex, preferred="left" if i % 3 else "right")
    engine.dispose()

    reviewer = Client(app_server["base"], app_server["tokens"]["reviewer"])
    labels = list(reviewer.labels(project="default", source="human", page_size=3))  # 4 pages
    assert len(labels) == 10 and len({label["id"] for label in labels}) == 10
    by_client = {p["client_id"] for p in pushed}
    assert {label["client_id"] for label in labels} == by_client
    assert all([r["policy_version"] for r in label["responses"]] == ["ext:small-model", "ext:large-model"]
               for label in labels)
    assert list(reviewer.labels(since=datetime.now(UTC) + timedelta(hours=1))) == []
    assert len(list(reviewer.labels(since=datetime.now(UTC) - timedelta(hours=1), kind="pairwise"))) == 10
    resumed = list(reviewer.labels(project="default", after=labels[6]["id"]))
    assert [label["id"] for label in resumed] == [label["id"] for label in labels[7:]]

    rows = reviewer.export("dpo", project="default")
    assert len(rows) == 10 and all({"prompt", "chosen", "rejected", "rule"} <= set(r) for r in rows)
    path = reviewer.export("dpo", path=tmp_path / "out" / "dpo.jsonl", project="default")
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    parquet = reviewer.export("kto", path=tmp_path / "kto.parquet", file="parquet", kto_from_pairs=True)
    assert parquet.read_bytes()[:4] == b"PAR1"
    chat = api.compare([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
                       ["Hello.", "Hi there, how can I help you today?"], models="chat-model")
    assert chat["created"] and chat["prompt_id"] not in {p["prompt_id"] for p in pushed}
    names = {p["name"]: p["status"] for p in api.policies()}
    assert names["v0"] == "active" and names["ext:small-model"] == names["ext:large-model"] == "external"


CLIENTS = 20


def test_twenty_concurrent_clients_over_http(app_server):
    """20 clients (own Client each, one token) push the same 5 records and one of their own each,
    all at once, through the app's server: 25 items, none lost, none twice."""
    base, token = app_server["base"], app_server["tokens"]["admin"]
    barrier = threading.Barrier(CLIENTS)
    results, errors = {}, []

    def client(n: int) -> None:
        api = Client(base, token)
        barrier.wait()
        try:
            for i in (*range(5), f"own-{n}"):
                r = api.compare(f"Concurrent question {i}?", ["yes", "no"], models="crowd", project="default",
                                client_id=f"conc-{i}")
                results[n, i] = r["item_ids"]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((n, repr(exc)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    engine = make_engine(app_server["db"])
    with session_scope(engine, read_only=True) as s:
        made = dict(s.execute(select(Item.client_id, Item.id).where(Item.client_id.like("conc-%"))).all())
        n_responses = s.scalar(select(func.count()).select_from(Response).join(Prompt)
                               .where(Prompt.text.like("Concurrent question %")))
    engine.dispose()
    assert len(made) == 5 + CLIENTS and n_responses == 2 * (5 + CLIENTS)
    assert all(results[n, i] == [made[f"conc-{i}"]] for n, i in results)


def test_errors_come_back_as_api_errors(app_server):
    base = app_server["base"]
    with pytest.raises(ApiError) as wrong:
        Client(base, "fb_wrong").me()
    assert wrong.value.status == 401 and "Unknown API token" in wrong.value.message
    with pytest.raises(ApiError) as forbidden:
        Client(base, app_server["tokens"]["reviewer"]).compare("Q?", ["a", "b"])
    assert forbidden.value.status == 403 and "needs the role admin" in forbidden.value.message
    with pytest.raises(ApiError) as missing:
        Client(base, app_server["tokens"]["admin"]).compare("Q?", ["a", "b"], project="nowhere")
    assert missing.value.status == 404 and "No project called 'nowhere'" in missing.value.message
    with pytest.raises(ApiError) as unreachable:
        Client(f"http://127.0.0.1:{free_port()}", "fb_x", retries=0).me()
    assert unreachable.value.status == 0 and "Cannot reach" in unreachable.value.message


def test_export_a_datasets_directory_with_the_client(app_server, tmp_path):
    """export_dataset writes what `datasets.load_from_disk` opens: train from the train prompts
    (a val record stays out), chat columns as lists of messages, the rows the JSON export gives.
    With with_test the val split is the "test" split; metadata adds the columns that join rows
    back. (After test_push_label_read_export: that one counts every
    pairwise label.)"""
    from datasets import load_from_disk

    engine = make_engine(app_server["db"])
    with session_scope(engine) as s:
        project = create_project(session=s, actor=CLI, name="client-datasets", task_type="pairwise")
        project_id = project.id
    api = Client(app_server["base"], app_server["tokens"]["admin"])
    chat = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Colour of grass?"}]
    for prompt, responses, split in ((chat, ["Green.", "Purple."], None),
                                     ("Dataset question 1?", ["dataset answer 1", "wrong 1"], None),
                                     ("Dataset question 2?", ["dataset answer 2", "wrong 2"], "train"),
                                     ("Held-out question?", ["held-out answer", "wrong"], "val")):
        api.compare(prompt, responses, models=["good-model", "bad-model"], project="client-datasets",
                    **({"split": split} if split else {}))
    with session_scope(engine) as s:
        root = s.scalar(select(User).where(User.username == "root"))
        for _ in range(4):
            claim = queue.claim_next(session=s, user=root, project=project_id)
            preferred = "left" if claim.left in ("Green.", "held-out answer") or claim.left.startswith("dataset") \
                else "right"
            queue.submit_pairwise(session=s, user=root, assignment_id=claim.assignment_id,
                                  submission_id=uuid.uuid4().hex, preferred=preferred)
    engine.dispose()

    rows = api.export("dpo", project="client-datasets")
    out = api.export_dataset("dpo", tmp_path / "data" / "dpo", project="client-datasets")
    assert out == tmp_path / "data" / "dpo" and not (tmp_path / "data" / "dpo.part").exists()
    dataset = load_from_disk(str(out))
    assert list(dataset) == ["train"] and dataset["train"].num_rows == 3
    assert dataset["train"].to_list() == rows
    assert {r["chosen"][0]["content"] for r in rows} == {"Green.", "dataset answer 1", "dataset answer 2"}
    assert [m["role"] for m in dataset["train"].filter(lambda r: len(r["prompt"]) == 2)[0]["prompt"]] == \
        ["system", "user"]
    # Again into the same directory: the earlier dataset is replaced.
    again = api.export_dataset("dpo", out, project="client-datasets", sources=["human"])
    assert load_from_disk(str(again))["train"].num_rows == 3

    # With the val split as "test" and the metadata columns that join rows back to the database.
    full = load_from_disk(str(api.export_dataset("dpo", tmp_path / "full", project="client-datasets",
                                                 with_test=True, metadata=True)))
    assert sorted(full) == ["test", "train"] and (full["train"].num_rows, full["test"].num_rows) == (3, 1)
    assert full["test"][0]["chosen"][0]["content"] == "held-out answer" and full["test"][0]["split"] == "val"
    assert {"item_id", "label_ids", "policy_versions", "agreement"} <= set(full["train"].column_names)
    assert set(full["train"]["project"]) == {"client-datasets"}
    with pytest.raises(ValueError, match="chooses 'include_val' itself"):
        api.export_dataset("dpo", tmp_path / "x", include_val=True)
    with pytest.raises(ValueError, match="No labels on train prompts"):
        api.export_dataset("dpo", tmp_path / "x", project="client-datasets", sources=["judge"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a dataset directory"):
        api.export_dataset("dpo", tmp_path / "busy", project="client-datasets")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_no_token_reaches_the_server_log(app_server):
    Client(app_server["base"], app_server["tokens"]["admin"]).policies()
    log = app_server["log"].read_text()
    assert not [t for t in app_server["tokens"].values() if t in log or t[3:] in log]


# --- jobs: the API alone under uvicorn, with a job kind and launcher of the test's own ------------


@dataclass
class SleepConfig:
    seconds: float = 0.5
    fail: bool = False


def _sleep_runner(*, engine, job, reporter):
    for step in range(3):
        reporter.progress(step, 3)
        time.sleep(job.config.get("seconds", 0.5) / 3)
    if job.config.get("fail"):
        raise RuntimeError("asked to fail")
    return {"slept": job.config.get("seconds", 0.5)}


class ThreadLauncher:
    """Runs the job in a thread of this process, as a worker process would run it."""

    name = "thread"

    def launch(self, *, job_id, kind, database_url, env, log_path):
        if kind == "sleep":
            threading.Thread(target=jobs.run_job, kwargs={"engine": make_engine(database_url), "job_id": job_id},
                             daemon=True).start()
        return f"thread-{job_id}"


@pytest.fixture
def api_alone(sqlite_url, monkeypatch, registered):
    import uvicorn

    from api.server import api_routes

    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("JOB_LAUNCHER", "thread")
    registered(LAUNCHERS, "thread", ThreadLauncher)
    registered(jobs.JOB_KINDS, "sleep", jobs.JobKind(runner=_sleep_runner, config=SleepConfig))
    tokens = _seed(sqlite_url)
    from starlette.applications import Starlette

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=api_routes()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield Client(f"http://127.0.0.1:{port}", tokens["admin"]), sqlite_url
    server.should_exit = True
    thread.join(timeout=10)


def test_start_a_job_and_wait_for_it(api_alone):
    api, url = api_alone
    job = api.start_job("sleep", seconds=0.6)
    assert job["status"] == "queued"
    done = api.wait(job, timeout=30, poll=0.1)
    assert done["status"] == "succeeded" and done["result"] == {"slept": 0.6}
    assert [j["id"] for j in api.jobs(kind="sleep")] == [job["id"]]
    with pytest.raises(JobFailed) as failed:
        api.wait(api.start_job("sleep", {"fail": True}, seconds=0.1), timeout=30, poll=0.1)
    assert failed.value.job["status"] == "failed" and "asked to fail" in failed.value.job["error"]
    with pytest.raises(ApiError) as bad:
        api.start_job("sleep", secs=1)
    assert bad.value.status == 400 and "Unknown sleep job setting(s): secs" in bad.value.message


def test_wait_times_out_and_a_job_can_be_cancelled(api_alone):
    api, url = api_alone
    engine = make_engine(url)
    with session_scope(engine) as s:  # queued, and no worker will come for it
        job_id = jobs.create_job(session=s, kind="sample", config={"limit": 1}, actor=CLI).id
    engine.dispose()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="still queued"):
        api.wait(job_id, timeout=0.5, poll=0.1)
    assert time.monotonic() - started < 5
    assert api.cancel(job_id)["status"] == "cancelled"
    assert api.wait(job_id, check=False)["status"] == "cancelled"
    with session_scope(make_engine(url), read_only=True) as s:
        assert s.get(Job, job_id).cancel_requested
