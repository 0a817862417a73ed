"""The AI judge as a reward for GRPO / RLOO / PPO (direct RLAIF): reward functions with TRL's
signature that ask a judge backend about each sampled completion.

    judge-score:backend=anthropic;model=claude-sonnet-4-6[;constitution=default | ;rubric=correctness]
    judge-pairwise:backend=anthropic;model=claude-sonnet-4-6[;constitution=default;mode=sample]

Both take `max_cost_usd`, `price_input` and `price_output` too (the budget, as in score_model).
- judge-score: the judge scores the completion from 1 to 10 under the constitution's principles
  (default: the `default` constitution) or a rubric (a score_model rubric name or its text; the
  last option, it takes the rest of the spec), with the reference answer as context when the row
  has one. score_model's machinery asks (its template with nonce blocks, its strict parse, one
  retry, its budget); the reward is (score - 1) / 9, in 0..1.
- judge-pairwise: the completion against the row's reference answer, judged both ways round
  (judges/pairwise.py, as judge jobs do): a win 1, a tie 0.5, a loss 0. An inconsistent verdict
  (the two orders disagree: the judge preferred a position, not an answer) is 0.5, the mean of
  the two orders. A row without a reference gets None.

None is TRL's "not applicable": the sample gets nothing from this reward (never a silent 0). It
is what a completion gets when the judge gave no readable answer (logged, counted as a failure),
and what every completion gets once the budget is spent (logged once, counted; the stage's
metrics and logs say `budget_exhausted`).

Cache: one reward object is one run. Each (prompt, reference, completion) is judged once per run,
failures included; a repeat (GRPO samples the same answer twice, a later step meets it again) is
a cache hit and sends nothing. Nothing is cached across runs: a new round judges a new policy's
answers, and a resumed round pays again for what it had judged before it stopped. Under
`accelerate launch` each process holds its own reward object: its own cache, and its own budget.

Keys: the backends read their API keys from the environment (ANTHROPIC_API_KEY, JUDGE_API_KEY,
which the train job kind hands its worker); a spec never holds one, and nothing here logs one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from feedback.errors import UserError
from judges.backends.base import get_backend
from judges.constitutions import DEFAULT_NAME, latest_constitution
from judges.graders import GraderError, _options, completion_text
from judges.pairwise import Mode, choose_principles, judge_pair
from judges.run_budget import RunBudget
from judges.score_model import TEMPLATE_VERSION as SCORE_TEMPLATE_VERSION
from judges.score_model import Scale, ScoreModelGrader
from judges.template import TEMPLATE_VERSION as PAIRWISE_TEMPLATE_VERSION

log = logging.getLogger(__name__)

SCORE = "judge-score"
PAIRWISE = "judge-pairwise"
KINDS = (SCORE, PAIRWISE)
TEN_POINT = Scale(1, 10, "7")  # MT-Bench's 1-10 rating
# judge_pair's outcomes as a reward for the completion (shown as response a, the reference as b).
PAIRWISE_REWARD: dict[str, float | None] = {"a": 1.0, "tie": 0.5, "b": 0.0, "inconsistent": 0.5, "failed": None}
_SECRET_OPTION = re.compile(r"(?:^|;)\s*(api_key|key|token|password|secret)\s*=", re.IGNORECASE)


class RewardBudgetExhausted(GraderError):
    """The run's judge budget allows no more requests."""

    stops_run = True


@dataclass(frozen=True)
class JudgeRewardSpec:
    """A parsed judge reward spec; `spec` is its canonical text (budget and prices left out)."""

    kind: str  # SCORE or PAIRWISE
    backend: str
    model: str
    constitution: str | None = None  # None with a rubric (judge-score)
    rubric: str | None = None
    mode: Mode = "sample"
    max_cost_usd: float | None = None
    price_input: float | None = None
    price_output: float | None = None

    @property
    def spec(self) -> str:
        head = f"{self.kind}:backend={self.backend};model={self.model}"
        if self.kind == PAIRWISE:
            return f"{head};constitution={self.constitution};mode={self.mode}"
        return f"{head};rubric={self.rubric}" if self.rubric is not None else f"{head};constitution={self.constitution}"


def parse_judge_reward(text: str) -> JudgeRewardSpec:
    """'judge-score:...' or 'judge-pairwise:...' -> its spec; a bad spec raises UserError (no key,
    no network and no database needed, so a round's config can be checked anywhere)."""
    kind, _, arg = text.strip().partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise UserError(f"Unknown judge reward {kind!r}; use {' or '.join(KINDS)}.")
    if _SECRET_OPTION.search(arg):  # refused without echoing the spec: it may hold the key itself
        raise UserError(f"{kind}: a spec never holds an API key; the judge backends read ANTHROPIC_API_KEY "
                        "or JUDGE_API_KEY from the environment.")
    rubric = None
    found = re.search(r"(?:^|;)\s*rubric\s*=", arg) if kind == SCORE else None
    if found:
        arg, rubric = arg[: found.start()], arg[found.end():].strip()
        if not rubric:
            raise UserError(f"{kind}: the rubric is empty; name a score_model rubric or give its text.")
    allowed = {"backend": str, "model": str, "constitution": str, "max_cost_usd": float, "price_input": float,
               "price_output": float}
    if kind == PAIRWISE:
        allowed["mode"] = str
    options = _options(arg, allowed, kind)
    missing = [name for name in ("backend", "model") if not options.get(name, "").strip()]
    if missing:
        raise UserError(f"{kind} needs {' and '.join(f'{m}=' for m in missing)}, e.g. "
                        f"'{kind}:backend=anthropic;model=claude-sonnet-4-6'.")
    backend, model = options.pop("backend").strip(), options.pop("model").strip()
    if kind == SCORE and backend == "local":
        raise UserError(f"{kind}: the local judge reads a verdict from next-token probabilities and cannot write "
                        "a score; use judge-pairwise with it, or a backend that writes (anthropic, openai).")
    if rubric is not None and "constitution" in options:
        raise UserError(f"{kind}: give a constitution or a rubric, not both.")
    mode = options.pop("mode", "sample").strip()
    if mode not in ("sample", "all"):
        raise UserError(f"{kind}: mode is 'sample' (one principle per completion) or 'all'.")
    constitution = None if rubric is not None else (options.pop("constitution", "").strip() or DEFAULT_NAME)
    spec = JudgeRewardSpec(kind=kind, backend=backend, model=model, constitution=constitution, rubric=rubric,
                           mode=mode, **options)
    _check_budget_options(spec)
    return spec


def _check_budget_options(spec: JudgeRewardSpec) -> None:
    if spec.max_cost_usd is not None and not (math.isfinite(spec.max_cost_usd) and spec.max_cost_usd > 0):
        raise UserError(f"{spec.kind}: max_cost_usd must be a finite number > 0 (leave it out for no budget).")
    if (spec.price_input is None) != (spec.price_output is None):
        raise UserError(f"{spec.kind}: give both price_input and price_output (USD per million tokens) or neither.")
    for price in (spec.price_input, spec.price_output):
        if price is not None and not (math.isfinite(price) and price >= 0):
            raise UserError(f"{spec.kind}: prices must be finite numbers >= 0 (USD per million tokens).")


def _prompt_key(prompt: Any) -> str:
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False, default=str)


def _messages(prompt: Any) -> list[dict[str, str]]:
    """A TRL prompt (chat messages or text) as the judge template's conversation of plain texts."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    out = []
    for message in prompt or []:
        content = message.get("content") or ""
        if isinstance(content, list):  # multimodal-style parts: their text
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        out.append({"role": str(message.get("role", "user")), "content": str(content)})
    return out


class JudgeReward:
    """What both judge rewards share: TRL's reward function signature, the per-run cache, the
    budget stop, and the counts that go into the stage's logs and metrics."""

    kind: ClassVar[str]

    def __init__(self, spec: JudgeRewardSpec):
        self.judge_spec = spec
        self.spec = spec.spec
        self.__name__ = self.__qualname__ = spec.kind.replace("-", "_")  # TRL logs rewards/<name>/mean
        self._cache: dict[tuple[str, str, str], float | None] = {}
        self.cache_hits = 0
        self.failures = 0
        self.over_budget = 0  # completions that got None because the budget was spent
        self.stopped: str | None = None  # why the budget stopped this run

    def __call__(self, prompts: list[Any], completions: list[Any], reference: list[str | None] | None = None,
                 log_metric=None, **kwargs: Any) -> list[float | None]:
        references = reference if reference is not None else [None] * len(completions)
        if len(references) != len(completions) or len(prompts) != len(completions):
            raise UserError(f"{self.__name__}: {len(completions)} completions for {len(prompts)} prompts and "
                            f"{len(references)} references.")
        rewards = [self._reward(prompt, completion_text(completion), ref)
                   for prompt, completion, ref in zip(prompts, completions, references, strict=True)]
        if log_metric is not None:  # TRL's hook: averaged into the step's logs next to the rewards
            for key, value in self.stats().items():
                log_metric(f"{self.__name__}/{key}", value)
        return rewards

    def _reward(self, prompt: Any, text: str, reference: str | None) -> float | None:
        key = (_prompt_key(prompt), reference or "", text)
        if key in self._cache:
            self.cache_hits += 1
            return self._cache[key]
        if self.stopped is not None:
            self.over_budget += 1
            return None
        try:
            value = self._judge(prompt, text, reference)
        except GraderError as exc:
            if not getattr(exc, "stops_run", False):
                raise
            self.stopped = str(exc)
            self.over_budget += 1
            log.warning("%s: %s; the rest of this run's completions get no reward from the judge (None)",
                        self.__name__, exc)
            return None
        self._cache[key] = value
        return value

    def _judge(self, prompt: Any, text: str, reference: str | None) -> float | None:
        raise NotImplementedError

    def budget(self) -> RunBudget:
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        """Provenance of this run's judging: requests sent, USD spent (on requests of known cost),
        cache hits, failures, completions left unrewarded by the budget, whether it ran out."""
        budget = self.budget()
        return {"calls": float(budget.requests), "cost_usd": budget.spent_usd,
                "unknown_cost_calls": float(budget.unknown_costs), "cache_hits": float(self.cache_hits),
                "failures": float(self.failures), "over_budget": float(self.over_budget),
                "budget_exhausted": float(self.stopped is not None)}


class JudgeScoreReward(JudgeReward):
    """A 1..10 score from score_model's machinery, rescaled to 0..1."""

    kind = SCORE

    def __init__(self, spec: JudgeRewardSpec, *, rubric: str):
        super().__init__(spec)
        self.grader = ScoreModelGrader(backend=spec.backend, model=spec.model, rubric=rubric,
                                       max_cost_usd=spec.max_cost_usd, price_input=spec.price_input,
                                       price_output=spec.price_output, scale=TEN_POINT)

    def budget(self) -> RunBudget:
        return self.grader.budget

    def _judge(self, prompt: Any, text: str, reference: str | None) -> float | None:
        outcome = self.grader.outcome(text, reference, prompt)  # raises ScoreBudgetExhausted (stops_run)
        if outcome.score is None:
            self.failures += 1
            log.warning("%s: no score from %s:%s after %d answer(s): %s", self.__name__, self.judge_spec.backend,
                        self.judge_spec.model, len(outcome.answers), outcome.error)
            return None
        return (outcome.score - TEN_POINT.low) / (TEN_POINT.high - TEN_POINT.low)

    def describe(self) -> dict[str, Any]:
        return {"judge_reward": self.spec, "template_version": SCORE_TEMPLATE_VERSION, "scale": str(TEN_POINT),
                "rubric_sha256": self.grader.rubric_sha256}


class JudgePairwiseReward(JudgeReward):
    """The completion against the reference answer, both orders per principle."""

    kind = PAIRWISE

    def __init__(self, spec: JudgeRewardSpec, *, principles: list[str]):
        super().__init__(spec)
        if not principles:
            raise UserError(f"{self.__name__}: the constitution has no principles.")
        self.principles = list(principles)
        self._budget = RunBudget(max_cost_usd=spec.max_cost_usd, own_price=None if spec.price_input is None
                                 else (spec.price_input, spec.price_output))
        self._backend = None
        self.no_reference = 0

    def budget(self) -> RunBudget:
        return self._budget

    def backend(self):
        """Made on first use, so checking a round's config needs no key."""
        if self._backend is None:
            backend = get_backend(self.judge_spec.backend, model=self.judge_spec.model)
            self._budget.require_price(backend, f"{self.judge_spec.backend}:{self.judge_spec.model}")
            self._backend = backend
        return self._backend

    def _judge(self, prompt: Any, text: str, reference: str | None) -> float | None:
        if not reference or not reference.strip():
            self.no_reference += 1
            return None
        backend = self.backend()
        reason = self._budget.stop_reason(self.__name__)
        if reason is not None:
            raise RewardBudgetExhausted(reason)
        # The principle drawn for a completion depends on nothing but the completion: reproducible.
        digest = hashlib.sha256(f"{_prompt_key(prompt)}\n{reference}\n{text}".encode()).hexdigest()
        principles = choose_principles(self.principles, self.judge_spec.mode, random.Random(digest))
        judgment = judge_pair(backend=backend, messages=_messages(prompt), text_a=text, text_b=reference,
                              principles=principles, key="reward")
        known = judgment.tokens_known
        cost = self._budget.cost(judgment.cost_usd, judgment.input_tokens if known else None,
                                 judgment.output_tokens if known else None)
        self._budget.account(cost, requests=sum(len(order["answers"]) for order in judgment.raw.get("orders", [])))
        value = PAIRWISE_REWARD[judgment.outcome]
        if value is None:
            self.failures += 1
            log.warning("%s: no verdict from %s:%s: %s", self.__name__, self.judge_spec.backend,
                        self.judge_spec.model, judgment.failure)
        return value

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "no_reference": float(self.no_reference)}

    def describe(self) -> dict[str, Any]:
        return {"judge_reward": self.spec, "template_version": PAIRWISE_TEMPLATE_VERSION,
                "principles": self.principles}


def constitution_rubric(name: str, version: int, principles: list[str]) -> str:
    """A constitution's principles as a rubric for scoring one response."""
    listed = "\n".join(f"- {p}" for p in principles)
    return (f"The principles of the constitution {name!r} (v{version}); each names what a better response does, "
            f"and a response scores high when it does all of it:\n{listed}")


def build_judge_reward(spec: JudgeRewardSpec, *, session: Session) -> JudgeReward:
    """The reward function a spec names, with its constitution's latest version read now."""
    if spec.kind == SCORE and spec.rubric is not None:
        return JudgeScoreReward(spec, rubric=spec.rubric)
    constitution = latest_constitution(session=session, name=spec.constitution)
    if spec.kind == SCORE:
        return JudgeScoreReward(spec, rubric=constitution_rubric(constitution.name, constitution.version,
                                                                 list(constitution.principles)))
    return JudgePairwiseReward(spec, principles=list(constitution.principles))
