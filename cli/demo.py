"""First-run set-up: schema, default model, v0 policy, demo prompts and an admin account."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Project, User
from feedback.actors import SETUP
from feedback.policies import ensure_base_policy
from feedback.projects import add_guidelines, create_project, default_project
from feedback.prompts import import_prompts
from feedback.users import create_user, generate_password
from judges.constitutions import ensure_shipped

DATA = Path(__file__).resolve().parent / "data"
DEMO_PROMPTS = DATA / "demo_prompts.jsonl"
ADMIN_USERNAME = "admin"
# One open demo project per task type, each with its guidelines; (name, task type, K, prompts to sample).
DEMO_PROJECTS = (
    ("default", "pairwise", 2, 60),
    ("demo-thumbs", "binary", 1, 12),
    ("demo-rank", "rank", 4, 12),
    ("demo-rating", "rating", 4, 12),
    ("demo-edit", "edit", 1, 12),
)


@dataclass
class SeedResult:
    prompts_inserted: int
    admin_password: str | None  # only when the admin was created now; shown once, never stored


def seed_demo(*, session: Session, with_prompts: bool = True) -> SeedResult:
    """Idempotent: a second run adds nothing and creates no second admin."""
    ensure_base_policy(session=session, actor=SETUP)
    ensure_shipped(session=session)
    inserted = 0
    if with_prompts:
        inserted = import_prompts(session=session, path=DEMO_PROMPTS, source="demo", actor=SETUP).inserted
        seed_demo_projects(session=session)
    password = None
    if session.scalar(select(User.id).where(User.role == "admin")) is None:
        password = generate_password()
        create_user(session=session, username=ADMIN_USERNAME, role="admin", password=password, actor=SETUP)
    return SeedResult(prompts_inserted=inserted, admin_password=password)


def seed_demo_projects(*, session: Session) -> None:
    """The demo projects, open to every annotator, with the shipped guidelines (idempotent)."""
    for name, task_type, k, _ in DEMO_PROJECTS:
        guidelines = (DATA / "guidelines" / f"{task_type}.md").read_text(encoding="utf-8")
        project = session.scalar(select(Project).where(Project.name == name))
        if project is None and name == "default":
            project = default_project(session=session)
        if project is None:
            project = create_project(session=session, actor=SETUP, name=name, task_type=task_type, k=k,
                                     open_to_all=True, description=f"Demo: {task_type} on the demo prompts.")
        add_guidelines(session=session, actor=SETUP, project=project, text=guidelines)
