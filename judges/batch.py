"""AI-judge batches as jobs: choose items, judge them (concurrently, or through a provider's
batch API), and store a Judgment for every item and a label for every verdict that stands.

Exactly once: a judgment is unique per (job, item) and its label's submission id is derived from
the same pair, so a resumed job skips what it already did and can never label an item twice.

Failures are per pair, never per job: a pair whose requests fail for good (the backend's own
retries spent) is stored as a 'failed' judgment with its reason, and the job goes on; whatever
was already paid for is kept. `selection="failed"` retries such pairs in a later job, and the
annotation queue offers them to humans ahead of ordinary pairs.

Budget (`max_cost_usd`): the price must be known (the backend's price table, or one given with
the job); an unknown price is refused, never counted as zero. Concurrently, a new pair starts
only while spent + in flight x the costliest pair so far stays under the budget; before the
first cost is known at most `concurrency` pairs are in flight, which is the most the budget can
be overshot by. The batch API path submits only as many pairs as the budget allows at batch
prices, by a generous estimate of their tokens (see CHARS_PER_TOKEN_LOW) and the full
`max_tokens` of output. A truncated answer is asked again only on the concurrent path: a batch's
unreadable answers are failed pairs, for a later `selection="failed"` job.
"""
from __future__ import annotations

import random
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine, and_, exists, func, select
from sqlalchemy.orm import Session

from db.engine import session_scope
from db.models import Constitution, Item, Job, Judgment, Label
from feedback import jobs
from feedback.errors import UserError
from judges.backends import JudgeRequest, get_backend
from judges.constitutions import latest_constitution
from judges.judge_config import JudgeConfig
from judges.pairwise import PairJudgment, assemble, choose_principles, judge_pair, requests_for
from judges.pricing import BATCH_DISCOUNT
from judges.template import TEMPLATE_VERSION
from judges.verdict import VerdictError, parse_verdict

BATCH_POLL_S = 5.0
# The batch budget's token estimate: ASCII text at 3 characters a token (English averages ~4),
# any other character a token of its own (CJK text is close to that), plus what a forced tool call
# adds to every request (Anthropic's tool-use system prompt and our verdict schema).
CHARS_PER_TOKEN_LOW = 3.0
TOOL_OVERHEAD_TOKENS = 600


def recent_judgments(*, session: Session, limit: int = 100) -> list[Judgment]:
    """The newest judgments first (the AI judge page's table)."""
    return list(session.scalars(select(Judgment).order_by(Judgment.id.desc()).limit(limit)))


def select_items(*, session: Session, config: JudgeConfig, constitution: Constitution, job_id: int,
                 model: str) -> list[int]:
    """Pair item ids to judge, in order: never one this job judged, nor one this exact judge setup
    decided before; pairs it failed on only with selection 'failed' (a retry is a choice, since
    a pair that keeps failing costs money each time)."""
    judged_here = select(Judgment.id).where(Judgment.item_id == Item.id, Judgment.job_id == job_id)
    setup = and_(Judgment.item_id == Item.id, Judgment.constitution_id == constitution.id,
                 Judgment.backend == config.backend, Judgment.model == model)
    decided = select(Judgment.id).where(setup, Judgment.outcome != "failed")
    failed = select(Judgment.id).where(setup, Judgment.outcome == "failed")
    query = select(Item.id).where(Item.kind == "pair", ~exists(judged_here), ~exists(decided))
    if config.selection == "failed":  # not those people have labelled meanwhile: they were sent to them first
        query = query.where(exists(failed), ~exists(select(Label.id).where(Label.item_id == Item.id)))
        return list(session.scalars(query.order_by(Item.id).limit(config.max_items)))
    query = query.where(~exists(failed))
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


def failed_judgment(principles: list[str], reason: str) -> PairJudgment:
    """A pair that could not be judged at all (e.g. every request to the provider failed)."""
    return PairJudgment(outcome="failed", verdict_ab=None, verdict_ba=None, principles=principles,
                        raw={"orders": [], "error": reason}, cost_usd=0.0)


def priced(result: PairJudgment, price: tuple[float, float] | None, *, batch: bool) -> PairJudgment:
    """The judgment's cost from its token counts at the job's own price, when one was given
    (unknown, not zero, when a reply did not say how many tokens it used)."""
    if price is not None and not result.tokens_known:
        result.cost_usd = None
    elif price is not None:
        usd = (result.input_tokens * price[0] + result.output_tokens * price[1]) / 1_000_000
        result.cost_usd = usd * (BATCH_DISCOUNT if batch else 1.0)
    return result


def store(*, session: Session, job_id: int, item_id: int, result: PairJudgment, config: JudgeConfig,
          constitution: Constitution, model: str) -> Judgment:
    """Write the judgment and, if its verdict stands (or ties are configured), the label."""
    existing = session.scalar(select(Judgment).where(Judgment.job_id == job_id, Judgment.item_id == item_id))
    if existing is not None:  # written before a crash: keep it as it is
        return existing
    if result.outcome == "failed" and "error" not in result.raw:
        result.raw = {**result.raw, "error": result.failure}
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


def _spent(session: Session, job_id: int) -> tuple[int, float, int]:
    """(judgments, USD spent on those with a known cost, judgments whose cost is unknown)."""
    count, cost, unknown = session.execute(
        select(func.count(), func.coalesce(func.sum(Judgment.cost_usd), 0.0),
               func.count().filter(Judgment.cost_usd.is_(None))).where(Judgment.job_id == job_id)
    ).one()
    return int(count), float(cost), int(unknown)


def run_judging(*, engine: Engine, config: JudgeConfig, job_id: int, reporter: jobs.Reporter | None = None,
                backend=None) -> dict[str, Any]:
    backend = backend or get_backend(config.backend, **({"model": config.model} if config.model else {}))
    model = backend.model
    price = config.price(backend)
    if config.max_cost_usd is not None and price is None:
        raise UserError(f"No price is known for {config.backend}:{model}, so a budget of "
                        f"${config.max_cost_usd:g} cannot be kept: give --price-input and --price-output "
                        "(USD per million tokens), or judge without --max-cost.")
    with session_scope(engine) as s:
        constitution = latest_constitution(session=s, name=config.constitution)
        done_before = _spent(s, job_id)[0]
        item_ids = select_items(session=s, config=config, constitution=constitution, job_id=job_id, model=model)
        views = [_item_view(s, i) for i in item_ids[: max(0, config.max_items - done_before)]]
    rng = random.Random(f"{config.seed}-{job_id}")
    plans = [(v, choose_principles(constitution.principles, config.mode, rng)) for v in views]
    total = done_before + len(plans)
    if reporter:
        reporter.progress(done_before, total, log=f"{len(plans)} pairs to judge with {config.backend}:{model}")
    run = _Run(engine=engine, config=config, job_id=job_id, backend=backend, constitution=constitution,
               model=model, price=price, reporter=reporter, done=done_before, total=total)
    if config.batch_api:
        _judge_with_batch_api(run, plans)
    else:
        _judge_concurrently(run, plans)
    return summarise(engine=engine, job_id=job_id, model=model, constitution=constitution, config=config)


def summarise(*, engine: Engine, job_id: int, model: str, constitution: Constitution,
              config: JudgeConfig) -> dict[str, Any]:
    """The job's result: counts, cost, and one sentence that says what happened."""
    with session_scope(engine, read_only=True) as s:
        outcomes = dict(s.execute(select(Judgment.outcome, func.count()).where(Judgment.job_id == job_id)
                                  .group_by(Judgment.outcome)).all())
        labelled = s.scalar(select(func.count()).where(Judgment.job_id == job_id, Judgment.label_id.is_not(None)))
        count, cost, unknown = _spent(s, job_id)
    failed = outcomes.get("failed", 0)
    escalated = outcomes.get("inconsistent", 0) if config.on_disagreement == "escalate" else 0
    parts = [f"{labelled} label{'s' if labelled != 1 else ''} written from {count} pair{'s' if count != 1 else ''}"]
    if escalated:
        parts.append(f"{escalated} order-inconsistent, left to humans")
    if failed:
        parts.append(f"{failed} failed (retry with --select failed; humans see them first)")
    spend = f"${cost:.4f}" + (f" plus {unknown} of unknown cost" if unknown else "")
    if count and escalated == count:
        parts = [f"0 labels written: all {count} pairs were order-inconsistent and went to humans"]
    return {"judged": count, "labelled": labelled, "escalated": escalated, "failed": failed, "outcomes": outcomes,
            "cost_usd": round(cost, 6), "cost_unknown": unknown, "model": model,
            "constitution": f"{constitution.name} v{constitution.version}",
            "summary": "; ".join(parts) + f"; cost {spend} ({model}, {constitution.name} v{constitution.version})."}


@dataclass
class _Run:
    """What both ways of judging a job's pairs share."""

    engine: Engine
    config: JudgeConfig
    job_id: int
    backend: Any
    constitution: Constitution
    model: str
    price: tuple[float, float] | None
    reporter: jobs.Reporter | None
    done: int
    total: int

    def store(self, item_id: int, result: PairJudgment, *, batch: bool) -> PairJudgment:
        with session_scope(self.engine) as s:
            store(session=s, job_id=self.job_id, item_id=item_id,
                  result=priced(result, self.config.own_price(), batch=batch),
                  config=self.config, constitution=self.constitution, model=self.model)
        self.done += 1
        if self.reporter:
            note = f"pair {item_id} failed: {result.failure}" if result.outcome == "failed" else None
            self.reporter.progress(self.done, self.total, log=note)
        return result

    def spent(self) -> tuple[float, int]:
        with session_scope(self.engine, read_only=True) as s:
            _, cost, unknown = _spent(s, self.job_id)
        return cost, unknown


def _judge_concurrently(run: _Run, plans: list) -> None:
    config, pending, cancelled = run.config, list(plans), False
    with session_scope(run.engine, read_only=True) as s:  # the most one pair has cost so far (a resume
        # remembers): what each pair in flight may still cost
        costliest = s.scalar(select(func.max(Judgment.cost_usd)).where(Judgment.job_id == run.job_id)) or 0.0

    def may_start(in_flight: int) -> bool:
        if config.max_cost_usd is None:
            return True
        spent, unknown = run.spent()
        if unknown:  # a cost we cannot count: stop rather than guess (it cannot be zero)
            return False
        return spent + (in_flight + 1) * costliest < config.max_cost_usd if costliest else spent < config.max_cost_usd

    with ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        running: dict = {}
        while pending or running:
            while pending and len(running) < config.concurrency and may_start(len(running)):
                view, principles = pending.pop(0)
                future = pool.submit(judge_pair, backend=run.backend, messages=view["messages"], text_a=view["a"],
                                     text_b=view["b"], principles=principles, key=f"item{view['id']}")
                running[future] = (view["id"], principles)
            if not running:
                break  # budget reached
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                item_id, principles = running.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # anything judge_pair did not catch: this pair fails, the job goes on
                    result = failed_judgment(principles, f"{type(exc).__name__}: {exc}"[:500])
                try:
                    result = run.store(item_id, result, batch=False)
                except jobs.Cancelled:
                    # Stop taking pairs, but keep what is in flight: it is being paid for.
                    cancelled, pending, run.reporter = True, [], None
                costliest = max(costliest, result.cost_usd or 0.0)
    if cancelled:
        raise jobs.Cancelled()


def _estimated_tokens(text: str) -> float:
    ascii_chars = sum(ch.isascii() for ch in text)
    return ascii_chars / CHARS_PER_TOKEN_LOW + (len(text) - ascii_chars)


def _estimated_batch_cost(requests: list[JudgeRequest], price: tuple[float, float], answer_format: str) -> float:
    """A generous estimate of what these requests cost at batch prices (see CHARS_PER_TOKEN_LOW)."""
    overhead = TOOL_OVERHEAD_TOKENS if answer_format == "tool" else 0
    tokens_in = sum(_estimated_tokens(r.system) + _estimated_tokens(r.user) + overhead for r in requests)
    tokens_out = sum(r.max_tokens for r in requests)
    return (tokens_in * price[0] + tokens_out * price[1]) / 1_000_000 * BATCH_DISCOUNT


def _judge_with_batch_api(run: _Run, plans: list) -> None:
    config, backend = run.config, run.backend
    if not hasattr(backend, "submit_batch"):
        raise UserError(f"The {config.backend} backend has no batch API; run without --batch-api.")
    # The batch (its id, and which request is which item/principle/order) is kept on the job row,
    # so a restarted job reads the batch it already paid for and never submits it again.
    with session_scope(run.engine, read_only=True) as s:
        state = dict(s.get(Job, run.job_id).result or {})
    if state.get("batch_id") and "batch_requests" not in state:
        raise UserError(f"Job {run.job_id}'s batch {state['batch_id']} was submitted by an older version that did "
                        "not record its requests; start a new job (the pairs it judged are kept).")
    if not state.get("batch_id"):
        chosen: dict[str, list] = {}
        budget = None if config.max_cost_usd is None else config.max_cost_usd - run.spent()[0]
        answer_format = getattr(backend, "answer_format", "json")
        requests: list[JudgeRequest] = []
        for view, principles in plans:
            these = requests_for(messages=view["messages"], text_a=view["a"], text_b=view["b"],
                                 principles=principles, key=f"item{view['id']}", answer_format=answer_format)
            batch_of_these = [request for _, _, request in these]
            if budget is not None:
                cost = _estimated_batch_cost(batch_of_these, run.price, answer_format)
                if cost > budget:
                    break  # the budget allows no more pairs
                budget -= cost
            requests += batch_of_these
            for principle, a_first, request in these:
                chosen[request.custom_id] = [view["id"], principle, a_first]
        if not requests:
            return
        state.update(batch_id=backend.submit_batch(requests), batch_requests=chosen)
        with session_scope(run.engine) as s:
            s.get(Job, run.job_id).result = state
        if run.reporter:
            run.reporter.progress(run.done, run.done + len({v[0] for v in chosen.values()}),
                                  log=f"batch {state['batch_id']} submitted with {len(requests)} requests")
    while not backend.batch_done(state["batch_id"]):
        if run.reporter:
            run.reporter.progress(run.done, None)  # heartbeat + cancel check while the provider works
        time.sleep(BATCH_POLL_S)
    results = backend.batch_results(state["batch_id"])
    # Only the pairs in the batch: anything selected since (e.g. on a resume) was never sent.
    by_item: dict[int, list] = {}
    principles_of: dict[int, list[str]] = {}
    for custom_id, (item_id, principle, a_first) in state["batch_requests"].items():
        reply = results.get(custom_id)
        verdict, error, replies = None, None, []
        if isinstance(reply, Exception) or reply is None:
            error = str(reply) if reply is not None else "missing from the batch results"
            if reply is None and "" in results:  # lines without a readable custom_id: perhaps this one's
                error += f" ({results['']})"
        else:
            replies = [reply]
            try:
                verdict = parse_verdict(reply.text, reply.structured)
            except VerdictError as exc:
                error = str(exc)
        by_item.setdefault(item_id, []).append((principle, a_first, verdict, replies, error))
        principles_of.setdefault(item_id, [])
        if principle not in principles_of[item_id]:
            principles_of[item_id].append(principle)
    with session_scope(run.engine, read_only=True) as s:
        stored = set(s.scalars(select(Judgment.item_id).where(Judgment.job_id == run.job_id)))
    run.total = run.done + len(set(by_item) - stored)
    for item_id in sorted(set(by_item) - stored):  # a resume fills only the gaps
        run.store(item_id, assemble(principles_of[item_id], by_item[item_id]), batch=True)


def run_judge_job(*, engine: Engine, job, reporter: jobs.Reporter) -> dict[str, Any]:
    return run_judging(engine=engine, config=JudgeConfig(**job.config), job_id=job.id, reporter=reporter)


JUDGE_JOB = jobs.JobKind(runner=run_judge_job, config=JudgeConfig, finished_event="judge.finished",
                         secrets=("ANTHROPIC_API_KEY", "JUDGE_API_KEY", "SECRET_KEY"))


def config_dict(config: JudgeConfig) -> dict[str, Any]:
    return asdict(config)

