"""Releasing a policy version: what the Training page, `policy promote|rollback` and the online
loop all do, in one place and one order."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from db.engine import session_scope
from feedback.actors import Actor
from feedback.deploy import deploy
from feedback.policies import check_gate, policy_by_name, promote
from feedback.refill import sample_new_policy
from feedback.settings import get_settings


@dataclass
class Release:
    name: str
    deployed: str  # what deploy did ("local", "loaded v3 on http://...")
    # The jobs sampling the new policy for annotators, one per project in use.
    sampling_jobs: list[int]

    def summary(self) -> str:
        text = f"{self.name} is the active policy ({self.deployed})"
        if self.sampling_jobs:
            text += (f"; sampling job{'s' * (len(self.sampling_jobs) > 1)} {', '.join(map(str, self.sampling_jobs))}"
                     " making items from it, which annotators get first")
        return text


def release_policy(*, engine: Engine, name: str, actor: Actor, resample: bool = True,
                   override_reason: str | None = None) -> Release:
    """Deploy `name` to where sampling runs, make it the active policy, then (with `resample`)
    start a sampling job from it so the annotation queue serves its responses next.

    Deploying comes first and outside the transaction: a server that refuses the adapter raises
    a UserError and leaves the active policy as it was. Rolling back is releasing an older version.
    A version whose evaluation gate did not pass needs `override_reason` (see policies.promote),
    checked before anything is deployed.
    """
    actor.require("admin")
    with session_scope(engine, read_only=True) as session:
        version = policy_by_name(session=session, name=name)
        if version.status != "active":  # refused before anything is deployed
            check_gate(version, override_reason)
        deployed = deploy(version=version)
    with session_scope(engine) as session:
        promote(session=session, name=name, actor=actor, override_reason=override_reason)
    job_ids = []
    if resample:
        job_ids = sample_new_policy(engine=engine, database_url=get_settings().database_url, actor=actor)
    return Release(name=name, deployed=deployed, sampling_jobs=job_ids)
