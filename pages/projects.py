"""Admin: labelling projects. Create one (task type, K, aspects, who may label, guidelines); for
the project chosen below, edit its guidelines (each save is a new version), its members, its
queue settings and its gold checks. Every action goes through feedback.projects, feedback.queue
or feedback.gold, which check the role again."""
import pandas as pd
import streamlit as st

from db.engine import session_scope
from db.models import QUEUE_ORDERS
from feedback import gold, priority, queue
from feedback.actors import Actor
from feedback.conversions import DEFAULT_ASPECTS
from feedback.errors import UserError
from feedback.policies import list_policies
from feedback.projects import (
    TASKS,
    add_guidelines,
    add_member,
    create_project,
    current_guidelines,
    get_project,
    item_counts,
    members,
    remove_member,
    set_arena,
    visible_projects,
)
from feedback.render import inert_markdown, inert_text
from pages.common import PROJECT_KEY, get_engine, require_page_role

me = require_page_role("admin")
engine = get_engine()
st.title("Projects")
if message := st.session_state.pop("projects-done", None):
    st.success(inert_text(message))  # it names projects and users


def run(action, **kwargs):
    """Call a project service as the signed-in admin on the chosen project (by name, in the same
    transaction); show its error instead of failing."""
    try:
        with session_scope(engine) as s:
            if "project" in kwargs:
                kwargs["project"] = get_project(session=s, name=kwargs["project"])
            return action(session=s, actor=Actor.signed_in(me), **kwargs)
    except UserError as exc:
        st.error(inert_markdown(str(exc)))  # it can echo what was typed (a username, a name)
        return None


def done(message: str) -> None:
    """A change went through: say so after a fresh run, so every table on the page shows it."""
    st.session_state["projects-done"] = message
    st.rerun()


with st.expander("New project", icon=":material/add:"):
    with st.form("new_project", clear_on_submit=True):
        c1, c2, c3 = st.columns([2, 2, 1])
        name = c1.text_input("Name", placeholder="e.g. support-rank")
        task = c2.selectbox("Task type", list(TASKS), format_func=lambda t: f"{t}: {TASKS[t].summary}")
        k = c3.number_input("K (rank, rating)", 3, 8, TASKS["rank"].k_default,
                            help="Responses per item; only rank and rating projects choose it.")
        aspects = st.text_input("Aspects (rating; comma-separated)", ", ".join(DEFAULT_ASPECTS))
        open_to_all = st.checkbox("Open to every annotator (otherwise members only)")
        guidelines = st.text_area("Guidelines (markdown; shown to annotators, links and images inert)", height=150)
        if st.form_submit_button("Create project", type="primary"):
            many = task in ("rank", "rating")  # the other task types have a fixed K and no aspects
            created = run(create_project, name=name, task_type=task, k=int(k) if many else None,
                          aspects=aspects.split(",") if task == "rating" else None,
                          guidelines=guidelines or None, open_to_all=open_to_all)
            if created:
                st.session_state["manage_project"] = created.name  # manage it below
                done(f"Created {task} project {created.name}.")

with session_scope(engine, read_only=True) as s:
    projects = visible_projects(session=s, user=me)  # an admin's: every project
    items = item_counts(session=s)
    versions = {p.id: current_guidelines(session=s, project_id=p.id) for p in projects}
    people = {p.id: members(session=s, project=p) for p in projects}
    policies = {v.id: v.name for v in list_policies(session=s)}
st.dataframe(pd.DataFrame([
    {"name": p.name, "task": p.task_type, "K": p.k, "aspects": ", ".join(p.aspects), "items": items.get(p.id, 0),
     "guidelines": versions[p.id].version if versions[p.id] else None,
     "who labels": "everyone" if p.open_to_all else ", ".join(people[p.id]) or "(admins only)"}
    for p in projects]), hide_index=True, width="stretch")

by_name = {p.name: p for p in projects}
if st.session_state.get("manage_project") not in by_name:  # start from the project picked in the sidebar
    picked = [p.name for p in projects if p.id == st.session_state.get(PROJECT_KEY)]
    st.session_state["manage_project"] = picked[0] if picked else next(iter(by_name), None)
chosen = st.selectbox("Manage project", list(by_name), key="manage_project")
if chosen is None:
    st.stop()
project = by_name[chosen]
tab_guidelines, tab_members, tab_queue, tab_gold = st.tabs(["Guidelines", "Members", "Queue", "Gold checks"])

with tab_guidelines:
    current = versions[project.id]
    with st.form(f"guidelines-{project.id}"):
        text = st.text_area("Guidelines (markdown)", current.text if current else "", height=220)
        if st.form_submit_button("Save as a new version", type="primary"):
            saved = run(add_guidelines, project=project.name, text=text)
            if saved:
                done(f"Guidelines v{saved.version} of {project.name} are current; items handed out from now on "
                     "carry them.")
    if current:
        st.caption(f"Current: version {current.version}, as annotators see it")
        with st.container(border=True):
            st.markdown(inert_markdown(current.text))  # admins' text, but pasted links stay inert too
    else:
        st.caption("No guidelines yet.")

with tab_members:
    st.write("Open to every annotator." if project.open_to_all else "Only members (and admins) label here.")
    st.text("Members: " + (", ".join(people[project.id]) or "none"))  # as text: a@b.c is no mailto link
    with st.form(f"members-{project.id}", clear_on_submit=True):
        username = st.text_input("Username")
        c1, c2 = st.columns(2)
        if c1.form_submit_button("Add member", type="primary") and username:
            added = run(add_member, project=project.name, username=username.strip())
            if added is not None:
                done(f"Added {username} to {project.name}." if added else f"{username} was a member already.")
        if c2.form_submit_button("Remove member") and username:
            removed = run(remove_member, project=project.name, username=username.strip())
            if removed is not None:
                done(f"Removed {username} from {project.name}." if removed else f"{username} was not a member.")

with tab_queue:
    with session_scope(engine, read_only=True) as s:
        st.caption(f"{queue.open_item_count(session=s, project=project.id)} items can still be handed out.")
    with st.form(f"queue-{project.id}"):
        c1, c2 = st.columns(2)
        overlap = c1.number_input("Overlap: different annotators per item", 1, 20, project.overlap)
        lease = c2.number_input("Lease (seconds an annotator keeps an item)", 10, 86_400, project.lease_seconds)
        tags = st.text_input("Only prompts with any of these tags (comma-separated; empty: all)",
                             ", ".join(project.prompt_tags))
        chosen_versions = st.multiselect("Only responses from these policy versions (empty: all)", list(policies),
                                         default=[v for v in project.policy_version_ids if v in policies],
                                         format_func=policies.get)
        c1, c2, c3 = st.columns(3)
        refill_below = c1.number_input("Refill when fewer open items than", 0, 10_000, project.refill_below)
        refill_prompts = c2.number_input("Prompts sampled per refill", 1, 1_000, project.refill_prompts)
        order = c3.selectbox("Queue order", QUEUE_ORDERS, index=QUEUE_ORDERS.index(project.queue_order),
                             help="Which open item goes out first: the oldest, a random one, or the one whose "
                                  "labels so far are least certain.")
        if st.form_submit_button("Save", type="primary"):
            if run(priority.save_queue_settings, project=project.name, overlap=int(overlap), lease_seconds=int(lease),
                   prompt_tags=tags.split(","), policy_version_ids=chosen_versions,
                   refill_below=int(refill_below), refill_prompts=int(refill_prompts), queue_order=order):
                done(f"Saved the queue settings of {project.name}.")
    if project.task_type == "pairwise":
        st.caption("Arena mode is **on**: each refill samples two of the versions above head to head, blind, for "
                   "the Leaderboard." if project.arena else
                   "Arena mode: refills sample two of the versions above head to head (annotators never see "
                   "which), for the Leaderboard. Choose at least two versions first.")
        if st.button("Turn arena mode off" if project.arena else "Turn arena mode on", key=f"arena-{project.id}",
                     icon=":material/leaderboard:"):
            if run(set_arena, project=project.name, arena=not project.arena):
                done(f"Arena mode is {'off' if project.arena else 'on'} for {project.name}.")

with tab_gold:
    if project.task_type not in gold.ATTENTION_TASKS:
        st.caption("Gold items and attention checks are for pairwise and binary projects.")
    else:
        st.caption("Reviewers mark gold items and settle disputes on the Review page. Annotators get gold items "
                   "unannounced; those whose answers on them fall below the minimum are warned, then paused.")
        with st.form(f"gold-{project.id}"):
            c1, c2, c3 = st.columns(3)
            rate = c1.number_input("Gold rate: share of claims that are a gold item", 0.0, 1.0,
                                   float(project.gold_rate), step=0.05)
            accuracy = c2.number_input("Minimum accuracy on gold items", 0.0, 1.0, float(project.gold_min_accuracy),
                                       step=0.05)
            answers = c3.number_input("Gold answers before a warning (twice as many: a pause)", 1, 1_000,
                                      project.gold_min_answers)
            if st.form_submit_button("Save gold settings", type="primary"):
                if run(gold.update_gold_settings, project=project.name, gold_rate=rate, gold_min_accuracy=accuracy,
                       gold_min_answers=int(answers)):
                    done(f"Saved the gold settings of {project.name}.")
