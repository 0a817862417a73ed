"""The annotation endpoints of the HTTP API (claim, label, label-and-next) in-process on SQLite and
Postgres, the Python client's methods for them against a real uvicorn server, and the speed-ups of
the API's hot path that must not change behaviour: one token query per request, settings read
again when the environment changes, a revoked token refused at the next request."""
from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import uvicorn
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from api.auth import api_settings
from api.server import api_routes
from db.engine import session_scope
from db.models import ApiToken, Item, Label, User
from feedback import gold
from feedback.actors import CLI
from feedback.client import ApiError, Client
from feedback.tokens import create_token, revoke_token
from testkit.factories import make_items, make_users, set_queue
from testkit.local_servers import free_port

V1 = "/api/v1"
CLAIM = V1 + "/projects/default/claim"


def label_path(assignment_id: int) -> str:
    return f"{V1}/assignments/{assignment_id}/label"


@pytest.fixture
def api(use_db, engine):
    """Two annotators with tokens over three pair items (overlap 1), the API as st.App mounts it."""
    with session_scope(engine) as s:
        set_queue(s, overlap=1, lease_seconds=600)
        make_items(s, pairs=3)
        names = [s.get(User, uid).username for uid in make_users(s, 2)]
        tokens = [create_token(session=s, actor=CLI, username=name)[1] for name in names]
    with TestClient(Starlette(routes=api_routes()), raise_server_exceptions=False) as client:
        yield SimpleNamespace(client=client, engine=engine, tokens=tokens, headers=[_auth(t) for t in tokens])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _answer(**values) -> dict:
    return {"submission_id": uuid.uuid4().hex, "preferred": "left", **values}


def _labels(engine) -> int:
    with session_scope(engine, read_only=True) as s:
        return s.scalar(select(func.count()).select_from(Label))


def test_claim_gives_the_item_as_shown_and_the_same_lease_again(api):
    item = api.client.post(CLAIM, headers=api.headers[0]).json()["item"]
    assert item["kind"] == "pair" and item["messages"][-1]["role"] == "user"
    prompt = item["messages"][-1]["content"]
    # make_items' texts end in A or B: both are shown, in this annotator's own order.
    assert sorted(item["responses"]) == [f"{prompt} :: A", f"{prompt} :: B"]
    assert api.client.post(CLAIM, headers=api.headers[0]).json()["item"]["assignment_id"] == item["assignment_id"]
    other = api.client.post(CLAIM, headers=api.headers[1]).json()["item"]
    assert other["item_id"] != item["item_id"]  # overlap 1: the leased item is not handed out twice


def test_a_retried_submit_returns_the_same_label_and_a_different_one_is_refused(api):
    item = api.client.post(CLAIM, headers=api.headers[0]).json()["item"]
    answer = _answer()
    first = api.client.post(label_path(item["assignment_id"]), json=answer, headers=api.headers[0])
    assert first.status_code == 200, first.text
    assert first.json()["submission_id"] == answer["submission_id"] and first.json()["next"] is None
    again = api.client.post(label_path(item["assignment_id"]), json=answer, headers=api.headers[0])
    assert again.status_code == 200 and again.json()["label_id"] == first.json()["label_id"]
    second = api.client.post(label_path(item["assignment_id"]), json=_answer(preferred="right"),
                             headers=api.headers[0])
    assert second.status_code == 409 and "was not recorded" in second.json()["error"]
    assert _labels(api.engine) == 1


def test_label_with_next_labels_then_hands_out_the_next_item_until_none_is_left(api):
    item = api.client.post(CLAIM, headers=api.headers[0]).json()["item"]
    seen = [item["item_id"]]
    while True:
        done = api.client.post(label_path(item["assignment_id"]), json=_answer(next=True), headers=api.headers[0])
        assert done.status_code == 200, done.text
        item = done.json()["next"]
        if item is None:
            break
        seen.append(item["item_id"])
    assert len(seen) == len(set(seen)) == 3 and _labels(api.engine) == 3
    assert done.json()["next_refused"] is None
    assert api.client.post(CLAIM, headers=api.headers[0]).json() == {"item": None}


def test_refusals_are_json_with_the_right_status(api):
    item = api.client.post(CLAIM, headers=api.headers[0]).json()["item"]
    path = label_path(item["assignment_id"])
    cases = [
        (api.client.post(CLAIM), 401),
        (api.client.post(CLAIM, headers=_auth("fb_not-a-token")), 401),
        (api.client.post(V1 + "/projects/no-such/claim", headers=api.headers[0]), 404),
        (api.client.post(path, json=_answer(), headers=api.headers[1]), 400),  # not their lease
        (api.client.post(path, json=_answer(thumb="up"), headers=api.headers[0]), 400),  # two answers
        (api.client.post(path, json={"submission_id": uuid.uuid4().hex}, headers=api.headers[0]), 400),  # none
        (api.client.post(path, json=_answer(preferred="upwards"), headers=api.headers[0]), 422),
        (api.client.post(path, json=_answer(submission_id="short"), headers=api.headers[0]), 422),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]
    assert "not assigned to you" in cases[3][0].json()["error"]
    assert _labels(api.engine) == 0


def test_an_answer_that_pauses_the_annotator_is_kept_and_no_next_item_comes(api):
    """Gold items only (rate 1), each answered wrongly: the second wrong answer pauses them
    (gold_min_answers 1: warned after one miss, paused after two)."""
    with session_scope(api.engine) as s:
        set_queue(s, gold_rate=1.0, gold_min_answers=1, gold_min_accuracy=1.0)
        for item_id in s.scalars(select(Item.id).order_by(Item.id).limit(2)):
            gold.mark_gold(session=s, actor=CLI, item_id=item_id, answer="a")
    item = api.client.post(CLAIM, headers=api.headers[0]).json()["item"]
    for _ in range(2):
        wrong = "left" if item["responses"][0].endswith(":: B") else "right"  # the shown side of response b
        done = api.client.post(label_path(item["assignment_id"]), json=_answer(preferred=wrong, next=True),
                               headers=api.headers[0])
        assert done.status_code == 200, done.text
        item = done.json()["next"]
    assert item is None and "paused" in done.json()["next_refused"]
    assert _labels(api.engine) == 2
    refused = api.client.post(CLAIM, headers=api.headers[0])
    assert refused.status_code == 400 and "paused" in refused.json()["error"]


def test_a_revoked_token_is_refused_at_the_next_request(api):
    assert api.client.post(CLAIM, headers=api.headers[0]).status_code == 200
    with session_scope(api.engine) as s:
        token_id = s.scalar(select(ApiToken.id).order_by(ApiToken.id).limit(1))
        revoke_token(session=s, actor=CLI, token_id=token_id)
    refused = api.client.post(CLAIM, headers=api.headers[0])
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]


def test_settings_are_read_again_when_the_environment_changes(use_db, monkeypatch):
    monkeypatch.setenv("API_RATE_LIMIT_PER_MINUTE", "7")
    assert api_settings().api_rate_limit_per_minute == 7
    assert api_settings() is api_settings()  # unchanged environment: not built again
    monkeypatch.setenv("API_RATE_LIMIT_PER_MINUTE", "8")
    assert api_settings().api_rate_limit_per_minute == 8
    monkeypatch.delenv("API_RATE_LIMIT_PER_MINUTE")
    assert api_settings().api_rate_limit_per_minute == 600


@pytest.fixture
def served(api):
    """The API application behind a real uvicorn on a free port, for the stdlib client."""
    port = free_port()
    app = Starlette(routes=api_routes())  # /api/v1, as the app serves it
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield SimpleNamespace(api=api, url=f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_python_client_claims_and_labels(served):
    client = Client(served.url, served.api.tokens[0])
    item = client.claim("default")
    assert item is not None and item["kind"] == "pair"
    submission = uuid.uuid4().hex
    done = client.label(item["assignment_id"], submission_id=submission, preferred="left", next=True)
    assert done["submission_id"] == submission and done["next"]["item_id"] != item["item_id"]
    assert client.label(item["assignment_id"], submission_id=submission, preferred="left")["label_id"] \
        == done["label_id"]
    with pytest.raises(ApiError) as refused:
        client.label(item["assignment_id"], submission_id=uuid.uuid4().hex, preferred="right")
    assert refused.value.status == 409
