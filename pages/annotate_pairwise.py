"""Pairwise annotation: which of two responses is better? The left/right order is random per
showing and recorded; the vote widget is a fragment, so voting reruns only it."""
import streamlit as st

from feedback import queue
from pages.common import (
    claim_or_wait,
    get_engine,
    poll_while_waiting,
    record_label,
    require_page_role,
    saved_banner,
    selected_project,
    show_chat,
    show_guidelines,
    show_response,
    skip_item,
    submission_id_for,
    take_error,
)

user = require_page_role(*queue.ANNOTATING_ROLES)
project = selected_project("pairwise")  # the one picked in the sidebar
engine = get_engine()
st.title("Compare responses")
st.caption("Keys: 1 = A is better · 2 = B is better · 3 = tie · 4 = both bad · S = skip")

CHOICES = [("left", "A is better", "1"), ("right", "B is better", "2"), ("tie", "Tie", "3"),
           ("both_bad", "Both bad", "4")]


def submit(assignment_id: int, submission_id: str, preferred: str) -> None:
    strength = st.session_state.get(f"strength-{assignment_id}") if preferred in ("left", "right") else None
    record_label(engine, user, queue.submit_pairwise, assignment_id=assignment_id,
                 submission_id=submission_id, preferred=preferred, strength=strength,
                 rationale=st.session_state.get(f"rationale-{assignment_id}"))


@st.fragment(run_every=poll_while_waiting(project))
def vote() -> None:
    take_error()
    saved_banner(engine, user, project)
    claim = claim_or_wait(engine=engine, user=user, project=project, noun="pairs")
    if claim is None:
        return
    submission_id = submission_id_for(claim.assignment_id)
    show_guidelines(engine, project, claim.guidelines_id)
    show_chat(claim.messages)
    # Grid cells share their row's height: the two boxes are equally tall, whatever the texts.
    boxes = st.grid(2, border=True)
    show_response("Response A", claim.left, box=boxes.cell())
    show_response("Response B", claim.right or "", box=boxes.cell())
    st.segmented_control("How much better? (optional)", ["slight", "much"], key=f"strength-{claim.assignment_id}",
                         format_func={"slight": "slightly", "much": "much better"}.get)
    st.text_area("Why? (optional)", key=f"rationale-{claim.assignment_id}", height=68)
    cols = st.columns(len(CHOICES) + 1)
    for col, (value, label, key) in zip(cols, CHOICES, strict=False):
        col.button(label, key=f"{value}-{claim.assignment_id}", shortcut=key, width="stretch",
                   type="primary" if value in ("left", "right") else "secondary",
                   on_click=submit, args=(claim.assignment_id, submission_id, value))
    cols[-1].button("Skip", key=f"skip-{claim.assignment_id}", shortcut="S", width="stretch",
                    on_click=skip_item, args=(engine, user, claim.assignment_id))


vote()
