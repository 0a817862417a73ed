"""What annotators get first: pairs the AI judge could not decide, then the active policy's
responses (fresh data right after a promotion), then the oldest."""
from sqlalchemy import select

from db.engine import session_scope
from db.models import Constitution, Item, Job, Judgment, PolicyVersion, Prompt, Response, User
from feedback.actors import CLI
from feedback.policies import ensure_base_policy, promote
from feedback.projects import default_project
from feedback.prompts import canonical_messages, content_hash
from feedback.queue import claim_next


def _pair(s, version, text):
    messages = canonical_messages(text, None)
    prompt = Prompt(text=text, messages=messages, content_hash=content_hash(messages))
    s.add(prompt)
    s.flush()
    a = Response(prompt_id=prompt.id, policy_version_id=version.id, text=f"{text} a", params={})
    b = Response(prompt_id=prompt.id, policy_version_id=version.id, text=f"{text} b", params={})
    s.add_all([a, b])
    s.flush()
    item = Item(kind="pair", project_id=default_project(session=s).id, prompt_id=prompt.id,
                response_a_id=a.id, response_b_id=b.id)
    s.add(item)
    s.flush()
    return item.id


def test_escalated_then_on_policy_then_oldest(engine):
    with session_scope(engine) as s:
        v0 = ensure_base_policy(session=s, actor=CLI)
        v1 = PolicyVersion(name="v1", base_model="m", parent_id=v0.id, status="candidate")
        s.add(v1)
        s.flush()
        old = _pair(s, v0, "old")
        fresh = _pair(s, v1, "fresh")
        disputed = _pair(s, v0, "disputed")
        constitution = Constitution(name="c", version=1, principles=["p"], content_hash="h")
        job = Job(kind="judge", config={}, status="succeeded")
        s.add_all([constitution, job])
        s.flush()
        s.add(Judgment(job_id=job.id, item_id=disputed, constitution_id=constitution.id, backend="x", model="x",
                       template_version="t", outcome="inconsistent"))
        promote(session=s, name="v1", actor=CLI, override_reason="a hand-built version, never evaluated")
        users = [User(username=f"u{k}", password_hash="x", role="annotator") for k in range(3)]
        s.add_all(users)
    order = []
    for k in range(3):
        with session_scope(engine) as s:
            user = s.scalar(select(User).where(User.username == f"u{k}"))
            order.append(claim_next(session=s, user=user, kind="pair").item_id)
    # overlap 1: each annotator gets the next item in priority order
    assert order == [disputed, fresh, old]
