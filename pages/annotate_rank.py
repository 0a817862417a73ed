"""Rank annotation: order K responses from best to worst, ties allowed. The responses come in a
fresh random order per annotator (recorded with the label); ranks are given in that order and
the queue maps them back to the item's own positions."""
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
project = selected_project("rank")  # the one picked in the sidebar
engine = get_engine()
st.title("Rank responses")
st.caption("Give every response a rank: 1 = best; equal ranks for ties. S = skip")


def submit(assignment_id: int, submission_id: str, k: int) -> None:
    ranks = [st.session_state.get(f"rank-{assignment_id}-{i}") for i in range(k)]
    missing = [f"response {i + 1}" for i, rank in enumerate(ranks) if rank is None]
    if missing:  # refused here, before the queue: nothing is written
        st.session_state["annotate-error"] = f"Give every response a rank first (missing: {', '.join(missing)})."
        return
    record_label(engine, user, queue.submit_rank, assignment_id=assignment_id,
                 submission_id=submission_id, ranks=ranks,
                 rationale=st.session_state.get(f"rationale-{assignment_id}"))


@st.fragment(run_every=poll_while_waiting(project))
def rank() -> None:
    saved_banner(engine, user, project)
    claim = claim_or_wait(engine=engine, user=user, project=project, noun="items")
    if claim is None:
        take_error()
        return
    aid, k = claim.assignment_id, len(claim.responses)
    submission_id = submission_id_for(aid)
    show_guidelines(engine, project, claim.guidelines_id)
    show_chat(claim.messages)
    options = list(range(1, k + 1))
    boxes = st.grid(2, border=True)  # side by side, a row's boxes equally tall
    for i, text in enumerate(claim.responses):  # in the order shown; the label records it
        box = show_response(f"Response {i + 1}", text, box=boxes.cell())
        box.segmented_control(f"Rank of response {i + 1}", options, key=f"rank-{aid}-{i}",
                              help="1 = best; give equal ranks for ties")
    st.text_area("Why? (optional)", key=f"rationale-{aid}", height=68)
    take_error()  # next to the button that caused it: the top of a K-response page is far away
    c1, c2 = st.columns([1, 5])
    c1.button("Submit", key=f"submit-{aid}", type="primary", width="stretch",
              on_click=submit, args=(aid, submission_id, k))
    c2.button("Skip", key=f"skip-{aid}", shortcut="S", on_click=skip_item, args=(engine, user, aid))


rank()
