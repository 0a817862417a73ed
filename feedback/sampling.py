"""Sampling: prompts -> responses from a policy version -> items to label, in one project.

The project's task type decides the items: pairs of two distinct responses (pairwise), one item
per response (binary, edit), or one item of the K distinct responses to a prompt (rank, rating:
K samples per prompt; duplicates up to white space are dropped, and a prompt with fewer than two
distinct answers makes no item).

Work is committed one chunk of prompts at a time, so a long run shows progress, its items can
be labelled while it goes on, and a cancel or crash loses at most one chunk.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Item, ItemResponse, PolicyVersion, Project, Prompt, Response
from feedback import jobs
from feedback.config_fields import cfg_field
from feedback.errors import UserError
from feedback.policies import active_policy, policy_by_name
from feedback.policy import Completion, PolicyClient, SamplingParams, client_for
from feedback.priority import new_item_key
from feedback.projects import get_project
from feedback.tags import has_any_tag

ItemKind = Literal["pair", "single", "rank", "rating", "edit"]


@dataclass
class SamplingConfig:
    limit: int = cfg_field(16, "How many prompts to sample this run (those this version answered least often first).")
    project: str = cfg_field("default", "The project to sample into; its task type decides the items made.")
    n_per_prompt: int = cfg_field(
        2, "Samples per prompt (per version in versus mode); rank and rating projects take their K.")
    policy_version: str | None = cfg_field(None, "Policy version to sample (None: the active one).")
    versus_version: str | None = cfg_field(
        None, "Pair each response with one from this version (vN against vN-1).", flag="--versus")
    temperature: float = cfg_field(0.8, "Sampling temperature (0: greedy).")
    top_p: float = cfg_field(0.95, "Nucleus sampling: keep the most likely tokens up to this probability mass.")
    max_new_tokens: int = cfg_field(128, "Longest response in tokens.")
    seed: int | None = cfg_field(None, "Random seed (None: a fresh one); the same seed and batch reproduce.")
    split: str = cfg_field("train", "Which prompts: the train split, or val (held out for the gate).",
                           choices=("train", "val"))
    tags: list[str] = cfg_field([], "Only prompts with at least one of these tags.", flag="--tag")
    chunk_prompts: int = cfg_field(8, "Prompts per model call and per commit (a crash loses at most one chunk).")

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise UserError("--limit must be at least 1.")
        if self.n_per_prompt < 1:
            raise UserError("--n-per-prompt must be at least 1.")
        try:
            self.params()
        except ValueError as exc:
            raise UserError(str(exc)) from exc

    def params(self, n: int | None = None) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, n=n or self.n_per_prompt, seed=self.seed)

    def check_for(self, project: Project) -> int:
        """Samples per prompt for this project's items (a clear error when they cannot be made)."""
        if project.task_type in ("rank", "rating"):
            if self.versus_version:
                raise UserError("Versus mode makes pairs; sample a pairwise project with it.")
            return project.k
        if project.task_type == "pairwise" and self.n_per_prompt < 2 and not self.versus_version:
            raise UserError("Pairs need at least 2 samples per prompt (or a --versus version).")
        if project.task_type != "pairwise" and self.versus_version:
            raise UserError("Versus mode makes pairs; sample a pairwise project with it.")
        return self.n_per_prompt


ITEM_KIND = {"pairwise": "pair", "binary": "single", "rank": "rank", "rating": "rating", "edit": "edit"}


def distinct(texts: Sequence[str]) -> list[int]:
    """Indices of the first occurrence of each text, up to white space."""
    seen, keep = set(), []
    for i, text in enumerate(texts):
        if (key := _normalised(text)) not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def make_pairs(texts_a: Sequence[str], texts_b: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """Disjoint pairs of distinct texts (identical texts, up to white space, are no comparison).

    With one list, pairs are formed within it: (i, j) index it twice. With two lists (versus
    mode), i indexes texts_a and j indexes texts_b.
    """
    if texts_b is None:
        pairs, used = [], set()
        for i, text in enumerate(texts_a):
            if i in used:
                continue
            for j in range(i + 1, len(texts_a)):
                if j not in used and _normalised(texts_a[j]) != _normalised(text):
                    pairs.append((i, j))
                    used.update((i, j))
                    break
        return pairs
    pairs, used_b = [], set()
    for i, text in enumerate(texts_a):
        for j, other in enumerate(texts_b):
            if j not in used_b and _normalised(other) != _normalised(text):
                pairs.append((i, j))
                used_b.add(j)
                break
    return pairs


def select_prompts(*, session: Session, version_id: int, limit: int, split: str = "train",
                   tags: Sequence[str] = ()) -> list[Prompt]:
    """The prompts this version has answered least often first, so repeated runs spread out."""
    answered = (
        select(Response.prompt_id, func.count().label("n"))
        .where(Response.policy_version_id == version_id).group_by(Response.prompt_id).subquery()
    )
    query = (
        select(Prompt).outerjoin(answered, answered.c.prompt_id == Prompt.id)
        .where(Prompt.split == split)
        .order_by(func.coalesce(answered.c.n, 0), Prompt.id)
    )
    if tags:
        query = query.where(has_any_tag(Prompt.tags, tags, session.get_bind().dialect.name))
    return list(session.scalars(query.limit(limit)))


def _response(prompt: Prompt, version: PolicyVersion, c: Completion, params: dict[str, Any],
              job_id: int | None) -> Response:
    return Response(
        prompt_id=prompt.id, policy_version_id=version.id, text=c.text, params=params, seed=c.seed,
        prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, latency_ms=c.latency_ms,
        finish_reason=c.finish_reason, job_id=job_id,
    )


def store_responses(*, session: Session, prompt: Prompt, version: PolicyVersion, completions: list[Completion],
                    params: dict[str, Any], job_id: int | None = None) -> list[Response]:
    """Store one prompt's responses, each with how it was made; returns them with their ids."""
    responses = [_response(prompt, version, c, params, job_id) for c in completions]
    session.add_all(responses)
    session.flush()
    return responses


def record_samples(
    *, session: Session, prompt: Prompt, version: PolicyVersion, completions: list[Completion],
    params: dict[str, Any], project: Project, job_id: int | None = None,
    versus: tuple[PolicyVersion, list[Completion], dict[str, Any]] | None = None,
) -> int:
    """Store the responses to one prompt and the project's items made from them; the item count."""
    responses = store_responses(session=session, prompt=prompt, version=version, completions=completions,
                                params=params, job_id=job_id)
    pairs = None
    if versus:
        other = store_responses(session=session, prompt=prompt, version=versus[0], completions=versus[1],
                                params=versus[2], job_id=job_id)
        pairs = [(responses[i], other[j]) for i, j in make_pairs([r.text for r in responses], [r.text for r in other])]
    return len(make_items(session=session, project=project, prompt=prompt, responses=responses, job_id=job_id,
                          pairs=pairs))


def make_items(*, session: Session, project: Project, prompt: Prompt, responses: list[Response],
               job_id: int | None = None, pairs: list[tuple[Response, Response]] | None = None) -> list[Item]:
    """The project's items from stored responses to one prompt (see the module docstring): pairs of
    distinct responses (or the `pairs` given), one item per response, or one item of the distinct
    responses by position. Returns them added to the session (a K item flushed, with its positions)."""
    kind = ITEM_KIND[project.task_type]

    def item(a: Response, b: Response | None = None) -> Item:
        # A key among the reordered ones: random in a random project, the middle in an uncertainty one.
        made = Item(kind=kind, project_id=project.id, prompt_id=prompt.id, response_a_id=a.id,
                    response_b_id=b.id if b else None, job_id=job_id, queue_key=new_item_key(project.queue_order))
        session.add(made)
        return made

    if kind == "pair":
        if pairs is None:
            pairs = [(responses[i], responses[j]) for i, j in make_pairs([r.text for r in responses])]
        return [item(a, b) for a, b in pairs]
    if kind in ("single", "edit"):
        return [item(r) for r in responses]
    keep = [responses[i] for i in distinct([r.text for r in responses])]
    if len(keep) < 2:
        return []
    made = item(keep[0])
    session.flush()
    session.add_all([ItemResponse(item_id=made.id, position=p, response_id=r.id) for p, r in enumerate(keep)])
    return [made]


def run_sampling(
    *, engine: Engine, config: SamplingConfig, job_id: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    client_factory: Callable[[PolicyVersion], PolicyClient] = client_for,
) -> dict[str, Any]:
    """Sample `config.limit` prompts and store responses and items; returns counts."""
    with session_scope(engine, read_only=True) as s:
        project = get_project(session=s, name=config.project)
        n = config.check_for(project)
        version = policy_by_name(session=s, name=config.policy_version) if config.policy_version \
            else active_policy(session=s)
        versus = policy_by_name(session=s, name=config.versus_version) if config.versus_version else None
        for v in (version, versus):
            if v is not None and v.status == "external":
                raise UserError(f"{v.name} is an outside model whose responses were imported; there is nothing "
                                "here to sample it with.")
        prompts = select_prompts(session=s, version_id=version.id, limit=config.limit,
                                 split=config.split, tags=config.tags)
    if not prompts:
        raise UserError(f"No {config.split} prompts to sample{' with those tags' if config.tags else ''}; "
                        "import some first.")
    client = client_factory(version)
    versus_client = client_factory(versus) if versus else None
    # In versus mode both versions answer with the same settings; pairs cross the versions.
    params = config.params(n)

    totals = {"project": project.name, "prompts": 0, "responses": 0, "items": 0, "prompts_without_item": 0}
    if on_progress:
        on_progress(0, len(prompts))
    for start in range(0, len(prompts), config.chunk_prompts):
        chunk = prompts[start : start + config.chunk_prompts]
        conversations = [p.messages for p in chunk]
        results = client.generate(conversations, params)
        versus_results = versus_client.generate(conversations, params) if versus_client else None
        made = {**params.as_dict(), "backend": client.description}
        with session_scope(engine) as s:
            for k, prompt in enumerate(chunk):
                prompt = s.merge(prompt, load=False)
                vs = (s.merge(versus, load=False), versus_results[k],
                      {**params.as_dict(), "backend": versus_client.description}) if versus else None
                n_items = record_samples(
                    session=s, prompt=prompt, version=s.merge(version, load=False), completions=results[k],
                    params=made, project=s.merge(project, load=False), job_id=job_id, versus=vs,
                )
                totals["responses"] += len(results[k]) + (len(versus_results[k]) if versus_results else 0)
                totals["items"] += n_items
                totals["prompts_without_item"] += int(n_items == 0)
        totals["prompts"] += len(chunk)
        if on_progress:
            on_progress(totals["prompts"], len(prompts))
    return totals


def stored_config(config: dict[str, Any]) -> SamplingConfig:
    """A job's config as stored. Jobs queued before projects said `items` (pair, single or both)
    instead: singles meant the binary default project, anything else the pairwise one."""
    values = dict(config)
    items = values.pop("items", None)
    if items is not None and "project" not in values:
        values["project"] = DEFAULT_PROJECT_OF_ITEMS.get(items, "default")
    return SamplingConfig(**values)


DEFAULT_PROJECT_OF_ITEMS = {"single": "default-binary"}


def run_sampling_job(*, engine: Engine, job, reporter: jobs.Reporter) -> dict[str, Any]:
    config = stored_config(job.config)

    def progress(done: int, total: int) -> None:
        reporter.progress(done, total, log=f"{done}/{total} prompts sampled")

    return run_sampling(engine=engine, config=config, job_id=job.id, on_progress=progress)


def config_dict(config: SamplingConfig) -> dict[str, Any]:
    return asdict(config)


# The policy server may need its key; no judge key reaches a sampling worker. SECRET_KEY: it delivers
# the due webhooks when it ends (a refill's queue.low among them).
SAMPLE_JOB = jobs.JobKind(runner=run_sampling_job, config=SamplingConfig, secrets=("POLICY_API_KEY", "SECRET_KEY"))
