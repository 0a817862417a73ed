"""Online iterative DPO, unattended (as RLHFlow / OpenRLHF do it): for R rounds, sample K
responses per prompt from the current policy, score them (a grader against references, a trained
reward model, or the AI judge), store best-vs-worst as a labelled pair, train a DPO round on
exactly those labels, run the gate, promote, and go again from the new policy.

Everything it does is ordinary data: responses, items and labels in the database (with the
policy version that produced them), a snapshot and a 'train' job per round, a policy version with
its lineage. The loop itself is a 'loop' job whose result holds the per-round table.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Item, Label, PolicyVersion, Prompt, Response
from feedback import jobs
from feedback.actors import Actor
from feedback.config_fields import cfg_field
from feedback.errors import UserError
from feedback.policies import active_policy
from feedback.policy import SamplingParams, client_for
from feedback.projects import default_project
from feedback.release import release_policy
from feedback.sampling import store_responses
from feedback.tags import has_any_tag
from training.rounds import RoundConfig, start_round

Labeler = Literal["grader", "judge", "reward"]


@dataclass
class LoopConfig:
    rounds: int = cfg_field(3, "Rounds of sample -> label -> train -> gate -> promote.")
    labeler: Labeler = cfg_field("grader", "Who picks best and worst: a grader against references, the AI judge, "
                                           "or a trained reward model.")
    grader: str = cfg_field("numeric", "Grader spec for the grader labeler.")
    judge_backend: str = cfg_field("local", "Judge backend for the judge labeler.")
    judge_model: str | None = cfg_field(None, "The judge backend's model (None: its default).")
    constitution: str = cfg_field("default", "Constitution the judge labeler judges under.")
    reward_job: int | None = cfg_field(None, "Reward labeler: the training job that produced the reward model.")
    prompts_per_round: int = cfg_field(32, "Train prompts sampled per round (the least sampled first).")
    samples_per_prompt: int = cfg_field(4, "K: responses per prompt, from which best and worst are paired.")
    temperature: float = cfg_field(1.0, "Sampling temperature; the K samples need to differ.")
    max_new_tokens: int = cfg_field(64, "Longest sampled response in tokens.")
    tags: list[str] = cfg_field([], "Only prompts with at least one of these tags.", flag="--tag")
    stage_config: dict[str, Any] = cfg_field({}, "DPO settings for every round (JSON in --config).")
    promote: Literal["gate", "always"] = cfg_field("gate", "Promote only when the gate passes, or every round.")
    gate: dict[str, Any] = cfg_field({}, "GateConfig overrides (JSON in --config).")
    resample_for_annotators: bool = cfg_field(
        False, "After each promotion also sample the queue's usual prompts for annotators (off: an unattended "
               "loop labels its own samples, and a background sampler would compete with training for CPU).")
    seed: int = cfg_field(0, "Seed for sampling (each round adds its number) and the judge's principle draws.")

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.samples_per_prompt < 2:
            raise UserError("rounds >= 1 and at least 2 samples per prompt.")
        if self.labeler not in ("grader", "judge", "reward"):
            raise UserError("labeler is grader, judge or reward.")
        if self.labeler == "reward" and not self.reward_job:
            raise UserError("The reward labeler needs --reward-job (a finished reward-model round).")


class _Scorer:
    """Turns one prompt's K responses into (best index, worst index), or None when they tie."""

    def __init__(self, engine: Engine, config: LoopConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        if config.labeler == "grader":
            from judges.graders import parse_grader

            self.grader = parse_grader(config.grader)
            self.source, self.producer = "grader", f"grader:{self.grader.spec}"
        elif config.labeler == "judge":
            from judges.backends import get_backend
            from judges.constitutions import ensure_shipped, latest_constitution

            self.judge = get_backend(config.judge_backend,
                                     **({"model": config.judge_model} if config.judge_model else {}))
            with session_scope(engine) as s:
                ensure_shipped(session=s)
                constitution = latest_constitution(session=s, name=config.constitution)
                self.principles, self.constitution_id = constitution.principles, constitution.id
            self.source, self.producer = "judge", f"{config.judge_backend}:{self.judge.model}"
        else:
            from db.models import Job

            with session_scope(engine, read_only=True) as s:
                job = s.get(Job, config.reward_job)
                path = (job.result or {}).get("reward_model_dir") if job else None
            if not path:
                raise UserError(f"Job {config.reward_job} did not produce a reward model.")
            import torch

            from training.reward_model import RewardModel

            self.reward = RewardModel(path, torch.device("cpu"), max_length=1024)
            self.source, self.producer = "grader", f"reward-model:job-{config.reward_job}"

    def best_and_worst(self, messages, reference, texts: list[str]) -> tuple[int, int, dict] | None:
        if self.config.labeler == "judge":
            from judges.pairwise import choose_principles, judge_pair

            a, b = 0, next((k for k in range(1, len(texts)) if texts[k].strip() != texts[0].strip()), None) or 1
            result = judge_pair(backend=self.judge, messages=messages, text_a=texts[a], text_b=texts[b],
                                principles=choose_principles(self.principles, "sample", self.rng))
            if result.outcome not in ("a", "b"):
                return None
            return (((a, b) if result.outcome == "a" else (b, a))
                    + ({"outcome": result.outcome, "orders": result.raw["orders"]},))
        if self.config.labeler == "grader":
            if reference is None:
                return None
            scores = [self.grader.grade(t, reference) for t in texts]
        else:
            scores = self.reward([messages] * len(texts), texts)
        best = max(range(len(texts)), key=scores.__getitem__)
        worst = min(range(len(texts)), key=scores.__getitem__)
        if scores[best] <= scores[worst]:
            return None  # nothing to learn from a prompt where every answer scored the same
        return best, worst, {"scores": scores}


def _round_prompts(session: Session, *, job_id: int, limit: int, tags: list[str], with_reference: bool) -> list[Prompt]:
    """Train prompts this loop has sampled least often first, then by id: successive rounds walk
    through the train split. (Ordering by the current version's own answers, as sampling.select_prompts
    does, would hand every round the same first prompts: each round samples from a new version.)"""
    sampled = (select(Response.prompt_id, func.count().label("n")).where(Response.job_id == job_id)
               .group_by(Response.prompt_id).subquery())
    query = (select(Prompt).outerjoin(sampled, sampled.c.prompt_id == Prompt.id).where(Prompt.split == "train")
             .order_by(func.coalesce(sampled.c.n, 0), Prompt.id))
    if with_reference:  # filtered in the query, so a round still gets `limit` prompts that have references
        query = query.where(Prompt.reference.is_not(None))
    if tags:
        query = query.where(has_any_tag(Prompt.tags, tags, session.get_bind().dialect.name))
    return list(session.scalars(query.limit(limit)))


def _collect(engine: Engine, config: LoopConfig, scorer: _Scorer, version: PolicyVersion, job_id: int,
             round_no: int) -> int:
    """Sample, score and store best-vs-worst pairs with their labels; returns the pair count."""
    with session_scope(engine, read_only=True) as s:
        prompts = _round_prompts(s, job_id=job_id, limit=config.prompts_per_round, tags=config.tags,
                                 with_reference=config.labeler == "grader")
    if not prompts:
        raise UserError("No train prompts to sample (with references, for the grader labeler).")
    params = SamplingParams(temperature=config.temperature, top_p=1.0, max_new_tokens=config.max_new_tokens,
                            n=config.samples_per_prompt, seed=config.seed + round_no)
    completions = client_for(version).generate([p.messages for p in prompts], params)
    made = {**params.as_dict(), "backend": f"loop:{version.name}", "loop_job": job_id, "round": round_no}
    pairs = 0
    for prompt, outs in zip(prompts, completions, strict=True):
        if len(outs) < 2:
            continue
        picked = scorer.best_and_worst(prompt.messages, prompt.reference, [c.text for c in outs])
        with session_scope(engine) as s:
            responses = store_responses(session=s, prompt=s.get(Prompt, prompt.id),
                                        version=s.get(PolicyVersion, version.id), completions=outs, params=made,
                                        job_id=job_id)
            if picked is None:
                continue
            best, worst, evidence = picked
            item = Item(kind="pair", project_id=default_project(session=s).id, prompt_id=prompt.id,
                        response_a_id=responses[best].id,
                        response_b_id=responses[worst].id, job_id=job_id)
            s.add(item)
            s.flush()
            s.add(Label(item_id=item.id, kind="pairwise", choice="a", source=scorer.source, producer=scorer.producer,
                        constitution_id=getattr(scorer, "constitution_id", None),
                        provenance={"loop_job": job_id, "round": round_no, **evidence},
                        submission_id=f"loop-{job_id}-{item.id}"))
            pairs += 1
    return pairs


def run_loop(*, engine: Engine, config: LoopConfig, job_id: int,
             reporter: jobs.Reporter | None = None) -> dict[str, Any]:
    scorer = _Scorer(engine, config)
    actor = Actor.worker(job_id)
    table = []
    for round_no in range(1, config.rounds + 1):
        with session_scope(engine, read_only=True) as s:
            version = active_policy(session=s)
        started = datetime.now(UTC).isoformat()
        if reporter:
            reporter.progress(round_no - 1, config.rounds, log=f"round {round_no}: sampling from {version.name}")
        pairs = _collect(engine, config, scorer, version, job_id, round_no)
        if pairs == 0:
            table.append({"round": round_no, "policy": version.name, "pairs": 0, "note": "no informative pairs"})
            continue
        round_config = RoundConfig(stage="dpo", stage_config=config.stage_config, parent=version.name,
                                   snapshot={"sources": [scorer.source], "policy_versions": [version.name],
                                             "since": started},
                                   gate=config.gate, evaluate=True)
        with session_scope(engine) as s:
            train_job = start_round(session=s, config=round_config, actor=actor)
        done = jobs.run_job(engine=engine, job_id=train_job.id)
        if done.status != "succeeded":
            raise UserError(f"round {round_no}: training job {done.id} {done.status}: {done.error}")
        gate = done.result.get("gate") or {}
        new_name = done.result["policy_version"]
        promoted = config.promote == "always" or gate.get("decision") == "passed"
        if promoted:
            override = None if gate.get("decision") == "passed" else f"loop job {job_id}: promote=always"
            release_policy(engine=engine, name=new_name, actor=actor, resample=config.resample_for_annotators,
                           override_reason=override)
        table.append({"round": round_no, "parent": version.name, "policy": new_name, "pairs": pairs,
                      "train_job": done.id, "win_rate": gate.get("win_rate"),
                      "win_rate_ci95": gate.get("win_rate_ci95"),
                      "accuracy": gate.get("accuracy"), "parent_accuracy": gate.get("baseline_accuracy"),
                      "gate": gate.get("decision"),
                      "promoted": promoted})
        if reporter:
            reporter.progress(round_no, config.rounds, log=f"round {round_no}: {table[-1]}")
    return {"rounds": table, "config": asdict(config)}


def run_loop_job(*, engine: Engine, job, reporter: jobs.Reporter) -> dict[str, Any]:
    return run_loop(engine=engine, config=LoopConfig(**job.config), job_id=job.id, reporter=reporter)


LOOP_JOB = jobs.JobKind(runner=run_loop_job, config=LoopConfig,  # its rounds' webhooks: SECRET_KEY
                        secrets=("POLICY_API_KEY", "ANTHROPIC_API_KEY", "JUDGE_API_KEY", "SECRET_KEY"))
