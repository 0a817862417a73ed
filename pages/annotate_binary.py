"""Binary annotation: thumbs up or down on one response, with an optional critique."""
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
project = selected_project("binary")  # the one picked in the sidebar
engine = get_engine()
st.title("Rate a response")
st.caption("Is this a good answer to the prompt? Thumbs up or down. Keys: 1 = thumbs up · 2 = thumbs down · S = skip")


def submit(assignment_id: int, submission_id: str, thumb: str | None = None) -> None:
    """The thumb widget's callback (its value, 1 = up), or a key button's (`thumb`)."""
    if thumb is None:
        value = st.session_state.get(f"thumb-{assignment_id}")
        if value is None:  # a thumb taken back by clicking it again
            return
        thumb = "up" if value == 1 else "down"
    record_label(engine, user, queue.submit_binary, assignment_id=assignment_id,
                 submission_id=submission_id, thumb=thumb,
                 rationale=st.session_state.get(f"critique-{assignment_id}"))


@st.fragment(run_every=poll_while_waiting(project))
def rate() -> None:
    take_error()
    saved_banner(engine, user, project)
    claim = claim_or_wait(engine=engine, user=user, project=project, noun="responses")
    if claim is None:
        return
    submission_id = submission_id_for(claim.assignment_id)
    show_guidelines(engine, project, claim.guidelines_id)
    show_chat(claim.messages)
    show_response("Response", claim.left)
    # Write the critique first: choosing a thumb records the label at once.
    st.text_area("Critique (optional, before you choose)", key=f"critique-{claim.assignment_id}", height=68)
    row = st.container(horizontal=True, vertical_alignment="center")
    row.feedback("thumbs", key=f"thumb-{claim.assignment_id}", on_change=submit,
                 args=(claim.assignment_id, submission_id))
    # st.feedback takes no keyboard shortcut: these buttons carry the keys (shown on them).
    for thumb, key in (("up", "1"), ("down", "2")):
        row.button(f"Thumbs {thumb}", key=f"{thumb}-{claim.assignment_id}", shortcut=key, type="tertiary",
                   icon=f":material/thumb_{thumb}:", help=f"Same as the thumb {thumb} on the left (key {key})",
                   on_click=submit, args=(claim.assignment_id, submission_id, thumb))
    row.button("Skip", key=f"skip-{claim.assignment_id}", shortcut="S", on_click=skip_item,
               args=(engine, user, claim.assignment_id))


rate()
