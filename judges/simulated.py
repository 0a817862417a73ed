"""Simulated annotators: stand-ins for people, in the spirit of AlpacaFarm's simulated labelers,
for exercising the queue, the quality machinery and the loop without anyone at a keyboard.

Each one is a real user (role annotator, member of the project, an unusable random password)
and goes through the real queue: claim, look at what is shown, submit or skip. Kinds:

- grader[:noise=0.1;grader=numeric]: scores both responses against the prompt's reference with
  a grader and prefers the better one (equal scores: tie); with probability `noise` it answers at
  random instead. Thumbs: up at a score of 0.5 or more. Items without a reference are skipped.
- random: left, right or tie at random; thumbs at random.
- left: always the left response (position bias); thumbs always up.
- adversarial[:grader=numeric]: the opposite of what the grader prefers.

A pool is written `kind:count[:options]`, comma-separated, e.g.
`grader:6:noise=0.1,random:2,left:1,adversarial:1`. Simulated annotators label pairwise and
binary projects. One that the project's gold checks pause (feedback/gold.py) stops labelling there, as
a person would.
"""
from __future__ import annotations

import random
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine, select

from db.engine import session_scope
from db.models import Item, Prompt, User
from feedback import gold, queue
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.projects import add_member, get_project
from feedback.queue import Claim
from feedback.registry import Registry
from feedback.users import create_user
from judges.graders import GraderError, parse_grader

TASKS = ("pairwise", "binary")
PREFIX = "sim-"


class Annotator(Protocol):
    def prefer(self, claim: Claim, reference: str | None, rng: random.Random) -> str | None:
        """left / right / tie for a pair as shown, or None to skip it."""
        ...

    def thumb(self, claim: Claim, reference: str | None, rng: random.Random) -> str | None:
        """up / down for a single response, or None to skip it."""
        ...


def _options(text: str, allowed: set[str], kind: str) -> dict[str, str]:
    out = {}
    for part in filter(None, text.split(";")):
        key, _, value = part.partition("=")
        if key not in allowed or not value:
            raise UserError(f"Simulated annotator {kind!r} takes {', '.join(sorted(allowed)) or 'no options'}"
                            f" as key=value, not {part!r}.")
        out[key] = value
    return out


@dataclass
class GraderAnnotator:
    """Prefers what a grader scores higher; answers at random with probability `noise`."""

    grader_spec: str = "numeric"
    noise: float = 0.0
    invert: bool = False  # adversarial: always the other one

    def __post_init__(self) -> None:
        self.grader = parse_grader(self.grader_spec)
        if not 0.0 <= self.noise <= 1.0:
            raise UserError("noise is a probability, from 0 to 1.")

    def _score(self, text: str, reference: str | None) -> float | None:
        if not reference:
            return None
        try:
            return self.grader.grade(text, reference)
        except GraderError:
            return None

    def prefer(self, claim: Claim, reference: str | None, rng: random.Random) -> str | None:
        left, right = self._score(claim.left, reference), self._score(claim.right or "", reference)
        if left is None or right is None:
            return None
        if rng.random() < self.noise:
            return rng.choice(("left", "right", "tie"))
        better = "tie" if left == right else "left" if left > right else "right"
        return {"left": "right", "right": "left"}.get(better, better) if self.invert else better

    def thumb(self, claim: Claim, reference: str | None, rng: random.Random) -> str | None:
        score = self._score(claim.left, reference)
        if score is None:
            return None
        if rng.random() < self.noise:
            return rng.choice(("up", "down"))
        good = score >= 0.5
        return "up" if good != self.invert else "down"


class RandomAnnotator:
    def prefer(self, claim: Claim, reference: str | None, rng: random.Random) -> str | None:
        return rng.choice(("left", "right", "tie"))

    def thumb(self, claim: Claim, reference: str | None, rng: random.Random) -> str | None:
        return rng.choice(("up", "down"))


class LeftAnnotator:
    def prefer(self, claim: Claim, reference: str | None, rng: random.Random) -> str | None:
        return "left"

    def thumb(self, claim: Claim, reference: str | None, rng: random.Random) -> str | None:
        return "up"


def _grader_kind(options: str) -> Annotator:
    o = _options(options, {"noise", "grader"}, "grader")
    try:
        noise = float(o.get("noise", 0.0))
    except ValueError:
        raise UserError(f"noise must be a number, not {o['noise']!r}.") from None
    return GraderAnnotator(grader_spec=o.get("grader", "numeric"), noise=noise)


def _adversarial_kind(options: str) -> Annotator:
    o = _options(options, {"grader"}, "adversarial")
    return GraderAnnotator(grader_spec=o.get("grader", "numeric"), invert=True)


def _plain(cls, kind: str):
    def factory(options: str) -> Annotator:
        _options(options, set(), kind)
        return cls()
    return factory


# kind -> factory(options text); a test or plugin registers more through the same registry.
SIMULATED: Registry = Registry("simulated annotator")
SIMULATED.register("grader", _grader_kind)
SIMULATED.register("adversarial", _adversarial_kind)
SIMULATED.register("random", _plain(RandomAnnotator, "random"))
SIMULATED.register("left", _plain(LeftAnnotator, "left"))


def parse_pool(spec: str) -> list[tuple[str, int, Annotator]]:
    """`kind:count[:options],...` -> (kind, count, annotator) per entry."""
    pool = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        kind, _, rest = entry.partition(":")
        count_text, _, options = rest.partition(":")
        try:
            count = int(count_text)
        except ValueError:
            raise UserError(f"{entry!r}: write kind:count[:options], e.g. grader:6:noise=0.1.") from None
        if not 1 <= count <= 100:
            raise UserError(f"{entry!r}: from 1 to 100 annotators of a kind.")
        pool.append((kind, count, SIMULATED.get(kind)(options)))
    if not pool:
        raise UserError("Name at least one simulated annotator, e.g. grader:3,random:1.")
    kinds = [kind for kind, _, _ in pool]
    if len(set(kinds)) < len(kinds):  # users are sim-<kind>-<n>: two entries of a kind would share them
        raise UserError("Name each kind once (its users are sim-<kind>-1, -2, ...); "
                        f"{', '.join(sorted({k for k in kinds if kinds.count(k) > 1}))} appears twice.")
    return pool


def _ensure_users(session, *, project, pool, actor: Actor) -> list[tuple[int, str, Annotator]]:
    """One user per simulated annotator, `sim-<kind>-<n>`, made a member of the project."""
    out = []
    for kind, count, annotator in pool:
        for n in range(1, count + 1):
            name = f"{PREFIX}{kind}-{n}"
            user = session.scalar(select(User).where(User.username == name))
            if user is None:  # nobody signs in as a simulation: a random password, never shown
                user = create_user(session=session, username=name, role="annotator",
                                   password=secrets.token_urlsafe(24), actor=actor)
            elif user.role != "annotator" or not name.startswith(PREFIX):
                raise UserError(f"{name!r} exists and is not a simulated annotator.")
            add_member(session=session, actor=actor, project=project, username=name)
            out.append((user.id, kind, annotator))
    return out


def _reference(session, item_id: int) -> str | None:
    return session.scalar(select(Prompt.reference).join(Item, Item.prompt_id == Prompt.id).where(Item.id == item_id))


def run_simulation(*, engine: Engine, project: str, pool: str, labels: int, actor: Actor,
                   seed: int = 0) -> dict:
    """Let the pool label up to `labels` items of `project`, in turns, through the real queue.
    Returns the labels written per kind and how many items each kind skipped."""
    actor.require("admin")
    if labels < 1:
        raise UserError("--labels must be at least 1.")
    annotators_spec = parse_pool(pool)
    with session_scope(engine) as s:
        target = get_project(session=s, name=project)
        if target.task_type not in TASKS:
            raise UserError(f"Simulated annotators label {' and '.join(TASKS)} projects, "
                            f"not {target.task_type} ones.")
        project_id, task = target.id, target.task_type
        people = _ensure_users(s, project=target, pool=annotators_spec, actor=actor)
    rng = random.Random(seed)
    written, skipped, paused = Counter(), Counter(), Counter()
    active = list(people)
    while active and sum(written.values()) < labels:
        # One claim each per turn, like people working side by side, in a fresh (seeded) order each
        # turn: in a fixed order the queue's oldest-first items would go to the same annotators
        # every time (with overlap 5 of 10, every other item to the same five).
        rng.shuffle(active)
        for entry in list(active):
            if sum(written.values()) >= labels:
                break
            user_id, kind, annotator = entry
            with session_scope(engine) as s:
                user = s.get(User, user_id)
                if gold.standing_status(s, project_id, user_id) == "paused":  # the gold checks caught them
                    active.remove(entry)
                    paused[kind] += 1
                    continue
                claim = queue.claim_next(session=s, user=user, project=project_id, rng=rng)  # seeded: replayable
                if claim is None:
                    active.remove(entry)
                    continue
                reference = _reference(s, claim.item_id)
                submission_id = f"sim-{user_id}-{claim.assignment_id}"
                if task == "pairwise":
                    choice = annotator.prefer(claim, reference, rng)
                    if choice is not None:
                        queue.submit_pairwise(session=s, user=user, assignment_id=claim.assignment_id,
                                              submission_id=submission_id, preferred=choice)
                else:
                    choice = annotator.thumb(claim, reference, rng)
                    if choice is not None:
                        queue.submit_binary(session=s, user=user, assignment_id=claim.assignment_id,
                                            submission_id=submission_id, thumb=choice)
                if choice is None:
                    queue.skip(session=s, user=user, assignment_id=claim.assignment_id)
                    skipped[kind] += 1
                else:
                    written[kind] += 1
    total = sum(written.values())
    return {"project": project, "labels": total, "by_kind": dict(written), "skipped": dict(skipped),
            "paused": dict(paused),
            "summary": f"{total} simulated labels in {project}: "
                       + ", ".join(f"{k} {n}" for k, n in sorted(written.items()))
                       + ("; paused by gold checks: " + ", ".join(f"{k} {n}" for k, n in sorted(paused.items()))
                          if paused else "")}
