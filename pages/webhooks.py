"""Admin: webhooks (signed JSON POSTs on events) and their delivery log. Every action goes through
feedback.webhooks, which checks the role again."""
import json

import pandas as pd
import streamlit as st

from db.engine import session_scope
from feedback import webhooks
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.render import inert_markdown, inert_text
from pages.common import call_service, get_engine, require_page_role

me = require_page_role("admin")
engine = get_engine()
st.title("Webhooks")
st.caption("Each event is POSTed as JSON with the headers X-Feedback-Event, X-Feedback-Delivery (an id to dedupe "
           "on) and X-Feedback-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed by the webhook's "
           "secret>. Failed POSTs are retried with backoff (30 s, 2 min, 8 min ...) up to "
           f"{webhooks.MAX_ATTEMPTS} attempts. Job workers deliver after each job; `python -m feedback webhooks "
           "deliver --loop` delivers (and retries) on time.")


def run(action, **kwargs):
    """Call a webhook service as the signed-in admin (pages.common.call_service)."""
    return call_service(me, action, **kwargs)


with st.form("add_webhook", clear_on_submit=True):
    st.subheader("Add a webhook")
    url = st.text_input("URL", placeholder="https://hooks.example.com/feedback")
    events = st.multiselect("Events", list(webhooks.EVENTS))
    description = st.text_input("Description (optional)")
    if st.form_submit_button("Create webhook", type="primary"):
        created = run(webhooks.create_webhook, url=url, events=events, description=description)
        if created:
            st.success(f"Created webhook {created[0].id}. Its signing secret, shown once (admins can show it "
                       "again below):")
            st.code(created[1], language=None)

with st.expander("What each event sends"):
    st.dataframe(pd.DataFrame([{"event": e, "payload": text} for e, text in webhooks.EVENTS.items()]),
                 hide_index=True, width="stretch")

with session_scope(engine, read_only=True) as s:
    hooks = webhooks.list_webhooks(session=s, actor=Actor.signed_in(me))
st.subheader("Webhooks")
if not hooks:
    st.caption("No webhooks yet.")
else:
    st.dataframe(pd.DataFrame([{"id": w.id, "url": w.url, "events": ", ".join(w.events), "active": w.active,
                                "description": w.description, "created": w.created_at} for w in hooks]),
                 hide_index=True, width="stretch")
    for w in hooks:
        c1, c2 = st.columns([3, 1])
        on = c1.toggle(f"Webhook {w.id} active", value=w.active, key=f"webhook-active-{w.id}")
        if on != w.active and run(webhooks.set_active, webhook_id=w.id, active=on):
            st.rerun()
        if c2.button("Show signing secret", key=f"webhook-secret-{w.id}"):
            secret = run(webhooks.reveal_secret, webhook_id=w.id)
            if secret:
                c1.code(secret, language=None)

st.subheader("Delivery log")
if st.button("Deliver due now"):
    try:  # no session of ours around it: it posts between its own short transactions
        st.info(inert_text(webhooks.deliver_due(engine=engine, actor=Actor.signed_in(me)).summary()))
    except UserError as exc:
        st.error(inert_markdown(str(exc)))
with session_scope(engine, read_only=True) as s:
    log = webhooks.recent_deliveries(session=s, actor=Actor.signed_in(me), limit=200)
if not log:
    st.caption("No deliveries yet.")
else:
    # Payloads are data: shown as JSON text in the table, never as markdown.
    st.dataframe(pd.DataFrame([{"id": d.id, "webhook": d.webhook_id, "event": d.event, "status": d.status,
                                "attempts": d.attempts, "response": d.response_status, "error": d.error,
                                "next attempt": d.next_attempt_at if d.status == "pending" else None,
                                "delivered": d.delivered_at, "payload": json.dumps(d.payload, sort_keys=True)}
                               for d in log]), hide_index=True, width="stretch")
