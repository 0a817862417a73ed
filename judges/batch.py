"""AI-judge batches as jobs: choose items, judge them (concurrently, or through a provider's
batch API), and store a Judgment for every item and a label for every verdict that stands.

Exactly once: a judgment is unique per (job, item) and its label's submission id is derived from
the same pair, so a resumed job skips what it already did and can never label an item twice.
Budget: a job stops taking new items once `max_items` or `max_cost_usd` is reached (items already
in flight finish, so the cost can overshoot by at most `concurrency` items).
"""
from __future__ import annotations

import random
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import Engine, and_, exists, func, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Constitution, Item, Job, Judgment, Label
from feedback import jobs
from feedback.config_fields import cfg_field
from feedback.errors import UserError
from judges.backends import get_backend
from judges.constitutions import latest_constitution
from judges.pairwise import Mode, PairJudgment, assemble, choose_principles, judge_pair, requests_for
from judges.template import TEMPLATE_VERSION
from judges.verdict import VerdictError, parse_verdict

Selection = Literal["unlabelled", "disputed", "calibration"]
BATCH_POLL_S = 5.0


@dataclass
class JudgeConfig:
    constitution: str = cfg_field("default", "Constitution name; its latest version is used and recorded.")
    backend: str = cfg_field("local", "Judge backend: anthropic, openai (any OpenAI-compatible server), local, "
                                      "or any registered name.")
    model: str | None = cfg_field(None, "The backend's model (None: its default).")
    mode: Mode = cfg_field("sample", "One principle sampled per pair, or a verdict per principle combined (all).")
    on_disagreement: Literal["escalate", "tie"] = cfg_field(
        "escalate", "When the two orders disagree: leave the pair to humans, or label a tie.")
    selection: Selection = cfg_field(
        "unlabelled", "Unlabelled pairs, pairs humans disagree on, or a sample of human-labelled pairs "
                      "(calibration).", flag="--select")
    max_items: int = cfg_field(50, "Most pairs to judge.", flag="--limit")
    max_cost_usd: float | None = cfg_field(None, "Stop taking new pairs past this many US dollars (None: no limit).",
                                           flag="--max-cost")
    concurrency: int = cfg_field(4, "Requests in flight at once.")
    batch_api: bool = cfg_field(False, "The provider's asynchronous batch API (Anthropic: half price, slower).")
    seed: int = cfg_field(0, "Seed for the principle drawn per pair and the calibration sample.")

    def __post_init__(self) -> None:
        if self.mode not in ("sample", "all"):
            raise UserError("mode is 'sample' or 'all'.")
        if self.on_disagreement not in ("escalate", "tie"):
            raise UserError("on_disagreement is 'escalate' or 'tie'.")
        if self.selection not in ("unlabelled", "disputed", "calibration"):
            raise UserError("selection is 'unlabelled', 'disputed' or 'calibration'.")
        if self.max_items < 1 or self.concurrency < 1:
            raise UserError("max_items and concurrency must be at least 1.")


def recent_judgments(*, session: Session, limit: int = 100) -> list[Judgment]:
    """The newest judgments first (the AI judge page's table)."""
    return list(session.scalars(select(Judgment).order_by(Judgment.id.desc()).limit(limit)))


def select_items(*, session: Session, config: JudgeConfig, constitution: Constitution, job_id: int,
                 model: str) -> list[int]:
    """Pair item ids to judge, in order, never one this job (or this exact judge setup) already judged."""
    judged_here = select(Judgment.id).where(Judgment.item_id == Item.id, Judgment.job_id == job_id)
    same_setup = select(Judgment.id).where(
        Judgment.item_id == Item.id, Judgment.constitution_id == constitution.id,
        Judgment.backend == config.backend, Judgment.model == model)
    query = select(Item.id).where(Item.kind == "pair", ~exists(judged_here), ~exists(same_setup))
    human = and_(Label.item_id == Item.id, Label.source == "human", Label.kind == "pairwise")
    if config.selection == "unlabelled":
        query = query.where(~exists(select(Label.id).where(Label.item_id == Item.id)))
        return list(session.scalars(query.order_by(Item.id).limit(config.max_items)))
    if config.selection == "disputed":
        disagreeing = select(func.count(func.distinct(Label.choice))).where(human).scalar_subquery()
        return list(session.scalars(query.where(disagreeing > 1).order_by(Item.id).limit(config.max_items)))
    # calibration: a seeded random sample of human-labelled pairs, to compare judge and humans.
    ids = list(session.scalars(query.where(exists(select(Label.id).where(human))).order_by(Item.id)))
    random.Random(config.seed).shuffle(ids)
    return ids[: config.max_items]


def _item_view(session: Session, item_id: int) -> dict[str, Any]:
    item = session.get(Item, item_id)
    return {"id": item.id, "messages": item.prompt.messages, "a": item.response_a.text, "b": item.response_b.text}


def store(*, session: Session, job_id: int, item_id: int, result: PairJudgment, config: JudgeConfig,
          constitution: Constitution, model: str) -> Judgment:
    """Write the judgment and, if its verdict stands (or ties are configured), the label."""
    existing = session.scalar(select(Judgment).where(Judgment.job_id == job_id, Judgment.item_id == item_id))
    if existing is not None:  # written before a crash: keep it as it is
        return existing
    judgment = Judgment(
        job_id=job_id, item_id=item_id, constitution_id=constitution.id, backend=config.backend, model=model,
        template_version=TEMPLATE_VERSION, outcome=result.outcome, verdict_ab=result.verdict_ab,
        verdict_ba=result.verdict_ba, raw=result.raw, input_tokens=result.input_tokens,
        output_tokens=result.output_tokens, cost_usd=result.cost_usd,
    )
    session.add(judgment)
    choice = result.outcome if result.outcome in ("a", "b", "tie") else None
    if result.outcome == "inconsistent" and config.on_disagreement == "tie":
        choice = "tie"
    if choice is not None:
        label = Label(
            item_id=item_id, kind="pairwise", choice=choice, source="judge", producer=f"{config.backend}:{model}",
            constitution_id=constitution.id, submission_id=f"judge-{job_id}-{item_id}",
            provenance={"backend": config.backend, "model": model, "constitution": constitution.name,
                        "constitution_version": constitution.version, "template_version": TEMPLATE_VERSION,
                        "mode": config.mode, "principles": result.principles, "outcome": result.outcome,
                        "verdict_ab": result.verdict_ab, "verdict_ba": result.verdict_ba,
                        "orders": result.raw["orders"], "input_tokens": result.input_tokens,
                        "output_tokens": result.output_tokens, "cost_usd": result.cost_usd},
        )
        session.add(label)
        session.flush()
        judgment.label_id = label.id
    return judgment


def _spent(session: Session, job_id: int) -> tuple[int, float]:
    count, cost = session.execute(
        select(func.count(), func.coalesce(func.sum(Judgment.cost_usd), 0.0)).where(Judgment.job_id == job_id)
    ).one()
    return int(count), float(cost)


def run_judging(*, engine: Engine, config: JudgeConfig, job_id: int, reporter: jobs.Reporter | None = None,
                backend=None) -> dict[str, Any]:
    backend = backend or get_backend(config.backend, **({"model": config.model} if config.model else {}))
    model = backend.model
    with session_scope(engine) as s:
        constitution = latest_constitution(session=s, name=config.constitution)
        done_before, _ = _spent(s, job_id)
        item_ids = select_items(session=s, config=config, constitution=constitution, job_id=job_id, model=model)
        views = [_item_view(s, i) for i in item_ids[: max(0, config.max_items - done_before)]]
    rng = random.Random(f"{config.seed}-{job_id}")
    plans = [(v, choose_principles(constitution.principles, config.mode, rng)) for v in views]
    total = done_before + len(plans)
    if reporter:
        reporter.progress(done_before, total, log=f"{len(plans)} pairs to judge with {config.backend}:{model}")
    if config.batch_api:
        _judge_with_batch_api(engine, config, job_id, backend, constitution, model, plans, reporter, done_before, total)
    else:
        _judge_concurrently(engine, config, job_id, backend, constitution, model, plans, reporter, done_before, total)
    with session_scope(engine, read_only=True) as s:
        outcomes = dict(s.execute(select(Judgment.outcome, func.count()).where(Judgment.job_id == job_id)
                                  .group_by(Judgment.outcome)).all())
        count, cost = _spent(s, job_id)
    return {"judged": count, "outcomes": outcomes, "cost_usd": round(cost, 6), "model": model,
            "constitution": f"{constitution.name} v{constitution.version}"}


def _over_budget(engine: Engine, config: JudgeConfig, job_id: int) -> bool:
    if config.max_cost_usd is None:
        return False
    with session_scope(engine, read_only=True) as s:
        return _spent(s, job_id)[1] >= config.max_cost_usd


def _judge_concurrently(engine, config, job_id, backend, constitution, model, plans, reporter, done, total) -> None:
    pending = list(plans)
    with ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        running: dict = {}
        while pending or running:
            while pending and len(running) < config.concurrency and not _over_budget(engine, config, job_id):
                view, principles = pending.pop(0)
                future = pool.submit(judge_pair, backend=backend, messages=view["messages"], text_a=view["a"],
                                     text_b=view["b"], principles=principles, key=f"item{view['id']}")
                running[future] = view["id"]
            if not running:
                break  # budget reached
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                item_id = running.pop(future)
                result = future.result()  # a backend that failed for good fails the job; resume continues
                with session_scope(engine) as s:
                    store(session=s, job_id=job_id, item_id=item_id, result=result, config=config,
                          constitution=constitution, model=model)
                done += 1
                if reporter:
                    reporter.progress(done, total)


def _judge_with_batch_api(engine, config, job_id, backend, constitution, model, plans, reporter, done, total) -> None:
    if not hasattr(backend, "submit_batch"):
        raise UserError(f"The {config.backend} backend has no batch API; run without --batch-api.")
    # The batch id is kept on the job row, so a restarted job polls the batch it already paid for.
    with session_scope(engine, read_only=True) as s:
        state = dict(s.get(Job, job_id).result or {})
    requests = {}
    for view, principles in plans:
        for principle, a_first, request in requests_for(messages=view["messages"], text_a=view["a"],
                                                        text_b=view["b"], principles=principles,
                                                        key=f"item{view['id']}"):
            requests[request.custom_id] = (view["id"], principle, a_first, request)
    if not requests:
        return
    if not state.get("batch_id"):
        state["batch_id"] = backend.submit_batch([r[3] for r in requests.values()])
        with session_scope(engine) as s:
            s.get(Job, job_id).result = state
    if reporter:
        reporter.progress(done, total, log=f"batch {state['batch_id']} submitted with {len(requests)} requests")
    while not backend.batch_done(state["batch_id"]):
        if reporter:
            reporter.progress(done, total)  # heartbeat + cancel check while the provider works
        time.sleep(BATCH_POLL_S)
    results = backend.batch_results(state["batch_id"])
    by_item: dict[int, list] = {}
    for custom_id, (item_id, principle, a_first, _request) in requests.items():
        reply = results.get(custom_id)
        verdict, error, replies = None, None, []
        if isinstance(reply, Exception) or reply is None:
            error = str(reply) if reply is not None else "missing from batch results"
        else:
            replies = [reply]
            try:
                verdict = parse_verdict(reply.text, reply.structured)
            except VerdictError as exc:
                error = str(exc)
        by_item.setdefault(item_id, []).append((principle, a_first, verdict, replies, error))
    for view, principles in plans:
        result = assemble(principles, by_item.get(view["id"], []))
        with session_scope(engine) as s:
            store(session=s, job_id=job_id, item_id=view["id"], result=result, config=config,
                  constitution=constitution, model=model)
        done += 1
        if reporter:
            reporter.progress(done, total)


def run_judge_job(*, engine: Engine, job, reporter: jobs.Reporter) -> dict[str, Any]:
    return run_judging(engine=engine, config=JudgeConfig(**job.config), job_id=job.id, reporter=reporter)


JUDGE_JOB = jobs.JobKind(runner=run_judge_job, config=JudgeConfig, secrets=("ANTHROPIC_API_KEY", "JUDGE_API_KEY"))


def config_dict(config: JudgeConfig) -> dict[str, Any]:
    return asdict(config)

