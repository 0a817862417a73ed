"""The HTTP API in-process (api.server.create_app under /api, as st.App mounts it) against a real
SQLite file, with the services behind it: tokens, records, labels, exports, jobs, policies.

Job workers are never started here: JOB_LAUNCHER names a launcher that records what it was asked
to start, and runs it in-process only for the test's own `noop` kind. tests/test_client.py drives
the real server (`streamlit run app.py`) with the Python client.
"""
from __future__ import annotations

import json
import random
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine, func, select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from api.limits import RateLimited, TokenBuckets
from api.server import api_routes, create_app
from cli import main as cli_main
from db.engine import make_engine, session_scope
from db.migrate import upgrade
from db.models import (
    ApiToken,
    AuditLog,
    Item,
    ItemResponse,
    Label,
    PolicyVersion,
    Project,
    Prompt,
    Response,
    User,
    utcnow,
)
from feedback import jobs, queue
from feedback.actors import CLI, Actor
from feedback.errors import PermissionDenied, UserError
from feedback.label_pages import read_labels
from feedback.launchers import LAUNCHERS
from feedback.policies import ensure_base_policy
from feedback.projects import create_project, default_project
from feedback.records import push_record
from feedback.tokens import (
    AuthenticationFailed,
    authenticate,
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
)

V1 = "/api/v1"
ROLES = ("annotator", "reviewer", "admin")


@dataclass
class NoopConfig:
    steps: int = 1


def _noop_runner(*, engine, job, reporter):
    reporter.progress(1, 1, log="did nothing")
    return {"steps": job.config.get("steps", 1)}


class RecordingLauncher:
    """Starts no worker: remembers the job, and runs a `noop` job here and now."""

    name = "recording"
    launched: list[int] = []

    def launch(self, *, job_id, kind, database_url, env, log_path):
        RecordingLauncher.launched.append(job_id)
        if kind == "noop":
            jobs.run_job(engine=make_engine(database_url), job_id=job_id)
        return str(job_id)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    """One migrated SQLite file, copied for each test (migrating takes seconds, copying none)."""
    path = tmp_path_factory.mktemp("api-template") / "template.sqlite3"
    upgrade(f"sqlite:///{path}")
    make_engine(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture
def api(migrated, tmp_path, monkeypatch, registered):
    """The API over a seeded database: v0, the default project, one user (and token) per role,
    and tokens that must not work: expired, revoked, and one of a deactivated user."""
    path = tmp_path / "api.sqlite3"
    shutil.copy(migrated, path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("JOB_LAUNCHER", "recording")
    registered(LAUNCHERS, "recording", RecordingLauncher)
    registered(jobs.JOB_KINDS, "noop", jobs.JobKind(runner=_noop_runner, config=NoopConfig))
    RecordingLauncher.launched = []
    engine = make_engine(url)
    tokens = {}
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        default_project(session=s)
        # No passwords: the API never asks for one (and hashing them would cost seconds).
        s.add_all([User(username=name, role=role, password_hash="!", active=name != "gone")
                   for role, name in (*zip(ROLES, ("ann", "rev", "root"), strict=True), ("admin", "gone"))])
        s.flush()
        for role, name in zip(ROLES, ("ann", "rev", "root"), strict=True):
            tokens[role] = create_token(session=s, actor=CLI, username=name, name=f"{role} token")[1]
        tokens["expired"] = create_token(session=s, actor=CLI, username="root", expires_days=1)[1]
        s.execute(ApiToken.__table__.update().where(ApiToken.token_hash == hash_token(tokens["expired"]))
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
        info, tokens["revoked"] = create_token(session=s, actor=CLI, username="root")
        revoke_token(session=s, actor=CLI, token_id=info.id)
        s.add(ApiToken(user_id=s.scalar(select(User.id).where(User.username == "gone")), name="",
                       token_hash=hash_token("fb_of-a-deactivated-user"), prefix="fb_of-a-de"))
    tokens["deactivated"] = "fb_of-a-deactivated-user"
    app = Starlette(routes=api_routes())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield SimpleNamespace(client=client, engine=engine, tokens=tokens, url=url)
    engine.dispose()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def record(client_id: str, *, project: str = "default", prompt: str = "Which is better?",
           texts: tuple[str, ...] = ("first answer", "second answer"), models=("model-a", "model-b")) -> dict:
    return {"project": project, "client_id": client_id, "prompt": prompt,
            "responses": [{"text": t, "model": m} for t, m in zip(texts, models, strict=True)]}


def count(engine, model) -> int:
    with session_scope(engine, read_only=True) as s:
        return s.scalar(select(func.count()).select_from(model))


# --- the auth matrix ----------------------------------------------------------------------------


def _queued_job(engine) -> int:
    with session_scope(engine) as s:
        return jobs.create_job(session=s, kind="noop", config={}, actor=CLI).id


def endpoints(engine):
    """(name, the lowest role allowed, a function making the request's (method, path, body))."""
    return [
        ("me", "annotator", lambda: ("GET", "/me", None)),
        ("push prompts", "admin", lambda: ("POST", "/prompts", {"prompts": [{"prompt": f"p {uuid.uuid4()}"}]})),
        ("push record", "admin", lambda: ("POST", "/records", record(uuid.uuid4().hex))),
        ("labels", "reviewer", lambda: ("GET", "/labels", None)),
        ("export", "reviewer", lambda: ("GET", "/exports/dpo", None)),
        ("start job", "admin", lambda: ("POST", "/jobs", {"kind": "noop", "config": {}})),
        ("list jobs", "admin", lambda: ("GET", "/jobs", None)),
        ("job status", "admin", lambda: ("GET", f"/jobs/{_queued_job(engine)}", None)),
        ("cancel job", "admin", lambda: ("POST", f"/jobs/{_queued_job(engine)}/cancel", None)),
        ("policies", "reviewer", lambda: ("GET", "/policies", None)),
        ("promote", "admin", lambda: ("POST", "/policies/v0/promote", {"resample": False})),
    ]


def test_auth_matrix_every_role_on_every_endpoint(api):
    """Each role gets exactly what its rank allows (2xx) and a JSON 403 below it."""
    got, want = {}, {}
    for name, lowest, make in endpoints(api.engine):
        for role in ROLES:
            method, path, body = make()
            r = api.client.request(method, V1 + path, json=body, headers=auth(api.tokens[role]))
            allowed = ROLES.index(role) >= ROLES.index(lowest)
            got[name, role] = r.status_code // 100 * 100 if allowed and r.is_success else r.status_code
            want[name, role] = 200 if allowed else 403
            if not allowed:
                assert "needs the role" in r.json()["error"]
    assert got == want
    # What the admin's calls did is in the audit log under the token's user.
    with session_scope(api.engine, read_only=True) as s:
        actors = set(s.scalars(select(AuditLog.actor).where(AuditLog.action == "records.push")))
    assert actors == {"api:root"}


@pytest.mark.parametrize("which, reason", [
    (None, "No API token"), ("wrong", "Unknown API token"), ("expired", "expired on"),
    ("revoked", "was revoked on"), ("deactivated", "is deactivated"),
])
def test_tokens_that_do_not_work_get_401_everywhere(api, which, reason):
    headers = {} if which is None else auth("fb_not-a-token" if which == "wrong" else api.tokens[which])
    before = count(api.engine, Item)
    for name, _, make in endpoints(api.engine):
        method, path, body = make()
        r = api.client.request(method, V1 + path, json=body, headers=headers)
        assert r.status_code == 401, name
        assert reason in r.json()["error"], name
        assert r.headers["www-authenticate"] == "Bearer"
    assert count(api.engine, Item) == before


def test_me_and_a_role_change_applies_to_the_next_request(api):
    r = api.client.get(V1 + "/me", headers=auth(api.tokens["reviewer"]))
    assert r.status_code == 200
    assert r.json()["username"] == "rev" and r.json()["role"] == "reviewer"
    assert r.json()["token"]["prefix"] == api.tokens["reviewer"][:11]
    assert api.client.get(V1 + "/policies", headers=auth(api.tokens["reviewer"])).status_code == 200
    with session_scope(api.engine) as s:
        s.execute(User.__table__.update().where(User.username == "rev").values(role="annotator"))
    assert api.client.get(V1 + "/policies", headers=auth(api.tokens["reviewer"])).status_code == 403


# --- tokens (the service and the CLI) ----------------------------------------------------------------


def test_token_is_shown_once_and_stored_only_as_its_hash(api):
    with session_scope(api.engine) as s:
        info, token = create_token(session=s, actor=CLI, username="rev", name="ci", expires_days=30)
    assert token.startswith("fb_") and len(token) > 40 and info.prefix == token[:11]
    with session_scope(api.engine, read_only=True) as s:
        row = s.get(ApiToken, info.id)
        assert row.token_hash == hash_token(token)
        dumped = json.dumps([[str(v) for v in r] for r in s.execute(select(ApiToken.__table__)).all()]
                            + [json.dumps(a.details) for a in s.scalars(select(AuditLog))])
    assert token not in dumped and token[11:] not in dumped
    assert (info.expires_at - info.created_at).days == 30


def test_authenticate_notes_last_use_at_most_once_a_minute(api):
    token = api.tokens["admin"]
    now = utcnow()

    def last_used():
        with session_scope(api.engine, read_only=True) as s:
            return s.scalar(select(ApiToken.last_used_at).where(ApiToken.token_hash == hash_token(token)))

    with session_scope(api.engine) as s:
        assert authenticate(session=s, token=token, now=now).username == "root"
    assert last_used() == now
    with session_scope(api.engine) as s:
        authenticate(session=s, token=token, now=now + timedelta(seconds=59))
    assert last_used() == now
    with session_scope(api.engine) as s:
        authenticate(session=s, token=token, now=now + timedelta(seconds=61))
    assert last_used() == now + timedelta(seconds=61)


def test_token_services_are_for_admins(api):
    with session_scope(api.engine) as s:
        rev = s.scalar(select(User).where(User.username == "rev"))
        with pytest.raises(PermissionDenied):
            create_token(session=s, actor=Actor.signed_in(rev), username="rev")
        with pytest.raises(PermissionDenied):
            list_tokens(session=s, actor=Actor.signed_in(rev))
        with pytest.raises(UserError, match="No user"):
            create_token(session=s, actor=CLI, username="nobody")
        with pytest.raises(UserError, match="between 0 and"):
            create_token(session=s, actor=CLI, username="rev", expires_days=-1)
        with pytest.raises(AuthenticationFailed, match="No API token"):
            authenticate(session=s, token="")


def test_cli_tokens_create_list_revoke(api, capsys):
    assert cli_main(["tokens", "create", "--user", "rev", "--name", "notebook", "--expires", "7"]) == 0
    out = capsys.readouterr().out
    token = out.split("token (shown once): ")[1].strip()
    assert api.client.get(V1 + "/me", headers=auth(token)).json()["username"] == "rev"
    assert cli_main(["tokens", "list", "--user", "rev"]) == 0
    listing = capsys.readouterr().out
    assert "notebook" in listing and token[:11] in listing and token not in listing and "active" in listing
    token_id = int(out.split("token ")[1].split()[0])
    assert cli_main(["tokens", "revoke", str(token_id)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert api.client.get(V1 + "/me", headers=auth(token)).status_code == 401
    assert cli_main(["tokens", "revoke", str(token_id)]) == 0
    assert "already revoked" in capsys.readouterr().out
    assert cli_main(["tokens", "create", "--user", "nobody"]) == 2
    assert "No user 'nobody'" in capsys.readouterr().err


# --- records -------------------------------------------------------------------------------------


def test_a_pairwise_record_is_one_pair_and_pushing_it_again_changes_nothing(api):
    admin = auth(api.tokens["admin"])
    first = api.client.post(V1 + "/records", json=record("rec-1"), headers=admin)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["created"] is True and len(body["item_ids"]) == 1 and len(body["response_ids"]) == 2
    counts = {m: count(api.engine, m) for m in (Item, Response, Prompt, PolicyVersion)}
    again = api.client.post(V1 + "/records", json=record("rec-1"), headers=admin)
    assert again.status_code == 200
    assert again.json() == {**body, "created": False}
    assert {m: count(api.engine, m) for m in counts} == counts
    with session_scope(api.engine, read_only=True) as s:
        item = s.get(Item, body["item_ids"][0])
        assert (item.kind, item.client_id) == ("pair", "rec-1")
        assert [item.response_a_id, item.response_b_id] == body["response_ids"]
        versions = {v.name: v.status for v in s.scalars(select(PolicyVersion))}
        assert versions == {"v0": "active", "ext:model-a": "external", "ext:model-b": "external"}
        a = s.get(Response, item.response_a_id)
        assert a.text == "first answer" and a.params["client_id"] == "rec-1"
    # The same client id with other content is refused, never merged.
    other = api.client.post(V1 + "/records", json=record("rec-1", texts=("first answer", "changed")), headers=admin)
    assert other.status_code == 409 and "different record" in other.json()["error"]
    assert {m: count(api.engine, m) for m in counts} == counts


def test_records_of_every_task_type(api):
    admin = auth(api.tokens["admin"])
    with session_scope(api.engine) as s:
        for name, task, k in (("ranked", "rank", 4), ("rated", "rating", 3), ("thumbs", "binary", None),
                              ("fixes", "edit", None)):
            create_project(session=s, actor=CLI, name=name, task_type=task, k=k)
    texts = ("alpha", "beta", "gamma")
    ranked = api.client.post(V1 + "/records", json={**record("r1", project="ranked", texts=texts,
                                                             models=("m1", "m2", "m1"))}, headers=admin).json()
    rated = api.client.post(V1 + "/records", json={
        **record("r2", project="rated", texts=texts[:2], models=("m1", "m2")),
        "metadata": {"batch": 7}}, headers=admin).json()
    thumbs = api.client.post(V1 + "/records", json=record("r3", project="thumbs", texts=texts,
                                                          models=("m1", "m2", "m3")), headers=admin).json()
    fixes = api.client.post(V1 + "/records", json={
        "project": "fixes", "client_id": "r4", "messages": [{"role": "system", "content": "Be brief."},
                                                            {"role": "user", "content": "Define a mutex."}],
        "responses": [{"text": "A lock.", "policy_version": "v0", "finish_reason": "stop"}]}, headers=admin).json()
    with session_scope(api.engine, read_only=True) as s:
        def positions(item_id):
            return list(s.scalars(select(ItemResponse.response_id).where(ItemResponse.item_id == item_id)
                                  .order_by(ItemResponse.position)))

        assert s.get(Item, ranked["item_ids"][0]).kind == "rank"
        assert positions(ranked["item_ids"][0]) == ranked["response_ids"]
        assert positions(rated["item_ids"][0]) == rated["response_ids"]
        assert s.get(Response, rated["response_ids"][0]).params["metadata"] == {"batch": 7}
        singles = [s.get(Item, i) for i in thumbs["item_ids"]]
        assert [(i.kind, i.client_id) for i in singles] == [("single", "r3"), ("single", "r3#1"), ("single", "r3#2")]
        edit = s.get(Item, fixes["item_ids"][0])
        assert edit.kind == "edit" and s.get(Prompt, edit.prompt_id).messages[0]["role"] == "system"
        assert s.get(Response, edit.response_a_id).policy_version.name == "v0"
    again = api.client.post(V1 + "/records", json=record("r3", project="thumbs", texts=texts,
                                                         models=("m1", "m2", "m3")), headers=admin).json()
    assert again["item_ids"] == thumbs["item_ids"] and again["created"] is False


@pytest.mark.parametrize("change, status, message", [
    ({"responses": [{"text": "only one", "model": "m"}]}, 400, "exactly 2 responses"),
    ({"responses": [{"text": "same", "model": "m"}, {"text": " same ", "model": "n"}]}, 400, "repeats an earlier"),
    ({"project": "nowhere"}, 404, "No project called 'nowhere'"),
    ({"client_id": "has#hash"}, 400, "A client id is"),
    ({"client_id": ""}, 400, "A client id is"),
    ({"responses": [{"text": "x", "model": "m", "policy_version": "v0"}, {"text": "y", "model": "m"}]}, 400,
     "either 'model'"),
    ({"responses": [{"text": "x", "policy_version": "v9"}, {"text": "y", "model": "m"}]}, 404, "No policy version"),
    ({"responses": [{"text": "x", "model": "has space"}, {"text": "y", "model": "m"}]}, 400, "a model name is"),
    ({"prompt": None}, 400, "Bad prompt: missing 'prompt' or 'messages'"),
    ({"prompt": "   "}, 400, "Bad prompt: 'prompt' is empty"),
    ({"messages": [{"role": "user", "content": "a"}]}, 400, "not both"),
    ({"metadata": {"x": "a" * 20_000}}, 400, "the limit is 16000"),
    ({"responses": "nope"}, 422, "responses"),
])
def test_a_bad_record_gets_a_clear_error_and_writes_nothing(api, change, status, message):
    before = {m: count(api.engine, m) for m in (Item, Response, Prompt, PolicyVersion, AuditLog)}
    r = api.client.post(V1 + "/records", json={**record("bad-1"), **change}, headers=auth(api.tokens["admin"]))
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert {m: count(api.engine, m) for m in before} == before


def _shared_engine(url: str, threads: int):
    if url.startswith("sqlite"):
        return make_engine(url)
    return create_engine(url, pool_size=threads + 5, max_overflow=5, pool_pre_ping=True)


CLIENTS = 20


def test_twenty_concurrent_clients_push_the_same_records_zero_lost_zero_duplicated(db_url):
    """20 clients push the same 5 records (same client ids, new prompts, two new outside models) and
    one record of their own each, all at once in shuffled orders: 25 items, each made once, and
    every client is told the same item ids for a shared record."""
    engine = _shared_engine(db_url, CLIENTS)
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        default_project(session=s)
    shared = [record(f"shared-{n}", prompt=f"Shared question {n}?") for n in range(5)]
    barrier = threading.Barrier(CLIENTS)
    results: dict[int, dict[str, list[int]]] = {}
    errors = []

    def client(n: int) -> None:
        mine = [*shared, record(f"own-{n}", prompt=f"Question of client {n}?")]
        random.Random(n).shuffle(mine)
        barrier.wait()
        try:
            for body in mine:
                with session_scope(engine) as s:
                    pushed = push_record(session=s, actor=CLI, **body)
                results.setdefault(n, {})[pushed.client_id] = pushed.item_ids
        except Exception as exc:  # noqa: BLE001 - reported below with the thread's number
            errors.append((n, repr(exc)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with session_scope(engine, read_only=True) as s:
        items = s.execute(select(Item.client_id, Item.id)).all()
        assert len(items) == len({c for c, _ in items}) == 5 + CLIENTS  # 0 duplicated
        by_client = dict(items)
        assert set(by_client) == {f"shared-{n}" for n in range(5)} | {f"own-{n}" for n in range(CLIENTS)}  # 0 lost
        assert s.scalar(select(func.count()).select_from(Response)) == 2 * (5 + CLIENTS)  # no orphans
        assert s.scalar(select(func.count()).select_from(Prompt)) == 5 + CLIENTS
        assert sorted(s.scalars(select(PolicyVersion.name))) == ["ext:model-a", "ext:model-b", "v0"]
    for n in range(CLIENTS):
        assert {c: ids for c, ids in results[n].items()} == {
            c: [by_client[c]] for c in results[n]}
    engine.dispose()


# --- labels --------------------------------------------------------------------------------------


def _label_pairs(engine, n: int) -> list[int]:
    """n pushed pairs, each labelled by the admin through the queue; the label ids."""
    with session_scope(engine) as s:
        for i in range(n):
            push_record(session=s, actor=CLI, **record(f"lab-{i}", prompt=f"Label question {i}?"))
    ids = []
    for i in range(n):
        with session_scope(engine) as s:
            root = s.scalar(select(User).where(User.username == "root"))
            claim = queue.claim_next(session=s, user=root, project=default_project(session=s).id)
            ids.append(queue.submit_pairwise(session=s, user=root, assignment_id=claim.assignment_id,
                                             submission_id=uuid.uuid4().hex,
                                             preferred="left" if i % 2 else "right").id)
    return ids


def test_labels_are_read_page_by_page_with_filters(api):
    ids = _label_pairs(api.engine, 5)
    with session_scope(api.engine) as s:  # one judge label, to filter by source
        item = s.scalar(select(Item).where(Item.client_id == "lab-0"))
        s.add(Label(item_id=item.id, kind="pairwise", choice="a", source="judge", producer="stub:judge",
                    submission_id=uuid.uuid4().hex))
    reviewer = auth(api.tokens["reviewer"])
    seen, after, pages = [], 0, 0
    while True:
        page = api.client.get(V1 + "/labels", params={"limit": 2, "after": after, "source": "human"},
                              headers=reviewer).json()
        pages += 1
        seen += page["labels"]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert pages == 3 and [label["id"] for label in seen] == ids
    first = seen[0]
    assert first["client_id"] == "lab-0" and first["annotator"] == "root" and first["project"] == "default"
    assert [r["policy_version"] for r in first["responses"]] == ["ext:model-a", "ext:model-b"]
    assert first["choice"] in ("a", "b") and first["shown_order"] in ("ab", "ba")
    judge = api.client.get(V1 + "/labels", params={"source": "judge"}, headers=reviewer).json()["labels"]
    assert [label["producer"] for label in judge] == ["stub:judge"]
    assert api.client.get(V1 + "/labels", params={"kind": "rank"}, headers=reviewer).json()["labels"] == []
    later = (utcnow() + timedelta(minutes=5)).replace(tzinfo=None).isoformat()
    assert api.client.get(V1 + "/labels", params={"since": later}, headers=reviewer).json()["labels"] == []
    assert len(api.client.get(V1 + "/labels", params={"project": "default"}, headers=reviewer).json()["labels"]) == 6
    bad = api.client.get(V1 + "/labels", params={"project": "nope"}, headers=reviewer)
    assert bad.status_code == 404 and "No project called 'nope'" in bad.json()["error"]
    assert api.client.get(V1 + "/labels", params={"limit": 0}, headers=reviewer).status_code == 422
    with session_scope(api.engine, read_only=True) as s:
        ann = s.scalar(select(User).where(User.username == "ann"))
        with pytest.raises(PermissionDenied):
            read_labels(session=s, actor=Actor.signed_in(ann))


# --- exports ------------------------------------------------------------------------------------


def test_exports_stream_json_lines_in_every_format(api):
    _label_pairs(api.engine, 4)
    with session_scope(api.engine) as s:  # a thumbs label, for the kto and sft formats to have rows too
        create_project(session=s, actor=CLI, name="thumbs", task_type="binary")
        push_record(session=s, actor=CLI, project="thumbs", client_id="t1", prompt="Say hi.",
                    responses=[{"text": "hi", "model": "m"}])
        root = s.scalar(select(User).where(User.username == "root"))
        claim = queue.claim_next(session=s, user=root, project=s.scalar(select(Project.id)
                                                                         .where(Project.name == "thumbs")))
        queue.submit_binary(session=s, user=root, assignment_id=claim.assignment_id, submission_id="sub-t1",
                            thumb="up")
    reviewer = auth(api.tokens["reviewer"])
    for fmt, columns in (("dpo", {"prompt", "chosen", "rejected"}), ("reward", {"chosen", "rejected", "margin"}),
                         ("kto", {"prompt", "completion", "label"}), ("sft", {"prompt", "completion"})):
        with api.client.stream("GET", V1 + f"/exports/{fmt}", headers=reviewer) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/jsonl")
            rows = [json.loads(line) for line in r.iter_lines() if line]
        assert rows and int(r.headers["x-rows"]) == len(rows), fmt
        assert all(columns <= set(row) and "rule" in row for row in rows), fmt
    only = api.client.get(V1 + "/exports/dpo", params={"project": "thumbs"}, headers=reviewer)
    assert only.status_code == 200 and only.text == ""
    parquet = api.client.get(V1 + "/exports/kto", params={"file": "parquet"}, headers=reviewer)
    assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"
    settings = api.client.get(V1 + "/exports/dpo", params={"rule": "drop", "rank_pairs": "all_pairs"},
                              headers=reviewer)
    assert settings.status_code == 200
    typo = api.client.get(V1 + "/exports/dpo", params={"rulee": "drop"}, headers=reviewer)
    assert typo.status_code == 422 and "rulee" in typo.json()["error"]
    assert api.client.get(V1 + "/exports/csv", headers=reviewer).status_code == 422


# --- jobs and policies ------------------------------------------------------------------------------


def test_start_and_watch_a_job(api):
    admin = auth(api.tokens["admin"])
    started = api.client.post(V1 + "/jobs", json={"kind": "noop", "config": {"steps": 3}}, headers=admin)
    assert started.status_code == 201, started.text
    job_id = started.json()["id"]
    assert RecordingLauncher.launched == [job_id]
    state = api.client.get(V1 + f"/jobs/{job_id}", headers=admin).json()
    assert state["status"] == "succeeded" and state["result"] == {"steps": 3} and state["progress_done"] == 1
    assert [j["id"] for j in api.client.get(V1 + "/jobs", params={"kind": "noop"}, headers=admin).json()] == [job_id]
    unknown = api.client.post(V1 + "/jobs", json={"kind": "nope"}, headers=admin)
    assert unknown.status_code == 400 and "Unknown job kind 'nope'" in unknown.json()["error"]
    bad = api.client.post(V1 + "/jobs", json={"kind": "sample", "config": {"limitt": 3}}, headers=admin)
    assert bad.status_code == 400 and "Unknown sample job setting(s): limitt" in bad.json()["error"]
    assert api.client.get(V1 + "/jobs/999999", headers=admin).status_code == 404
    # A sampling job is queued and handed to the launcher (which starts no worker here); cancel it.
    sample = api.client.post(V1 + "/jobs", json={"kind": "sample", "config": {"limit": 2}}, headers=admin).json()
    assert sample["status"] == "queued" and RecordingLauncher.launched[-1] == sample["id"]
    cancelled = api.client.post(V1 + f"/jobs/{sample['id']}/cancel", headers=admin).json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_requested"] is True


def test_policies_and_promote(api):
    admin = auth(api.tokens["admin"])
    with session_scope(api.engine) as s:
        s.add(PolicyVersion(name="v1", base_model="SmolLM2-135M-Instruct", status="candidate", stage="dpo",
                            parent_id=s.scalar(select(PolicyVersion.id).where(PolicyVersion.name == "v0"))))
    listed = api.client.get(V1 + "/policies", headers=auth(api.tokens["reviewer"])).json()
    assert [(p["name"], p["status"], p["parent"], p["gate"]) for p in listed] == [
        ("v0", "active", None, "passed"), ("v1", "candidate", "v0", "undecided")]
    assert all("adapter_path" not in p and "model_path" not in p for p in listed)
    refused = api.client.post(V1 + "/policies/v1/promote", json={"resample": False}, headers=admin)
    assert refused.status_code == 400 and "evaluation gate is undecided" in refused.json()["error"]
    done = api.client.post(V1 + "/policies/v1/promote", json={"resample": False, "override_reason": "a test"},
                           headers=admin)
    assert done.status_code == 200 and done.json()["name"] == "v1"
    assert "v1 is the active policy" in done.json()["summary"]
    assert api.client.post(V1 + "/policies/v9/promote", json={}, headers=admin).status_code == 404


# --- limits and errors -----------------------------------------------------------------------------


def test_body_size_limit(api, monkeypatch):
    monkeypatch.setenv("API_MAX_BODY_BYTES", "2000")
    admin = auth(api.tokens["admin"])
    big = record("big", texts=("x" * 3000, "y"))
    r = api.client.post(V1 + "/records", json=big, headers=admin)
    assert r.status_code == 413 and "limit of 2,000 bytes (API_MAX_BODY_BYTES)" in r.json()["error"]
    chunked = api.client.post(V1 + "/records", content=iter([json.dumps(big).encode()]),
                              headers={**admin, "Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert count(api.engine, Item) == 0
    assert api.client.post(V1 + "/records", json=record("small"), headers=admin).status_code == 201


def test_rate_limit_per_token(api, monkeypatch):
    monkeypatch.setenv("API_RATE_LIMIT_PER_MINUTE", "3")
    me = auth(api.tokens["reviewer"])
    assert [api.client.get(V1 + "/me", headers=me).status_code for _ in range(3)] == [200, 200, 200]
    r = api.client.get(V1 + "/me", headers=me)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "API_RATE_LIMIT_PER_MINUTE" in r.json()["error"]
    assert api.client.get(V1 + "/me", headers=auth(api.tokens["admin"])).status_code == 200  # its own bucket


def test_token_buckets_refill_at_the_rate():
    clock = [0.0]
    buckets = TokenBuckets(clock=lambda: clock[0])
    for _ in range(60):
        buckets.take("k", 60)
    with pytest.raises(RateLimited) as refused:
        buckets.take("k", 60)
    assert refused.value.retry_after_s == pytest.approx(1.0)
    clock[0] += 2.0
    buckets.take("k", 60)
    buckets.take("k", 60)
    with pytest.raises(RateLimited):
        buckets.take("k", 60)
    buckets.take("other", 60)
    buckets.take("k", 0)  # 0: no limit


def test_errors_are_json(api):
    admin = auth(api.tokens["admin"])
    nowhere = api.client.get(V1 + "/nowhere", headers=admin)
    assert nowhere.status_code == 404 and "No endpoint GET /api/v1/nowhere" in nowhere.json()["error"]
    wrong_method = api.client.delete(V1 + "/labels", headers=admin)
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    not_json = api.client.post(V1 + "/records", content=b"{not json", headers={**admin,
                                                                              "Content-Type": "application/json"})
    assert not_json.status_code == 422 and "JSON" in not_json.json()["error"]
    prompts = api.client.post(V1 + "/prompts", json={"prompts": [{"prompt": "fine"}, {"messages": []}]},
                              headers=admin)
    assert prompts.status_code == 400
    assert prompts.json()["errors"] == [{"where": "prompt 2", "reason": "'messages' is empty"}]
    assert count(api.engine, Prompt) == 0  # all or nothing
    skipped = api.client.post(V1 + "/prompts", json={"prompts": [{"prompt": "fine"}, {"messages": []}],
                                                     "on_error": "skip"}, headers=admin).json()
    assert skipped["inserted"] == 1 and skipped["committed"] and len(skipped["errors"]) == 1


# --- the schema, fuzzed ----------------------------------------------------------------------------

schemathesis = pytest.importorskip("schemathesis")
# The FastAPI app itself (paths /v1/...): it reads DATABASE_URL per request, so the `api` fixture's
# database is the one the generated requests reach.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())
# A request can match the schema and still be refused with 400 by the service (an unknown project,
# an empty prompt): the schema gives the shape, the services the meaning. Every other check runs.
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_never_get_a_server_error(case, api):
    """Generated requests to every endpoint as an admin, valid and not: no 5xx, and each answer is
    what the schema says (status code, content type, headers, body)."""
    response = case.call(headers=auth(api.tokens["admin"]))
    assert response.status_code < 500, response.text
    case.validate_response(response, excluded_checks=[positive_data_acceptance])


def test_unknown_query_parameters_are_refused(api):
    for path in (V1 + "/labels?projcet=default", V1 + "/jobs?kind=sample&=null", V1 + "/policies?x=1",
                 V1 + "/exports/dpo?rulee=soft"):
        response = api.client.get(path, headers=auth(api.tokens["admin"]))
        assert response.status_code in (400, 422), (path, response.text)
        assert "error" in response.json()
    ok = api.client.get(V1 + "/labels?project=default&limit=5", headers=auth(api.tokens["admin"]))
    assert ok.status_code == 200
