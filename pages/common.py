"""What every page needs: the shared engine, the signed-in user, role checks, the picked project."""
from __future__ import annotations

import html
import logging
import uuid

import streamlit as st
from sqlalchemy import Engine
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from db.engine import engine_for, session_scope
from db.models import Guidelines, Job, Project, User
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.render import inert_markdown, inert_text
from feedback.settings import get_settings


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> Engine:
    return engine_for(url)


def get_engine() -> Engine:
    # Read at call time: tests and deployments point DATABASE_URL elsewhere.
    return _engine(get_settings().database_url)


# The browser session (feedback.sessions) in st.session_state: the row this tab signed in with or
# found through the cookie, the ticket its first runs hand the browser, and a flag the sign-in page
# reads after a sign-out to have the browser forget the cookie. user_id is kept for convenience.
SESSION_KEY, USER_KEY, TICKET_KEY, SIGNED_OUT_KEY = "session_id", "user_id", "session_ticket", "signed_out"


def request_text(value: object) -> str:
    """A cookie, header or address from st.context as text ("" when absent; AppTest's stand-in
    runtime answers these with mock objects)."""
    return value if isinstance(value, str) else ""


def signed_in_user() -> User | None:
    """The signed-in user, freshly loaded each run, through the browser's session cookie (a reload,
    another tab) or the session this tab signed in with (until its cookie is set). A revoked or
    expired session or a deactivated account signs out at once; a role change revokes too."""
    from feedback.sessions import COOKIE_NAME, touch_session, user_for_session_id, user_for_token

    engine = get_engine()
    with session_scope(engine, read_only=True) as session:
        active = (user_for_token(session=session, token=request_text(st.context.cookies.get(COOKIE_NAME)))
                  or user_for_session_id(session=session, session_id=st.session_state.get(SESSION_KEY)))
    if active is None:
        for key in (SESSION_KEY, USER_KEY, TICKET_KEY):
            st.session_state.pop(key, None)
        return None
    if active.touch_due:  # a write transaction about once a minute, not on every rerun
        with session_scope(engine) as session:
            touch_session(session=session, session_id=active.session_id)
    st.session_state[SESSION_KEY], st.session_state[USER_KEY] = active.session_id, active.user.id
    return active.user


SIGNED_OUT = "You were signed out (in another tab, or an admin changed your account); sign in again."


def still_signed_in(user: User) -> User | None:
    """`user` as of now, or None when they are no longer signed in here. Fragments and widget
    callbacks run without app.py, so the user a page run loaded may be stale (its session revoked,
    its account deactivated): they check again with this, before opening their own transaction.
    Services then get `session.get(User, id)`, never `session.merge(user)`: a merge would write the
    stale object's fields (an old password hash, `active`) back over the row."""
    current = signed_in_user()
    return current if current is not None and current.id == user.id else None


def fetch_quietly(path: str) -> None:
    """Have the browser GET `path` on this server, as an image it never shows: how a script gets
    a cookie set or deleted (api/session_routes.py). The one st.html in the pages: fixed markup,
    and `path` (ours, with a URL-safe ticket) is escaped all the same."""
    st.html(f'<img src="{html.escape(path, quote=True)}" alt="" width="0" height="0" style="display:none">')


def user_timezone() -> str:
    """The browser's IANA time zone for "today" and the day charts; UTC when the browser sends
    none (AppTest) or one this machine's tz database does not know, rather than an error."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    tz = st.context.timezone
    try:
        return tz if tz and ZoneInfo(tz) else "UTC"
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"


def require_page_role(*roles: str) -> User:
    """Stop the page unless the signed-in user has one of `roles` (the services check again)."""
    user = signed_in_user()
    if user is None or user.role not in roles:
        st.error(f"This page needs the role {' or '.join(roles)}.")
        st.stop()
    return user


def show_chat(messages: list[dict[str, str]]) -> None:
    """The prompt as chat bubbles; contents are untrusted and go through inert_markdown."""
    for message in messages:
        with st.chat_message("user" if message["role"] == "user" else "assistant"
                             if message["role"] == "assistant" else "ai"):
            if message["role"] == "system":
                st.caption("system prompt")
            st.markdown(inert_markdown(message["content"]))


def show_response(title: str, text: str, *, box=None):
    """The (untrusted, inert) response under its title, in a bordered box of its own or in `box`:
    a cell of `st.grid(n, border=True)`, where every cell of a row is as tall as the tallest, so
    side-by-side responses get boxes of one height without any text cut off. Returned so a page
    can add its pickers to the same box."""
    box = st.container(border=True) if box is None else box
    box.markdown(f"**{title}**")
    box.markdown(inert_markdown(text) if text.strip() else "_(empty response)_")
    return box


def pool_note(*, open_for_me: int, refilling: bool) -> None:
    if open_for_me:
        return
    if refilling:
        st.info("Nothing left for you right now. New responses are being sampled; this page checks again shortly.")
    else:
        st.info("Nothing left for you to label. Thank you! An admin can sample more on the Data page.")


WARNED = ("Some of your recent answers on check items disagreed with their known answers; "
          "please re-read the guidelines.")


def claim_or_wait(*, engine: Engine, user: User, project: Project, noun: str):
    """The annotator's current item in `project` (with progress shown above it), or None after
    showing why there is none. Starts a refill of this project when its pool runs low."""
    from feedback import queue
    from feedback.refill import maybe_refill, refill_running

    if still_signed_in(user) is None:
        st.rerun(scope="app")  # app.py shows the sign-in page
    waiting_key = f"waiting-{project.id}"
    try:
        with session_scope(engine) as s:
            me = s.get(User, user.id)
            claim = queue.claim_next(session=s, user=me, project=project.id)
            progress = queue.progress(session=s, user=me, project=project.id, tz=user_timezone())
            refilling = refill_running(session=s, project=project)
    except UserError as exc:  # not (or no longer) a member of this project, or paused on it
        st.error(inert_text(exc))  # it can name the project
        return None
    if claim is None or progress.open_for_me < 5:
        refilling = bool(maybe_refill(engine=engine, database_url=get_settings().database_url,
                                      project_id=project.id)) or refilling
    left = progress.open_for_me + (claim is not None)
    st.caption(f"You: {progress.today} today, {progress.total} in all · "
               f"{left} {noun.removesuffix('s') if left == 1 else noun} left for you in {project.name}")
    if progress.standing == "warned":  # never say which items were the checks
        st.warning(WARNED)
    # Poll (the fragment's run_every) only while waiting for new items; switching polling on or
    # off needs a full rerun, since run_every is read when the page script runs.
    if (claim is None) != st.session_state.get(waiting_key, False):
        st.session_state[waiting_key] = claim is None
        st.rerun()
    if claim is None:
        pool_note(open_for_me=0, refilling=refilling)
        st.button("Check again")
    return claim


def annotator_measures(user: User, project_id: int | None) -> None:
    """The per-annotator measures (feedback.quality) of one project, or of all with None, as a
    table with what its columns mean."""
    import pandas as pd

    from feedback.quality import TOO_FAST_S, annotator_table

    st.caption("People, the AI judge and graders alike. agree_others: share of agreeing label pairs on the same "
               "item; agree_majority: against the majority of the other labels; reliability: Dawid-Skene's expected "
               "accuracy; gold_accuracy: share of gold answers matched (of gold_n); left_wins: share of A/B choices "
               f"for the left side (0.5 = no position bias); too_fast: labels under {TOO_FAST_S:g} s.")
    with session_scope(get_engine(), read_only=True) as s:
        measures = annotator_table(session=s, actor=Actor.signed_in(user), project_id=project_id)
    st.dataframe(pd.DataFrame(measures), hide_index=True, width="stretch")


def poll_while_waiting(project: Project) -> str | None:
    return "10s" if st.session_state.get(f"waiting-{project.id}") else None


# --- projects: the sidebar picker (app.py) and what the annotate pages read from it

PROJECT_KEY = "project_id"  # the picked project's id, in st.session_state


def _keep_pick() -> None:
    # A widget's own state goes when a run does not draw it; the pick must outlive such a run.
    st.session_state[PROJECT_KEY] = st.session_state["project-picker"]


def project_picker(user: User) -> Project | None:
    """The sidebar's "Project" selectbox over the projects this user may label in; the pick
    stays in st.session_state across pages. None when the user is in no project."""
    from feedback.projects import visible_projects

    with session_scope(get_engine(), read_only=True) as s:
        projects = {p.id: p for p in visible_projects(session=s, user=user)}
    if not projects:
        st.session_state.pop(PROJECT_KEY, None)
        return None
    # A project the user lost (removed as a member) gives way to the first one they have.
    if st.session_state.get(PROJECT_KEY) not in projects:
        st.session_state[PROJECT_KEY] = next(iter(projects))
    st.session_state["project-picker"] = st.session_state[PROJECT_KEY]
    st.sidebar.selectbox("Project", list(projects), key="project-picker", on_change=_keep_pick,
                         format_func=lambda pid: f"{projects[pid].name} · {projects[pid].task_type}")
    return projects[st.session_state[PROJECT_KEY]]


def selected_project(task_type: str) -> Project:
    """The project picked in the sidebar; stops the page unless it is a `task_type` project
    (app.py sends people to the right page; this covers a stale tab)."""
    project_id = st.session_state.get(PROJECT_KEY)
    with session_scope(get_engine(), read_only=True) as s:
        project = s.get(Project, project_id) if project_id is not None else None
    if project is None or project.task_type != task_type:
        st.info(f"Pick a {task_type} project in the sidebar to label here.")
        st.stop()
    return project


def show_guidelines(engine: Engine, project: Project, guidelines_id: int | None) -> None:
    """The guidelines this item was handed out under (the version its label records), inert:
    admins write them, but a pasted link or image must not fetch or lead anywhere."""
    from feedback.projects import current_guidelines

    with session_scope(engine, read_only=True) as s:
        guidelines = (s.get(Guidelines, guidelines_id) if guidelines_id is not None
                      else current_guidelines(session=s, project_id=project.id))
    if guidelines is None:
        st.caption("This project has no written guidelines yet.")
        return
    with st.expander(f"Guidelines · version {guidelines.version}"):
        st.markdown(inert_markdown(guidelines.text))


def humanise(name: str) -> str:
    """instruction_following -> Instruction following"""
    return name.replace("_", " ").capitalize()


LAST_LABEL = "last-label"  # in st.session_state: the label saved_banner confirms and can undo
UNDO_ERROR = "undo-error"


def record_label(engine: Engine, user: User, submit, **values) -> None:
    """A submit button's callback body: record a label with `submit` (one of queue.submit_*) as
    this annotator; a refusal is kept for take_error to show on the next run, a label written (or
    found written already) for saved_banner."""
    from feedback.errors import UserError

    if still_signed_in(user) is None:
        st.session_state["annotate-error"] = SIGNED_OUT
        return
    try:
        with session_scope(engine) as s:
            label = submit(session=s, user=s.get(User, user.id), **values)
            project_id = label.item.project_id  # the item is in the session already: no query
    except UserError as exc:
        st.session_state["annotate-error"] = str(exc)
        return
    last = st.session_state.get(LAST_LABEL)
    if last is None or last["label_id"] != label.id:  # a double click confirms once
        st.session_state[LAST_LABEL] = {"label_id": label.id, "project_id": project_id, "toasted": False}


def take_error(key: str = "annotate-error") -> None:
    """Show (once) the message a submit callback left for this rerun."""
    if error := st.session_state.pop(key, None):
        st.warning(inert_text(error))  # a service's message: it can echo what was typed


def submission_id_for(assignment_id: int) -> str:
    """One id per showing: a double click or a rerun submits the same id and writes one label."""
    return st.session_state.setdefault(f"submission-{assignment_id}", uuid.uuid4().hex)


def _undo_last_label(engine: Engine, user: User) -> None:
    from feedback import queue

    last = st.session_state.pop(LAST_LABEL, None)
    if last is None:
        return
    if still_signed_in(user) is None:
        st.session_state[UNDO_ERROR] = SIGNED_OUT
        return
    try:
        with session_scope(engine) as s:
            assignment_id = queue.undo_last_label(session=s, user=s.get(User, user.id), label_id=last["label_id"])
    except UserError as exc:
        st.session_state[UNDO_ERROR] = str(exc)
        return
    # A fresh submission id for the item's next showing; its widgets come back unanswered anyway
    # (Streamlit dropped their state when the next item replaced them).
    st.session_state.pop(f"submission-{assignment_id}", None)
    st.session_state["undone"] = True


def saved_banner(engine: Engine, user: User, project: Project) -> None:
    """After a submit in `project`: "Saved" (a toast, then a caption) with an "Undo last label"
    button that gives the item back (feedback.queue.undo_last_label says until when)."""
    take_error(UNDO_ERROR)
    if st.session_state.pop("undone", False):
        st.toast("Undone: the item is back for you to label again.", icon=":material/undo:")
    last = st.session_state.get(LAST_LABEL)
    if last is None or last["project_id"] != project.id:
        return
    if not last["toasted"]:
        st.toast("Saved.", icon=":material/check:")
        last["toasted"] = True
    row = st.container(horizontal=True, vertical_alignment="center", gap="xsmall")
    row.caption(":material/check: Saved · you can take your last label back while the item is still yours")
    row.button("Undo last label", key=f"undo-{last['label_id']}", type="tertiary", icon=":material/undo:",
               on_click=_undo_last_label, args=(engine, user))


def _eta(job) -> str:
    if job.status != "running" or not job.started_at or not job.progress_total or job.progress_done <= 0:
        return ""
    from db.models import utcnow

    elapsed = (utcnow() - job.started_at).total_seconds()
    left = elapsed / job.progress_done * (job.progress_total - job.progress_done)
    return f" · about {int(left // 60)} min {int(left % 60)} s left"


def job_result_text(result: dict, *, most: int = 12) -> str:
    """A job's result for people: its `summary` sentence when it has one, else "key: value"
    pairs (nested dicts flattened to "metrics.loss", numbers rounded, long lists counted)."""
    summary = result.get("summary")
    if isinstance(summary, str) and summary.strip():
        return summary

    def shown(value) -> str:
        if isinstance(value, bool) or value is None:
            return {True: "yes", False: "no", None: "none"}[value]
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, (list, tuple)):
            if len(value) <= 5 and all(isinstance(v, (str, int, float)) for v in value):
                return ", ".join(map(shown, value)) or "none"
            return f"{len(value)} items"
        text = str(value)
        return text if len(text) <= 80 else text[:79] + "…"

    def pairs(values: dict, prefix: str = ""):
        for key, value in values.items():
            if isinstance(value, dict) and value:
                yield from pairs(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}: {shown(value)}"

    lines = list(pairs(result))
    more = f" · and {len(lines) - most} more" if len(lines) > most else ""
    return " · ".join(lines[:most]) + more


def job_progress_rows(*, engine: Engine, kind: str, user: User, unit: str, limit: int = 5) -> None:
    """Recent jobs of `kind` with progress bars, ETA, results and cancel/resume buttons.
    Meant to be called inside a polling fragment."""
    from feedback import jobs

    actor = Actor.signed_in(user)
    resumed = []
    with session_scope(engine) as session:
        recent = jobs.list_jobs(session=session, limit=limit, kind=kind)
        for job in recent:
            total = job.progress_total or 0
            text = f"Job {job.id} · {job.status} · {job.progress_done}/{total or '?'} {unit}{_eta(job)}"
            st.progress(min(1.0, job.progress_done / total) if total else 0.0, text=text)
            if job.status == "succeeded" and job.result:
                st.caption(inert_text(job_result_text(job.result)))  # it names models, files, constitutions
            if job.status in ("failed", "interrupted") and job.error:
                st.code(job.error[-2000:], language=None)
            if job.status in jobs.ACTIVE and st.button("Cancel", key=f"cancel-{job.id}"):
                jobs.request_cancel(session=session, job_id=job.id, actor=actor)
            if job.status in ("failed", "interrupted") and st.button("Resume", key=f"resume-{job.id}"):
                resumed.append(jobs.resume(session=session, job_id=job.id, actor=actor))
        if not recent:
            st.caption(f"No {kind} jobs yet.")
    for job in resumed:  # after the commit, so the worker finds the job queued
        jobs.start_detached(job=job, database_url=get_settings().database_url)


@st.fragment(run_every="2s")
def live_job_progress(*, engine: Engine, kind: str, user: User, unit: str) -> None:
    """job_progress_rows, redrawn every 2 s without rerunning the rest of the page."""
    job_progress_rows(engine=engine, kind=kind, user=user, unit=unit)


PAGE_FAILED = "Something went wrong on this page. It has been logged; try again, or tell an admin."


def run_page(page, user: User | None) -> None:
    """Run the page st.navigation picked. An exception escaping it goes to the log with its
    traceback; people see a short apology, and admins the exception too (the traceback can
    name files, queries and values that annotators should not see). st.rerun, st.stop and
    st.switch_page raise ScriptControlException, which must reach Streamlit untouched."""
    try:
        page.run()
    except ScriptControlException:
        raise
    except Exception as exc:
        logging.getLogger(__name__).exception("page %s failed", getattr(page, "url_path", page))
        st.error(PAGE_FAILED)
        if user is not None and user.role == "admin":
            st.exception(exc)


def start_admin_job(engine: Engine, user: User, *, kind: str, config: dict) -> Job:
    """Create a job as this admin (the role checked in the same transaction) and start its worker
    once that has committed, so the worker finds the job row."""
    from feedback import jobs

    with session_scope(engine) as session:
        job = jobs.create_job(session=session, kind=kind, config=config, actor=Actor.signed_in(user))
    jobs.start_detached(job=job, database_url=get_settings().database_url)
    return job


def skip_item(engine: Engine, user: User, assignment_id: int) -> None:
    """Button callback: give the item back; this annotator is not offered it again."""
    from feedback import queue

    if still_signed_in(user) is None:
        st.session_state["annotate-error"] = SIGNED_OUT
        return
    with session_scope(engine) as s:
        queue.skip(session=s, user=s.get(User, user.id), assignment_id=assignment_id)


def config_form(cls: type, *, key: str, columns: int = 3, skip: tuple[str, ...] = ()) -> dict:
    """Widgets for every field of config dataclass `cls` but those in `skip` (the page draws them
    itself), with labels, help and defaults from the dataclass; returns only the values the user
    changed, so the config's own defaults apply to the rest. Call it inside a form."""
    from feedback.config_fields import changed, describe

    values, cols = {}, st.columns(columns)
    for i, spec in enumerate(s for s in describe(cls) if s.kind is not dict and s.name not in skip):
        col, wkey = cols[i % columns], f"{key}-{spec.name}"
        if spec.kind is bool:
            values[spec.name] = col.checkbox(spec.name, value=bool(spec.default), help=spec.help, key=wkey)
        elif spec.choices:
            options = list(spec.choices)
            values[spec.name] = col.selectbox(spec.name, options, index=options.index(spec.default),
                                              help=spec.help, key=wkey)
        elif spec.kind in (int, float) and not spec.optional:
            # A float's +/- moves it by a tenth of its default (a learning rate of 5e-5 by 5e-6).
            step = 1 if spec.kind is int else (abs(spec.default) / 10 or 0.01)
            fmt = "%d" if spec.kind is int else "%g"
            values[spec.name] = col.number_input(spec.name, value=spec.default, step=step, format=fmt,
                                                 help=spec.help, key=wkey)
        else:  # text, lists (comma-separated) and optional numbers ("" = None)
            shown = ", ".join(map(str, spec.default)) if spec.kind is list else (
                "" if spec.default is None else str(spec.default))
            text = col.text_input(spec.name, shown, help=spec.help, key=wkey).strip()
            if text == shown:
                values[spec.name] = spec.default
            elif spec.kind is list:
                values[spec.name] = [spec.item(part.strip()) for part in text.split(",") if part.strip()]
            elif spec.optional and not text:
                values[spec.name] = None
            else:
                values[spec.name] = spec.kind(text) if spec.kind in (int, float) else text
    return changed(cls, values)


def call_service(user: User, action, **kwargs):
    """Call a service as the signed-in `user`, in one transaction; show its refusal (inert: it can
    echo what was typed) and return None instead of failing."""
    try:
        with session_scope(get_engine()) as s:
            return action(session=s, actor=Actor.signed_in(user), **kwargs)
    except UserError as exc:
        st.error(inert_markdown(str(exc)))
        return None
