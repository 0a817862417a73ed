"""Judging one pair, both ways round. No database here: judges/batch.py stores what this returns.

Each principle is judged twice, with response A shown first and then with response B shown
first. A verdict stands only when both orders agree; a judge that prefers whatever comes first
(or second) therefore produces 'inconsistent', never a label. Two modes, as in the literature:
- "sample": one principle drawn at random per pair (Constitutional AI);
- "all": a verdict per principle, combined by majority of the consistent ones.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from judges import template
from judges.backends.base import JudgeBackend, JudgeReply, JudgeRequest
from judges.verdict import VerdictError, parse_verdict

Mode = Literal["sample", "all"]
PARSE_ATTEMPTS = 2  # ask again once when an answer has no readable verdict
TRUNCATED = ("max_tokens", "length")  # stop reasons of an answer cut off by its token limit


@dataclass
class PairJudgment:
    outcome: str  # 'a' | 'b' | 'tie' | 'inconsistent' | 'failed'
    verdict_ab: str | None  # canonical winner with A shown first ('a', 'b', 'tie')
    verdict_ba: str | None
    principles: list[str]
    raw: dict[str, Any] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    tokens_known: bool = True  # False when a reply did not report its token counts

    @property
    def failure(self) -> str | None:
        """Why a 'failed' judgment failed: the first error any order ended with."""
        if self.outcome != "failed":
            return None
        return next((o["error"] for o in self.raw.get("orders", []) if o.get("error")), "no verdict")


def to_canonical(verdict: str, a_first: bool) -> str:
    """'1'/'2'/'tie' as written by the judge -> 'a'/'b'/'tie' of the item."""
    if verdict == "tie":
        return "tie"
    first_wins = verdict == "1"
    return "a" if first_wins == a_first else "b"


def combine(per_principle: list[str]) -> str:
    """Majority over the principles whose two orders agreed; anything else is inconsistent."""
    decided = [o for o in per_principle if o in ("a", "b", "tie")]
    if not decided:
        return "failed" if all(o == "failed" for o in per_principle) else "inconsistent"
    top = Counter(decided).most_common(2)
    if len(top) == 2 and top[0][1] == top[1][1]:
        return "inconsistent"
    return top[0][0]


def requests_for(*, messages: list[dict[str, str]], text_a: str, text_b: str, principles: list[str],
                 key: str, answer_format: str = "json") -> list[tuple[str, bool, JudgeRequest]]:
    """(principle, a_first, request) for both orders of each principle."""
    out = []
    for p_index, principle in enumerate(principles):
        for a_first in (True, False):
            first, second = (text_a, text_b) if a_first else (text_b, text_a)
            system, user = template.build(messages=messages, first=first, second=second,
                                          principles=[principle], nonce=template.new_nonce(),
                                          answer_format=answer_format)
            custom_id = f"{key}-p{p_index}-{'ab' if a_first else 'ba'}"
            out.append((principle, a_first, JudgeRequest(system=system, user=user, custom_id=custom_id)))
    return out


def choose_principles(all_principles: list[str], mode: Mode, rng: random.Random) -> list[str]:
    return [rng.choice(all_principles)] if mode == "sample" else list(all_principles)


def _ask(backend: JudgeBackend, request: JudgeRequest) -> tuple[str | None, list[JudgeReply], str | None]:
    """(verdict or None, the replies it took, the last error). An unreadable answer is asked for
    once more, with twice the token limit when it was cut off. A request that fails for good
    (the backend's own retries spent) ends the asking: its error is kept, and so are the replies
    already paid for."""
    replies, error = [], None
    for _ in range(PARSE_ATTEMPTS):
        try:
            reply = backend.complete(request)
        except Exception as exc:  # a provider failure is this order's outcome, not the job's
            return None, replies, f"{type(exc).__name__}: {exc}"[:500]
        replies.append(reply)
        try:
            return parse_verdict(reply.text, reply.structured), replies, None
        except VerdictError as exc:
            error = str(exc)
        if reply.stop_reason in TRUNCATED:
            request = replace(request, max_tokens=request.max_tokens * 2)
            error += f" (cut off at {reply.stop_reason}; asked again with max_tokens {request.max_tokens})"
    return None, replies, error


def assemble(principles: list[str],
             answers: list[tuple[str, bool, str | None, list[JudgeReply], str | None]]) -> PairJudgment:
    """Combine the answers for both orders of every principle into one judgment."""
    per_principle, raw = [], {"orders": []}
    tokens_in = tokens_out = 0
    tokens_known = True
    cost: float | None = 0.0
    first_ab = first_ba = None
    for principle in principles:
        verdicts = {}
        for p, a_first, verdict, replies, error in answers:
            if p != principle:
                continue
            canonical = to_canonical(verdict, a_first) if verdict else None
            verdicts[a_first] = canonical
            raw["orders"].append({"principle": principle, "shown_first": "a" if a_first else "b",
                                  "verdict": canonical, "error": error, "answers": [r.text for r in replies],
                                  "model": replies[-1].model if replies else None,
                                  "stop_reasons": [r.stop_reason for r in replies],
                                  "message_ids": [r.extra.get("message_id") or r.extra.get("completion_id")
                                                  for r in replies]})
            for r in replies:
                tokens_known = tokens_known and r.input_tokens is not None and r.output_tokens is not None
                tokens_in += r.input_tokens or 0
                tokens_out += r.output_tokens or 0
                cost = None if cost is None or r.cost_usd is None else cost + r.cost_usd
        ab, ba = verdicts.get(True), verdicts.get(False)
        first_ab, first_ba = (first_ab or ab), (first_ba or ba)
        per_principle.append("failed" if ab is None or ba is None else ab if ab == ba else "inconsistent")
    return PairJudgment(outcome=combine(per_principle), verdict_ab=first_ab, verdict_ba=first_ba,
                        principles=principles, raw=raw, input_tokens=tokens_in, output_tokens=tokens_out,
                        cost_usd=cost, tokens_known=tokens_known)


def judge_pair(*, backend: JudgeBackend, messages: list[dict[str, str]], text_a: str, text_b: str,
               principles: list[str], key: str = "item") -> PairJudgment:
    """Ask `backend` about one pair under `principles` (already chosen), both orders each."""
    answers = []
    for principle, a_first, request in requests_for(messages=messages, text_a=text_a, text_b=text_b,
                                                    principles=principles, key=key,
                                                    answer_format=getattr(backend, "answer_format", "json")):
        verdict, replies, error = _ask(backend, request)
        answers.append((principle, a_first, verdict, replies, error))
    return assemble(principles, answers)
