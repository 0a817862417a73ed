"""The online iterative loop (as RLHFlow / OpenRLHF run it, and RLHF with people in it): for R
rounds, sample K responses per prompt from the current policy, label them, train a round on
exactly those labels, run the gate, promote, and go again from the new policy.

Labelers: a grader against references, a trained reward model or the AI judge pick best and
worst of the K and label that pair at once; with `people`, the round puts pairs of distinct
responses into a project's queue (first in line for annotators) and waits, polling, until N human
labels on them have arrived, however long that takes. The stage is one that trains on pairs (DPO,
KTO, ORPO, SimPO); the reference is the fixed base (RLHFlow) or the round's parent (sDPO).

Everything it does is ordinary data: responses, items and labels in the database, a snapshot and
a 'train' job per round, a policy version with its lineage. The loop itself is a 'loop' job, and
its result is the per-round table, saved after every phase of a round (sampling, waiting for
labels, training, gated, done). That makes it resumable: a loop that was interrupted (worker
killed: `mark_stale`), failed or paused goes on in the round and phase it stopped in. It never
resamples a round whose sampling finished (an interrupted sampling phase samples only the
prompts it had not reached), never retrains a round whose train job succeeded, and resumes an
interrupted train job from its checkpoint.

Pause: `pause_loop` sets the job's pause flag; the loop stops at its next safe point (the start
of a phase, or the next poll while it waits for labels) and the job ends with status 'paused'.
A train job running at that moment finishes first (it has its own worker loop and checkpoints).
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Assignment, Item, ItemDecision, Job, Label, PolicyVersion, Project, Prompt, Response
from feedback import jobs
from feedback.actors import Actor
from feedback.config_fields import cfg_field
from feedback.errors import UserError
from feedback.policies import active_policy, policy_by_name
from feedback.policy import SamplingParams, client_for
from feedback.priority import new_item_key
from feedback.projects import default_project, get_project
from feedback.release import release_policy
from feedback.sampling import make_items, store_responses
from feedback.tags import has_any_tag
from training.reft import active_training
from training.rounds import LABEL_STAGES, ROW_FORMAT, RoundConfig, lock_training, start_round

Labeler = Literal["grader", "judge", "reward", "people"]
LABELERS = ("grader", "judge", "reward", "people")
# The stages whose rows come from labelled pairs (KTO unpairs them: chosen desirable, rejected not).
PAIR_STAGES = tuple(s for s in LABEL_STAGES if ROW_FORMAT.get(s, s) in ("dpo", "kto"))
# Below every key feedback/priority.py writes (0 .. 1 plus jitter): a people round's pairs are
# handed out before anything else of their tier (the active policy's responses).
FIRST_IN_QUEUE = -1.0
# A round's phases, in order; the table's `phase`. "waiting" only with the people labeler.
PHASES = ("sampling", "waiting", "training", "gated", "done")
# Ended loops; any other status is one loop in progress (a paused one too: it holds a round).
ENDED = ("succeeded", "failed", "cancelled", "interrupted")


@dataclass
class LoopConfig:
    rounds: int = cfg_field(3, "Rounds of sample -> label -> train -> gate -> promote.")
    labeler: Labeler = cfg_field("grader", "Who labels: a grader against references, the AI judge or a trained "
                                           "reward model (best vs worst of K, at once), or people (pairs go to "
                                           "the project's queue and the round waits for their labels).")
    stage: str = cfg_field("dpo", "The stage every round trains (one that learns from pairs).", choices=PAIR_STAGES)
    reference: str = cfg_field("base", "The stage's reference: the fixed base model (RLHFlow), or each round's "
                                       "parent, the previous round's policy (sDPO).", choices=("base", "parent"))
    project: str | None = cfg_field(None, "The pairwise project the loop's pairs go into (None: the default "
                                          "project); with people, whose annotators label them.")
    labels_per_round: int = cfg_field(16, "People: N human labels preferring one response, on the round's "
                                          "pairs, before it trains.")
    poll_seconds: float = cfg_field(30.0, "People: how often a waiting round counts its labels.")
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
    stage_config: dict[str, Any] = cfg_field({}, "Stage settings for every round (JSON in --config).")
    promote: Literal["gate", "always"] = cfg_field("gate", "Promote only when the gate passes, or every round.")
    gate: dict[str, Any] = cfg_field({}, "GateConfig overrides (JSON in --config).")
    resample_for_annotators: bool = cfg_field(
        False, "After each promotion also sample the queue's usual prompts for annotators (off: an unattended "
               "loop labels its own samples, and a background sampler would compete with training for CPU).")
    seed: int = cfg_field(0, "Seed for sampling (each round adds its number) and the judge's principle draws.")

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.samples_per_prompt < 2:
            raise UserError("rounds >= 1 and at least 2 samples per prompt.")
        if self.labeler not in LABELERS:
            raise UserError(f"labeler is one of {', '.join(LABELERS)}.")
        if self.labeler == "reward" and not self.reward_job:
            raise UserError("The reward labeler needs --reward-job (a finished reward-model round).")
        if self.stage not in PAIR_STAGES:
            raise UserError(f"The loop trains on labelled pairs: stage is one of {', '.join(PAIR_STAGES)}, "
                            f"not {self.stage!r}.")
        if self.labeler == "people" and (self.labels_per_round < 1 or self.poll_seconds <= 0):
            raise UserError("The people labeler needs labels_per_round >= 1 and poll_seconds > 0.")
        # The stage's settings, the reference rule and the gate are checked now, not in round 1.
        RoundConfig(stage=self.stage, stage_config=self.stage_config, reference=self.reference, gate=self.gate)


# --- the services pages and the CLI call ---------------------------------------------------------


def _loop_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.kind != "loop":
        raise UserError(f"No loop job {job_id}.")
    return job


def _other_loop_in_progress(session: Session, job_id: int | None = None) -> Job | None:
    jobs.mark_stale(session=session)  # a loop whose worker died is not in progress
    query = select(Job).where(Job.kind == "loop", Job.status.not_in(ENDED))
    if job_id is not None:
        query = query.where(Job.id != job_id)
    return session.scalar(query.order_by(Job.id).limit(1))


def start_loop(*, session: Session, config: LoopConfig, actor: Actor) -> Job:
    """Queue a loop job (start its worker with jobs.start_detached, or run it with jobs.run_job).
    Refused while another loop is queued, running or paused: both would train the same policy."""
    actor.require("admin")
    other = _other_loop_in_progress(session)
    if other is not None:
        raise UserError(f"Loop job {other.id} is {other.status}; one loop at a time "
                        f"({'resume or cancel it' if other.status == 'paused' else 'cancel it or let it finish'}).")
    _project(session, config)  # a missing or non-pairwise project is refused before the job exists
    return jobs.create_job(session=session, kind="loop", config=asdict(config), actor=actor)


def pause_loop(*, session: Session, job_id: int, actor: Actor) -> None:
    """Ask the loop to stop at its next safe point (between phases, or at the next poll while it
    waits for labels); it ends with status 'paused', and resume_loop goes on from there."""
    actor.require("admin")
    job = _loop_job(session, job_id)
    if not jobs.request_pause(session=session, job_id=job_id, actor=actor):
        raise UserError(f"Loop job {job_id} is {job.status}; only a queued or running loop can be paused.")


def resume_loop(*, session: Session, job_id: int, actor: Actor) -> Job:
    """Queue a paused, interrupted or failed loop again (start its worker as for start_loop); it
    goes on in the round and phase it stopped in."""
    actor.require("admin")
    _loop_job(session, job_id)
    other = _other_loop_in_progress(session, job_id)
    if other is not None:
        raise UserError(f"Loop job {other.id} is {other.status}; one loop at a time.")
    return jobs.resume(session=session, job_id=job_id, actor=actor)


def loop_rounds(*, session: Session, job_id: int) -> list[dict[str, Any]]:
    """The loop's per-round table, as saved after each phase, with a waiting round's label count
    as it is now. Each row: round, phase (sampling, waiting, training, gated, done) and status
    (the phase in words: "waiting for labels (3 of 16)"), parent, policy, pairs, labels,
    labels_needed, accuracy, parent_accuracy, win_rate, win_rate_ci95, gate, promoted, kl (the
    train job's last logged KL, when its stage logs one), mean_length (mean completion tokens of
    the round's sampled responses) and mean_chars, train_job, note."""
    job = _loop_job(session, job_id)
    rows = [dict(r) for r in (job.result or {}).get("rounds", [])]
    for row in rows:
        if row.get("phase") == "waiting":
            row["labels"] = _human_labels(session, _round_items(session, job_id, row))
        row["status"] = _round_status(row)
    return rows


def _round_status(row: dict[str, Any]) -> str:
    phase = row.get("phase", "done")
    if phase == "waiting":
        return f"waiting for labels ({row.get('labels', 0)} of {row.get('labels_needed', 0)})"
    return phase


# --- labelling ----------------------------------------------------------------------------------


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


def _project(session: Session, config: LoopConfig) -> Project:
    project = get_project(session=session, name=config.project) if config.project else default_project(session=session)
    if project.task_type != "pairwise":
        raise UserError(f"The loop labels pairs: project {project.name!r} is a {project.task_type} project.")
    return project


def _round_items(session: Session, job_id: int, row: dict[str, Any]) -> list[int]:
    """The round's items: the loop's items made after the previous rounds' (item ids only grow)."""
    query = select(Item.id).where(Item.job_id == job_id, Item.id > row["after_item"])
    if row.get("last_item") is not None:
        query = query.where(Item.id <= row["last_item"])
    return list(session.scalars(query.order_by(Item.id)))


def _human_labels(session: Session, item_ids: list[int]) -> int:
    """Human labels on these items that prefer one response (a tie teaches a pair stage nothing)."""
    if not item_ids:
        return 0
    return session.scalar(select(func.count()).select_from(Label).where(
        Label.item_id.in_(item_ids), Label.source == "human", Label.choice.in_(("a", "b")))) or 0


def _can_take_labels(session: Session, item_ids: list[int], overlap: int) -> bool:
    """Whether any of these pairs may still get a label: one without a final answer and with fewer
    finished assignments than the project's overlap (a lease not yet answered may still bring one).
    A tie or 'both bad' takes a slot without preferring a response, so a round can run out of slots."""
    if not item_ids:
        return False
    done = (select(Assignment.item_id).where(Assignment.item_id.in_(item_ids), Assignment.status == "done")
            .group_by(Assignment.item_id).having(func.count() >= overlap))
    decided = select(ItemDecision.item_id).where(ItemDecision.item_id.in_(item_ids))
    return session.scalar(select(func.count()).select_from(Item).where(
        Item.id.in_(item_ids), Item.id.not_in(done), Item.id.not_in(decided))) > 0


# --- one round's phases -------------------------------------------------------------------------


def _round_prompts(session: Session, *, job_id: int, limit: int, tags: list[str], with_reference: bool,
                   after_response: int) -> list[Prompt]:
    """Train prompts this loop has sampled least often first, then by id: successive rounds walk
    through the train split. (Ordering by the current version's own answers, as sampling.select_prompts
    does, would hand every round the same first prompts: each round samples from a new version.)"""
    sampled = (select(Response.prompt_id, func.count().label("n")).where(Response.job_id == job_id)
               .group_by(Response.prompt_id).subquery())
    query = (select(Prompt).outerjoin(sampled, sampled.c.prompt_id == Prompt.id).where(Prompt.split == "train")
             .order_by(func.coalesce(sampled.c.n, 0), Prompt.id))
    # Never a prompt this round sampled before it was interrupted (a split smaller than a round has
    # no unsampled prompts to put first).
    query = query.where(Prompt.id.not_in(select(Response.prompt_id).where(
        Response.job_id == job_id, Response.id > after_response)))
    if with_reference:  # filtered in the query, so a round still gets `limit` prompts that have references
        query = query.where(Prompt.reference.is_not(None))
    if tags:
        query = query.where(has_any_tag(Prompt.tags, tags, session.get_bind().dialect.name))
    return list(session.scalars(query.limit(limit)))


def _round_responses(session: Session, job_id: int, row: dict[str, Any]):
    return select(Response).where(Response.job_id == job_id, Response.id > row["after_response"])


def _sample(engine: Engine, config: LoopConfig, scorer: _Scorer | None, job_id: int, row: dict[str, Any]) -> None:
    """Sample the round's prompts (those an interrupted sampling phase had not reached), store the
    responses and the pairs (labelled at once by a scorer; for people, first in the queue), and
    record the round's pair count and mean response length in `row`."""
    with session_scope(engine, read_only=True) as s:
        version = policy_by_name(session=s, name=row["parent"])
        done = s.scalar(select(func.count(func.distinct(Response.prompt_id)))
                        .where(Response.job_id == job_id, Response.id > row["after_response"])) or 0
        prompts = _round_prompts(s, job_id=job_id, limit=max(0, config.prompts_per_round - done), tags=config.tags,
                                 with_reference=config.labeler == "grader",
                                 after_response=row["after_response"]) if done < config.prompts_per_round else []
        project_id = _project(s, config).id
    if not prompts and not done:
        raise UserError("No train prompts to sample (with references, for the grader labeler).")
    round_no = row["round"]
    params = SamplingParams(temperature=config.temperature, top_p=1.0, max_new_tokens=config.max_new_tokens,
                            n=config.samples_per_prompt, seed=config.seed + round_no)
    completions = client_for(version).generate([p.messages for p in prompts], params) if prompts else []
    made = {**params.as_dict(), "backend": f"loop:{version.name}", "loop_job": job_id, "round": round_no}
    for prompt, outs in zip(prompts, completions, strict=True):
        # Decided before the transaction: a judge or reward model call must not hold SQLite's write lock.
        picked = (scorer.best_and_worst(prompt.messages, prompt.reference, [c.text for c in outs])
                  if scorer is not None and len(outs) >= 2 else None)
        with session_scope(engine) as s:  # one prompt per commit: a crash loses at most this one
            responses = store_responses(session=s, prompt=s.get(Prompt, prompt.id),
                                        version=s.get(PolicyVersion, version.id), completions=outs, params=made,
                                        job_id=job_id)
            if scorer is None:
                for item in make_items(session=s, project=s.get(Project, project_id), prompt=s.get(Prompt, prompt.id),
                                       responses=responses, job_id=job_id):
                    item.queue_key = FIRST_IN_QUEUE
            elif picked is not None:
                best, worst, evidence = picked
                item = Item(kind="pair", project_id=project_id, prompt_id=prompt.id, response_a_id=responses[best].id,
                            response_b_id=responses[worst].id, job_id=job_id)
                s.add(item)
                s.flush()
                s.add(Label(item_id=item.id, kind="pairwise", choice="a", source=scorer.source,
                            producer=scorer.producer, constitution_id=getattr(scorer, "constitution_id", None),
                            provenance={"loop_job": job_id, "round": round_no, **evidence},
                            submission_id=f"loop-{job_id}-{item.id}"))
    with session_scope(engine, read_only=True) as s:
        items = _round_items(s, job_id, row)
        lengths = s.execute(_round_responses(s, job_id, row).with_only_columns(
            Response.completion_tokens, func.length(Response.text))).all()
    tokens = [t for t, _ in lengths if t is not None]
    row["pairs"] = len(items)
    row["last_item"] = items[-1] if items else row["after_item"]
    row["mean_length"] = round(sum(tokens) / len(tokens), 2) if tokens else None
    row["mean_chars"] = round(sum(c for _, c in lengths) / len(lengths), 2) if lengths else None


def _wait_for_labels(engine: Engine, config: LoopConfig, job_id: int, row: dict[str, Any],
                     reporter: jobs.Reporter | None, save) -> None:
    """Poll until the round's pairs have `labels_needed` human labels, or can take no more. Each
    poll reports progress (a heartbeat, and where a pause or cancel takes effect) and puts the
    round's still open pairs back at the head of the queue (a reorder of the project would have
    moved them), and earlier rounds' pairs out of it (same tier and lower ids: they would go first)."""
    while True:
        with session_scope(engine) as s:
            project = _project(s, config)
            items = _round_items(s, job_id, row)
            labels = _human_labels(s, items)
            open_pairs = _can_take_labels(s, items, project.overlap)
            s.execute(update(Item).where(Item.id.in_(items), Item.queue_key != FIRST_IN_QUEUE)
                      .values(queue_key=FIRST_IN_QUEUE))
            s.execute(update(Item).where(Item.job_id == job_id, Item.id <= row["after_item"],
                                         Item.queue_key == FIRST_IN_QUEUE)
                      .values(queue_key=new_item_key(project.queue_order)))
        if labels != row.get("labels"):
            row["labels"] = labels
            save()
            if reporter:
                reporter.progress(row["round"] - 1, config.rounds,
                                  log=f"round {row['round']}: {labels} of {row['labels_needed']} labels")
        if labels >= row["labels_needed"] or not open_pairs:
            return
        if reporter:
            reporter.progress(row["round"] - 1, config.rounds)
        time.sleep(config.poll_seconds)


def _snapshot_filter(config: LoopConfig, scorer: _Scorer | None, items: list[int]) -> dict:
    kto = {"kto_from_pairs": True} if config.stage == "kto" else {}
    # Exactly the labels on this round's pairs: the people's, or the scorer's (a grading job labelling
    # the parent's answers meanwhile writes grader labels too, on pairs that are not the round's).
    return {"sources": ["human" if scorer is None else scorer.source], "items": items, **kto}


def _train(engine: Engine, config: LoopConfig, scorer: _Scorer | None, job_id: int, row: dict[str, Any]) -> Job:
    """The round's train job, finished: reused when it already succeeded, resumed (from its
    checkpoint) when it was interrupted or failed, started when there is none."""
    actor = Actor.worker(job_id)
    with session_scope(engine) as s:
        # A killed worker's train job stops heartbeating seconds after its loop: resumed in between,
        # the loop would take it for running.
        jobs.mark_stale(session=s)
        train = s.get(Job, row["train_job"]) if row.get("train_job") else None
        if train is not None and train.status in ("interrupted", "failed", "paused"):
            lock_training(s)  # as start_round does: one training job (train or reft) at a time
            other = active_training(session=s, exclude=train.id)
            if other is not None:
                raise UserError(f"round {row['round']}: training job {other.id} ({other.kind}) is {other.status}; "
                                f"one training job at a time. Resume loop job {job_id} when it has finished.")
            train = jobs.resume(session=s, job_id=train.id, actor=actor)
        elif train is not None and train.status == "running":
            raise UserError(f"round {row['round']}: its training job {train.id} is still running.")
        elif train is None or train.status == "cancelled":
            round_config = RoundConfig(stage=config.stage, stage_config=config.stage_config, parent=row["parent"],
                                       reference=config.reference, gate=config.gate, evaluate=True,
                                       snapshot=_snapshot_filter(config, scorer, _round_items(s, job_id, row)))
            train = start_round(session=s, config=round_config, actor=actor)
            row["train_job"] = train.id
            # In the job's transaction: a crash cannot leave a train job the loop does not know about.
            _store(s, job_id, config, _table_of(s, job_id, row))
        train_id, status = train.id, train.status
    done = (jobs.run_job(engine=engine, job_id=train_id, listener=_passes_cancel_on(engine, job_id, train_id))
            if status == "queued" else None)
    if done is None:
        with session_scope(engine, read_only=True) as s:
            done = s.get(Job, train_id)
    if done.status == "cancelled":
        with session_scope(engine, read_only=True) as s:
            if s.get(Job, job_id).cancel_requested:
                raise jobs.Cancelled()  # the loop was cancelled while it trained: it ends cancelled too
    if done.status != "succeeded":
        raise UserError(f"round {row['round']}: training job {done.id} {done.status}: {done.error}")
    return done


def _passes_cancel_on(engine: Engine, loop_id: int, train_id: int):
    """A progress listener for the round's train job: when the loop is cancelled, cancel the train
    job too, so "stop for good" does not wait for the round's training to finish. (A pause lets it
    finish: the paused loop resumes with the round trained.) One small read per training step."""
    def listener(done: int, total: int | None) -> None:
        with session_scope(engine) as s:
            if s.get(Job, loop_id).cancel_requested:
                s.execute(update(Job).where(Job.id == train_id).values(cancel_requested=True))

    return listener


def _kl(train: Job) -> float | None:
    """The last KL the stage logged (GRPO, RLOO and PPO log one; DPO-style stages usually do not)."""
    def find(entry: dict[str, Any]) -> float | None:
        for key, value in entry.items():
            if key.rsplit("/", 1)[-1] in ("kl", "mean_kl", "train_kl") and isinstance(value, (int, float)):
                return float(value)
        return None

    for entry in [(train.result or {}).get("metrics") or {}, *reversed(train.metrics or [])]:
        if (value := find(entry)) is not None:
            return value
    return None


def _record_training(row: dict[str, Any], done: Job) -> None:
    gate = done.result.get("gate") or {}
    row.update(policy=done.result["policy_version"], train_job=done.id, win_rate=gate.get("win_rate"),
               win_rate_ci95=gate.get("win_rate_ci95"), accuracy=gate.get("accuracy"),
               parent_accuracy=gate.get("baseline_accuracy"), gate=gate.get("decision"), kl=_kl(done))


def _promote(engine: Engine, config: LoopConfig, job_id: int, row: dict[str, Any]) -> None:
    promoted = config.promote == "always" or row.get("gate") == "passed"
    with session_scope(engine, read_only=True) as s:
        already = policy_by_name(session=s, name=row["policy"]).status == "active"
    if promoted and not already:  # a resumed loop does not release twice
        override = None if row.get("gate") == "passed" else f"loop job {job_id}: promote=always"
        release_policy(engine=engine, name=row["policy"], actor=Actor.worker(job_id),
                       resample=config.resample_for_annotators, override_reason=override)
    row["promoted"] = promoted


# --- the loop -----------------------------------------------------------------------------------


def _table_of(session: Session, job_id: int, row: dict[str, Any]) -> list[dict[str, Any]]:
    saved = list((session.get(Job, job_id).result or {}).get("rounds", []))
    return [r for r in saved if r["round"] < row["round"]] + [row]


def _store(session: Session, job_id: int, config: LoopConfig, table: list[dict[str, Any]]) -> None:
    job = session.get(Job, job_id)
    job.result = {"rounds": [dict(r) for r in table], "config": asdict(config)}  # reassigned: JSON is not tracked


def _new_round(engine: Engine, job_id: int, round_no: int) -> dict[str, Any]:
    with session_scope(engine, read_only=True) as s:
        version = active_policy(session=s)
        after_item = s.scalar(select(func.max(Item.id)).where(Item.job_id == job_id)) or 0
        after_response = s.scalar(select(func.max(Response.id)).where(Response.job_id == job_id)) or 0
    return {"round": round_no, "phase": "sampling", "parent": version.name,
            "started": datetime.now(UTC).isoformat(), "after_item": after_item, "after_response": after_response,
            "pairs": None, "labels": None, "labels_needed": None, "policy": None, "train_job": None,
            "win_rate": None, "win_rate_ci95": None, "accuracy": None, "parent_accuracy": None, "gate": None,
            "promoted": None, "kl": None, "mean_length": None, "mean_chars": None}


def run_loop(*, engine: Engine, config: LoopConfig, job_id: int,
             reporter: jobs.Reporter | None = None) -> dict[str, Any]:
    scorer = None if config.labeler == "people" else _Scorer(engine, config)
    with session_scope(engine, read_only=True) as s:
        table = [dict(r) for r in ((s.get(Job, job_id).result or {}).get("rounds", []))]

    def save() -> None:
        with session_scope(engine) as s:
            _store(s, job_id, config, table)

    def report(row: dict[str, Any], text: str) -> None:
        if reporter:  # where a pause or cancel takes effect: between phases
            reporter.progress(row["round"] - 1, config.rounds, log=f"round {row['round']}: {text}")

    for round_no in range(1, config.rounds + 1):
        if round_no > len(table):
            table.append(_new_round(engine, job_id, round_no))
            save()
        row = table[round_no - 1]
        if row["phase"] == "sampling":
            report(row, f"sampling from {row['parent']}")
            _sample(engine, config, scorer, job_id, row)
            if row["pairs"] == 0:
                row.update(phase="done", note="no informative pairs")
            elif scorer is None:
                with session_scope(engine, read_only=True) as s:
                    overlap = _project(s, config).overlap
                # More than the pairs can take (each has `overlap` slots) would wait for ever.
                needed = min(config.labels_per_round, row["pairs"] * overlap)
                row.update(phase="waiting", labels=0, labels_needed=needed)
            else:
                row.update(phase="training", labels=row["pairs"], labels_needed=row["pairs"])
            save()
        if row["phase"] == "waiting":
            report(row, f"waiting for {row['labels_needed']} labels on {row['pairs']} pairs")
            _wait_for_labels(engine, config, job_id, row, reporter, save)
            if row["labels"]:
                row["phase"] = "training"
            else:  # every pair answered with a tie or 'both bad': nothing a pair stage can learn from
                row.update(phase="done", note="no labels preferring a response")
            save()
        if row["phase"] == "training":
            report(row, f"training {config.stage} on {row['labels']} labels")
            _record_training(row, _train(engine, config, scorer, job_id, row))
            row["phase"] = "gated"
            save()
        if row["phase"] == "gated":
            report(row, f"{row['policy']}: gate {row['gate']}")
            _promote(engine, config, job_id, row)
            row["phase"] = "done"
            save()
            if reporter:
                reporter.progress(round_no, config.rounds, log=f"round {round_no}: {row}")
    return {"rounds": table, "config": asdict(config)}


def run_loop_job(*, engine: Engine, job, reporter: jobs.Reporter) -> dict[str, Any]:
    return run_loop(engine=engine, config=LoopConfig(**job.config), job_id=job.id, reporter=reporter)


LOOP_JOB = jobs.JobKind(runner=run_loop_job, config=LoopConfig,  # its rounds' webhooks: SECRET_KEY
                        secrets=("POLICY_API_KEY", "ANTHROPIC_API_KEY", "JUDGE_API_KEY", "SECRET_KEY"))
