"""Webhooks: signed JSON POSTs for the events a team automates on.

`emit` is what the code where an event happens calls: it writes one pending delivery per active
webhook subscribed to the event, in the caller's transaction (no network, so an event exists
exactly when what it reports was committed). `deliver_due` posts the deliveries that are due, each
signed with its webhook's secret, and retries failures with exponential backoff until
MAX_ATTEMPTS, then marks them failed. Who calls it: a job worker right after each job of a kind
that declares SECRET_KEY among its secrets (feedback.jobs.run_job), `python -m feedback webhooks
deliver [--loop]`, and the admin page's "Deliver due now" button. Delivery is at least once:
a receiver dedupes on X-Feedback-Delivery.

A webhook's signing secret is never stored: it is HMAC-SHA256(server secret key,
"webhook:<id>"), hex. The server key is SECRET_KEY, or else a random one generated once into
var/secret_key (mode 0600). Changing the server key changes every webhook's secret.

A receiver checks `X-Feedback-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact request
body under that secret (`verify` below does it).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Webhook, WebhookDelivery, utcnow
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.settings import PROJECT_ROOT, get_settings

log = logging.getLogger(__name__)

# What a webhook can subscribe to, and what each payload holds (ids, names, figures; never
# model text or secrets).
EVENTS = {
    "round.finished": "A training round's job ended (succeeded, failed or cancelled): job id, status, stage, "
                      "the new policy version and its parent.",
    "gate.result": "The evaluation gate decided on a new policy version: decision, reasons, win rate and its "
                   "interval, accuracy against the parent's.",
    "queue.low": "A project's open items fell below its refill mark and a refill started: project, open items, "
                 "the mark, the refill job. Once per crossing, not per claim.",
    "judge.finished": "An AI-judge job ended: job id, status, pairs judged, labels written, escalated, failed, "
                      "cost.",
}
SECRET_ENV = "SECRET_KEY"  # job kinds that list it among their secrets deliver after each job
SECRET_KEY_FILE = PROJECT_ROOT / "var" / "secret_key"  # used when SECRET_KEY is unset
MIN_SECRET_KEY_CHARS = 16
MAX_ATTEMPTS = 6
FIRST_RETRY = timedelta(seconds=30)  # then x4 each time: 30 s, 2 min, 8 min, 32 min, 2 h 8 min
TIMEOUT_S = 10.0  # one POST, connect + response
# A claimed delivery is not due again for this long: two deliverers do not post it twice, and one
# that dies mid-post leaves it to the next.
CLAIM_LEASE = timedelta(seconds=TIMEOUT_S * 6)
ERROR_CHARS = 500
AFTER_JOB_LIMIT = 20  # deliveries a worker posts after its job; the rest wait for the next deliverer
URL_CHARS = 2048
DESCRIPTION_CHARS = 500

# sender(url, body, headers, timeout_s) -> (HTTP status, start of the response body); raises on a
# network error. The default posts with urllib.
Sender = Callable[[str, bytes, dict[str, str], float], tuple[int, str]]


# --- secrets -------------------------------------------------------------------------------------


def server_secret_key(*, create: bool) -> bytes | None:
    """SECRET_KEY, or the key in SECRET_KEY_FILE; with `create`, one is generated there (0600) if
    neither exists. None when there is none and `create` is off (a worker never makes its own: it
    would sign with a key nobody else knows)."""
    configured = get_settings().secret_key
    if configured is not None and configured.get_secret_value():
        value = configured.get_secret_value()
        if len(value) < MIN_SECRET_KEY_CHARS:
            raise UserError(f"SECRET_KEY is too short: use at least {MIN_SECRET_KEY_CHARS} random characters.")
        return value.encode()
    path = Path(SECRET_KEY_FILE)
    if not path.exists() and not create:
        return None
    if not path.exists():
        _generate_key_file(path)
    key = path.read_text().strip()
    if not key:
        raise UserError(f"{path} is empty: delete it (a new key is made; every webhook secret changes) or set "
                        "SECRET_KEY.")
    return key.encode()


def _generate_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48) + "\n")
    try:
        os.link(tmp, path)  # atomic, and never over a key another process wrote meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def webhook_secret(key: bytes, webhook_id: int) -> str:
    """The webhook's signing secret: HMAC-SHA256(server key, "webhook:<id>") in hex."""
    return hmac.new(key, f"webhook:{webhook_id}".encode(), hashlib.sha256).hexdigest()


def signature(secret: str, body: bytes) -> str:
    """The X-Feedback-Signature header's value for `body`: "sha256=<hex HMAC-SHA256>"."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """For receivers: does X-Feedback-Signature `header` sign exactly `body` under `secret`?"""
    return header is not None and hmac.compare_digest(signature(secret, body), header.strip())


# --- webhooks ------------------------------------------------------------------------------------


def _check_url(url: str) -> str:
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError("A webhook URL is http:// or https:// with a host name, e.g. https://hooks.example.com/feedback.")
    if parts.username or parts.password:
        raise UserError("Put no credentials in a webhook URL (it is stored and shown in clear); the receiver "
                        "checks the signature instead.")
    if len(url) > URL_CHARS or any(c.isspace() for c in url):
        raise UserError(f"A webhook URL is at most {URL_CHARS} characters, without spaces.")
    return url


def _check_events(events: list[str]) -> list[str]:
    wanted = {e.strip() for e in events if e.strip()}
    unknown = wanted - set(EVENTS)
    if unknown:
        raise UserError(f"Unknown event(s) {', '.join(sorted(unknown))}; choose from {', '.join(EVENTS)}.")
    if not wanted:
        raise UserError(f"Subscribe to at least one event: {', '.join(EVENTS)}.")
    return [e for e in EVENTS if e in wanted]


def create_webhook(*, session: Session, actor: Actor, url: str, events: list[str],
                   description: str = "") -> tuple[Webhook, str]:
    """A new active webhook and its signing secret (admins). Show the secret once; an admin can
    ask for it again (`reveal_secret`)."""
    actor.require("admin")
    url, events = _check_url(url), _check_events(events)
    if len(description) > DESCRIPTION_CHARS:
        raise UserError(f"A webhook description is at most {DESCRIPTION_CHARS} characters.")
    key = server_secret_key(create=True)
    webhook = Webhook(url=url, events=events, description=description.strip(), active=True,
                      created_by_id=actor.user_id)
    session.add(webhook)
    session.flush()
    # The host only: a URL can carry a token in its path (chat services' incoming webhooks do).
    actor.record(session=session, action="webhook.create", target=f"webhook:{webhook.id}",
                 details={"host": urllib.parse.urlsplit(url).hostname, "events": events})
    return webhook, webhook_secret(key, webhook.id)


def reveal_secret(*, session: Session, actor: Actor, webhook_id: int) -> str:
    """The webhook's signing secret again (admins); the audit log records who asked."""
    actor.require("admin")
    webhook = _get(session, webhook_id)
    actor.record(session=session, action="webhook.secret_shown", target=f"webhook:{webhook.id}")
    return webhook_secret(server_secret_key(create=True), webhook.id)


def list_webhooks(*, session: Session, actor: Actor) -> list[Webhook]:
    actor.require("admin")
    return list(session.scalars(select(Webhook).order_by(Webhook.id)))


def set_active(*, session: Session, actor: Actor, webhook_id: int, active: bool) -> Webhook:
    """Switch a webhook on or off (admins). Switched off, its pending deliveries fail at once and
    no new ones are made; switched on again, it gets the events from then on."""
    actor.require("admin")
    webhook = _get(session, webhook_id)
    if webhook.active == active:
        return webhook
    webhook.active = active
    if not active:
        session.execute(update(WebhookDelivery)
                        .where(WebhookDelivery.webhook_id == webhook.id, WebhookDelivery.status == "pending")
                        .values(status="failed", error="webhook deactivated before delivery"))
    actor.record(session=session, action="webhook.activate" if active else "webhook.deactivate",
                 target=f"webhook:{webhook.id}")
    return webhook


def deactivate(*, session: Session, actor: Actor, webhook_id: int) -> Webhook:
    return set_active(session=session, actor=actor, webhook_id=webhook_id, active=False)


def recent_deliveries(*, session: Session, actor: Actor, limit: int = 100) -> list[WebhookDelivery]:
    """The delivery log, newest first (admins)."""
    actor.require("admin")
    return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)))


def _get(session: Session, webhook_id: int) -> Webhook:
    webhook = session.get(Webhook, webhook_id)
    if webhook is None:
        raise UserError(f"No webhook {webhook_id}.")
    return webhook


# --- events --------------------------------------------------------------------------------------


def emit(*, session: Session, event: str, payload: dict[str, Any]) -> int:
    """Queue `event` for every active webhook subscribed to it, in the caller's transaction; the
    number of deliveries queued. Cheap: one query, no network."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    json.dumps(payload)  # not serialisable: fail here, where the caller is, not in the deliverer
    hooks = [w for w in session.scalars(select(Webhook).where(Webhook.active)) if event in (w.events or [])]
    session.add_all(WebhookDelivery(webhook_id=w.id, event=event, payload=payload, status="pending", attempts=0,
                                    next_attempt_at=utcnow()) for w in hooks)
    return len(hooks)


def job_payload(job: Any) -> dict[str, Any]:
    """A finished job's event payload: its id, kind and status, and the scalar figures of its
    result (counts, cost, names; nested tables and texts stay in the job row)."""
    result = {k: v for k, v in (job.result or {}).items()
              if isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) <= 300) or v is None}
    return {"job_id": job.id, "kind": job.kind, "status": job.status, "result": result}


# --- delivery ------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect is the receiver's answer, not followed
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """The default sender: one POST with urllib; (status, start of the response body)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return response.status, response.read(200).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:  # 4xx, 5xx and the 3xx not followed
        try:
            text = exc.read(200).decode("utf-8", "replace")
        except Exception:
            text = ""
        finally:
            exc.close()
        return exc.code, text


def body_of(delivery: WebhookDelivery) -> bytes:
    """The exact bytes posted for a delivery: the same on every attempt, so is the signature."""
    envelope = {"id": delivery.id, "event": delivery.event, "created_at": delivery.created_at.isoformat(),
                "data": delivery.payload}
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def backoff(attempts: int) -> timedelta:
    """Wait after the `attempts`-th failed attempt: 30 s, 2 min, 8 min, ..."""
    return FIRST_RETRY * 4 ** (attempts - 1)


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: str | None = None  # why nothing was tried (no server key here)

    def summary(self) -> str:
        if self.skipped:
            return self.skipped
        return f"{self.delivered} delivered, {self.retrying} to retry, {self.failed} failed for good"


def _claim(engine: Engine, delivery_id: int, attempts: int, now: datetime):
    """Take one due delivery (compare-and-set on its attempt count); its url, body and webhook id,
    or None when another deliverer took it first or its webhook was switched off meanwhile."""
    with session_scope(engine) as s:
        taken = s.execute(update(WebhookDelivery)
                          .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                                 WebhookDelivery.attempts == attempts)
                          .values(attempts=attempts + 1, next_attempt_at=now + CLAIM_LEASE)).rowcount
        if taken != 1:
            return None
        delivery = s.get(WebhookDelivery, delivery_id)
        webhook = s.get(Webhook, delivery.webhook_id)
        if not webhook.active:
            delivery.status, delivery.error = "failed", "webhook deactivated before delivery"
            return None
        return webhook.url, body_of(delivery), webhook.id, delivery.event


def deliver_due(*, engine: Engine, actor: Actor, now: datetime | None = None, sender: Sender | None = None,
                limit: int = 50, timeout_s: float = TIMEOUT_S) -> DeliveryReport:
    """Post up to `limit` due deliveries, oldest first, and record how each went. `now` stands in
    for the clock (tests advance it instead of sleeping)."""
    actor.require("admin")
    clock = (lambda: now) if now is not None else utcnow
    report = DeliveryReport()
    with session_scope(engine, read_only=True) as s:
        due = s.execute(select(WebhookDelivery.id, WebhookDelivery.attempts)
                        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= clock())
                        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)).all()
    if not due:
        return report
    key = server_secret_key(create=False)
    if key is None:
        report.skipped = (f"{len(due)} due deliveries left pending: no SECRET_KEY here and no {SECRET_KEY_FILE} "
                          "(run `webhooks deliver` where the app runs)")
        log.warning(report.skipped)
        return report
    send = sender or post
    for delivery_id, attempts in due:
        claimed = _claim(engine, delivery_id, attempts, clock())
        if claimed is None:
            continue
        url, body, webhook_id, event = claimed
        headers = {"Content-Type": "application/json", "User-Agent": "feedback-webhooks/1",
                   "X-Feedback-Event": event, "X-Feedback-Delivery": str(delivery_id),
                   "X-Feedback-Signature": signature(webhook_secret(key, webhook_id), body)}
        status, error = None, None
        try:
            status, text = send(url, body, headers, timeout_s)
            if not 200 <= status < 300:
                error = f"HTTP {status}: {text}".strip().rstrip(":")
        except Exception as exc:  # refused, timed out, bad TLS ...: the next attempt may do better
            error = f"{type(exc).__name__}: {exc}"
        attempt = attempts + 1
        with session_scope(engine) as s:
            delivery = s.get(WebhookDelivery, delivery_id)
            delivery.response_status, delivery.error = status, error[:ERROR_CHARS] if error else None
            if error is None:
                delivery.status, delivery.delivered_at = "delivered", clock()
                report.delivered += 1
            elif attempt >= MAX_ATTEMPTS:
                delivery.status = "failed"
                report.failed += 1
            else:
                delivery.next_attempt_at = clock() + backoff(attempt)
                report.retrying += 1
        log.info("webhook %d delivery %d (%s), attempt %d: %s", webhook_id, delivery_id, event, attempt,
                 error or f"HTTP {status}")
    return report


def deliver_after_job(*, engine: Engine, job_id: int) -> None:
    """What a job worker does once its job has ended: deliver what is due. Never fails the job."""
    try:  # a few, so a slow receiver keeps a worker (or the loop's next round) waiting briefly
        report = deliver_due(engine=engine, actor=Actor.worker(job_id), limit=AFTER_JOB_LIMIT)
    except Exception as exc:
        log.warning("webhook deliveries after job %d: %s", job_id, exc)
        return
    if report.delivered or report.retrying or report.failed:
        log.info("webhooks after job %d: %s", job_id, report.summary())


def deliver_forever(*, engine: Engine, actor: Actor, every_s: float = 10.0,
                    on_report: Callable[[DeliveryReport], None] | None = None) -> None:
    """`webhooks deliver --loop`: deliver what is due, then look again every `every_s` seconds."""
    while True:
        report = deliver_due(engine=engine, actor=actor)
        if on_report:
            on_report(report)
        time.sleep(every_s)


def pending_count(*, session: Session) -> int:
    return session.scalar(select(func.count()).where(WebhookDelivery.status == "pending")) or 0
