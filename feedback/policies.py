"""Policy versions: the base model as v0, lookup by name, the active one."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import PolicyVersion
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.settings import Settings, get_settings


def ensure_base_policy(*, session: Session, actor: Actor, settings: Settings | None = None) -> PolicyVersion:
    """v0 is the configured base model; created (and made active) on first use."""
    settings = settings or get_settings()
    existing = session.scalar(select(PolicyVersion).where(PolicyVersion.name == "v0"))
    if existing is not None:
        return existing
    has_active = session.scalar(select(PolicyVersion.id).where(PolicyVersion.status == "active")) is not None
    version = PolicyVersion(
        name="v0", base_model=settings.policy_model, served_name=settings.policy_model,
        status="retired" if has_active else "active", stage="base",
    )
    session.add(version)
    session.flush()
    actor.record(session=session, action="policy.create", target=f"policy:{version.id}",
                 details={"name": "v0", "base_model": settings.policy_model})
    return version


def active_policy(*, session: Session) -> PolicyVersion:
    version = session.scalar(select(PolicyVersion).where(PolicyVersion.status == "active"))
    if version is None:
        raise UserError("No active policy version; run `python -m feedback db upgrade` and seed, or promote one.")
    return version


def policy_by_name(*, session: Session, name: str) -> PolicyVersion:
    version = session.scalar(select(PolicyVersion).where(PolicyVersion.name == name))
    if version is None:
        known = ", ".join(session.scalars(select(PolicyVersion.name).order_by(PolicyVersion.id))) or "none"
        raise UserError(f"No policy version {name!r} (known: {known}).")
    return version


def list_policies(*, session: Session) -> list[PolicyVersion]:
    return list(session.scalars(select(PolicyVersion).order_by(PolicyVersion.id)))


def next_version_name(*, session: Session) -> str:
    names = session.scalars(select(PolicyVersion.name)).all()
    numbers = [int(n[1:]) for n in names if n.startswith("v") and n[1:].isdigit()]
    return f"v{max(numbers, default=-1) + 1}"


def gate_decision(version: PolicyVersion) -> str:
    """'passed', 'failed' or 'undecided': what the evaluation gate said of a trained version (the
    base model needs no gate). A version that was never evaluated is undecided."""
    if version.stage == "base":
        return "passed"
    evaluation = version.evaluation or {}
    if evaluation.get("decision"):
        return evaluation["decision"]
    if "passed" in evaluation:  # evaluated before gates said "undecided"
        return "passed" if evaluation["passed"] else "failed"
    return "undecided"


def check_gate(version: PolicyVersion, override_reason: str | None) -> str:
    """The version's gate decision; a UserError when it did not pass and no reason overrides it."""
    decision = gate_decision(version)
    if decision != "passed" and not (override_reason or "").strip():
        raise UserError(f"{version.name}'s evaluation gate is {decision}: promote it only with an override and a "
                        "reason (the page's override box, or --override-gate REASON).")
    return decision


def promote(*, session: Session, name: str, actor: Actor, override_reason: str | None = None) -> PolicyVersion:
    """Make `name` the active policy (sampling uses it from now on); the old one is retired.
    Rolling back is promoting an earlier version. A version whose gate did not pass is promoted
    only with an explicit override and its reason, which the audit log keeps. Most callers want
    feedback.release.release_policy, which deploys to the server first (so a failed deploy
    changes nothing) and samples afterwards."""
    actor.require("admin")
    target = policy_by_name(session=session, name=name)
    if target.status == "external":
        raise UserError(f"{name} is an outside model whose responses were imported; it cannot be deployed.")
    current = session.scalar(select(PolicyVersion).where(PolicyVersion.status == "active"))
    if current is not None and current.id == target.id:
        return target
    decision = check_gate(target, override_reason)
    reason = (override_reason or "").strip()
    if current is not None:
        current.status = "retired"
        session.flush()  # free the one-active slot before taking it
    target.status = "active"
    actor.record(session=session, action="policy.promote", target=f"policy:{target.id}",
                 details={"name": name, "previous": current.name if current else None, "gate": decision,
                          **({"override_reason": reason[:500]} if decision != "passed" else {})})
    return target


EXTERNAL_PREFIX = "ext:"


def external_version(*, session: Session, actor: Actor, model: str) -> PolicyVersion:
    """The policy version `ext:<model>` that responses of an outside model (imported files, API
    records) are filed under, status "external": never deployed, sampled or trained. Made on first
    use, safely when two requests make it at once."""
    name = EXTERNAL_PREFIX + model
    found = session.scalar(select(PolicyVersion).where(PolicyVersion.name == name))
    if found is not None:
        if found.status != "external":
            raise UserError(f"{name!r} is one of this app's policy versions, not an outside model.")
        return found
    version = PolicyVersion(name=name, base_model=model[:255], status="external")
    try:
        with session.begin_nested():
            session.add(version)
    except IntegrityError:  # made by another request at the same moment
        return session.scalars(select(PolicyVersion).where(PolicyVersion.name == name)).one()
    actor.record(session=session, action="policy.create", target=f"policy:{version.id}",
                 details={"name": name, "base_model": model[:255], "status": "external"})
    return version
