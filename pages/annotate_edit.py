"""Edit annotation: rewrite one response until it is a good answer. The diff against the original
is shown before submitting; submitting it unchanged says the response is fine as it is."""
import difflib

import streamlit as st

from feedback import queue
from feedback.conversions import edit_distance
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
project = selected_project("edit")  # the one picked in the sidebar
engine = get_engine()
st.title("Edit a response")
st.caption("Rewrite the response into a good answer; submit it unchanged if it is fine as it is. S = skip")


def submit(assignment_id: int, submission_id: str) -> None:
    record_label(engine, user, queue.submit_edit, assignment_id=assignment_id,
                 submission_id=submission_id, edited_text=st.session_state.get(f"edit-{assignment_id}"),
                 rationale=st.session_state.get(f"rationale-{assignment_id}"))


@st.fragment(run_every=poll_while_waiting(project))
def edit() -> None:
    saved_banner(engine, user, project)
    claim = claim_or_wait(engine=engine, user=user, project=project, noun="responses")
    if claim is None:
        take_error()
        return
    aid, original = claim.assignment_id, claim.left
    submission_id = submission_id_for(aid)
    show_guidelines(engine, project, claim.guidelines_id)
    show_chat(claim.messages)
    show_response("Original response", original)
    edited = st.text_area("Your rewrite", original, key=f"edit-{aid}", height=240,
                          max_chars=queue.max_edit_chars(original))
    # The diff as code, never as markdown: both sides are untrusted text.
    diff = "\n".join(difflib.unified_diff(original.splitlines(), edited.splitlines(), "original", "your rewrite",
                                          lineterm=""))
    st.code(diff or "(no changes: submitting says the response is fine as it is)", language="diff")
    # The distance the label will record (the queue compares the stripped texts too).
    distance = edit_distance(original.strip(), edited.strip())
    st.caption(f"Edit distance: {distance} character{'' if distance == 1 else 's'}")
    st.text_input("Why? (optional)", key=f"rationale-{aid}")
    take_error()
    c1, c2 = st.columns([1, 5])
    c1.button("Submit", key=f"submit-{aid}", type="primary", width="stretch",
              on_click=submit, args=(aid, submission_id))
    c2.button("Skip", key=f"skip-{aid}", shortcut="S", on_click=skip_item, args=(engine, user, aid))


edit()
