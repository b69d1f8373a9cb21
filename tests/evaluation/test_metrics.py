"""The papers' metrics against hand-computed cases: strict EM vs cover-EM, pass@k vs brute force, majority@k."""

from __future__ import annotations

import itertools
from math import comb

import pytest

from zerosearch_lite.evaluation.metrics import (
    bootstrap_interval,
    cover_em,
    majority_at_k,
    paired_interval,
    pass_at_k,
    strict_em,
    token_f1,
)


@pytest.mark.parametrize(
    ("prediction", "golds", "strict", "cover"),
    [
        ("The Beatles", ["Beatles"], 1.0, 1.0),  # articles dropped on both sides
        ("the beatles!", ["The Beatles."], 1.0, 1.0),  # case and punctuation
        ("Paris, France", ["Paris"], 0.0, 1.0),  # the gold inside a longer prediction: cover only
        ("It was John F. Kennedy in 1963", ["John F Kennedy"], 0.0, 1.0),
        ("Kennedy", ["John F. Kennedy"], 0.0, 0.0),  # a prediction inside the gold is not covered
        ("19490", ["1949"], 0.0, 1.0),  # cover-EM is a substring test, as in ZeroSearch's code
        ("an apple", ["apple", "pear"], 1.0, 1.0),  # any gold answer counts
        ("", ["x"], 0.0, 0.0),
        (None, ["x"], 0.0, 0.0),
        ("anything", ["the"], 0.0, 0.0),  # a gold answer that normalizes to nothing never matches
    ],
)
def test_strict_em_and_cover_em_on_tricky_normalizations(prediction, golds, strict, cover):
    assert strict_em(prediction, golds) == strict
    assert cover_em(prediction, golds) == cover


def test_token_f1_by_hand():
    # prediction tokens {paris, france}, gold {paris}: precision 1/2, recall 1 → F1 2/3
    assert token_f1("Paris France", ["Paris"]) == pytest.approx(2 / 3)
    assert token_f1("the Paris", ["Paris", "Lyon"]) == 1.0


def brute_pass_at_k(results: list[bool], k: int) -> float:
    """Share of all k-subsets of the samples holding at least one correct one."""
    subsets = list(itertools.combinations(results, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_equals_brute_force_over_all_subsets(n):
    for correct in range(n + 1):
        results = [True] * correct + [False] * (n - correct)
        values = [pass_at_k(n, correct, k) for k in range(1, n + 1)]
        for k, value in zip(range(1, n + 1), values, strict=True):
            assert value == pytest.approx(brute_pass_at_k(results, k))
            assert value == pytest.approx(1 - comb(n - correct, k) / comb(n, k))
        assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values))  # non-decreasing in k
    assert pass_at_k(100, 1, 1) == pytest.approx(0.01) and pass_at_k(100, 0, 100) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def brute_majority(answers, golds, k, metric="strict_em") -> float:
    """Every k-subset's vote by hand: the most frequent normalized answer, a tie worth its members' mean."""
    from collections import Counter

    from zerosearch_lite.agent.answers import normalize_answer
    from zerosearch_lite.evaluation.metrics import SCORERS

    values = []
    for subset in itertools.combinations(answers, k):
        votes = Counter(normalize_answer(a) for a in subset if a)
        if not votes:
            values.append(0.0)
            continue
        top = max(votes.values())
        tied = [a for a in votes if votes[a] == top]
        values.append(sum(SCORERS[metric](a, golds) for a in tied) / len(tied))
    return sum(values) / len(values)


def test_majority_at_k_votes_normalized_answers_and_averages_ties():
    golds = ["Paris"]
    answers = ["paris", "Lyon", "Lyon", "The Paris", None]
    assert majority_at_k(answers, golds, 1) == pytest.approx(2 / 5)  # majority@1 is the mean of single samples
    assert majority_at_k(answers[:2], golds, 2) == 0.5  # a 1–1 tie is worth the mean of the tied answers
    assert majority_at_k(answers[:3], golds, 3) == 0.0  # Lyon 2, Paris 1
    assert majority_at_k(answers[:4], golds, 4) == 0.5  # 2–2 ("The Paris" normalizes to "paris"): a tie
    assert majority_at_k([None, None, "Lyon"], golds, 2) == 0.0  # unanswered samples abstain
    assert majority_at_k(["Paris, France", "x"], golds, 1, "cover_em") == 0.5
    for k in range(1, 6):
        assert majority_at_k(answers, golds, k) == pytest.approx(brute_majority(answers, golds, k))
    many = ["Paris"] * 20 + ["Lyon"] * 30  # C(50, 10) subsets: a seeded sample of them
    assert 0.0 < majority_at_k(many, golds, 10) < 0.3  # Lyon wins most votes of 10
    assert majority_at_k(many, golds, 10) == majority_at_k(many, golds, 10)  # seeded


def test_bootstrap_interval_holds_the_mean_and_averages_datasets():
    mean, low, high = bootstrap_interval([[0.0, 1.0] * 50])
    assert mean == 0.5 and low < 0.5 < high and high - low < 0.3
    assert bootstrap_interval([[1.0] * 10]) == (1.0, 1.0, 1.0)
    # two datasets: the average of their means, not of the pooled questions
    assert bootstrap_interval([[1.0] * 10, [0.0] * 90])[0] == 0.5
    assert bootstrap_interval([[0.2, 0.4]]) == bootstrap_interval([[0.2, 0.4]])  # seeded


def test_paired_interval_of_identical_runs_is_zero_and_of_a_shift_is_the_shift():
    a = [[0.0, 1.0, 0.5, 0.25]]
    assert paired_interval(a, a) == (0.0, 0.0, 0.0)
    assert paired_interval(a, [[x + 0.1 for x in a[0]]]) == pytest.approx((0.1, 0.1, 0.1))
