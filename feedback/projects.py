"""Labelling projects: a task type, guidelines (versioned), members and a queue of their own.

A project's task type decides everything downstream: the item kind sampling makes, the page an
annotator sees, the label kind recorded and the export conversions (feedback/conversions.py).
"Open" projects accept every annotator (the default projects that existing data migrated into
are open, as the single queue before them was); other projects only their members. Admins may
label in any project.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import TASK_TYPES, Guidelines, Item, PolicyVersion, Project, ProjectMember, User, utcnow
from feedback.actors import SETUP, Actor
from feedback.conversions import DEFAULT_ASPECTS
from feedback.errors import UserError


@dataclass(frozen=True)
class Task:
    item_kind: str
    label_kind: str
    k_default: int
    k_range: tuple[int, int]
    summary: str


TASKS = {
    "pairwise": Task("pair", "pairwise", 2, (2, 2), "which of two responses is better (A / B / tie / both bad)"),
    "binary": Task("single", "binary", 1, (1, 1), "thumbs up or down on one response"),
    "rank": Task("rank", "rank", 4, (3, 8), "order K responses from best to worst, ties allowed"),
    "rating": Task("rating", "rating", 4, (3, 8), "rate K responses 1-5 on each aspect"),
    "edit": Task("edit", "edit", 1, (1, 1), "rewrite a response until it is a good answer"),
}
assert tuple(TASKS) == TASK_TYPES

# Where data without a project lives: what existed before projects migrated here (migration 0005).
DEFAULT_PROJECTS = {"pair": ("default", "pairwise"), "single": ("default-binary", "binary")}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ASPECT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_GUIDELINES_CHARS = 50_000


def task_of(project: Project) -> Task:
    return TASKS[project.task_type]


def create_project(*, session: Session, actor: Actor, name: str, task_type: str, k: int | None = None,
                   aspects: list[str] | None = None, guidelines: str | None = None, description: str = "",
                   open_to_all: bool = False) -> Project:
    actor.require("admin")
    name = name.strip()
    if not _NAME.match(name):
        raise UserError("A project name is 1-64 characters: lower-case letters, digits, '-', '_' or '.'.")
    if task_type not in TASKS:
        raise UserError(f"Task type is one of {', '.join(TASKS)}, not {task_type!r}.")
    task = TASKS[task_type]
    k = task.k_default if k is None else int(k)
    if not task.k_range[0] <= k <= task.k_range[1]:
        low, high = task.k_range
        article = "An" if task_type[0] in "aeiou" else "A"
        raise UserError(f"{article} {task_type} project shows " + (
            f"{low} to {high} responses per item; choose K in that range, not {k}." if high > low
            else f"{low} response{'s' * (low > 1)} per item, not {k}."))
    if task_type == "rating":
        aspects = [a.strip() for a in (aspects or DEFAULT_ASPECTS) if a.strip()]
        if not aspects or len(set(aspects)) != len(aspects) or not all(_ASPECT.match(a) for a in aspects):
            raise UserError("Aspects are distinct names of lower-case letters, digits and '_' "
                            "(e.g. helpfulness, truthfulness).")
    elif aspects:
        raise UserError("Only rating projects have aspects.")
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise UserError(f"There is already a project called {name!r}.")
    project = Project(name=name, task_type=task_type, k=k, aspects=list(aspects or []), description=description,
                      open_to_all=open_to_all, created_by_id=actor.user_id, updated_by_id=actor.user_id)
    session.add(project)
    session.flush()
    actor.record(session=session, action="project.create", target=f"project:{name}",
                 details={"task_type": task_type, "k": k, "aspects": project.aspects, "open": open_to_all})
    if guidelines:
        add_guidelines(session=session, actor=actor, project=project, text=guidelines)
    return project


def get_project(*, session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        known = ", ".join(session.scalars(select(Project.name).order_by(Project.name))) or "none yet"
        raise UserError(f"No project called {name!r} (projects: {known}).")
    return project


def default_project(*, session: Session, kind: str = "pair") -> Project:
    """The open project that holds pairs or singles made without naming a project."""
    if kind not in DEFAULT_PROJECTS:
        raise UserError("Only pairs and single responses have a default project; name one.")
    name, task_type = DEFAULT_PROJECTS[kind]
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = create_project(session=session, actor=SETUP, name=name, task_type=task_type, open_to_all=True)
    return project


def all_projects(*, session: Session) -> list[Project]:
    """Every project by name: what reviewers filter labels by (they review every project's)."""
    return list(session.scalars(select(Project).order_by(Project.name)))


def visible_projects(*, session: Session, user: User) -> list[Project]:
    """The projects this person may label in: all for admins; open ones and their own otherwise."""
    query = select(Project).order_by(Project.name)
    if user.role != "admin":
        mine = select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)
        query = query.where(Project.open_to_all | Project.id.in_(mine))
    return list(session.scalars(query))


def may_label(*, session: Session, user: User, project: Project) -> bool:
    if user.role == "admin" or project.open_to_all:
        return True
    return session.get(ProjectMember, (project.id, user.id)) is not None


def require_member(*, session: Session, user: User, project: Project) -> None:
    if not may_label(session=session, user=user, project=project):
        raise UserError(f"You are not a member of project {project.name!r}; an admin can add you.")


def _user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"No user called {username!r}.")
    return user


def add_member(*, session: Session, actor: Actor, project: Project, username: str) -> bool:
    """Add `username` to the project; False when they were a member already."""
    actor.require("admin")
    user = _user(session, username)
    if session.get(ProjectMember, (project.id, user.id)) is not None:
        return False
    session.add(ProjectMember(project_id=project.id, user_id=user.id))
    actor.record(session=session, action="project.member_add", target=f"project:{project.name}",
                 details={"user": username})
    return True


def remove_member(*, session: Session, actor: Actor, project: Project, username: str) -> bool:
    actor.require("admin")
    member = session.get(ProjectMember, (project.id, _user(session, username).id))
    if member is None:
        return False
    session.delete(member)
    actor.record(session=session, action="project.member_remove", target=f"project:{project.name}",
                 details={"user": username})
    return True


def members(*, session: Session, project: Project) -> list[str]:
    return list(session.scalars(
        select(User.username).join(ProjectMember, ProjectMember.user_id == User.id)
        .where(ProjectMember.project_id == project.id).order_by(User.username)))


def current_guidelines(*, session: Session, project_id: int) -> Guidelines | None:
    return session.scalar(select(Guidelines).where(Guidelines.project_id == project_id)
                          .order_by(Guidelines.version.desc()).limit(1))


def add_guidelines(*, session: Session, actor: Actor, project: Project, text: str) -> Guidelines:
    """A new guidelines version (the same text as the current one is not a new version)."""
    actor.require("admin")
    text = text.strip()
    if not text:
        raise UserError("Guidelines cannot be empty.")
    if len(text) > MAX_GUIDELINES_CHARS:
        raise UserError(f"Guidelines are at most {MAX_GUIDELINES_CHARS:,} characters.")
    current = current_guidelines(session=session, project_id=project.id)
    if current is not None and current.text == text:
        return current
    version = (session.scalar(select(func.max(Guidelines.version)).where(Guidelines.project_id == project.id)) or 0) + 1
    guidelines = Guidelines(project_id=project.id, version=version, text=text, created_by_id=actor.user_id)
    session.add(guidelines)
    session.flush()
    actor.record(session=session, action="project.guidelines", target=f"project:{project.name}",
                 details={"version": version, "chars": len(text)})
    return guidelines


def set_arena(*, session: Session, actor: Actor, project: Project, arena: bool) -> Project:
    """Arena mode on or off. While on, the project's refills sample blind head-to-head pairs of
    two of its policy versions (feedback/refill.py: arena_pair) for the leaderboard, so it needs a
    pairwise project with at least two versions chosen in its queue settings that can be sampled."""
    actor.require("admin")
    versions = list(session.scalars(select(PolicyVersion.name).where(
        PolicyVersion.id.in_(project.policy_version_ids), PolicyVersion.status != "external")
        .order_by(PolicyVersion.name)))
    if arena and project.task_type != "pairwise":
        raise UserError(f"Arena mode makes pairs; {project.name!r} is a {project.task_type} project.")
    if arena and len(versions) < 2:
        raise UserError(f"Arena mode pits two of the project's policy versions against each other: choose at "
                        f"least two in {project.name!r}'s queue settings first (outside models, whose responses "
                        "were imported, cannot be sampled).")
    project.arena = bool(arena)
    project.updated_at, project.updated_by_id = utcnow(), actor.user_id
    actor.record(session=session, action="project.arena", target=f"project:{project.name}",
                 details={"arena": project.arena, "versions": versions})
    return project


def item_counts(*, session: Session) -> dict[int, int]:
    """Items per project id."""
    return dict(session.execute(select(Item.project_id, func.count()).group_by(Item.project_id)).all())
