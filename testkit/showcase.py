"""A lived-in workspace for screenshots and page-by-page checks: three policy versions, a fortnight
of labels from people and the AI judge (with its spend), versus pairs for the leaderboard, open
items and a lease, and one project of every task type. Built straight through the ORM with fixed
seeds, so the pages look the same on every run; the services under test are what read it."""
from __future__ import annotations

import random
import uuid
from datetime import timedelta

from sqlalchemy import Engine, select

from db.engine import session_scope
from db.models import (
    Assignment,
    Constitution,
    Item,
    ItemResponse,
    Job,
    Judgment,
    Label,
    PolicyVersion,
    Prompt,
    Response,
    User,
    Webhook,
    WebhookDelivery,
    utcnow,
)
from feedback.actors import Actor
from feedback.policies import ensure_base_policy
from feedback.projects import add_member, create_project, default_project
from feedback.prompts import canonical_messages, content_hash
from feedback.users import create_user
from judges.constitutions import ensure_shipped

SHOWCASE = Actor.process("showcase")
PASSWORDS = {"root": "admin-password", "ann": "annotator-pw", "bob": "bob-annotator-pw",
             "cat": "cat-annotator-pw", "rev": "reviewer-pw"}
ROLES = {"root": "admin", "ann": "annotator", "bob": "annotator", "cat": "annotator", "rev": "reviewer"}

# (question, answer of a weak, a middling and a good policy): v2 answers best, v0 worst.
QUESTIONS = [
    ("What is 17 + 25?", "It is 32.", "17 + 25 = 42.", "17 + 25 = 42 (17 + 20 = 37, plus 5)."),
    ("Name the largest planet in the solar system.", "Saturn.", "Jupiter.",
     "Jupiter: about 11 times Earth's diameter."),
    ("Give a synonym for 'rapid'.", "Slowly.", "Fast.", "Quick, swift or fast."),
    ("How many minutes are in 3 hours?", "About 100.", "180 minutes.", "3 x 60 = 180 minutes."),
    ("What is the boiling point of water at sea level in Celsius?", "90 degrees.", "100 degrees.",
     "100 °C at standard pressure (1 atm)."),
    ("Translate 'thank you' into French.", "Gracias.", "Merci.", "Merci (or, more warmly, merci beaucoup)."),
    ("What is 9 x 8?", "It is 81.", "72.", "9 x 8 = 72."),
    ("Which gas do plants take in for photosynthesis?", "Oxygen.", "Carbon dioxide.",
     "Carbon dioxide (CO2), with water and light."),
    ("Write a haiku about rain.", "Rain is wet and falls.", "Soft rain on the roof / the garden drinks "
     "slowly / night hums its low song", "Grey clouds lean closer / each leaf holds a small bright drum / "
     "the street smells of earth"),
    ("What is the capital of Australia?", "Sydney.", "Canberra.", "Canberra, not Sydney or Melbourne."),
    ("Is 51 a prime number?", "Yes, 51 is prime.", "No.", "No: 51 = 3 x 17."),
    ("Explain what a mutex is in one sentence.", "A kind of file.",
     "A lock that only one thread can hold at a time.",
     "A lock that lets one thread at a time use a shared resource, so updates do not interleave."),
]
DAYS = 14


def _prompt(session, text: str) -> Prompt:
    """The prompt with this text (one per text: prompts are unique by content)."""
    found = session.scalar(select(Prompt).where(Prompt.text == text))
    if found is not None:
        return found
    messages = canonical_messages(text, None)
    prompt = Prompt(text=text, messages=messages, content_hash=content_hash(messages), split="train",
                    tags=["showcase"], source="showcase")
    session.add(prompt)
    session.flush()
    return prompt


def _versions(session) -> list[PolicyVersion]:
    v0 = ensure_base_policy(session=session, actor=SHOWCASE)
    v1 = PolicyVersion(name="v1", base_model=v0.base_model, parent_id=v0.id, stage="dpo", status="retired",
                       evaluation={"win_rate": 0.61, "decision": "promote"})
    v2 = PolicyVersion(name="v2", base_model=v0.base_model, parent_id=None, stage="dpo", status="candidate",
                       evaluation={"win_rate": 0.58, "decision": "promote"})
    session.add_all([v1, v2])
    session.flush()
    v2.parent_id = v1.id
    v0.status = "retired"
    session.flush()
    v2.status = "active"
    session.flush()
    return [v0, v1, v2]


def _human_label(item: Item, user: User, choice: str, at, rng: random.Random) -> list:
    order = rng.choice(["ab", "ba"])
    assignment = Assignment(item_id=item.id, user_id=user.id, status="done", shown_order=order,
                            leased_at=at - timedelta(seconds=rng.randint(6, 40)), expires_at=at + timedelta(minutes=10),
                            finished_at=at)
    label = Label(item_id=item.id, kind="pairwise", choice=choice, source="human", user_id=user.id,
                  shown_order=order, submission_id=uuid.uuid4().hex, created_at=at)
    return [assignment, label]


def seed_showcase(engine: Engine, *, seed: int = 7) -> None:
    """Fill an empty, migrated database (see the module docstring)."""
    rng = random.Random(seed)
    now = utcnow()
    with session_scope(engine) as s:
        ensure_shipped(session=s)
        users = {name: create_user(session=s, username=name, role=ROLES[name], password=PASSWORDS[name],
                                   actor=SHOWCASE) for name in PASSWORDS}
        versions = _versions(s)
        pairs = default_project(session=s)
        pairs.refill_below = 0  # no sampling worker: every item is seeded here
        pairs.policy_version_ids = [v.id for v in versions]
        constitution = s.scalar(select(Constitution).order_by(Constitution.id))
        judge_job = Job(kind="judge", status="succeeded", config={"backend": "anthropic"},
                        progress_done=0, result={"summary": "Judged 0 pairs."}, created_at=now - timedelta(days=DAYS),
                        started_at=now - timedelta(days=DAYS), finished_at=now - timedelta(days=DAYS))
        s.add(judge_job)
        s.flush()
        annotators = [users[n] for n in ("ann", "bob", "cat")]
        judged = 0
        for q, (question, *answers) in enumerate(QUESTIONS):
            prompt = _prompt(s, question)
            responses = [Response(prompt_id=prompt.id, policy_version_id=v.id, text=answers[i], params={})
                         for i, v in enumerate(versions)]
            s.add_all(responses)
            s.flush()
            # Every pair of versions meets on every prompt; the better version wins most labels.
            for lo, hi in ((0, 1), (1, 2), (0, 2)):
                a, b = (responses[lo], responses[hi]) if rng.random() < 0.5 else (responses[hi], responses[lo])
                item = Item(kind="pair", project_id=pairs.id, prompt_id=prompt.id, response_a_id=a.id,
                            response_b_id=b.id)
                s.add(item)
                s.flush()
                if q >= len(QUESTIONS) - 2:
                    continue  # the last prompts stay open: the queue has depth
                better = "a" if a is responses[hi] else "b"
                worse = "b" if better == "a" else "a"
                for user in rng.sample(annotators, 2):
                    at = now - timedelta(days=rng.randint(0, DAYS - 1), hours=rng.randint(0, 8),
                                         minutes=rng.randint(0, 59))
                    choice = better if rng.random() < 0.8 else rng.choice([worse, "tie"])
                    s.add_all(_human_label(item, user, choice, at, rng))
                at = now - timedelta(days=rng.randint(0, DAYS - 1), hours=rng.randint(0, 8))
                verdict = better if rng.random() < 0.85 else worse
                label = Label(item_id=item.id, kind="pairwise", choice=verdict, source="judge",
                              producer="anthropic:claude-sonnet-4-5", constitution_id=constitution.id,
                              provenance={"backend": "anthropic"}, submission_id=uuid.uuid4().hex, created_at=at)
                s.add(label)
                s.flush()
                tokens_in, tokens_out = rng.randint(600, 900), rng.randint(40, 90)
                s.add(Judgment(job_id=judge_job.id, item_id=item.id, constitution_id=constitution.id,
                               backend="anthropic", model="claude-sonnet-4-5", template_version="1",
                               outcome=verdict, verdict_ab=verdict, verdict_ba=verdict, raw={},
                               input_tokens=tokens_in, output_tokens=tokens_out,
                               cost_usd=round((tokens_in * 3 + tokens_out * 15) / 1e6, 6), label_id=label.id,
                               created_at=at))
                judged += 1
        judge_job.progress_done = judge_job.progress_total = judged
        judge_job.result = {"summary": f"Judged {judged} pairs; 0 failed."}
        # bob holds a lease on an open pair right now.
        open_item = s.scalar(select(Item).where(Item.project_id == pairs.id).order_by(Item.id.desc()))
        s.add(Assignment(item_id=open_item.id, user_id=users["bob"].id, status="leased", shown_order="ab",
                         leased_at=now - timedelta(minutes=2), expires_at=now + timedelta(minutes=8)))
        _task_projects(s, versions[-1])
        # A webhook with a short delivery log: one delivered, one failing and due again.
        hook = Webhook(url="http://127.0.0.1:9/hooks/feedback", events=["judge.finished", "queue.low"],
                       description="the team's notifier", created_by_id=users["root"].id)
        s.add(hook)
        s.flush()
        s.add_all([
            WebhookDelivery(webhook_id=hook.id, event="judge.finished", status="delivered", attempts=1,
                            response_status=200, payload={"job_id": judge_job.id, "status": "succeeded"},
                            created_at=now - timedelta(hours=3), delivered_at=now - timedelta(hours=3)),
            WebhookDelivery(webhook_id=hook.id, event="queue.low", status="pending", attempts=2,
                            response_status=503, error="503 Service Unavailable",
                            payload={"project": "default", "open_items": 2},
                            next_attempt_at=now + timedelta(minutes=4), created_at=now - timedelta(minutes=20)),
        ])


def _task_projects(s, version: PolicyVersion) -> None:
    """One small project of every other task type, open to all, items from the active version."""
    specs = [("demo-thumbs", "binary", None), ("demo-rank", "rank", 3), ("demo-rating", "rating", 3),
             ("demo-edit", "edit", None)]
    for name, task, k in specs:
        project = create_project(session=s, actor=SHOWCASE, name=name, task_type=task, k=k,
                                 guidelines=f"Label each {task} item carefully; **wrong answers** lose.",
                                 open_to_all=True)
        project.refill_below = 0
        for question, *answers in QUESTIONS[:3]:
            prompt = _prompt(s, question)
            shown = list(reversed(answers))[: project.k]
            responses = [Response(prompt_id=prompt.id, policy_version_id=version.id, text=t, params={})
                         for t in shown]
            s.add_all(responses)
            s.flush()
            kind = {"binary": "single"}.get(task, task)
            item = Item(kind=kind, project_id=project.id, prompt_id=prompt.id, response_a_id=responses[0].id)
            s.add(item)
            s.flush()
            if kind in ("rank", "rating"):
                s.add_all([ItemResponse(item_id=item.id, position=p, response_id=r.id)
                           for p, r in enumerate(responses)])
    s.flush()
    # A closed project with a member, so the Projects page shows membership.
    closed = create_project(session=s, actor=SHOWCASE, name="experts", task_type="pairwise",
                            guidelines="Only for the expert panel.")
    closed.refill_below = 0
    add_member(session=s, actor=SHOWCASE, project=closed, username="rev")
    s.flush()
