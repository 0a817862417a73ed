"""First-run set-up: schema, default model, v0 policy, demo prompts and an admin account."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import User
from feedback.actors import SETUP
from feedback.policies import ensure_base_policy
from feedback.prompts import import_prompts
from feedback.users import create_user, generate_password
from judges.constitutions import ensure_shipped

DEMO_PROMPTS = Path(__file__).resolve().parent / "data" / "demo_prompts.jsonl"
ADMIN_USERNAME = "admin"


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
    password = None
    if session.scalar(select(User.id).where(User.role == "admin")) is None:
        password = generate_password()
        create_user(session=session, username=ADMIN_USERNAME, role="admin", password=password, actor=SETUP)
    return SeedResult(prompts_inserted=inserted, admin_password=password)
