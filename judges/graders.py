"""Programmatic graders in the style of OpenAI's RFT graders: each scores an answer against a
reference answer with a float in [0, 1].

A grader is named by a spec string, for example

    exact | normalized | numeric | numeric:tol=0.01 | regex:^(yes|no)\\b
    similarity | similarity:metric=ratio|token_set|bleu|chrf
    python:/path/to/grader.py | python:/path/to/grader.py;timeout=2;memory_mb=256
    multi:0.7*numeric+0.3*similarity

`parse_grader(spec)` builds one through the `GRADERS` registry; `GRADERS.register(name, factory)` adds
to it, and plugins and test fakes go through that same path. A grader's `spec` is canonical
(defaults left out, paths absolute, formulas re-printed) because it becomes the label producer
`grader:<spec>`: two spellings of one grader must not label the same item twice.

Failures: a grader that cannot score an answer raises `GraderError` (a UserError) instead of
returning 0. A 0 would be stored as a real label (a pair would become a tie), trained on, and
never revisited, because grading skips items that already have a label from the grader; an
error leaves the item unlabelled and says why. An answer with no number at all still gets 0
from `numeric`: that is a wrong answer, not a failure of the grader.
"""
from __future__ import annotations

import ast
import logging
import math
import numbers
import re
import string
import unicodedata
from collections.abc import Callable
from functools import cache
from typing import Any, ClassVar, Protocol, runtime_checkable

from feedback.errors import UserError
from feedback.registry import Registry

log = logging.getLogger(__name__)


class GraderError(UserError):
    """A grader could not score this answer (its code failed, timed out, returned a non-score)."""


@runtime_checkable
class Grader(Protocol):
    name: str  # the registry name, e.g. "numeric"
    spec: str  # the canonical spec string; parse_grader(spec) recreates the grader

    def grade(self, answer: str, reference: str) -> float:
        """A score in [0, 1]; raises GraderError when it cannot tell."""
        ...


# --- registry --------------------------------------------------------------------------------

# name -> factory(arg) where arg is the text after "name:" ("" when there is none).
GraderFactory = Callable[[str], Grader]


def _check_identifier(name: str) -> None:
    # Names are identifiers because multi formulas refer to graders by name.
    if not name.isidentifier():
        raise ValueError(f"grader name {name!r} must be an identifier (multi formulas use it)")


# "python" runs user code in a subprocess and "score_model" asks a judge backend; each lives in
# its own module, imported on first use.
GRADERS: Registry[GraderFactory] = Registry("grader", check_name=_check_identifier,
                                            lazy={"python": "judges.python_grader:make_python_grader",
                                                  "score_model": "judges.score_model:make_score_model_grader"})


def parse_grader(spec: str) -> Grader:
    """The grader a spec string names, e.g. 'numeric:tol=0.01'. Bad specs raise UserError."""
    name, _, arg = spec.partition(":")
    return GRADERS.get(name.strip())(arg)


def _options(arg: str, allowed: dict[str, Callable[[str], Any]], grader: str) -> dict[str, Any]:
    """'key=value;key=value' -> {key: parsed value}; unknown keys and bad values are UserErrors."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in arg.split(";"))):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in allowed:
            raise UserError(f"{grader}: unknown option {part!r}; options are {', '.join(allowed) or 'none'}.")
        try:
            out[key] = allowed[key](value)
        except ValueError as exc:
            raise UserError(f"{grader}: bad value {value!r} for {key}: {exc}") from exc
    return out


def _no_options(arg: str, grader: str) -> None:
    if arg.strip():
        raise UserError(f"{grader} takes no options (got {arg!r}).")


# --- string checks ---------------------------------------------------------------------------


class ExactGrader:
    """1 if the answer equals the reference. Outer whitespace is ignored: a trailing newline is
    an artefact of generation, not part of the answer."""

    name: ClassVar[str] = "exact"
    spec = "exact"

    def grade(self, answer: str, reference: str) -> float:
        return float(answer.strip() == reference.strip())


# SQuAD's answer normalisation, with casefold and Unicode punctuation on top.
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.casefold()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


class NormalizedGrader:
    """1 if answer and reference are equal after SQuAD-style normalisation."""

    name: ClassVar[str] = "normalized"
    spec = "normalized"

    def grade(self, answer: str, reference: str) -> float:
        return float(normalize_answer(answer) == normalize_answer(reference))


class RegexGrader:
    """1 if the pattern is found anywhere in the answer (re.search); the reference is unused.
    Flags go inline, e.g. 'regex:(?i)^yes'."""

    name: ClassVar[str] = "regex"

    def __init__(self, pattern: str):
        if not pattern:
            raise UserError("regex needs a pattern, e.g. 'regex:^(yes|no)\\b'.")
        try:
            self._compiled = re.compile(pattern)
        except re.error as exc:
            raise UserError(f"regex: invalid pattern {pattern!r}: {exc}") from exc
        self.pattern = pattern
        self.spec = f"regex:{pattern}"

    def grade(self, answer: str, reference: str) -> float:
        return float(self._compiled.search(answer) is not None)


@GRADERS.register("exact")
def _exact(arg: str) -> ExactGrader:
    _no_options(arg, "exact")
    return ExactGrader()


@GRADERS.register("normalized")
def _normalized(arg: str) -> NormalizedGrader:
    _no_options(arg, "normalized")
    return NormalizedGrader()


GRADERS.register("regex", RegexGrader)  # the whole text after "regex:" is the pattern


# --- numbers ---------------------------------------------------------------------------------

# 1,234.5 | 1234.5 | .5 | 1e-05, unsigned; the sign is matched separately so that "5-3" reads
# as 5 and 3, not 5 and -3 (a sign glued to a preceding word or digit is an operator).
_UNSIGNED = r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_RE = re.compile(
    rf"(?<![\w.])(?P<sign>[-+]?)(?P<num>{_UNSIGNED})(?:\s*/\s*(?P<den>{_UNSIGNED}))?"
)
# Where a final answer is announced, most explicit first: GSM8K's "#### 42", MATH's \boxed{42},
# then "the answer is 42" / "Answer: 42". The last announcement wins (models restate answers).
_FINAL_ANSWER_RES = (
    re.compile(r"####(?P<tail>[^\n]*)"),
    re.compile(r"\\boxed\{(?P<tail>[^{}]*)\}"),
    re.compile(r"answer\s*(?:is|:|=)(?P<tail>[^\n]*)", re.IGNORECASE),
)


def _number_values(text: str) -> list[float]:
    values = []
    for m in _NUMBER_RE.finditer(text.replace("\u2212", "-")):  # U+2212 is the typographic minus
        value = float(m["num"].replace(",", ""))
        if m["den"] is not None:
            denominator = float(m["den"].replace(",", ""))
            if denominator == 0:
                continue
            value /= denominator
        values.append(-value if m["sign"] == "-" else value)
    return values


def extract_number(text: str) -> float | None:
    """The final numeric answer in `text`: after the last '####', in the last \\boxed{},
    after the last 'answer is', else the last number anywhere; None if there is none.
    Handles 1,234 thousands separators, signs, decimals, exponents and fractions like 3/4."""
    for pattern in _FINAL_ANSWER_RES:
        announcements = list(pattern.finditer(text))
        if announcements:
            values = _number_values(announcements[-1]["tail"])
            if values:
                return values[0]
    values = _number_values(text)
    return values[-1] if values else None


class NumericGrader:
    """1 if the answer's final number equals the reference's within `tol`, relative or absolute
    (|a - r| <= tol or |a - r| <= tol * max(|a|, |r|)); 0 if the answer has no number."""

    name: ClassVar[str] = "numeric"
    DEFAULT_TOL = 1e-6  # absorbs float noise (0.1 + 0.2) without accepting a different answer

    def __init__(self, tol: float = DEFAULT_TOL):
        if not (math.isfinite(tol) and tol >= 0):
            raise UserError(f"numeric: tol must be a finite number >= 0, got {tol!r}.")
        self.tol = tol
        self.spec = "numeric" if tol == self.DEFAULT_TOL else f"numeric:tol={tol!r}"

    def grade(self, answer: str, reference: str) -> float:
        expected = extract_number(reference)
        if expected is None:
            raise GraderError(f"numeric: the reference has no number: {reference[:80]!r}")
        got = extract_number(answer)
        if got is None:
            return 0.0
        return float(math.isclose(got, expected, rel_tol=self.tol, abs_tol=self.tol))


@GRADERS.register("numeric")
def _numeric(arg: str) -> NumericGrader:
    return NumericGrader(**_options(arg, {"tol": float}, "numeric"))


# --- text similarity -------------------------------------------------------------------------


@cache
def _sacrebleu_metric(kind: str):
    from sacrebleu.metrics import BLEU, CHRF  # imported on first use: only these metrics need it

    # effective_order: a short sentence without 4-gram matches is not automatically 0.
    return BLEU(effective_order=True) if kind == "bleu" else CHRF()


def _ratio(answer: str, reference: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(answer, reference) / 100


def _token_set(answer: str, reference: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.token_set_ratio(answer, reference) / 100


def _bleu(answer: str, reference: str) -> float:
    return _sacrebleu_metric("bleu").sentence_score(answer, [reference]).score / 100


def _chrf(answer: str, reference: str) -> float:
    return _sacrebleu_metric("chrf").sentence_score(answer, [reference]).score / 100


SIMILARITY_METRICS: dict[str, Callable[[str, str], float]] = {
    "ratio": _ratio, "token_set": _token_set, "bleu": _bleu, "chrf": _chrf,
}


class SimilarityGrader:
    """Graded text similarity: rapidfuzz ratio / token_set_ratio, or sacrebleu sentence BLEU /
    chrF, each divided by 100 (and clipped: BLEU can come out at 100.00000000000004)."""

    name: ClassVar[str] = "similarity"
    DEFAULT_METRIC = "ratio"  # what OpenAI calls fuzzy_match

    def __init__(self, metric: str = DEFAULT_METRIC):
        if metric not in SIMILARITY_METRICS:
            raise UserError(f"similarity: metric must be one of {', '.join(SIMILARITY_METRICS)}, got {metric!r}.")
        self.metric = metric
        self._score = SIMILARITY_METRICS[metric]
        self.spec = "similarity" if metric == self.DEFAULT_METRIC else f"similarity:metric={metric}"

    def grade(self, answer: str, reference: str) -> float:
        return min(1.0, max(0.0, self._score(answer, reference)))


@GRADERS.register("similarity")
def _similarity(arg: str) -> SimilarityGrader:
    return SimilarityGrader(**_options(arg, {"metric": str}, "similarity"))


# --- multi: a formula over other graders -----------------------------------------------------

MULTI_FUNCTIONS = {"min": min, "max": max, "abs": abs}


class MultiGrader:
    """A formula over other graders' scores, by registry name, e.g. '0.7*numeric+0.3*similarity'.
    Each named grader runs with its defaults. Evaluated by simpleeval (arithmetic, comparisons,
    min/max/abs; no attributes, no calls beyond those); the result is clipped to [0, 1]."""

    name: ClassVar[str] = "multi"

    def __init__(self, formula: str):
        try:
            tree = ast.parse(formula.strip(), mode="eval")
        except SyntaxError as exc:
            raise UserError(f"multi: cannot parse formula {formula!r}: {exc.msg}") from exc
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(MULTI_FUNCTIONS)
        if not names:
            raise UserError("multi: the formula uses no grader, e.g. 'multi:0.7*numeric+0.3*similarity'.")
        if "multi" in names:
            raise UserError("multi: formulas cannot nest multi.")
        unknown = sorted(names - set(GRADERS.names()))
        if unknown:
            raise UserError(f"multi: unknown grader(s) {', '.join(unknown)}; known: {', '.join(GRADERS.names())}.")
        self.parts: dict[str, Grader] = {name: parse_grader(name) for name in sorted(names)}
        # Re-printed from the syntax tree so that spacing differences make the same spec.
        self.formula = ast.unparse(tree)
        self.spec = f"multi:{self.formula}"
        self._parsed = None
        # A dry run catches what simpleeval refuses (attributes, strings, unknown calls) now, not mid-job.
        self._combine({name: 0.5 for name in self.parts})

    def describe(self) -> dict[str, Any]:
        return {"parts": {name: grader.spec for name, grader in self.parts.items()}}

    def _combine(self, scores: dict[str, float]) -> float:
        from simpleeval import SimpleEval

        evaluator = SimpleEval(names=scores, functions=MULTI_FUNCTIONS)
        try:
            if self._parsed is None:
                self._parsed = evaluator.parse(self.formula)
            value = evaluator.eval(self.formula, previously_parsed=self._parsed)
        except Exception as exc:  # anything the formula does wrong is the formula's fault
            raise GraderError(f"multi: cannot evaluate {self.formula!r}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise GraderError(f"multi: {self.formula!r} gave {value!r}, not a finite number")
        return min(1.0, max(0.0, float(value)))

    def grade(self, answer: str, reference: str) -> float:
        return self._combine({name: grader.grade(answer, reference) for name, grader in self.parts.items()})


GRADERS.register("multi", MultiGrader)


# --- TRL reward functions --------------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """The answer in a TRL completion: a string, or a conversational list of messages whose last
    assistant message holds it (content may be a string or a list of {'type': 'text'} parts)."""
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, dict) else list(completion or [])
    answers = [m for m in messages if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
    if not answers:
        return ""
    content = answers[-1].get("content") or ""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def as_reward_func(grader: Grader, *, on_error: float | None = 0.0) -> Callable[..., list[float | None]]:
    """A TRL GRPOTrainer/RLOOTrainer reward function scoring each completion against the
    dataset's `reference` column; a grader that declares `uses_prompt` (score_model) is also
    given the completion's prompt (chat messages, or the prompt text).

    A completion the grader cannot score (GraderError), or a row without a reference, gets
    `on_error`: 0.0 by default, or None, which TRL treats as "not applicable" for that sample.
    A run must not die on one odd completion; each failure is logged so a broken grader shows.
    Once a grader says the run must stop (a spent budget, `stops_run`), every later completion
    gets None, never `on_error`: a 0 would train the policy away from answers nobody scored.
    """
    wants_prompt = getattr(grader, "uses_prompt", False)
    stopped: list[str] = []  # why the grader stopped, once it has

    def reward(prompts: list[Any], completions: list[Any], reference: list[str | None] | None = None,
               **kwargs: Any) -> list[float | None]:
        if reference is None:
            raise UserError(f"{reward.__name__} needs a 'reference' column in the training dataset.")
        if len(reference) != len(completions):
            raise UserError(f"{reward.__name__}: {len(completions)} completions but {len(reference)} references.")
        scores: list[float | None] = []
        for prompt, completion, ref in zip(prompts, completions, reference, strict=True):
            if stopped:
                scores.append(None)
                continue
            if ref is None:
                scores.append(on_error)
                continue
            text = completion_text(completion)
            try:
                scores.append(grader.grade(text, str(ref), prompt=prompt) if wants_prompt
                              else grader.grade(text, str(ref)))
            except GraderError as exc:
                if getattr(exc, "stops_run", False):
                    stopped.append(str(exc))
                    log.warning("%s: %s; the rest of this run's completions get no reward from it (None)",
                                reward.__name__, exc)
                    scores.append(None)
                    continue
                log.warning("%s: %s", reward.__name__, exc)
                scores.append(on_error)
        return scores

    # TRL logs each reward under its function's name (rewards/grader_numeric/mean).
    reward.__name__ = reward.__qualname__ = f"grader_{grader.name}"
    reward.grader = grader  # type: ignore[attr-defined]
    return reward


# Registers the "python" grader (its own module: it manages a locked-down child process).
