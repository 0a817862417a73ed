"""Labels -> training rows in TRL's own column names, for every label kind.

- preference rows: prompt / chosen / rejected (+ margin for reward models)  DPO, RewardTrainer
- kto rows:        prompt / completion / label (True = desirable)           KTOTrainer
- sft rows:        prompt / completion                                       SFTTrainer

Rows are "conversational" (prompt = chat messages, completions = one assistant message), so the
trainer applies the model's own chat template. Every row carries a `rule` column naming the
conversion that made it (TRL's trainers ignore extra columns); the conversions themselves are
pure functions in feedback/conversions.py, and the README lists them.

Several labels on one item are resolved by `rule` (a RowSettings field, recorded by snapshots):
- "majority": pairs by majority between A and B (tie, both-bad or a split leaves a pair out);
  thumbs by majority; for rank and rating items, each pair of positions in its majority direction;
- "drop": only unanimous verdicts;
- "soft": disagreement kept, every A-or-B vote (every label's pair direction) a row of its own, so
  a pair voted 3 to 1 trains three rows towards the majority and one against it (conservative
  DPO's label smoothing, per item). Ties and both-bad votes add no row.
- "reliability": pairs and thumbs by Dawid-Skene (feedback/reliability.py), which weighs each
  annotator by how reliable the labels show them to be: one row per item in the aggregated
  direction, with its `confidence`, and items below `min_confidence` left out. A snapshot freezes
  the estimates with its labels. Rank and rating labels resolve by majority under this rule.
  (DPO's `smooth_by_confidence`, training/stages/dpo.py, smooths its loss by these confidences.)

KTO rows come from every source: thumbs (binary labels), graders' scores on single responses
(desirable when the score is at least `kto_threshold`), ratings (desirable when the mean of the
aspects is at least `rating_kto_threshold`), edits (the rewrite desirable, a changed original not)
and, with `kto_from_pairs`, resolved pairwise labels unpaired (chosen desirable, rejected not).

An item with a final answer (feedback/decisions.py: a gold answer or a reviewer's adjudication)
trains once, in the direction of that answer, whatever the rule and however many labels it has;
its rows are named `pairwise:gold` / `pairwise:adjudication` (thumbs likewise). A tie or both-bad
answer, or a thumb down, trains no preference. Attention checks never train.

Prompts of the val split are held out unless asked (`include_val`); a snapshot never has them.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import LABEL_SOURCES, Item, ItemResponse, Label, Project, Prompt, Response, SnapshotLabel
from feedback import conversions
from feedback.config_fields import cfg_field
from feedback.decisions import attention_items, decisions_for, value_of
from feedback.errors import UserError
from feedback.reliability import Estimates, estimates_for

# How far the chosen reward should exceed the rejected one, by the strength annotators gave.
STRENGTH_MARGIN = {None: 0.0, "slight": 0.5, "much": 1.0}
RULES = ("majority", "drop", "soft", "reliability")
# Which pairs a ranking gives when nobody says: all of them for a reward model, the clean
# best-over-worst pair for DPO (SFT takes each item's best: best_vs_rest, below).
RANK_PAIRS_FOR = {"reward": "all_pairs", "dpo": "best_vs_worst"}


@dataclass
class RowSettings:
    """How labels become rows; snapshots record these with their labels."""

    rule: str = cfg_field("majority", "Several labels on one item: majority, drop (unanimous only), soft "
                          "(every vote a row) or reliability (Dawid-Skene).", choices=RULES)
    rank_pairs: str | None = cfg_field(None, "Pairs from a ranking: all_pairs, best_vs_rest or best_vs_worst "
                                       "(None: all_pairs for reward, best_vs_worst for DPO).")
    rating_min_margin: float = cfg_field(1.0, "Ratings: two responses make a pair when their mean aspect scores "
                                         "differ by at least this (closer ones are dropped).")
    rating_kto_threshold: float = cfg_field(4.0, "Ratings: a response is desirable for KTO when its mean aspect "
                                            "score is at least this.")
    kto_threshold: float = cfg_field(0.5, "Grader scores: a single response is desirable for KTO at this score "
                                     "or more.")
    kto_from_pairs: bool = cfg_field(False, "KTO: also unpair resolved pairwise labels (chosen desirable, "
                                     "rejected not).")
    min_confidence: float = cfg_field(0.6, "Rule reliability: leave out items whose aggregated label has a lower "
                                      "posterior probability.")

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise UserError(f"rule is one of {', '.join(RULES)}.")
        if self.rank_pairs is not None and self.rank_pairs not in conversions.RANK_RULES:
            raise UserError(f"rank_pairs is one of {', '.join(conversions.RANK_RULES)}.")
        if self.rating_min_margin <= 0:
            raise UserError("rating_min_margin must be positive (equal ratings say nothing).")
        if not 0 <= self.min_confidence <= 1:
            raise UserError("min_confidence is a probability, from 0 to 1.")

    def rank_rule(self, purpose: str) -> str:
        return self.rank_pairs or RANK_PAIRS_FOR.get(purpose, "best_vs_worst")


@dataclass(frozen=True)
class Scope:
    """Which labels: by source, snapshot, project, and whether the val split is included."""

    sources: Sequence[str] = LABEL_SOURCES
    snapshot_id: int | None = None
    project_id: int | None = None
    include_val: bool = False
    # Rule reliability: Dawid-Skene estimates frozen with a snapshot, by label kind; None: fit now.
    estimates: dict[str, Estimates] | None = None
    # Final answers frozen with a snapshot: item id -> (answer, origin); None: the current ones.
    decisions: dict[int, tuple[str, str]] | None = None


def _decisions(session: Session, scope: Scope, item_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    if scope.decisions is not None:
        return scope.decisions
    return {item_id: (value_of(d), d.origin) for item_id, d in decisions_for(session, item_ids).items()}


def _estimates(session: Session, scope: Scope, kind: str, by_item: dict[int, list[Label]]) -> Estimates:
    if scope.estimates is not None and kind in scope.estimates:
        return scope.estimates[kind]
    return estimates_for(session, [label for labels in by_item.values() for label in labels])


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _majority(values: Iterable[str]) -> str | None:
    counts = Counter(values).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def _resolve(values: list[str], rule: str) -> str | None:
    """One value from several labels: the majority, or (rule 'drop') only a unanimous one."""
    if rule == "drop" and len(set(values)) > 1:
        return None
    return _majority(values)


def _labels(session: Session, kind: str, scope: Scope) -> dict[int, list[Label]]:
    by_item: dict[int, list[Label]] = defaultdict(list)
    query = (select(Label).where(Label.kind == kind, Label.source.in_(scope.sources),
                                 Label.item_id.not_in(attention_items())).order_by(Label.id))
    if not scope.include_val:
        train_items = select(Item.id).join(Prompt, Prompt.id == Item.prompt_id).where(Prompt.split != "val")
        query = query.where(Label.item_id.in_(train_items))
    if scope.project_id is not None:
        query = query.where(Label.item_id.in_(select(Item.id).where(Item.project_id == scope.project_id)))
    if scope.snapshot_id is not None:  # only the labels frozen into that snapshot
        query = (query.join(SnapshotLabel, SnapshotLabel.label_id == Label.id)
                 .where(SnapshotLabel.snapshot_id == scope.snapshot_id))
    for label in session.scalars(query):
        by_item[label.item_id].append(label)
    return by_item


def _votes(labels: list[Label], rule: str) -> list[str]:
    """The directions a pair trains in: its resolved winner once, or (rule 'soft') each A/B vote."""
    if rule == "soft":
        return [label.choice for label in labels if label.choice in ("a", "b")]
    winner = _resolve([label.choice for label in labels], rule)
    return [winner] if winner in ("a", "b") else []


def _pair_texts(session: Session, item_ids: Iterable[int]) -> list[tuple[int, list, str, str]]:
    ra, rb = aliased(Response), aliased(Response)
    return list(session.execute(
        select(Item.id, Prompt.messages, ra.text, rb.text)
        .join(Prompt, Prompt.id == Item.prompt_id)
        .join(ra, ra.id == Item.response_a_id).join(rb, rb.id == Item.response_b_id)
        .where(Item.id.in_(list(item_ids))).order_by(Item.id)  # stable output: same labels, same file
    ))


def _positions(session: Session, item_ids: Iterable[int]) -> dict[int, tuple[list, list[str]]]:
    """item id -> (prompt messages, response texts by position), for items of K responses."""
    out: dict[int, tuple[list, list[str]]] = {}
    rows = session.execute(
        select(Item.id, Prompt.messages, Response.text)
        .join(Prompt, Prompt.id == Item.prompt_id).join(ItemResponse, ItemResponse.item_id == Item.id)
        .join(Response, Response.id == ItemResponse.response_id)
        .where(Item.id.in_(list(item_ids))).order_by(Item.id, ItemResponse.position))
    for item_id, messages, text in rows:
        out.setdefault(item_id, (messages, []))[1].append(text)
    return out


def _single_texts(session: Session, item_ids: Iterable[int]) -> dict[int, tuple[list, str]]:
    rows = session.execute(
        select(Item.id, Prompt.messages, Response.text)
        .join(Prompt, Prompt.id == Item.prompt_id).join(Response, Response.id == Item.response_a_id)
        .where(Item.id.in_(list(item_ids))).order_by(Item.id))
    return {item_id: (messages, text) for item_id, messages, text in rows}


def _aspects(session: Session, item_ids: Iterable[int]) -> dict[int, list[str]]:
    return dict(session.execute(select(Item.id, Project.aspects).join(Project, Project.id == Item.project_id)
                                .where(Item.id.in_(list(item_ids)))).all())


def _row(messages: list, chosen: str, rejected: str, rule: str, margin: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"prompt": messages, "chosen": _assistant(chosen), "rejected": _assistant(rejected)}
    if margin is not None:
        row["margin"] = margin
    row["rule"] = rule
    return row


def _reliable(estimates: Estimates, item_id: int, settings: RowSettings, values: tuple[str, str]) -> str | None:
    """The item's Dawid-Skene value, if it is one of `values` and confident enough."""
    value, confidence = estimates.items.get(item_id, (None, 0.0))
    return value if value in values and confidence >= settings.min_confidence else None


def _pairwise_preferences(session: Session, scope: Scope, settings: RowSettings, with_margin: bool) -> list[dict]:
    by_item = _labels(session, "pairwise", scope)
    reliability = _estimates(session, scope, "pairwise", by_item) if settings.rule == "reliability" else None
    decided = _decisions(session, scope, by_item)
    out = []
    for item_id, messages, text_a, text_b in _pair_texts(session, by_item) if by_item else []:
        labels = by_item[item_id]
        rule, confidence = f"pairwise:{settings.rule}", None
        if item_id in decided:  # a final answer wins over every aggregate, and trains once
            answer, origin = decided[item_id]
            winners, rule, confidence = ([answer] if answer in ("a", "b") else []), f"pairwise:{origin}", 1.0
        elif reliability is not None:
            winner = _reliable(reliability, item_id, settings, ("a", "b"))
            winners = [winner] if winner else []
            confidence = reliability.items.get(item_id, (None, 0.0))[1]
        else:
            winners = _votes(labels, settings.rule)
        for winner in winners:
            chosen, rejected = (text_a, text_b) if winner == "a" else (text_b, text_a)
            margin = None
            if with_margin:
                agreeing = [label for label in labels if label.choice == winner]
                margin = (sum(STRENGTH_MARGIN.get(label.strength, 0.0) for label in agreeing) / len(agreeing)
                          if agreeing else 0.0)
            row = _row(messages, chosen, rejected, rule, margin)
            if reliability is not None:
                row["confidence"] = confidence
            out.append(row)
    return out


def _rank_preferences(session: Session, scope: Scope, settings: RowSettings, purpose: str,
                      with_margin: bool) -> list[dict]:
    how = settings.rank_rule(purpose)
    by_item = _labels(session, "rank", scope)
    out = []
    for item_id, (messages, texts) in _positions(session, by_item).items():
        labels = by_item[item_id]
        # The rule picks which pairs to train on (from each ranking); every label then votes on
        # each of them by its full ordering, so a label that ranks a picked pair the other way
        # counts against it.
        picked = {frozenset(pair) for label in labels for pair in conversions.rank_pairs(label.ranking, how)}
        votes = [pair for label in labels for pair in conversions.rank_pairs(label.ranking, "all_pairs")
                 if frozenset(pair) in picked]
        ties = [pair for label in labels for pair in conversions.rank_ties(label.ranking)]
        for winner, loser in conversions.resolve_votes(votes, settings.rule, ties):
            out.append(_row(messages, texts[winner], texts[loser], f"rank:{how}", 0.0 if with_margin else None))
    return out


def _rating_preferences(session: Session, scope: Scope, settings: RowSettings, with_margin: bool) -> list[dict]:
    by_item = _labels(session, "rating", scope)
    aspects = _aspects(session, by_item)
    out = []
    for item_id, (messages, texts) in _positions(session, by_item).items():
        margins: dict[tuple[int, int], list[float]] = defaultdict(list)
        ties = []
        for label in by_item[item_id]:
            for winner, loser, margin in conversions.rating_pairs(label.ratings, aspects[item_id],
                                                                  settings.rating_min_margin):
                margins[(winner, loser)].append(margin)
            ties += conversions.rating_ties(label.ratings, aspects[item_id], settings.rating_min_margin)
        votes = [pair for pair, ms in margins.items() for _ in ms]
        for winner, loser in conversions.resolve_votes(votes, settings.rule, ties):
            margin = fmean(margins[(winner, loser)]) if with_margin else None
            out.append(_row(messages, texts[winner], texts[loser], "rating:mean_margin", margin))
    return out


def _edit_preferences(session: Session, scope: Scope, with_margin: bool) -> list[dict]:
    by_item = _labels(session, "edit", scope)
    out = []
    for item_id, (messages, original) in _single_texts(session, by_item).items():
        for label in by_item[item_id]:
            if label.edit_distance:  # an unchanged submission is no comparison
                out.append(_row(messages, label.edited_text, original, "edit:over_original",
                                0.0 if with_margin else None))
    return out


def preference_rows(*, session: Session, scope: Scope = Scope(), settings: RowSettings | None = None,
                    purpose: str = "dpo") -> list[dict[str, Any]]:
    """chosen/rejected rows from every label kind that compares (pairwise, rank, rating, edit);
    with `purpose` "reward", each row has a margin."""
    settings = settings or RowSettings()
    with_margin = purpose == "reward"
    return (_pairwise_preferences(session, scope, settings, with_margin)
            + _rank_preferences(session, scope, settings, purpose, with_margin)
            + _rating_preferences(session, scope, settings, with_margin)
            + _edit_preferences(session, scope, with_margin))


def kto_rows(*, session: Session, scope: Scope = Scope(), settings: RowSettings | None = None) -> list[dict[str, Any]]:
    """prompt / completion / label rows (see the module docstring for the sources)."""
    settings = settings or RowSettings()
    resolved: dict[int, tuple[bool, str]] = {}  # single-response item -> (desirable, rule)
    thumbs_rule = "majority" if settings.rule == "soft" else settings.rule
    thumbs = _labels(session, "binary", scope)
    reliability = _estimates(session, scope, "binary", thumbs) if settings.rule == "reliability" else None
    decided = _decisions(session, scope, thumbs)
    for item_id, labels in thumbs.items():
        if item_id in decided:
            answer, origin = decided[item_id]
            resolved[item_id] = (answer == "up", f"binary:{origin}")
            continue
        verdict = (_reliable(reliability, item_id, settings, ("up", "down")) if reliability is not None
                   else _resolve([label.thumb for label in labels], thumbs_rule))
        if verdict is not None:
            resolved[item_id] = (verdict == "up", f"binary:{thumbs_rule}")
    for item_id, labels in _labels(session, "score", scope).items():
        if item_id not in resolved:  # a person's thumb on the same response wins over a score
            resolved[item_id] = (fmean(label.score for label in labels) >= settings.kto_threshold,
                                 "grader:kto_threshold")
    out = []
    for item_id, (messages, text) in _single_texts(session, resolved).items() if resolved else []:
        desirable, rule = resolved[item_id]
        out.append({"prompt": messages, "completion": _assistant(text), "label": desirable, "rule": rule})
    rated = _labels(session, "rating", scope)
    aspects = _aspects(session, rated)
    for item_id, (messages, texts) in _positions(session, rated).items():
        per_label = [conversions.rating_scores(label.ratings, aspects[item_id]) for label in rated[item_id]]
        for position, text in enumerate(texts):
            score = fmean(scores[position] for scores in per_label)
            out.append({"prompt": messages, "completion": _assistant(text),
                        "label": conversions.meets(score, settings.rating_kto_threshold),
                        "rule": "rating:kto_threshold"})
    for row in _edit_preferences(session, scope, with_margin=False):
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True, "rule": row["rule"]})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False, "rule": row["rule"]})
    if settings.kto_from_pairs:  # each pair once, by its resolved winner (a soft split would contradict itself)
        once = RowSettings(rule=thumbs_rule, min_confidence=settings.min_confidence)
        for row in _pairwise_preferences(session, scope, once, with_margin=False):
            out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True,
                        "rule": "pairwise:unpaired"})
            out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False,
                        "rule": "pairwise:unpaired"})
    return out


def sft_rows(*, session: Session, scope: Scope = Scope(), settings: RowSettings | None = None) -> list[dict[str, Any]]:
    """prompt / completion rows: every rewrite (an unchanged one keeps the original), and the
    winners of pairwise, rank and rating labels (each resolved once, even under "soft")."""
    settings = settings or RowSettings()
    once = RowSettings(rule="majority" if settings.rule == "soft" else settings.rule, rank_pairs="best_vs_rest",
                       min_confidence=settings.min_confidence,
                       rating_min_margin=settings.rating_min_margin)
    out, seen = [], set()
    by_item = _labels(session, "edit", scope)
    for item_id, (messages, _original) in _single_texts(session, by_item).items():
        for label in by_item[item_id]:
            out.append({"prompt": messages, "completion": _assistant(label.edited_text), "rule": "edit:sft"})
    ranked = _rank_preferences(session, scope, once, "sft", False) + _rating_preferences(session, scope, once, False)
    # Of K responses, only the best: a chosen response that lost to another one is not a winner.
    beaten = {(repr(row["prompt"]), row["rejected"][0]["content"]) for row in ranked}
    winners = _pairwise_preferences(session, scope, once, False) + [
        row for row in ranked if (repr(row["prompt"]), row["chosen"][0]["content"]) not in beaten]
    for row in winners:
        key = (repr(row["prompt"]), row["chosen"][0]["content"])
        if key not in seen:  # best-vs-rest gives the best response once per loser
            seen.add(key)
            out.append({"prompt": row["prompt"], "completion": row["chosen"],
                        "rule": row["rule"].split(":")[0] + ":winners"})
    return out
