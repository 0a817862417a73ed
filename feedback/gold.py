"""Gold items and attention checks, and what annotators' answers on them say about each one.

- A reviewer or admin marks an item gold with its answer, or promotes an adjudicated item
  (feedback/adjudication.py) to gold. Attention checks are generated: a pair of a good response
  and an obviously broken one (word salad), or a single broken response for thumbs, with the
  answer known.
- A project with `gold_rate` > 0 hands out, on that share of claims, a gold item the annotator
  has not had, silently: the page looks the same as for any item (feedback/queue.py). Gold items
  take no overlap slot and are not counted as open work.
- Each gold answer updates the annotator's standing on the project: below `gold_min_accuracy`
  after `gold_min_answers` gold answers they are warned; still below after twice as many, paused
  (no more items from this project) until an admin lifts it. Lifting starts the count afresh.
- Training never sees attention checks, and a gold item trains once, on its gold answer, however
  many annotators labelled it (feedback/rows.py).

The AI judge and the graders are measured on gold items too (feedback/quality.py), but only people
have a standing.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import (
    AnnotatorStanding,
    Item,
    ItemDecision,
    Label,
    PolicyVersion,
    Project,
    Prompt,
    Response,
    User,
    utcnow,
)
from feedback.actors import Actor
from feedback.decisions import get_item, set_decision, value_of
from feedback.errors import UserError

STANDING_ACTOR = Actor.process("gold")
# Made-up words: a broken response that no reader could take for an answer, and that holds no
# digits or real words a grader could score as correct.
NONSENSE = ("blorf", "zindle", "quargle", "frumious", "snarp", "wibbet", "glorp", "trundish", "vosk", "plimth",
            "hurrow", "skell", "mimbly", "drosk", "fennit", "quib")
ATTENTION_TASKS = ("pairwise", "binary")


def _require_gold_project(project: Project) -> None:
    if project.task_type not in ATTENTION_TASKS:
        raise UserError(f"Gold items and attention checks are for pairwise and binary projects, not "
                        f"{project.task_type} ones.")


def mark_gold(*, session: Session, actor: Actor, item_id: int, answer: str | None = None,
              note: str = "") -> ItemDecision:
    """Make an item gold with `answer`; without one, promote the item's adjudicated answer."""
    actor.require("reviewer", "admin")
    item = get_item(session, item_id)
    existing = session.get(ItemDecision, item.id)
    if answer is None:
        if existing is None:
            raise UserError(f"Item {item.id} has no adjudicated answer to promote; give the gold answer.")
        answer, note = value_of(existing), note or existing.note
    origin = existing.origin if existing is not None and answer == value_of(existing) else "gold"
    return set_decision(session=session, actor=actor, item=item, origin=origin, answer=answer, gold=True, note=note)


def unmark_gold(*, session: Session, actor: Actor, item_id: int) -> None:
    """The item is no longer gold: an adjudicated answer stays (not gold), a plain gold mark goes."""
    actor.require("reviewer", "admin")
    decision = session.get(ItemDecision, item_id)
    if decision is None or not decision.gold:
        raise UserError(f"Item {item_id} is not gold.")
    if decision.origin == "attention":
        raise UserError(f"Item {item_id} is an attention check: it is made to be gold and never trains.")
    if decision.origin == "gold":
        session.delete(decision)
    else:
        decision.gold = False
    session.flush()
    actor.record(session=session, action="decision.ungold", target=f"item:{item_id}", details={})


def broken_text(rng: random.Random, length: int = 12) -> str:
    words = [rng.choice(NONSENSE) for _ in range(length)]
    return " ".join(words).capitalize()


def _policy_for_checks(session: Session) -> int:
    """Responses need a policy version; checks are filed under the active one (or the oldest)."""
    policy = session.scalar(select(PolicyVersion.id).where(PolicyVersion.status == "active"))
    policy = policy or session.scalar(select(PolicyVersion.id).order_by(PolicyVersion.id).limit(1))
    if policy is None:
        raise UserError("Attention checks are made from sampled responses; sample some first.")
    return policy


def make_attention_checks(*, session: Session, actor: Actor, project: Project, count: int,
                          rng: random.Random | None = None) -> list[int]:
    """`count` attention checks on prompts of the project's train items; returns their item ids.

    A pairwise check pairs a good response (the prompt's reference answer where it has one,
    otherwise one of the project's sampled responses to it) with word salad, on a random side;
    its answer is the good side. A binary check is one word-salad response; its answer is down."""
    actor.require("reviewer", "admin")
    _require_gold_project(project)
    if not 1 <= count <= 1000:
        raise UserError("Make from 1 to 1000 attention checks at a time.")
    rng = rng or random.Random()
    checked = select(Item.prompt_id).join(ItemDecision, ItemDecision.item_id == Item.id).where(
        ItemDecision.origin == "attention", Item.project_id == project.id)
    candidates = list(session.execute(
        select(Prompt.id, Prompt.reference, func.min(Item.response_a_id))
        .join(Item, Item.prompt_id == Prompt.id)
        .where(Item.project_id == project.id, Prompt.split == "train", Prompt.id.not_in(checked))
        .group_by(Prompt.id, Prompt.reference).order_by(Prompt.id)))
    if not candidates:
        raise UserError(f"Project {project.name!r} has no train items (without a check) to make attention checks "
                        "from; sample some first.")
    policy_id = _policy_for_checks(session)
    made = []
    for prompt_id, reference, response_id in rng.sample(candidates, min(count, len(candidates))):
        broken = Response(prompt_id=prompt_id, policy_version_id=policy_id, text=broken_text(rng),
                          params={"attention_check": "word_salad"})
        session.add(broken)
        if project.task_type == "pairwise":
            if reference and reference.strip():
                good = Response(prompt_id=prompt_id, policy_version_id=policy_id, text=reference.strip(),
                                params={"attention_check": "reference"})
                session.add(good)
                session.flush()
                good_id = good.id
            else:
                session.flush()
                good_id = response_id
            good_first = rng.random() < 0.5
            a, b = (good_id, broken.id) if good_first else (broken.id, good_id)
            item = Item(project_id=project.id, kind="pair", prompt_id=prompt_id, response_a_id=a, response_b_id=b)
            answer = "a" if good_first else "b"
        else:
            session.flush()
            item = Item(project_id=project.id, kind="single", prompt_id=prompt_id, response_a_id=broken.id)
            answer = "down"
        session.add(item)
        session.flush()
        set_decision(session=session, actor=actor, item=item, origin="attention", answer=answer, gold=True,
                     note="generated attention check")
        made.append(item.id)
    return made


# --- standings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    username: str
    status: str
    gold_answers: int
    gold_correct: int
    counted_from: datetime | None

    @property
    def accuracy(self) -> float | None:
        return round(self.gold_correct / self.gold_answers, 3) if self.gold_answers else None


def _gold_record(session: Session, project_id: int, user_id: int, since: datetime | None) -> tuple[int, int]:
    """(gold answers, correct ones) of a person on the project's gold items since `since`."""
    query = (select(Label.choice, Label.thumb, ItemDecision.choice, ItemDecision.thumb)
             .join(ItemDecision, ItemDecision.item_id == Label.item_id)
             .where(ItemDecision.project_id == project_id, ItemDecision.gold.is_(True),
                    Label.user_id == user_id, Label.source == "human",
                    # only answers given while it was gold: a label before a reviewer settled
                    # the item was no check anyone was served
                    Label.created_at >= ItemDecision.decided_at))
    if since is not None:
        query = query.where(Label.created_at >= since)
    rows = session.execute(query).all()
    correct = sum((choice or thumb) == (gold_choice or gold_thumb) for choice, thumb, gold_choice, gold_thumb in rows)
    return len(rows), correct


def status_for(project: Project, answers: int, correct: int) -> str:
    """ok / warned / paused from a count of gold answers (a pause is only ever lifted by an admin)."""
    if answers >= project.gold_min_answers and correct / answers < project.gold_min_accuracy:
        return "paused" if answers >= 2 * project.gold_min_answers else "warned"
    return "ok"


def after_label(*, session: Session, label: Label, project: Project) -> None:
    """Called by the queue for each new label: a person's answer on a gold item updates their standing."""
    if label.source != "human":
        return
    decision = session.get(ItemDecision, label.item_id)
    if decision is None or not decision.gold:
        return
    _recount(session, project, label.user_id)


def after_undo(*, session: Session, label: Label, project: Project) -> None:
    """Called by the queue when a person takes back a label (its row already deleted): an answer
    on a gold item, counted in the standing, keeps counting as given, so "undo" cannot erase a miss
    (and the next answer on the item counts as well)."""
    decision = session.get(ItemDecision, label.item_id)
    if label.source != "human" or decision is None or not decision.gold or label.created_at < decision.decided_at:
        return
    standing = _locked_standing(session, project.id, label.user_id)
    if standing.counted_from is not None and label.created_at < standing.counted_from:
        return  # from before an admin lifted a pause: no longer counted
    standing.undone_answers += 1
    standing.undone_correct += (label.choice or label.thumb) == (decision.choice or decision.thumb)
    _recount(session, project, label.user_id)


def _recount(session: Session, project: Project, user_id: int) -> None:
    standing = _locked_standing(session, project.id, user_id)
    answers, correct = _gold_record(session, project.id, user_id, standing.counted_from)
    answers, correct = answers + standing.undone_answers, correct + standing.undone_correct
    standing.gold_answers, standing.gold_correct = answers, correct
    if standing.status == "paused":
        return
    status = status_for(project, answers, correct)
    if status != standing.status:
        standing.status, standing.changed_at, standing.changed_by_id = status, utcnow(), None
        STANDING_ACTOR.record(session=session, action=f"standing.{status}", target=f"project:{project.name}",
                              details={"user_id": user_id, "gold_answers": answers, "gold_correct": correct})


def _locked_standing(session: Session, project_id: int, user_id: int) -> AnnotatorStanding:
    """The annotator's standing row, made if missing and locked on Postgres, so two gold answers
    submitted at once are counted one after the other (the second recount sees the first's label,
    committed). SQLite's write transactions are serialised already."""
    session.flush()
    dialect = session.get_bind().dialect.name
    values = {"project_id": project_id, "user_id": user_id, "status": "ok", "gold_answers": 0, "gold_correct": 0,
              "changed_at": utcnow()}
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(AnnotatorStanding).values(**values).on_conflict_do_nothing())
    query = select(AnnotatorStanding).where(AnnotatorStanding.project_id == project_id,
                                            AnnotatorStanding.user_id == user_id)
    if dialect == "postgresql":
        query = query.with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one()


def standing_status(session: Session, project_id: int, user_id: int) -> str:
    standing = session.get(AnnotatorStanding, (project_id, user_id))
    return standing.status if standing is not None else "ok"


def require_not_paused(*, session: Session, user: User, project: Project) -> None:
    if standing_status(session, project.id, user.id) == "paused":
        raise UserError(f"You are paused on project {project.name!r}: too many of your answers on check items "
                        "disagreed with their known answers. An admin can lift the pause.")


def lift_pause(*, session: Session, actor: Actor, project: Project, username: str) -> Standing:
    """Let a paused (or warned) annotator label again; their gold answers count afresh from now."""
    actor.require("admin")
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"No user called {username!r}.")
    standing = session.get(AnnotatorStanding, (project.id, user.id))
    if standing is None or standing.status == "ok":
        raise UserError(f"{username} is not warned or paused on {project.name!r}.")
    before = standing.status
    standing.status, standing.gold_answers, standing.gold_correct = "ok", 0, 0
    standing.undone_answers = standing.undone_correct = 0
    standing.counted_from = standing.changed_at = utcnow()
    standing.changed_by_id = actor.user_id
    actor.record(session=session, action="standing.lift", target=f"project:{project.name}",
                 details={"user": username, "was": before})
    return Standing(username, "ok", 0, 0, standing.counted_from)


def standings(*, session: Session, actor: Actor, project: Project) -> list[Standing]:
    """Everyone with a gold answer on the project, paused first, then warned."""
    actor.require("reviewer", "admin")
    rows = session.execute(select(AnnotatorStanding, User.username).join(User, User.id == AnnotatorStanding.user_id)
                           .where(AnnotatorStanding.project_id == project.id))
    order = {"paused": 0, "warned": 1, "ok": 2}
    out = [Standing(name, s.status, s.gold_answers, s.gold_correct, s.counted_from) for s, name in rows]
    return sorted(out, key=lambda s: (order[s.status], s.username))


def gold_summary(*, session: Session, project: Project) -> dict[str, int]:
    """Gold items of the project: marked, adjudicated-and-promoted, attention checks."""
    counts = dict(session.execute(select(ItemDecision.origin, func.count())
                                  .where(ItemDecision.project_id == project.id, ItemDecision.gold.is_(True))
                                  .group_by(ItemDecision.origin)).all())
    return {origin: counts.get(origin, 0) for origin in ("gold", "adjudication", "attention")}


def update_gold_settings(*, session: Session, actor: Actor, project: Project, gold_rate: float,
                         gold_min_accuracy: float, gold_min_answers: int) -> Project:
    actor.require("admin")
    if not 0 <= gold_rate <= 1 or not 0 <= gold_min_accuracy <= 1:
        raise UserError("The gold rate and the minimum accuracy are shares, from 0 to 1.")
    if gold_min_answers < 1:
        raise UserError("The number of gold answers before a warning is at least 1.")
    project.gold_rate, project.gold_min_accuracy = float(gold_rate), float(gold_min_accuracy)
    project.gold_min_answers = int(gold_min_answers)
    project.updated_at, project.updated_by_id = utcnow(), actor.user_id
    actor.record(session=session, action="project.gold_settings", target=f"project:{project.name}",
                 details={"gold_rate": gold_rate, "gold_min_accuracy": gold_min_accuracy,
                          "gold_min_answers": gold_min_answers})
    return project
