"""Reviewers and admins: label quality in one pairwise or binary project. Disputes: items whose
labels disagree, settled with a final answer and a note (feedback.adjudication). Gold: the
project's gold items and attention checks (feedback.gold). Annotators: standings from gold
answers, and every annotator's measures. Each action goes through one service, which checks the
role again; model text is shown inert, labels and rationales only in tables."""
import pandas as pd
import streamlit as st

from db.engine import session_scope
from db.models import Project
from feedback import adjudication, gold
from feedback.actors import Actor
from feedback.decisions import ANSWERS
from feedback.errors import UserError
from feedback.projects import all_projects
from feedback.render import inert_markdown, inert_text
from pages.common import PROJECT_KEY, annotator_measures, get_engine, require_page_role, show_chat, show_response

me = require_page_role("reviewer", "admin")
engine = get_engine()
admin = me.role == "admin"
ANSWER_NAMES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad",
                "up": "Thumbs up", "down": "Thumbs down"}
st.title("Review")
if message := st.session_state.pop("review-done", None):
    st.success(inert_text(message))  # it names projects and users

with session_scope(engine, read_only=True) as s:  # reviewers review every project's labels
    projects = {p.id: p for p in all_projects(session=s) if p.task_type in gold.ATTENTION_TASKS}
if not projects:
    st.info("Review is for pairwise and binary projects; there are none yet.")
    st.stop()
ids = list(projects)
picked = st.session_state.get(PROJECT_KEY)  # start from the project picked in the sidebar
project_id = st.selectbox("Project", ids, index=ids.index(picked) if picked in ids else 0,
                          format_func=lambda pid: f"{projects[pid].name} · {projects[pid].task_type}")
project = projects[project_id]


def run(action, **kwargs):
    """Call a service as the signed-in user, on this project (loaded in the same transaction)
    when it takes one. Returns its result (True for none), or None after showing its refusal."""
    try:
        with session_scope(engine) as s:
            if "project" in kwargs:
                kwargs["project"] = s.get(Project, project.id)
            result = action(session=s, actor=Actor.signed_in(me), **kwargs)
            return True if result is None else result
    except UserError as exc:
        st.error(inert_markdown(str(exc)))  # it can echo what was typed
        return None


def done(message: str) -> None:
    """A change went through: say so after a fresh run, so every table shows it."""
    st.session_state["review-done"] = message
    st.rerun()


def settle_form(view: adjudication.ItemView) -> None:
    with st.form(f"settle-{view.item_id}"):
        answers = ANSWERS[view.kind]
        answer = st.radio("Final answer", answers, index=None, horizontal=True, format_func=ANSWER_NAMES.get,
                          key=f"answer-{view.item_id}")
        note = st.text_area("Note (required: why this is the answer; the next reviewer reads it)",
                            key=f"note-{view.item_id}", height=68)
        make_gold = st.checkbox("Make it gold: measure annotators with it from now on", key=f"gold-{view.item_id}")
        if st.form_submit_button("Settle", type="primary"):
            if answer is None:
                st.error("Pick the final answer first.")
            elif run(adjudication.adjudicate, item_id=view.item_id, answer=answer, note=note, make_gold=make_gold):
                done(f"Settled item {view.item_id}: {ANSWER_NAMES[answer]}" + (", now gold." if make_gold else "."))


tab_disputes, tab_gold, tab_annotators = st.tabs(["Disputes", "Gold", "Annotators"])

with tab_disputes:
    with session_scope(engine, read_only=True) as s:
        disputes = adjudication.disputed_items(session=s, actor=Actor.signed_in(me), project=project)
    if not disputes:
        st.info(f"No disputed items in {inert_text(project.name)}: every labelled item agrees, or is settled.")
    else:
        st.caption(f"{len(disputes)} disputed item{'s' if len(disputes) > 1 else ''}, most reasons first, then the "
                   "least confident. The aggregate and its confidence are Dawid-Skene's.")
        st.dataframe(pd.DataFrame([
            {"item": d.item_id, "reasons": "; ".join(d.reasons),
             "votes": ", ".join(f"{value}: {n}" for value, n in d.votes.items()),
             "aggregate": d.aggregate, "confidence": d.confidence} for d in disputes]),
            hide_index=True, width="stretch")
        by_id = {d.item_id: d for d in disputes}
        item_id = st.selectbox("Item to settle", list(by_id),
                               format_func=lambda i: f"item {i} · {'; '.join(by_id[i].reasons)}")
        with session_scope(engine, read_only=True) as s:
            view = adjudication.item_view(session=s, actor=Actor.signed_in(me), item_id=item_id)
        show_chat(view.messages)
        if view.kind == "pair":
            left, right = st.columns(2)
            with left:
                show_response("Response A", view.responses[0])
            with right:
                show_response("Response B", view.responses[1])
        else:
            show_response("Response", view.responses[0])
        st.caption("Its labels, in the item's own order: a is Response A above, whatever each annotator was shown.")
        st.dataframe(pd.DataFrame([{"annotator": label.annotator, "source": label.source, "value": label.value,
                                    "rationale": label.rationale} for label in view.labels]),
                     hide_index=True, width="stretch")
        settle_form(view)

with tab_gold:
    with session_scope(engine, read_only=True) as s:
        summary = gold.gold_summary(session=s, project=project)
    c1, c2, c3 = st.columns(3)
    c1.metric("Marked gold", summary["gold"])
    c2.metric("Settled and gold", summary["adjudication"])
    c3.metric("Attention checks", summary["attention"])
    st.caption(f"Annotators get a gold item on {project.gold_rate:.0%} of their claims, looking like any other "
               "(an admin sets the share on the Projects page).")
    with st.form("mark-gold", clear_on_submit=True):
        c1, c2 = st.columns(2)
        gold_item = c1.number_input("Item id", min_value=1, step=1, value=None)
        answers = ANSWERS["pair" if project.task_type == "pairwise" else "single"]
        gold_answer = c2.selectbox("Gold answer", [None, *answers],
                                   format_func=lambda a: "its settled answer" if a is None else ANSWER_NAMES[a])
        gold_note = st.text_input("Note (optional)")
        c1, c2 = st.columns(2)
        if c1.form_submit_button("Mark gold", type="primary") and gold_item:
            if run(gold.mark_gold, item_id=int(gold_item), answer=gold_answer, note=gold_note):
                done(f"Item {int(gold_item)} is gold.")
        if c2.form_submit_button("Unmark gold") and gold_item:
            if run(gold.unmark_gold, item_id=int(gold_item)):
                done(f"Item {int(gold_item)} is no longer gold.")
    if admin:
        c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
        count = int(c1.number_input("Attention checks", 1, 1000, 10))
        if c2.button(f"Make {count} attention checks"):
            made = run(gold.make_attention_checks, project=project, count=count)
            if made:
                done(f"Made {len(made)} attention checks in {project.name}.")

with tab_annotators:
    with session_scope(engine, read_only=True) as s:
        standings = gold.standings(session=s, actor=Actor.signed_in(me), project=project)
    st.subheader("Standings from gold answers")
    st.caption(f"Warned below {project.gold_min_accuracy:.0%} correct after {project.gold_min_answers} gold answers; "
               "paused (no more items here) if still below after twice as many, until an admin lifts it.")
    if standings:
        st.dataframe(pd.DataFrame([{"username": x.username, "status": x.status, "gold answers": x.gold_answers,
                                    "correct": x.gold_correct, "accuracy": x.accuracy} for x in standings]),
                     hide_index=True, width="stretch")
    else:
        st.caption("Nobody has answered a gold item here yet.")
    for standing in (x for x in standings if admin and x.status != "ok"):
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.text(f"{standing.username}: {standing.status}")  # as text: a@b.c is no mailto link
        if c2.button("Lift pause" if standing.status == "paused" else "Clear warning", key=f"lift-{standing.username}"):
            if run(gold.lift_pause, project=project, username=standing.username):
                done(f"{standing.username} labels in {project.name} again; their gold answers count afresh.")
    st.subheader("Annotators")
    annotator_measures(me, project.id)
