"""Webhooks end to end against a local HTTP receiver started here: signatures checked with the
derived secret, events from a real training round, judge job and refill, retries with backoff
(the clock advanced, never slept), giving up, deactivation, no secret in the database or the
logs, the admin page and the CLI."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import stat
import threading
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select, update

from db.engine import session_scope
from db.models import Base, Job, Prompt, User, Webhook, WebhookDelivery, utcnow
from feedback import jobs, webhooks
from feedback.actors import CLI, Actor
from feedback.errors import PermissionDenied, UserError
from feedback.launchers import LAUNCHERS
from feedback.policies import ensure_base_policy
from feedback.prompts import canonical_messages, content_hash
from feedback.settings import PROJECT_ROOT

SERVER_KEY = "test-server-key-" + "k" * 32


@pytest.fixture(autouse=True)
def server_key(monkeypatch, tmp_path):
    """A known server key, and a key file that is never the project's own var/secret_key."""
    monkeypatch.setenv("SECRET_KEY", SERVER_KEY)
    monkeypatch.setattr(webhooks, "SECRET_KEY_FILE", tmp_path / "secret_key")


def expected_secret(webhook_id: int, key: str = SERVER_KEY) -> str:
    """Computed here, not with the module's helper: HMAC-SHA256(server key, "webhook:<id>")."""
    return hmac.new(key.encode(), f"webhook:{webhook_id}".encode(), hashlib.sha256).hexdigest()


def signed_by(secret: str, body: bytes, header: str) -> bool:
    want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, header) and webhooks.verify(secret, body, header)


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """What the local server got, and the statuses it answers with next (then 200)."""

    def __init__(self):
        self.got: list[Received] = []
        self.statuses: list[int] = []
        self.always: int | None = None
        self.delay_s = 0.0
        self.url = ""

    def check(self, webhook_id: int) -> list[dict]:
        """Every request was a signed POST for this webhook; their JSON bodies."""
        for r in self.got:
            assert r.headers["content-type"] == "application/json"
            assert signed_by(expected_secret(webhook_id), r.body, r.headers["x-feedback-signature"]), r
            assert r.headers["x-feedback-event"] == r.json["event"]
            assert r.headers["x-feedback-delivery"] == str(r.json["id"])
        return [r.json for r in self.got]


@pytest.fixture
def receiver():
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.got.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status = rec.always or (rec.statuses.pop(0) if rec.statuses else 200)
            time.sleep(rec.delay_s)
            answer = b"ok" if status < 300 else b"nope"
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield rec
    server.shutdown()
    server.server_close()


def add_hook(engine, url: str, events: list[str]) -> tuple[int, str]:
    with session_scope(engine) as s:
        webhook, secret = webhooks.create_webhook(session=s, actor=CLI, url=url, events=events, description="t")
        return webhook.id, secret


def emit(engine, event: str, payload: dict) -> int:
    with session_scope(engine) as s:
        return webhooks.emit(session=s, event=event, payload=payload)


def deliveries(engine) -> list[WebhookDelivery]:
    with session_scope(engine, read_only=True) as s:
        return list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


# --- signing, creating, validating --------------------------------------------------------------


def test_a_signed_post_reaches_the_receiver(engine, receiver):
    hook_id, secret = add_hook(engine, receiver.url, ["judge.finished", "round.finished"])
    assert secret == expected_secret(hook_id)
    assert emit(engine, "judge.finished", {"job_id": 7, "labelled": 3}) == 1
    assert emit(engine, "gate.result", {"job_id": 8}) == 0  # not subscribed
    [pending] = deliveries(engine)
    assert (pending.status, pending.attempts, pending.event) == ("pending", 0, "judge.finished")
    assert receiver.got == []  # emitting never touches the network

    report = webhooks.deliver_due(engine=engine, actor=CLI)
    assert (report.delivered, report.retrying, report.failed) == (1, 0, 0)
    [body] = receiver.check(hook_id)
    assert body == {"id": pending.id, "event": "judge.finished", "created_at": pending.created_at.isoformat(),
                    "data": {"job_id": 7, "labelled": 3}}
    assert receiver.got[0].path == "/hook"
    [done] = deliveries(engine)
    assert (done.status, done.attempts, done.response_status, done.error) == ("delivered", 1, 200, None)
    assert done.delivered_at is not None
    assert webhooks.deliver_due(engine=engine, actor=CLI).delivered == 0 and len(receiver.got) == 1


def test_verify_refuses_a_changed_body_or_a_missing_header():
    body = b'{"a":1}'
    header = webhooks.signature("s3cret", body)
    assert webhooks.verify("s3cret", body, header)
    assert not webhooks.verify("s3cret", b'{"a":2}', header)
    assert not webhooks.verify("other", body, header)
    assert not webhooks.verify("s3cret", body, None)


@pytest.mark.parametrize("url, events, message", [
    ("ftp://example.com/x", ["queue.low"], "http:// or https://"),
    ("javascript:alert(1)", ["queue.low"], "http:// or https://"),
    ("https://", ["queue.low"], "host name"),
    ("https://user:pw@example.com/x", ["queue.low"], "no credentials"),
    ("https://example.com/a b", ["queue.low"], "without spaces"),
    ("https://example.com/x", ["queue.empty"], "Unknown event"),
    ("https://example.com/x", [" "], "at least one event"),
])
def test_create_refuses_bad_urls_and_events(engine, url, events, message):
    with pytest.raises(UserError, match=message), session_scope(engine) as s:
        webhooks.create_webhook(session=s, actor=CLI, url=url, events=events)
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(Webhook)) is None


def test_only_admins_manage_webhooks(engine):
    with session_scope(engine) as s:
        s.add_all([User(username="ann", role="annotator", password_hash="!"),
                   User(username="rev", role="reviewer", password_hash="!")])
    hook_id, _ = add_hook(engine, "https://example.com/x", ["queue.low"])
    calls = [lambda s, me: webhooks.create_webhook(session=s, actor=me, url="https://e.com", events=["queue.low"]),
             lambda s, me: webhooks.list_webhooks(session=s, actor=me),
             lambda s, me: webhooks.reveal_secret(session=s, actor=me, webhook_id=hook_id),
             lambda s, me: webhooks.deactivate(session=s, actor=me, webhook_id=hook_id),
             lambda s, me: webhooks.recent_deliveries(session=s, actor=me),
             lambda s, me: webhooks.deliver_due(engine=engine, actor=me)]
    for name in ("ann", "rev"):
        with session_scope(engine) as s:
            me = Actor.signed_in(s.scalar(select(User).where(User.username == name)))
            for call in calls:
                with pytest.raises(PermissionDenied):
                    call(s, me)
    with session_scope(engine, read_only=True) as s:
        assert [w.active for w in s.scalars(select(Webhook))] == [True]


def test_events_subscribed_are_kept_in_a_fixed_order_and_audited_without_the_url_path(engine):
    hook_id, _ = add_hook(engine, "https://hooks.example.com/T0K3N/path", ["queue.low", "round.finished",
                                                                          "queue.low"])
    from db.models import AuditLog

    with session_scope(engine, read_only=True) as s:
        assert s.get(Webhook, hook_id).events == ["round.finished", "queue.low"]
        entry = s.scalar(select(AuditLog).where(AuditLog.action == "webhook.create"))
    assert entry.details == {"host": "hooks.example.com", "events": ["round.finished", "queue.low"]}


# --- retries ------------------------------------------------------------------------------------


def test_retries_with_backoff_then_delivers_the_same_signed_body(engine, receiver):
    receiver.statuses = [500, 503]
    hook_id, _ = add_hook(engine, receiver.url, ["queue.low"])
    emit(engine, "queue.low", {"project": "default", "open_items": 1})
    t0 = utcnow() + timedelta(seconds=1)

    assert webhooks.deliver_due(engine=engine, actor=CLI, now=t0).retrying == 1
    [d] = deliveries(engine)
    assert (d.status, d.attempts, d.response_status, d.error) == ("pending", 1, 500, "HTTP 500: nope")
    assert d.next_attempt_at == t0 + timedelta(seconds=30)
    assert webhooks.deliver_due(engine=engine, actor=CLI, now=t0 + timedelta(seconds=29)).retrying == 0
    assert len(receiver.got) == 1  # not due yet

    t1 = t0 + timedelta(seconds=30)
    assert webhooks.deliver_due(engine=engine, actor=CLI, now=t1).retrying == 1
    [d] = deliveries(engine)
    assert (d.attempts, d.response_status, d.next_attempt_at) == (2, 503, t1 + timedelta(minutes=2))
    assert webhooks.deliver_due(engine=engine, actor=CLI, now=t1 + timedelta(seconds=119)).retrying == 0

    t2 = t1 + timedelta(minutes=2)
    assert webhooks.deliver_due(engine=engine, actor=CLI, now=t2).delivered == 1
    [d] = deliveries(engine)
    assert (d.status, d.attempts, d.response_status, d.error, d.delivered_at) == ("delivered", 3, 200, None, t2)
    bodies = receiver.check(hook_id)
    assert len(bodies) == 3 and len({r.body for r in receiver.got}) == 1
    assert len({r.headers["x-feedback-signature"] for r in receiver.got}) == 1


def test_backoff_grows_four_times_each_attempt():
    assert [webhooks.backoff(n).total_seconds() for n in range(1, 6)] == [30, 120, 480, 1920, 7680]


def test_gives_up_after_the_last_attempt(engine, receiver):
    receiver.always = 500
    add_hook(engine, receiver.url, ["gate.result"])
    emit(engine, "gate.result", {"job_id": 1})
    now = utcnow() + timedelta(seconds=1)
    for attempt in range(1, webhooks.MAX_ATTEMPTS + 1):
        report = webhooks.deliver_due(engine=engine, actor=CLI, now=now)
        assert (report.retrying, report.failed) == ((1, 0) if attempt < webhooks.MAX_ATTEMPTS else (0, 1))
        now += webhooks.backoff(attempt)
    [d] = deliveries(engine)
    assert (d.status, d.attempts, d.response_status) == ("failed", webhooks.MAX_ATTEMPTS, 500)
    webhooks.deliver_due(engine=engine, actor=CLI, now=now + timedelta(days=1))
    assert len(receiver.got) == webhooks.MAX_ATTEMPTS


def test_an_unreachable_or_slow_receiver_is_an_error_to_retry(engine, receiver):
    with socket.socket() as sock:  # a port nobody listens on any more
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    add_hook(engine, f"http://127.0.0.1:{closed}/gone", ["round.finished"])
    add_hook(engine, receiver.url, ["round.finished"])
    emit(engine, "round.finished", {"job_id": 2})
    receiver.delay_s = 1.0
    report = webhooks.deliver_due(engine=engine, actor=CLI, timeout_s=0.2)
    assert report.retrying == 2
    gone, slow = deliveries(engine)
    assert gone.response_status is None and "refused" in gone.error.lower()
    assert slow.response_status is None and "timed out" in slow.error.lower()
    assert gone.status == slow.status == "pending" and gone.attempts == slow.attempts == 1


def test_two_deliverers_post_a_delivery_once(engine, receiver):
    """The claim is a compare-and-set on the attempt count: a second deliverer that read the same
    due row gets nothing."""
    add_hook(engine, receiver.url, ["queue.low"])
    emit(engine, "queue.low", {})
    [d] = deliveries(engine)
    assert webhooks._claim(engine, d.id, 0, utcnow()) is not None
    assert webhooks._claim(engine, d.id, 0, utcnow()) is None
    assert webhooks.deliver_due(engine=engine, actor=CLI).delivered == 0  # leased meanwhile
    assert receiver.got == []


# --- active or not ------------------------------------------------------------------------------


def test_a_deactivated_webhook_gets_nothing(engine, receiver):
    on_id, _ = add_hook(engine, receiver.url + "?on", ["round.finished"])
    off_id, _ = add_hook(engine, receiver.url + "?off", ["round.finished"])
    with session_scope(engine) as s:
        webhooks.deactivate(session=s, actor=CLI, webhook_id=off_id)
    assert emit(engine, "round.finished", {"job_id": 1}) == 1
    # Pending when switched off: failed at once, never posted.
    with session_scope(engine) as s:
        webhooks.deactivate(session=s, actor=CLI, webhook_id=on_id)
    assert emit(engine, "round.finished", {"job_id": 2}) == 0
    assert webhooks.deliver_due(engine=engine, actor=CLI).delivered == 0
    [d] = deliveries(engine)
    assert (d.webhook_id, d.status, d.attempts, d.error) == (on_id, "failed", 0, "webhook deactivated before delivery")
    with session_scope(engine) as s:
        webhooks.set_active(session=s, actor=CLI, webhook_id=on_id, active=True)
    emit(engine, "round.finished", {"job_id": 3})
    assert webhooks.deliver_due(engine=engine, actor=CLI).delivered == 1
    assert [(r.path, r.json["data"]) for r in receiver.got] == [("/hook?on", {"job_id": 3})]


# --- events where they happen -------------------------------------------------------------------


@pytest.fixture
def fake_stage(registered, monkeypatch, tmp_path):
    """A training stage that trains nothing, through the real stage registry: a round runs its
    real path (policy version, gate, job ending) in well under a second."""
    from training.stages import STAGES, Stage
    from training.stages.base import CommonConfig, StageResult

    @dataclass
    class FakeConfig(CommonConfig):
        pass

    def main(cfg, inputs):
        inputs.output_dir.mkdir(parents=True, exist_ok=True)
        return StageResult(model_dir=inputs.output_dir, metrics={"train_loss": 0.25})

    registered(STAGES, "fake", Stage(config=FakeConfig, main=main))
    monkeypatch.setenv("POLICIES_DIR", str(tmp_path / "policies"))


def test_a_training_round_sends_its_gate_result_and_round_finished(engine, receiver, fake_stage):
    from training.rounds import RoundConfig, start_round

    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        messages = canonical_messages("What is 2 plus 2?", None)
        s.add(Prompt(text=messages[0]["content"], messages=messages, content_hash=content_hash(messages),
                     reference="4", split="train"))  # no val prompts: the gate stays undecided
    hook_id, _ = add_hook(engine, receiver.url, ["round.finished", "gate.result"])
    with session_scope(engine) as s:
        job = start_round(session=s, config=RoundConfig(stage="fake"), actor=CLI)
    done = jobs.run_job(engine=engine, job_id=job.id)
    assert done.status == "succeeded", done.error
    # The worker delivered them itself, right after the job: no deliver call here.
    gate, finished = receiver.check(hook_id)
    assert gate["event"] == "gate.result" and finished["event"] == "round.finished"
    assert gate["data"]["job_id"] == job.id and gate["data"]["policy_version"] == "v1"
    assert gate["data"]["baseline"] == "v0" and gate["data"]["decision"] == "undecided"
    assert gate["data"]["passed"] is False and gate["data"]["reasons"] == ["no val prompts to compare on"]
    assert finished["data"] == {"job_id": job.id, "kind": "train", "status": "succeeded",
                                "result": {"stage": "fake", "policy_version": "v1", "parent": "v0"}}
    assert {d.status for d in deliveries(engine)} == {"delivered"}


def test_a_failed_round_still_says_it_finished(engine, receiver, fake_stage):
    from training.rounds import RoundConfig, start_round

    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)  # and no prompts with references: nothing to train on
    hook_id, _ = add_hook(engine, receiver.url, ["round.finished", "gate.result"])
    with session_scope(engine) as s:
        job = start_round(session=s, config=RoundConfig(stage="fake"), actor=CLI)
    assert jobs.run_job(engine=engine, job_id=job.id).status == "failed"
    [finished] = receiver.check(hook_id)
    assert finished["event"] == "round.finished"
    assert finished["data"] == {"job_id": job.id, "kind": "train", "status": "failed", "result": {}}


class TieJudge:
    """Calls every pair a tie, in either order; a known (zero) price."""

    name, model, price_per_mtok = "tie", "tie-judge", (0.0, 0.0)

    def complete(self, request):
        from judges.backends import JudgeReply

        verdict = {"reasoning": "same", "winner": "tie"}
        return JudgeReply(text=json.dumps(verdict), structured=verdict, model=self.model, input_tokens=10,
                          output_tokens=5, cost_usd=0.0)


def test_a_judge_job_sends_judge_finished(engine, receiver, registered, caplog):
    from judges.backends import BACKENDS
    from judges.batch import JudgeConfig
    from judges.constitutions import ensure_shipped
    from testkit.factories import make_items

    registered(BACKENDS, "tie", lambda **kw: TieJudge())
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        make_items(s, pairs=3)
        job_id = jobs.create_job(session=s, kind="judge", config=asdict(JudgeConfig(backend="tie")), actor=CLI).id
    hook_id, secret = add_hook(engine, receiver.url, ["judge.finished"])
    caplog.set_level(logging.DEBUG)
    done = jobs.run_job(engine=engine, job_id=job_id)
    assert done.status == "succeeded", done.error
    [body] = receiver.check(hook_id)
    result = body["data"]["result"]
    assert body["data"]["job_id"] == job_id and body["data"]["status"] == "succeeded"
    assert (result["judged"], result["labelled"], result["failed"], result["model"]) == (3, 3, 0, "tie-judge")
    assert "outcomes" not in result  # nested tables stay in the job row
    assert secret not in caplog.text and SERVER_KEY not in caplog.text
    assert f"webhook {hook_id} delivery" in caplog.text  # it did log the delivery


class RecordingLauncher:
    name = "recording"
    launched: list[int] = []

    def launch(self, *, job_id, kind, database_url, env, log_path):
        RecordingLauncher.launched.append(job_id)
        return "recorded"


def test_queue_low_is_sent_once_per_crossing_not_per_claim(engine, db_url, receiver, registered, monkeypatch):
    from feedback import queue
    from feedback.refill import maybe_refill
    from testkit.factories import make_items, make_users, set_queue

    registered(LAUNCHERS, "recording", RecordingLauncher)
    monkeypatch.setenv("JOB_LAUNCHER", "recording")
    hook_id, _ = add_hook(engine, receiver.url, ["queue.low"])
    with session_scope(engine) as s:
        project = set_queue(s, overlap=1, refill_below=4)
        project_id = project.id
        make_items(s, pairs=2)
        users = make_users(s, 3)

    def refill() -> int | None:
        return maybe_refill(engine=engine, database_url=db_url, project_id=project_id)

    def finish_refills() -> None:  # as if each refill's worker ran and sampled nothing
        with session_scope(engine) as s:
            s.execute(update(Job).where(Job.kind == "sample").values(status="succeeded", finished_at=utcnow()))

    first = refill()
    assert first is not None and refill() is None  # the refill is queued: no second job, no second event
    finish_refills()
    assert refill() is not None  # the pool never rose: a new refill, but no new event
    finish_refills()
    with session_scope(engine) as s:
        make_items(s, pairs=4)  # 6 open: above the mark
    assert refill() is None
    for uid in users:  # three claims (leases) take it to 3 open: below again, a second crossing
        with session_scope(engine) as s:
            assert queue.claim_next(session=s, user=s.get(User, uid), project=project_id) is not None
    third = refill()
    assert third is not None
    assert len(deliveries(engine)) == 2
    webhooks.deliver_due(engine=engine, actor=CLI)
    bodies = receiver.check(hook_id)
    assert [b["data"] for b in bodies] == [
        {"project": "default", "project_id": project_id, "open_items": 2, "refill_below": 4, "refill_job_id": first},
        {"project": "default", "project_id": project_id, "open_items": 3, "refill_below": 4, "refill_job_id": third},
    ]


# --- secrets ------------------------------------------------------------------------------------


def test_no_secret_in_the_database_or_the_logs(engine, receiver, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    hook_id, secret = add_hook(engine, receiver.url, ["gate.result"])
    with session_scope(engine) as s:
        assert webhooks.reveal_secret(session=s, actor=CLI, webhook_id=hook_id) == secret
    emit(engine, "gate.result", {"job_id": 1})
    receiver.statuses = [500]
    webhooks.deliver_due(engine=engine, actor=CLI)
    webhooks.deliver_due(engine=engine, actor=CLI, now=utcnow() + timedelta(minutes=1))
    receiver.check(hook_id)
    assert len(receiver.got) == 2
    with session_scope(engine, read_only=True) as s:
        dump = "\n".join(repr(tuple(row)) for table in Base.metadata.sorted_tables
                         for row in s.execute(table.select()))
    assert f"webhook:{hook_id}" in dump and "delivered" in dump  # the scan sees what it should
    for leaked in (secret, SERVER_KEY):
        assert leaked not in dump
        assert leaked not in caplog.text
        assert leaked not in "".join(capsys.readouterr())


def test_the_server_key_is_generated_once_into_a_private_file(monkeypatch, tmp_path):
    monkeypatch.delenv("SECRET_KEY")
    path = tmp_path / "var" / "secret_key"
    monkeypatch.setattr(webhooks, "SECRET_KEY_FILE", path)
    assert webhooks.server_secret_key(create=False) is None  # a deliverer never makes its own
    key = webhooks.server_secret_key(create=True)
    assert len(key) >= 48 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert webhooks.server_secret_key(create=True) == key == webhooks.server_secret_key(create=False)
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary file left
    monkeypatch.setenv("SECRET_KEY", "short")
    with pytest.raises(UserError, match="too short"):
        webhooks.server_secret_key(create=True)
    monkeypatch.setenv("SECRET_KEY", SERVER_KEY)
    assert webhooks.server_secret_key(create=False) == SERVER_KEY.encode()  # the environment wins


def test_a_worker_without_the_key_leaves_deliveries_pending(engine, receiver, monkeypatch, tmp_path):
    add_hook(engine, receiver.url, ["queue.low"])
    emit(engine, "queue.low", {})
    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.setattr(webhooks, "SECRET_KEY_FILE", tmp_path / "elsewhere" / "secret_key")
    report = webhooks.deliver_due(engine=engine, actor=Actor.worker(1))
    assert report.skipped and "left pending" in report.skipped
    [d] = deliveries(engine)
    assert (d.status, d.attempts) == ("pending", 0) and receiver.got == []
    assert not (tmp_path / "elsewhere").exists()


# --- the admin page and the CLI -----------------------------------------------------------------


@pytest.fixture
def admin_app(use_db, engine, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from feedback.users import create_user
    from testkit.factories import set_queue

    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        create_user(session=s, username="root", role="admin", password="admin-password", actor=CLI)
        set_queue(s, kind="pair", refill_below=0)  # signing in lands on Compare: no refill
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30).run()
    at.text_input[0].input("root")
    at.text_input[1].input("admin-password")
    at.button[0].click().run()
    return at


def test_admin_page_creates_toggles_and_shows_the_delivery_log(admin_app, engine, receiver):
    at = admin_app.switch_page("pages/webhooks.py").run()
    assert not at.exception
    assert "No webhooks yet." in [c.value for c in at.caption]
    next(t for t in at.text_input if t.label == "URL").input(receiver.url)
    at.multiselect[0].set_value(["judge.finished", "queue.low"])
    next(b for b in at.button if b.label == "Create webhook").click().run()
    assert not at.exception
    with session_scope(engine, read_only=True) as s:
        [hook] = s.scalars(select(Webhook)).all()
    assert hook.events == ["queue.low", "judge.finished"] and hook.active
    assert [c.value for c in at.code] == [expected_secret(hook.id)]  # shown once ...
    at.run()
    assert [c.value for c in at.code] == []  # ... and gone on the next run
    next(b for b in at.button if b.label == "Show signing secret").click().run()
    assert [c.value for c in at.code] == [expected_secret(hook.id)]

    emit(engine, "judge.finished", {"job_id": 5, "summary": "**bold** [link](http://x)"})
    next(b for b in at.button if b.label == "Deliver due now").click().run()
    assert not at.exception
    assert any("1 delivered" in i.value for i in at.info)
    log = at.dataframe[-1].value
    assert list(log["event"]) == ["judge.finished"] and list(log["status"]) == ["delivered"]
    assert list(log["attempts"]) == [1] and list(log["response"]) == [200]
    assert "[link](http://x)" in log["payload"][0]  # payload text as data in the table
    assert not any("link" in m.value for m in at.markdown)
    receiver.check(hook.id)

    at.toggle[0].set_value(False).run()
    assert not at.exception
    with session_scope(engine, read_only=True) as s:
        assert not s.get(Webhook, hook.id).active


def test_cli_adds_lists_delivers_and_logs(use_db, engine, receiver, capsys):
    from cli import main

    assert main(["webhooks", "add", receiver.url, "--events", "queue.low,gate.result", "--events",
                 "judge.finished"]) == 0
    out = capsys.readouterr().out
    with session_scope(engine, read_only=True) as s:
        [hook] = s.scalars(select(Webhook)).all()
    assert expected_secret(hook.id) in out and hook.events == ["gate.result", "queue.low", "judge.finished"]
    assert main(["webhooks", "list"]) == 0
    assert receiver.url in capsys.readouterr().out
    emit(engine, "queue.low", {"project": "default"})
    assert main(["webhooks", "deliver"]) == 0
    assert "1 delivered, 0 to retry, 0 failed for good" in capsys.readouterr().out
    receiver.check(hook.id)
    assert main(["webhooks", "log"]) == 0
    assert "queue.low" in (log := capsys.readouterr().out) and "delivered" in log and "200" in log
    assert main(["webhooks", "secret", str(hook.id)]) == 0
    assert capsys.readouterr().out.strip() == expected_secret(hook.id)
    assert main(["webhooks", "deactivate", str(hook.id)]) == 0
    assert main(["webhooks", "add", receiver.url, "--events", "nope"]) == 2
    assert "Unknown event" in capsys.readouterr().err
