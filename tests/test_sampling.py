"""Sampling with a real (tiny) local model, pair making, and sampling as a job."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import Item, ItemResponse, Job, PolicyVersion, Prompt, Response
from feedback import jobs
from feedback.actors import CLI
from feedback.errors import UserError
from feedback.policies import ensure_base_policy
from feedback.policy import SamplingParams
from feedback.policy.local import LocalPolicyClient
from feedback.projects import create_project, default_project
from feedback.prompts import canonical_messages, content_hash
from feedback.sampling import SamplingConfig, make_pairs, run_sampling


def test_make_pairs_skips_identical_texts():
    assert make_pairs(["a", "b"]) == [(0, 1)]
    assert make_pairs(["same", " same "]) == []
    assert make_pairs(["x", "x", "y", "z"]) == [(0, 2), (1, 3)]
    assert make_pairs(["a"]) == []
    # versus mode pairs across the two lists
    assert make_pairs(["a", "b"], ["a", "c"]) == [(0, 1), (1, 0)]
    assert make_pairs(["a"], ["a"]) == []


@pytest.fixture(scope="module")
def tiny_client(tiny_model_dir):
    return LocalPolicyClient(tiny_model_dir, batch_size=3)


CHATS = [
    [{"role": "user", "content": "Say hello."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is two plus two, exactly?"}],
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Write one long sentence about the history of the printing press."}],
]


def test_local_client_n_samples_per_prompt_in_order(tiny_client):
    params = SamplingParams(n=3, max_new_tokens=8, seed=7, temperature=1.0)
    out = tiny_client.generate(CHATS, params)
    assert [len(c) for c in out] == [3, 3, 3, 3]
    for completions in out:
        for c in completions:
            assert c.finish_reason in ("stop", "length")
            assert 1 <= c.completion_tokens <= 8
            assert c.prompt_tokens > 0 and c.latency_ms > 0 and c.seed is not None
    # Prompt token counts follow each conversation, not the sorted batch order.
    assert out[3][0].prompt_tokens > out[0][0].prompt_tokens


def test_local_client_seed_reproducible(tiny_client):
    params = SamplingParams(n=2, max_new_tokens=10, seed=123, temperature=1.0)
    first = [[c.text for c in cs] for cs in tiny_client.generate(CHATS, params)]
    second = [[c.text for c in cs] for cs in tiny_client.generate(CHATS, params)]
    other = [[c.text for c in cs]
             for cs in tiny_client.generate(CHATS, SamplingParams(n=2, max_new_tokens=10, seed=9, temperature=1.0))]
    assert first == second
    assert first != other


def test_local_client_greedy_is_deterministic_and_batch_independent(tiny_client):
    params = SamplingParams(n=1, max_new_tokens=6, temperature=0.0)
    together = tiny_client.generate(CHATS, params)
    alone = tiny_client.generate(CHATS[:1], params)
    assert together[0][0].text == alone[0][0].text


def _add_prompts(session, texts, split="train", tags=None):
    for text in texts:
        messages = canonical_messages(text, None)
        session.add(Prompt(text=text, messages=messages, split=split, tags=tags or [], source="test",
                           content_hash=content_hash(messages)))


@pytest.fixture
def tiny_policy(engine, tiny_model_dir):
    with session_scope(engine) as s:
        v0 = ensure_base_policy(session=s, actor=CLI)
        v0.model_path = str(tiny_model_dir)
        _add_prompts(s, ["Say hello.", "Name a colour.", "Count to three."])
        _add_prompts(s, ["Held out prompt."], split="val")
        _add_prompts(s, ["Tagged prompt."], tags=["math"])
    return v0


def test_run_sampling_stores_responses_and_pairs(engine, tiny_policy):
    config = SamplingConfig(limit=10, n_per_prompt=2, max_new_tokens=8, seed=1, temperature=1.2)
    result = run_sampling(engine=engine, config=config)
    assert result["prompts"] == 4 and result["project"] == "default"  # train prompts only
    with session_scope(engine, read_only=True) as s:
        responses = s.scalars(select(Response)).all()
        assert len(responses) == 8
        r = responses[0]
        assert r.params["n"] == 2 and r.params["temperature"] == 1.2
        assert r.params["backend"].startswith("local:")
        assert r.seed is not None and r.completion_tokens and r.finish_reason
        pairs = s.scalars(select(Item).where(Item.kind == "pair")).all()
        assert len(pairs) == result["items"] == 4 - result["prompts_without_item"]
        assert {item.project_id for item in pairs} == {default_project(session=s).id}
        for item in pairs:
            assert item.response_a.text.strip() != item.response_b.text.strip()
            assert item.response_a.prompt_id == item.response_b.prompt_id == item.prompt_id


def test_each_task_type_samples_its_own_items(engine, tiny_policy):
    with session_scope(engine) as s:
        for name, task in (("thumbs", "binary"), ("fix", "edit")):
            create_project(session=s, actor=CLI, name=name, task_type=task)
        create_project(session=s, actor=CLI, name="ranked", task_type="rank", k=3)
    for name in ("thumbs", "fix"):  # one item per response
        result = run_sampling(engine=engine, config=SamplingConfig(project=name, limit=2, max_new_tokens=6, seed=3))
        assert (result["responses"], result["items"]) == (4, 4)
    # K samples per prompt, whatever n_per_prompt says; one item holding the distinct ones.
    result = run_sampling(engine=engine, config=SamplingConfig(project="ranked", limit=4, n_per_prompt=2,
                                                               max_new_tokens=8, seed=4, temperature=1.5))
    assert result["responses"] == 12 and result["items"] == 4 - result["prompts_without_item"]
    with session_scope(engine, read_only=True) as s:
        kinds = dict(s.execute(select(Item.kind, func.count()).group_by(Item.kind)).all())
        assert kinds["single"] == 4 and kinds["edit"] == 4 and kinds["rank"] == result["items"]
        for item in s.scalars(select(Item).where(Item.kind == "rank")):
            members = s.scalars(select(ItemResponse).where(ItemResponse.item_id == item.id)
                                .order_by(ItemResponse.position)).all()
            assert [m.position for m in members] == list(range(len(members))) and 2 <= len(members) <= 3
            assert members[0].response_id == item.response_a_id and item.response_b_id is None
            texts = [s.get(Response, m.response_id).text.strip() for m in members]
            assert len(set(texts)) == len(texts)  # duplicates dropped


def test_sampling_spreads_over_least_sampled_prompts_and_tags(engine, tiny_policy):
    run_sampling(engine=engine, config=SamplingConfig(limit=2, max_new_tokens=4, seed=1))
    run_sampling(engine=engine, config=SamplingConfig(limit=2, max_new_tokens=4, seed=2))
    with session_scope(engine, read_only=True) as s:
        per_prompt = dict(s.execute(select(Response.prompt_id, func.count()).group_by(Response.prompt_id)).all())
    assert sorted(per_prompt.values()) == [2, 2, 2, 2]
    result = run_sampling(engine=engine, config=SamplingConfig(limit=5, max_new_tokens=4, tags=["math"]))
    assert result["prompts"] == 1


def test_versus_mode_pairs_two_versions(engine, tiny_policy, tiny_model_dir):
    with session_scope(engine) as s:
        s.add(PolicyVersion(name="v1", base_model="tiny", model_path=str(tiny_model_dir),
                            parent_id=tiny_policy.id, status="candidate"))
    result = run_sampling(engine=engine, config=SamplingConfig(
        limit=3, n_per_prompt=1, versus_version="v0", policy_version="v1", max_new_tokens=8, seed=5, temperature=1.5))
    assert result["responses"] == 6
    with session_scope(engine, read_only=True) as s:
        for item in s.scalars(select(Item)):
            names = {item.response_a.policy_version.name, item.response_b.policy_version.name}
            assert names == {"v0", "v1"}


def test_bad_sampling_configs_are_user_errors(engine, tiny_policy):
    with pytest.raises(UserError):
        SamplingConfig(limit=0)
    with pytest.raises(UserError, match="Pairs need at least 2"):
        run_sampling(engine=engine, config=SamplingConfig(limit=1, n_per_prompt=1))
    with pytest.raises(UserError, match="No project called 'nope'"):
        run_sampling(engine=engine, config=SamplingConfig(limit=1, project="nope"))
    with pytest.raises(UserError):
        SamplingConfig(limit=1, temperature=-1)
    with pytest.raises(UserError, match="No policy version"):
        run_sampling(engine=engine, config=SamplingConfig(limit=1, policy_version="v9"))
    with pytest.raises(UserError, match="No train prompts"):
        run_sampling(engine=engine, config=SamplingConfig(limit=1, tags=["nope"]))


def test_sampling_job_runs_reports_progress_and_can_be_cancelled(engine, tiny_policy):
    from dataclasses import asdict

    seen = []
    with session_scope(engine) as s:
        job = jobs.create_job(session=s, kind="sample",
                              config=asdict(SamplingConfig(limit=4, max_new_tokens=4, chunk_prompts=2)), actor=CLI)
    done = jobs.run_job(engine=engine, job_id=job.id, listener=lambda d, t: seen.append((d, t)))
    assert done.status == "succeeded" and done.result["prompts"] == 4
    assert seen[0] == (0, 4) and seen[-1] == (4, 4)
    with pytest.raises(UserError, match="succeeded, not queued"):
        jobs.run_job(engine=engine, job_id=job.id)

    # A cancel requested while running stops it after the current chunk.
    with session_scope(engine) as s:
        job = jobs.create_job(session=s, kind="sample",
                              config=asdict(SamplingConfig(limit=4, max_new_tokens=4, chunk_prompts=1)), actor=CLI)

    def cancel_after_first(done_n, total):
        if done_n == 1:
            with session_scope(engine) as s:
                jobs.request_cancel(session=s, job_id=job.id, actor=CLI)

    cancelled = jobs.run_job(engine=engine, job_id=job.id, listener=cancel_after_first)
    assert cancelled.status == "cancelled"
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Response).where(Response.job_id == job.id)) == 2


def test_crashed_job_is_failed_and_stale_job_interrupted(engine, tiny_policy):
    from datetime import timedelta

    from db.models import utcnow

    with pytest.raises(UserError, match="no_such_field"), session_scope(engine) as s:
        jobs.create_job(session=s, kind="sample", config={"limit": 1, "no_such_field": 1}, actor=CLI)
    with session_scope(engine) as s:  # a row written past create_job (an older version, by hand) still fails cleanly
        bad = Job(kind="sample", config={"limit": 1, "no_such_field": 1}, status="queued")
        s.add(bad)
    assert jobs.run_job(engine=engine, job_id=bad.id).status == "failed"
    with session_scope(engine) as s:
        stale = Job(kind="sample", config={}, status="running", heartbeat_at=utcnow() - timedelta(minutes=5))
        s.add(stale)
    with session_scope(engine) as s:
        jobs.list_jobs(session=s)
        assert s.get(Job, stale.id).status == "interrupted"
        assert s.get(Job, bad.id).error


def test_detached_worker_runs_the_job(engine, db_url, tiny_policy, monkeypatch, tmp_path):
    """The real path pages use: a job row, then a separate worker process that claims it."""
    import time
    from dataclasses import asdict

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-for-test")
    with session_scope(engine) as s:
        job = jobs.create_job(session=s, kind="sample", config=asdict(SamplingConfig(limit=2, max_new_tokens=4)),
                              actor=CLI)
    jobs.start_detached(job=job, database_url=db_url, log_dir=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with session_scope(engine, read_only=True) as s:
            status = s.get(Job, job.id).status
        if status not in jobs.ACTIVE:
            break
        time.sleep(0.5)
    assert status == "succeeded", (tmp_path / f"job-{job.id}.log").read_text()
    assert "ANTHROPIC_API_KEY" not in jobs.child_env("sample")
    assert jobs.child_env("judge")["ANTHROPIC_API_KEY"] == "sk-ant-secret-for-test"


def test_jobs_queued_before_projects_still_run(engine, tiny_policy):
    """A sampling job stored with the old `items` key: pairs go to `default`; a singles job to the
    binary default project."""
    from feedback.sampling import stored_config

    assert stored_config({"limit": 2, "items": "both"}).project == "default"
    assert stored_config({"limit": 2, "items": "single"}).project == "default-binary"
    assert stored_config({"limit": 2, "items": "single", "project": "x"}).project == "x"
    with session_scope(engine) as s:
        job = jobs.create_job(session=s, kind="sample", actor=CLI, config={"limit": 1, "max_new_tokens": 4})
        job.config = {**job.config, "items": "pair"}  # as an older version wrote it
    done = jobs.run_job(engine=engine, job_id=job.id)
    assert done.status == "succeeded", done.error
    assert done.result["project"] == "default"


def test_a_queued_job_whose_worker_never_came_stops_holding_off_refills(engine):
    from datetime import timedelta

    from db.models import utcnow
    from feedback.refill import QUEUED_GRACE, refill_running

    with session_scope(engine) as s:
        project = default_project(session=s)
        job = jobs.create_job(session=s, kind="sample", actor=CLI, config={"limit": 1, "project": "default"})
        assert refill_running(session=s, project=project)
        job.created_at = utcnow() - QUEUED_GRACE - timedelta(minutes=1)  # its worker died before reaching it
        s.flush()
        assert not refill_running(session=s, project=project)
        job.status = "running"  # a running job counts however old (mark_stale watches its heartbeat)
        s.flush()
        assert refill_running(session=s, project=project)
