"""Rating annotation: score K responses 1-5 on each of the project's aspects, with an optional
reason per aspect. The responses come in a fresh random order per annotator (recorded with the
label); ratings are given in that order and the queue maps them back to item positions."""
import streamlit as st

from feedback import queue
from pages.common import (
    claim_or_wait,
    get_engine,
    humanise,
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
project = selected_project("rating")  # the one picked in the sidebar
engine = get_engine()
aspects = list(project.aspects)
st.title("Rate responses")
st.caption(f"Score every response 1 (poor) to 5 (excellent) on: {', '.join(map(humanise, aspects))}. S = skip")
SCORES = [1, 2, 3, 4, 5]


def submit(assignment_id: int, submission_id: str, k: int) -> None:
    state = st.session_state
    ratings = [{"scores": {a: state.get(f"score-{assignment_id}-{i}-{a}") for a in aspects},
                "rationales": {a: state.get(f"why-{assignment_id}-{i}-{a}") or "" for a in aspects}}
               for i in range(k)]
    missing = [f"response {i + 1}: {', '.join(humanise(a) for a, v in r['scores'].items() if v is None)}"
               for i, r in enumerate(ratings) if None in r["scores"].values()]
    if missing:  # refused here, before the queue: nothing is written
        state["annotate-error"] = "Rate every aspect of every response first (missing " + "; ".join(missing) + ")."
        return
    record_label(engine, user, queue.submit_rating, assignment_id=assignment_id,
                 submission_id=submission_id, ratings=ratings, rationale=state.get(f"rationale-{assignment_id}"))


@st.fragment(run_every=poll_while_waiting(project))
def rate() -> None:
    saved_banner(engine, user, project)
    claim = claim_or_wait(engine=engine, user=user, project=project, noun="items")
    if claim is None:
        take_error()
        return
    aid, k = claim.assignment_id, len(claim.responses)
    submission_id = submission_id_for(aid)
    show_guidelines(engine, project, claim.guidelines_id)
    show_chat(claim.messages)
    for i, text in enumerate(claim.responses):  # in the order shown; the label records it
        box = show_response(f"Response {i + 1}", text)
        for aspect in aspects:
            score, why = box.columns([2, 3], vertical_alignment="bottom")
            score.segmented_control(humanise(aspect), SCORES, key=f"score-{aid}-{i}-{aspect}")
            why.text_input(f"Why, for {humanise(aspect).lower()}? (optional)", key=f"why-{aid}-{i}-{aspect}",
                           max_chars=2000, placeholder="optional")
    st.text_area("Overall comment (optional)", key=f"rationale-{aid}", height=68)
    take_error()  # next to the button that caused it: the top of a K-response page is far away
    c1, c2 = st.columns([1, 5])
    c1.button("Submit", key=f"submit-{aid}", type="primary", width="stretch",
              on_click=submit, args=(aid, submission_id, k))
    c2.button("Skip", key=f"skip-{aid}", shortcut="S", on_click=skip_item, args=(engine, user, aid))


rate()
