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

Prompts of the val split are held out unless asked (`include_val`, or `split="val"`); a snapshot
never has them. A Scope can also narrow the labels to items whose responses all come from some
policy versions, to labels made since a moment, and to one split.

With `metadata=True` every row also carries the columns of METADATA_COLUMNS (`_metadata`), so a
row can be joined back to the database and weighted: the prompt and item ids, the labels it was
resolved from (ids, sources, producers), their number (`votes`), the share that agrees with the
row (`agreement`) and their mean `strength`, the policy version and finish reason of each of the
row's completions (chosen then rejected; None for a person's rewrite), the split and the project.
Without it, rows are exactly what they always were (snapshots train on them).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import fmean
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, aliased

from db.models import (
    LABEL_SOURCES,
    Item,
    ItemResponse,
    Label,
    PolicyVersion,
    Project,
    Prompt,
    Response,
    SnapshotLabel,
)
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
# The columns `metadata=True` adds to every row, in this order (the README's Exports section says what each means).
METADATA_COLUMNS = ("prompt_id", "item_id", "label_ids", "policy_versions", "sources", "producers", "strength",
                    "votes", "agreement", "split", "finish_reasons", "project")


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
    """Which labels: by source, snapshot, project, policy version, time and split."""

    sources: Sequence[str] = LABEL_SOURCES
    snapshot_id: int | None = None
    project_id: int | None = None
    include_val: bool = False
    # Only items whose every response was sampled by one of these policy versions (names; empty: any).
    policy_versions: Sequence[str] = ()
    since: datetime | None = None  # only labels created at or after this (timezone-aware)
    split: str | None = None  # only prompts of this split ("val" is an explicit ask, like include_val)
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
    if scope.split is not None or not scope.include_val:
        in_split = Prompt.split == scope.split if scope.split is not None else Prompt.split != "val"
        query = query.where(Label.item_id.in_(select(Item.id).join(Prompt, Prompt.id == Item.prompt_id)
                                              .where(in_split)))
    if scope.since is not None:
        query = query.where(Label.created_at >= scope.since)
    if scope.policy_versions:  # leave out items with any response by another version
        others = (select(Response.id).join(PolicyVersion, PolicyVersion.id == Response.policy_version_id)
                  .where(PolicyVersion.name.not_in(list(scope.policy_versions))))
        query = query.where(
            Label.item_id.not_in(select(Item.id).where(or_(Item.response_a_id.in_(others),
                                                           Item.response_b_id.in_(others)))),
            Label.item_id.not_in(select(ItemResponse.item_id).where(ItemResponse.response_id.in_(others))))
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


@dataclass(frozen=True)
class _Facts:
    """What the metadata columns say about one item, whatever its labels."""

    prompt_id: int
    project: str
    split: str
    versions: list[str]  # the policy version of each response, by position (a pair: a, b)
    finish_reasons: list[str | None]


def _facts(session: Session, item_ids: Iterable[int]) -> dict[int, _Facts]:
    """item id -> its facts, for the rows of `metadata=True`."""
    ids = list(item_ids)
    heads = session.execute(
        select(Item.id, Item.prompt_id, Project.name, Prompt.split, Item.response_a_id, Item.response_b_id)
        .join(Project, Project.id == Item.project_id).join(Prompt, Prompt.id == Item.prompt_id)
        .where(Item.id.in_(ids))).all()
    positions: dict[int, list[int]] = defaultdict(list)  # rank and rating items: their K responses
    for item_id, response_id in session.execute(
            select(ItemResponse.item_id, ItemResponse.response_id).where(ItemResponse.item_id.in_(ids))
            .order_by(ItemResponse.item_id, ItemResponse.position)):
        positions[item_id].append(response_id)
    responses = {item_id: positions.get(item_id) or [r for r in (a, b) if r is not None]
                 for item_id, _, _, _, a, b in heads}
    made = {response_id: (version, finish) for response_id, version, finish in session.execute(
        select(Response.id, PolicyVersion.name, Response.finish_reason)
        .join(PolicyVersion, PolicyVersion.id == Response.policy_version_id)
        .where(Response.id.in_([r for rs in responses.values() for r in rs])))}
    return {item_id: _Facts(prompt_id=prompt_id, project=project, split=split,
                            versions=[made[r][0] for r in responses[item_id]],
                            finish_reasons=[made[r][1] for r in responses[item_id]])
            for item_id, prompt_id, project, split, _, _ in heads}


def _metadata(item_id: int, facts: _Facts, labels: Sequence[Label], agreeing: Sequence[Label],
              completions: Sequence[int | None]) -> dict[str, Any]:
    """The metadata columns of one row: the item's ids, split and project; the labels the row was
    resolved from, how many (`votes`), the share of them that agree with the row and their mean
    strength (pairwise labels: slight 0.5, much 1.0, unstated 0; None for other kinds); and the
    policy version and finish reason of each completion, given by its position in the item
    (None: a person's rewrite, which no policy made)."""
    strengths = [STRENGTH_MARGIN.get(label.strength, 0.0) for label in agreeing if label.kind == "pairwise"]
    return {
        "prompt_id": facts.prompt_id,
        "item_id": item_id,
        "label_ids": [label.id for label in labels],
        "policy_versions": [None if p is None else facts.versions[p] for p in completions],
        "sources": sorted({label.source for label in labels}),
        "producers": sorted({label.producer for label in labels if label.producer}),
        "strength": fmean(strengths) if strengths else None,
        "votes": len(labels),
        "agreement": len(agreeing) / len(labels) if labels else None,
        "split": facts.split,
        "finish_reasons": [None if p is None else facts.finish_reasons[p] for p in completions],
        "project": facts.project,
    }


def _one_side(row: dict[str, Any], side: int) -> dict[str, Any]:
    """A preference row's metadata for one of its completions (0: chosen, 1: rejected), for the
    KTO and SFT rows that unpair it; nothing when the row has none."""
    meta = {column: row[column] for column in METADATA_COLUMNS if column in row}
    for column in ("policy_versions", "finish_reasons"):
        if column in meta:
            meta[column] = meta[column][side:side + 1]
    return meta


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


def _pairwise_preferences(session: Session, scope: Scope, settings: RowSettings, with_margin: bool,
                          metadata: bool = False) -> list[dict]:
    by_item = _labels(session, "pairwise", scope)
    reliability = _estimates(session, scope, "pairwise", by_item) if settings.rule == "reliability" else None
    decided = _decisions(session, scope, by_item)
    facts = _facts(session, by_item) if metadata else None
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
            agreeing = [label for label in labels if label.choice == winner]
            margin = None
            if with_margin:
                margin = (sum(STRENGTH_MARGIN.get(label.strength, 0.0) for label in agreeing) / len(agreeing)
                          if agreeing else 0.0)
            row = _row(messages, chosen, rejected, rule, margin)
            if reliability is not None:
                row["confidence"] = confidence
            if facts is not None:
                row.update(_metadata(item_id, facts[item_id], labels, agreeing, [0, 1] if winner == "a" else [1, 0]))
            out.append(row)
    return out


def _rank_preferences(session: Session, scope: Scope, settings: RowSettings, purpose: str,
                      with_margin: bool, metadata: bool = False) -> list[dict]:
    how = settings.rank_rule(purpose)
    by_item = _labels(session, "rank", scope)
    facts = _facts(session, by_item) if metadata else None
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
            row = _row(messages, texts[winner], texts[loser], f"rank:{how}", 0.0 if with_margin else None)
            if facts is not None:
                agreeing = [label for label in labels if label.ranking[winner] < label.ranking[loser]]
                row.update(_metadata(item_id, facts[item_id], labels, agreeing, [winner, loser]))
            out.append(row)
    return out


def _rating_preferences(session: Session, scope: Scope, settings: RowSettings, with_margin: bool,
                        metadata: bool = False) -> list[dict]:
    by_item = _labels(session, "rating", scope)
    aspects = _aspects(session, by_item)
    facts = _facts(session, by_item) if metadata else None
    out = []
    for item_id, (messages, texts) in _positions(session, by_item).items():
        margins: dict[tuple[int, int], list[float]] = defaultdict(list)
        voters: dict[tuple[int, int], list[Label]] = defaultdict(list)
        ties = []
        for label in by_item[item_id]:
            for winner, loser, margin in conversions.rating_pairs(label.ratings, aspects[item_id],
                                                                  settings.rating_min_margin):
                margins[(winner, loser)].append(margin)
                voters[(winner, loser)].append(label)
            ties += conversions.rating_ties(label.ratings, aspects[item_id], settings.rating_min_margin)
        votes = [pair for pair, ms in margins.items() for _ in ms]
        for winner, loser in conversions.resolve_votes(votes, settings.rule, ties):
            margin = fmean(margins[(winner, loser)]) if with_margin else None
            row = _row(messages, texts[winner], texts[loser], "rating:mean_margin", margin)
            if facts is not None:
                row.update(_metadata(item_id, facts[item_id], by_item[item_id], voters[(winner, loser)],
                                     [winner, loser]))
            out.append(row)
    return out


def _edit_preferences(session: Session, scope: Scope, with_margin: bool, metadata: bool = False) -> list[dict]:
    by_item = _labels(session, "edit", scope)
    facts = _facts(session, by_item) if metadata else None
    out = []
    for item_id, (messages, original) in _single_texts(session, by_item).items():
        for label in by_item[item_id]:
            if label.edit_distance:  # an unchanged submission is no comparison
                row = _row(messages, label.edited_text, original, "edit:over_original", 0.0 if with_margin else None)
                if facts is not None:  # each rewrite is a row of its own, from its one label
                    row.update(_metadata(item_id, facts[item_id], [label], [label], [None, 0]))
                out.append(row)
    return out


def preference_rows(*, session: Session, scope: Scope = Scope(), settings: RowSettings | None = None,
                    purpose: str = "dpo", metadata: bool = False) -> list[dict[str, Any]]:
    """chosen/rejected rows from every label kind that compares (pairwise, rank, rating, edit);
    with `purpose` "reward", each row has a margin; with `metadata`, the METADATA_COLUMNS."""
    settings = settings or RowSettings()
    with_margin = purpose == "reward"
    return (_pairwise_preferences(session, scope, settings, with_margin, metadata)
            + _rank_preferences(session, scope, settings, purpose, with_margin, metadata)
            + _rating_preferences(session, scope, settings, with_margin, metadata)
            + _edit_preferences(session, scope, with_margin, metadata))


def kto_rows(*, session: Session, scope: Scope = Scope(), settings: RowSettings | None = None,
             metadata: bool = False) -> list[dict[str, Any]]:
    """prompt / completion / label rows (see the module docstring for the sources); with
    `metadata`, the METADATA_COLUMNS."""
    settings = settings or RowSettings()
    # single-response item -> (desirable, rule, the labels it comes from, those that agree)
    resolved: dict[int, tuple[bool, str, list[Label], list[Label]]] = {}
    thumbs_rule = "majority" if settings.rule == "soft" else settings.rule
    thumbs = _labels(session, "binary", scope)
    reliability = _estimates(session, scope, "binary", thumbs) if settings.rule == "reliability" else None
    decided = _decisions(session, scope, thumbs)
    for item_id, labels in thumbs.items():
        if item_id in decided:
            answer, origin = decided[item_id]
            resolved[item_id] = (answer == "up", f"binary:{origin}", labels,
                                 [label for label in labels if label.thumb == answer])
            continue
        verdict = (_reliable(reliability, item_id, settings, ("up", "down")) if reliability is not None
                   else _resolve([label.thumb for label in labels], thumbs_rule))
        if verdict is not None:
            resolved[item_id] = (verdict == "up", f"binary:{thumbs_rule}", labels,
                                 [label for label in labels if label.thumb == verdict])
    scores = _labels(session, "score", scope)
    decided_scores = _decisions(session, scope, [i for i in scores if i not in resolved])
    for item_id, labels in scores.items():
        if item_id not in resolved and item_id in decided_scores:  # a final answer wins over a score too
            answer, origin = decided_scores[item_id]
            resolved[item_id] = (answer == "up", f"binary:{origin}", labels, [])
            continue
        if item_id not in resolved:  # a person's thumb on the same response wins over a score
            desirable = fmean(label.score for label in labels) >= settings.kto_threshold
            resolved[item_id] = (desirable, "grader:kto_threshold", labels,
                                 [label for label in labels if (label.score >= settings.kto_threshold) == desirable])
    facts = _facts(session, resolved) if metadata else None
    out = []
    for item_id, (messages, text) in _single_texts(session, resolved).items() if resolved else []:
        desirable, rule, labels, agreeing = resolved[item_id]
        row = {"prompt": messages, "completion": _assistant(text), "label": desirable, "rule": rule}
        if facts is not None:
            row.update(_metadata(item_id, facts[item_id], labels, agreeing, [0]))
        out.append(row)
    rated = _labels(session, "rating", scope)
    aspects = _aspects(session, rated)
    facts = _facts(session, rated) if metadata else None
    for item_id, (messages, texts) in _positions(session, rated).items():
        per_label = [conversions.rating_scores(label.ratings, aspects[item_id]) for label in rated[item_id]]
        for position, text in enumerate(texts):
            score = fmean(scores[position] for scores in per_label)
            desirable = conversions.meets(score, settings.rating_kto_threshold)
            row = {"prompt": messages, "completion": _assistant(text), "label": desirable,
                   "rule": "rating:kto_threshold"}
            if facts is not None:
                agreeing = [label for label, scores in zip(rated[item_id], per_label, strict=True)
                            if conversions.meets(scores[position], settings.rating_kto_threshold) == desirable]
                row.update(_metadata(item_id, facts[item_id], rated[item_id], agreeing, [position]))
            out.append(row)
    for row in _edit_preferences(session, scope, with_margin=False, metadata=metadata):
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True, "rule": row["rule"],
                    **_one_side(row, 0)})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False, "rule": row["rule"],
                    **_one_side(row, 1)})
    if settings.kto_from_pairs:  # each pair once, by its resolved winner (a soft split would contradict itself)
        once = RowSettings(rule=thumbs_rule, min_confidence=settings.min_confidence)
        for row in _pairwise_preferences(session, scope, once, with_margin=False, metadata=metadata):
            out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True,
                        "rule": "pairwise:unpaired", **_one_side(row, 0)})
            out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False,
                        "rule": "pairwise:unpaired", **_one_side(row, 1)})
    return out


def sft_rows(*, session: Session, scope: Scope = Scope(), settings: RowSettings | None = None,
             metadata: bool = False) -> list[dict[str, Any]]:
    """prompt / completion rows: every rewrite (an unchanged one keeps the original), and the
    winners of pairwise, rank and rating labels (each resolved once, even under "soft"); with
    `metadata`, the METADATA_COLUMNS."""
    settings = settings or RowSettings()
    once = RowSettings(rule="majority" if settings.rule == "soft" else settings.rule, rank_pairs="best_vs_rest",
                       min_confidence=settings.min_confidence,
                       rating_min_margin=settings.rating_min_margin)
    out, seen = [], set()
    by_item = _labels(session, "edit", scope)
    facts = _facts(session, by_item) if metadata else None
    for item_id, (messages, _original) in _single_texts(session, by_item).items():
        for label in by_item[item_id]:
            row = {"prompt": messages, "completion": _assistant(label.edited_text), "rule": "edit:sft"}
            if facts is not None:
                row.update(_metadata(item_id, facts[item_id], [label], [label], [None]))
            out.append(row)
    ranked = (_rank_preferences(session, scope, once, "sft", False, metadata)
              + _rating_preferences(session, scope, once, False, metadata))
    # Of K responses, only the best: a chosen response that lost to another one is not a winner.
    beaten = {(repr(row["prompt"]), row["rejected"][0]["content"]) for row in ranked}
    winners = _pairwise_preferences(session, scope, once, False, metadata) + [
        row for row in ranked if (repr(row["prompt"]), row["chosen"][0]["content"]) not in beaten]
    for row in winners:
        key = (repr(row["prompt"]), row["chosen"][0]["content"])
        if key not in seen:  # best-vs-rest gives the best response once per loser
            seen.add(key)
            out.append({"prompt": row["prompt"], "completion": row["chosen"],
                        "rule": row["rule"].split(":")[0] + ":winners", **_one_side(row, 0)})
    return out
