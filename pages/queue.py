"""Admin: how items are handed out (overlap, lease length, which prompts and policy versions)."""
import streamlit as st

from db.engine import session_scope
from feedback import queue
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.policies import list_policies
from pages.common import get_engine, require_page_role

me = require_page_role("admin")
engine = get_engine()
st.title("Queue")

with session_scope(engine) as s:
    settings = queue.get_queue_settings(session=s)
    versions = {v.id: v.name for v in list_policies(session=s)}
    open_items = queue.open_item_count(session=s)
st.caption(f"{open_items} items can still be handed out.")

with st.form("queue_settings"):
    c1, c2 = st.columns(2)
    overlap = c1.number_input("Overlap: different annotators per item", 1, 20, settings.overlap)
    lease = c2.number_input("Lease (seconds an annotator keeps an item)", 10, 86_400, settings.lease_seconds)
    tags = st.text_input("Only prompts with any of these tags (comma-separated; empty: all)",
                         ", ".join(settings.prompt_tags))
    chosen = st.multiselect("Only responses from these policy versions (empty: all)", list(versions),
                            default=[v for v in settings.policy_version_ids if v in versions],
                            format_func=versions.get)
    c1, c2 = st.columns(2)
    refill_below = c1.number_input("Refill when fewer open items than", 0, 10_000, settings.refill_below)
    refill_prompts = c2.number_input("Prompts sampled per refill", 1, 1_000, settings.refill_prompts)
    if st.form_submit_button("Save", type="primary"):
        try:
            with session_scope(engine) as s:
                queue.update_queue_settings(
                    session=s, actor=Actor.signed_in(me), overlap=int(overlap), lease_seconds=int(lease),
                    prompt_tags=tags.split(","), policy_version_ids=chosen,
                    refill_below=int(refill_below), refill_prompts=int(refill_prompts))
            st.success("Saved.")
        except UserError as exc:
            st.error(str(exc))
