"""The pure conversions from rank, rating and edit labels to training directions
(feedback/conversions.py): every rule, with ties, near-ties and bad input."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedback.conversions import (
    DEFAULT_ASPECTS,
    RANK_RULES,
    edit_distance,
    rank_pairs,
    rank_ties,
    rating_desirable,
    rating_pairs,
    rating_scores,
    rating_ties,
    resolve_votes,
    validate_ranking,
    validate_ratings,
)

# --- rankings ------------------------------------------------------------------------------------


def test_rank_rules_are_the_documented_three():
    assert RANK_RULES == ("all_pairs", "best_vs_rest", "best_vs_worst")


def test_all_pairs_of_a_strict_ranking():
    # position 2 best, then 0, then 3, then 1
    ranking = [2, 4, 1, 3]
    assert sorted(rank_pairs(ranking, "all_pairs")) == sorted([(2, 0), (2, 3), (2, 1), (0, 3), (0, 1), (3, 1)])
    assert len(rank_pairs(ranking)) == 4 * 3 // 2  # all_pairs is the default


@pytest.mark.parametrize("k", range(3, 9))
def test_all_pairs_count_is_k_choose_2_for_every_strict_ranking_size(k):
    ranking = list(range(k, 0, -1))  # the last position best
    pairs = rank_pairs(ranking, "all_pairs")
    assert len(pairs) == k * (k - 1) // 2
    assert all(ranking[w] < ranking[lo] for w, lo in pairs)


def test_all_pairs_with_ties_leaves_tied_pairs_out():
    ranking = [1, 2, 2, 3]  # positions 1 and 2 tie
    assert sorted(rank_pairs(ranking, "all_pairs")) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]


def test_best_vs_rest():
    assert sorted(rank_pairs([3, 1, 2, 4], "best_vs_rest")) == [(1, 0), (1, 2), (1, 3)]


def test_best_vs_rest_with_tied_best_and_tied_rest():
    # two best (0, 2), the rest (1, 3) tie with each other: each best over each of the rest
    assert sorted(rank_pairs([1, 2, 1, 2], "best_vs_rest")) == [(0, 1), (0, 3), (2, 1), (2, 3)]


def test_best_vs_worst():
    assert rank_pairs([3, 1, 2, 4], "best_vs_worst") == [(1, 3)]


def test_best_vs_worst_with_ties_at_both_ends():
    assert sorted(rank_pairs([1, 3, 1, 3, 2], "best_vs_worst")) == [(0, 1), (0, 3), (2, 1), (2, 3)]


@pytest.mark.parametrize("how", RANK_RULES)
def test_an_all_tied_ranking_gives_no_pair(how):
    assert rank_pairs([2, 2, 2, 2], how) == []
    assert rank_pairs([1, 1, 1], how) == []


def test_unknown_rank_rule():
    with pytest.raises(ValueError, match="rank rule"):
        rank_pairs([1, 2, 3], "best_vs_second")


@given(st.lists(st.integers(1, 8), min_size=3, max_size=8))
def test_every_rank_pair_goes_from_better_to_worse(ranking):
    all_pairs = set(rank_pairs(ranking, "all_pairs"))
    for how in RANK_RULES:
        pairs = rank_pairs(ranking, how)
        assert len(pairs) == len(set(pairs))
        assert all(ranking[w] < ranking[lo] for w, lo in pairs)
        assert set(pairs) <= all_pairs  # the other rules pick from all_pairs
    assert len(all_pairs) == sum(ranking[i] != ranking[j] for i, j in itertools.combinations(range(len(ranking)), 2))


# --- ratings -------------------------------------------------------------------------------------

ASPECTS = ("helpfulness", "honesty")


def rated(*scores: tuple[int, int]) -> list[dict]:
    return [{"scores": dict(zip(ASPECTS, s, strict=True)), "rationales": {}} for s in scores]


def test_rating_scores_are_the_mean_of_the_aspects():
    assert rating_scores(rated((5, 4), (1, 2), (3, 3)), ASPECTS) == [4.5, 1.5, 3.0]
    # only the aspects asked for count
    assert rating_scores(rated((5, 1)), ["helpfulness"]) == [5.0]


def test_rating_pairs_by_mean_with_margin():
    ratings = rated((5, 5), (4, 4), (1, 3), (4, 5))  # scores 5, 4, 2, 4.5
    pairs = {(w, lo): m for w, lo, m in rating_pairs(ratings, ASPECTS, min_margin=1.0)}
    # 5 vs 4.5 (0.5) and 4.5 vs 4 (0.5) are too close; everything >= 1 apart is a pair
    assert set(pairs) == {(0, 1), (0, 2), (1, 2), (3, 2)}
    assert pairs[(0, 1)] == pytest.approx(1 / 4)  # margin = score difference / 4
    assert pairs[(0, 2)] == pytest.approx(3 / 4)
    assert pairs[(1, 2)] == pytest.approx(2 / 4)
    assert pairs[(3, 2)] == pytest.approx(2.5 / 4)


def test_rating_pairs_drop_ties_and_close_scores():
    assert rating_pairs(rated((3, 3), (3, 3), (2, 4)), ASPECTS, min_margin=0.5) == []  # all score 3
    assert rating_pairs(rated((4, 4), (4, 3)), ASPECTS, min_margin=1.0) == []  # 0.5 apart
    assert rating_pairs(rated((4, 4), (4, 3)), ASPECTS, min_margin=0.5) == [(0, 1, pytest.approx(0.125))]


def test_rating_pair_margin_spans_zero_to_one():
    [(winner, loser, margin)] = rating_pairs(rated((1, 1), (5, 5)), ASPECTS, min_margin=0.1)
    assert (winner, loser) == (1, 0) and margin == pytest.approx(1.0)


def test_rating_pairs_at_exactly_the_margin_with_three_aspects():
    """Means of thirds are not exact floats: (5+4+4)/3 - (4+3+3)/3 computes as 0.9999999999999996.
    A pair exactly `min_margin` apart is a pair all the same."""
    aspects = ("a", "b", "c")
    ratings = [{"scores": {"a": 5, "b": 4, "c": 4}}, {"scores": {"a": 4, "b": 3, "c": 3}}]
    assert [(w, lo) for w, lo, _ in rating_pairs(ratings, aspects, min_margin=1.0)] == [(0, 1)]
    ratings = [{"scores": {"a": 1, "b": 2, "c": 5}}, {"scores": {"a": 1, "b": 1, "c": 3}}]
    assert [(w, lo) for w, lo, _ in rating_pairs(ratings, aspects, min_margin=1.0)] == [(0, 1)]


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)), min_size=2, max_size=8),
       st.sampled_from([0.25, 1 / 3, 0.5, 2 / 3, 1.0, 4 / 3, 1.5, 2.0]))
def test_rating_pairs_match_exact_arithmetic(scores, margin):
    from fractions import Fraction

    aspects = ("a", "b", "c")
    ratings = [{"scores": dict(zip(aspects, s, strict=True))} for s in scores]
    exact = [Fraction(sum(s), 3) for s in scores]
    # compare against an exact margin the float stands for (1/3 -> Fraction(1, 3))
    want = {(i, j) for i in range(len(scores)) for j in range(len(scores))
            if exact[i] - exact[j] > 0 and exact[i] - exact[j] >= Fraction(margin).limit_denominator(12)}
    got = rating_pairs(ratings, aspects, margin)
    assert {(w, lo) for w, lo, _ in got} == want
    assert all(0 < m <= 1 for _, _, m in got)


def test_rating_pairs_need_a_positive_margin():
    with pytest.raises(ValueError, match="positive"):
        rating_pairs(rated((5, 5), (1, 1)), ASPECTS, min_margin=0)


def test_rating_desirable_by_threshold():
    ratings = rated((5, 4), (4, 4), (4, 3), (1, 1))  # 4.5, 4, 3.5, 1
    assert rating_desirable(ratings, ASPECTS, threshold=4.0) == [True, True, False, False]
    assert rating_desirable(ratings, ASPECTS, threshold=3.5) == [True, True, True, False]
    thirds = [{"scores": {"a": 5, "b": 4, "c": 4}}]  # 13/3
    assert rating_desirable(thirds, ("a", "b", "c"), threshold=13 / 3) == [True]


# --- several annotators --------------------------------------------------------------------------


def test_majority_takes_each_pair_once_in_its_majority_direction():
    votes = [(0, 1), (0, 1), (1, 0), (2, 3)]
    assert resolve_votes(votes, "majority") == [(0, 1), (2, 3)]


def test_majority_drops_an_even_split():
    assert resolve_votes([(0, 1), (1, 0)], "majority") == []
    assert resolve_votes([(0, 1), (1, 0), (0, 1), (1, 0), (2, 0)], "majority") == [(2, 0)]


def test_drop_keeps_only_unanimous_pairs():
    votes = [(0, 1), (0, 1), (1, 0), (2, 3), (2, 3)]
    assert resolve_votes(votes, "drop") == [(2, 3)]


def test_soft_keeps_every_vote():
    votes = [(0, 1), (0, 1), (1, 0)]
    assert sorted(resolve_votes(votes, "soft")) == [(0, 1), (0, 1), (1, 0)]


@pytest.mark.parametrize("rule", ["majority", "drop", "soft"])
def test_no_votes_no_pairs(rule):
    assert resolve_votes([], rule) == []
    assert resolve_votes(iter([]), rule) == []


def test_a_single_vote_stands_under_every_rule():
    for rule in ("majority", "drop", "soft"):
        assert resolve_votes(iter([(3, 1)]), rule) == [(3, 1)]


# --- edits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("original", "edited", "distance"), [
    ("The answer is 4.", "The answer is 4.", 0),
    ("kitten", "sitting", 3),
    ("", "abc", 3),
    ("abc", "", 3),
    ("2 + 2 = 5", "2 + 2 = 4", 1),
    ("Grüße", "Grüsse", 2),  # characters, not bytes
])
def test_edit_distance(original, edited, distance):
    assert edit_distance(original, edited) == distance
    assert edit_distance(edited, original) == distance


# --- validation ----------------------------------------------------------------------------------


def test_validate_ranking_accepts_ties_and_returns_ints():
    assert validate_ranking([1, 2, 2, 4], 4) == [1, 2, 2, 4]
    assert validate_ranking([3, 3, 3], 3) == [3, 3, 3]
    assert validate_ranking((2.0, 1.0, 3.0), 3) == [2, 1, 3]
    assert all(type(r) is int for r in validate_ranking((2.0, 1.0, 3.0), 3))


@pytest.mark.parametrize("ranking", [
    [1, 2, 3],  # too few
    [1, 2, 3, 4, 1],  # too many
    [0, 1, 2, 3],  # below 1
    [1, 2, 3, 5],  # above k
    [-1, 1, 2, 3],
    [1.5, 1, 2, 3],  # not whole: would be truncated to 1
    [True, 2, 3, 4],  # a bool is not a rank
])
def test_validate_ranking_rejects(ranking):
    with pytest.raises(ValueError):
        validate_ranking(ranking, 4)


def _rating(**scores):
    return {"scores": scores}


def test_validate_ratings_normalises():
    out = validate_ratings([{"scores": {"honesty": 2, "helpfulness": 5}, "rationales": {"honesty": "  hedges  "}},
                            {"scores": {"helpfulness": 1, "honesty": 1}, "rationales": {"helpfulness": "   "}}],
                           2, ASPECTS)
    assert out == [{"scores": {"helpfulness": 5, "honesty": 2}, "rationales": {"honesty": "hedges"}},
                   {"scores": {"helpfulness": 1, "honesty": 1}, "rationales": {}}]
    assert list(out[0]["scores"]) == list(ASPECTS)  # in the project's aspect order


@pytest.mark.parametrize(("ratings", "message"), [
    ([_rating(helpfulness=5, honesty=5)], "rate all 2"),  # too few responses
    ([_rating(helpfulness=5, honesty=5)] * 3, "rate all 2"),  # too many
    ([_rating(helpfulness=5), _rating(helpfulness=5, honesty=5)], "missing: honesty"),
    ([_rating(helpfulness=5, honesty=5, style=3), _rating(helpfulness=5, honesty=5)], "no such aspect: style"),
    ([{}, _rating(helpfulness=5, honesty=5)], "missing: helpfulness, honesty"),
    ([_rating(helpfulness=6, honesty=5), _rating(helpfulness=5, honesty=5)], "whole number from 1 to 5"),
    ([_rating(helpfulness=0, honesty=5), _rating(helpfulness=5, honesty=5)], "whole number"),
    ([_rating(helpfulness=4.5, honesty=5), _rating(helpfulness=5, honesty=5)], "whole number"),
    ([_rating(helpfulness=True, honesty=5), _rating(helpfulness=5, honesty=5)], "whole number"),
    ([_rating(helpfulness="5", honesty=5), _rating(helpfulness=5, honesty=5)], "whole number"),
    ([{"scores": {"helpfulness": 5, "honesty": 5}, "rationales": {"style": "nice"}},
      _rating(helpfulness=5, honesty=5)], "rationales are per aspect"),
    ([{"scores": {"helpfulness": 5, "honesty": 5}, "rationales": {"honesty": "x" * 2001}},
      _rating(helpfulness=5, honesty=5)], "under 2000"),
])
def test_validate_ratings_rejects(ratings, message):
    with pytest.raises(ValueError, match=message):
        validate_ratings(ratings, 2, ASPECTS)


def test_default_aspects():
    assert DEFAULT_ASPECTS == ("instruction_following", "truthfulness", "honesty", "helpfulness")


def test_a_level_pair_is_a_tie_vote():
    # One label ranks 0 over 1, another puts them level: like an A/B vote against a tie.
    assert resolve_votes([(0, 1)], "majority", ties=[(0, 1)]) == []
    assert resolve_votes([(0, 1)], "drop", ties=[(0, 1)]) == []
    assert resolve_votes([(0, 1), (0, 1)], "majority", ties=[(0, 1)]) == [(0, 1)]
    assert resolve_votes([(0, 1)], "soft", ties=[(0, 1)]) == [(0, 1)]
    assert resolve_votes([(0, 1)], "drop", ties=[(2, 3)]) == [(0, 1)]  # a level pair nobody ordered
    assert rank_ties([1, 2, 1, 3]) == [(0, 2)]
    ratings = [{"scores": {"x": 4}}, {"scores": {"x": 4}}, {"scores": {"x": 2}}]
    assert rating_ties(ratings, ["x"], 1.0) == [(0, 1)]
