"""Mutating services say who acts: a signed-in user (role checked) or a named process, never nobody."""
from __future__ import annotations

import inspect

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import AuditLog, PolicyVersion, User
from feedback import jobs, policies, prompts, queue, users
from feedback.actors import CLI, Actor
from feedback.errors import PermissionDenied, UserError
from feedback.release import release_policy
from judges import constitutions
from training import rounds, snapshot

MUTATING = [users.create_user, users.set_password, users.set_active, users.set_role, users.reset_password,
            users.add_user, jobs.create_job, jobs.request_cancel, jobs.resume, policies.ensure_base_policy,
            policies.promote, queue.update_queue_settings, prompts.import_prompts, prompts.import_prompt_rows,
            prompts.import_prompt_file_bytes, constitutions.save_constitution, snapshot.create_snapshot,
            rounds.start_round, release_policy]


@pytest.mark.parametrize("service", MUTATING, ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_actor_is_a_required_keyword(service):
    parameter = inspect.signature(service).parameters["actor"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is inspect.Parameter.empty


def test_a_missing_actor_is_refused_and_writes_nothing(engine):
    with pytest.raises(TypeError, match="actor"), session_scope(engine) as s:
        users.create_user(session=s, username="nobody", role="admin", password="long enough pw")
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(User)) is None


def test_a_user_actor_is_role_checked_and_named_in_the_audit_log(engine):
    with session_scope(engine) as s:
        admin = users.create_user(session=s, username="ada", role="admin", password="long enough pw", actor=CLI)
        annotator = users.create_user(session=s, username="ann", role="annotator", password="long enough pw",
                                      actor=Actor.signed_in(admin))
    with pytest.raises(PermissionDenied), session_scope(engine) as s:
        jobs.create_job(session=s, kind="sample", config={}, actor=Actor.signed_in(annotator))
    with session_scope(engine) as s:
        job = jobs.create_job(session=s, kind="sample", config={}, actor=Actor.signed_in(admin))
    with session_scope(engine, read_only=True) as s:
        entries = {(a.actor, a.action, a.user_id) for a in s.scalars(select(AuditLog))}
        assert s.get(type(job), job.id).created_by_id == admin.id
    assert ("cli", "user.create", None) in entries
    assert ("app:ada", "user.create", admin.id) in entries
    assert ("app:ada", "job.create", admin.id) in entries


def test_each_job_kind_sees_only_its_secrets(monkeypatch):
    for name in jobs.secret_env_vars():
        monkeypatch.setenv(name, f"secret-{name}")
    assert jobs.secret_env_vars() == {"POLICY_API_KEY", "ANTHROPIC_API_KEY", "JUDGE_API_KEY", "HF_TOKEN", "SECRET_KEY"}
    seen = {kind: jobs.secret_env_vars() & set(jobs.child_env(kind)) for kind in jobs.JOB_KINDS.names()}
    # HF_TOKEN reaches no worker (exports push from the CLI); SECRET_KEY only the kinds that deliver
    # webhooks after their job (grading emits no event, so its worker delivers nothing).
    assert seen == {"sample": {"POLICY_API_KEY", "SECRET_KEY"}, "grade": set(),
                    "judge": {"ANTHROPIC_API_KEY", "JUDGE_API_KEY", "SECRET_KEY"},
                    "train": {"POLICY_API_KEY", "ANTHROPIC_API_KEY", "JUDGE_API_KEY", "SECRET_KEY"},
                    "loop": {"POLICY_API_KEY", "ANTHROPIC_API_KEY", "JUDGE_API_KEY", "SECRET_KEY"},
                    "reft": {"POLICY_API_KEY", "ANTHROPIC_API_KEY", "JUDGE_API_KEY", "SECRET_KEY"}}


def test_release_deploys_promotes_and_samples_from_the_new_policy(engine, use_db, registered, monkeypatch):
    from feedback.launchers import LAUNCHERS

    launched = []

    class Recording:
        def launch(self, *, job_id, kind, **_):
            launched.append((job_id, kind))
            return "recorded"

    registered(LAUNCHERS, "recording", Recording)
    monkeypatch.setenv("JOB_LAUNCHER", "recording")
    with session_scope(engine) as s:
        v0 = policies.ensure_base_policy(session=s, actor=CLI)
        s.add(PolicyVersion(name="v1", base_model=v0.base_model, parent_id=v0.id, status="candidate"))
        annotator = User(username="ann", role="annotator", password_hash="!")
        s.add(annotator)
    with pytest.raises(PermissionDenied):
        release_policy(engine=engine, name="v1", actor=Actor.signed_in(annotator))
    with pytest.raises(UserError, match="gate is undecided"):  # never evaluated: needs an override
        release_policy(engine=engine, name="v1", actor=CLI)
    assert launched == []  # refused before anything was deployed or sampled
    release = release_policy(engine=engine, name="v1", actor=CLI, override_reason="a hand-built version")
    with session_scope(engine, read_only=True) as s:
        assert policies.active_policy(session=s).name == "v1"
        [job] = [s.get(jobs.Job, j) for j in release.sampling_jobs]
    assert job.kind == "sample" and launched == [(job.id, "sample")]
    assert "v1 is the active policy (local)" in release.summary()
    with session_scope(engine, read_only=True) as s:
        entry = s.scalar(select(AuditLog).where(AuditLog.action == "policy.promote"))
    assert entry.details["gate"] == "undecided" and entry.details["override_reason"] == "a hand-built version"
