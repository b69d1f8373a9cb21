"""The metrics of the papers, as plain functions: strict EM, cover-EM, token F1, pass@k, majority@k, and 95%
bootstrap intervals (plain and paired).

Two papers, two "EM"s, never mixed: **strict EM** (Search-R1's `qa_em.py`): the SQuAD-normalized prediction equals
a normalized gold answer. **Cover-EM** (ZeroSearch's and R1-Searcher's "EM"): a normalized gold answer is a
substring of the normalized prediction, so "paris france" covers "Paris". Normalization: lower-case, drop
punctuation and the articles a/an/the, collapse whitespace (`agent.answers.normalize_answer`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from math import comb

from ..agent.answers import exact_match, normalize_answer, token_f1

__all__ = ["cover_em", "exact_match", "majority_at_k", "pass_at_k", "strict_em", "token_f1"]

METRIC_LABELS = {
    "strict_em": "strict EM (Search-R1: normalized answer equals a gold answer)",
    "cover_em": "cover-EM (ZeroSearch's \"EM\": a normalized gold answer is inside the normalized answer)",
    "f1": "token F1 (SQuAD, best over gold answers)",
}


def strict_em(prediction: str | None, golds: Sequence[str]) -> float:
    return exact_match(prediction, golds)


def cover_em(prediction: str | None, golds: Sequence[str]) -> float:
    if not prediction:
        return 0.0
    text = normalize_answer(prediction)
    return float(any(gold and gold in text for gold in (normalize_answer(g) for g in golds)))


SCORERS = {"strict_em": strict_em, "cover_em": cover_em, "f1": token_f1}


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimate of P(at least one of k samples is correct) from n samples with `correct` right:
    1 − C(n−c, k) / C(n, k), computed as a product so large n stays exact in floating point."""
    if not 1 <= k <= n or not 0 <= correct <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= correct <= n (n={n}, correct={correct}, k={k})")
    if n - correct < k:
        return 1.0
    miss = 1.0
    for i in range(n - correct + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def majority_at_k(answers: Sequence[str | None], golds: Sequence[str], k: int, metric: str = "strict_em", *,
                  max_subsets: int = 256, seed: int = 0) -> float:
    """Expected score of the majority vote over k of the n sampled answers: the mean over every k-subset (a
    seeded sample of `max_subsets` of them when there are more), votes over normalized answers, unanswered
    samples abstaining, and a tie scored as the mean of the tied answers (a uniformly random tie-break).
    majority@1 is then pass@1's plain mean, and majority@n the vote over all samples."""
    n = len(answers)
    if not 1 <= k <= n:
        raise ValueError(f"majority@k needs 1 <= k <= n (n={n}, k={k})")
    score = SCORERS[metric]
    normalized = [normalize_answer(a) if a else "" for a in answers]
    correct = {norm: score(a, golds) for a, norm in zip(answers, normalized, strict=True) if norm}
    if comb(n, k) <= max_subsets:
        subsets = combinations(range(n), k)
    else:
        rng = random.Random(seed)
        subsets = (rng.sample(range(n), k) for _ in range(max_subsets))
    total = count = 0.0
    for subset in subsets:
        votes = Counter(normalized[i] for i in subset if normalized[i])
        count += 1
        if votes:
            best = max(votes.values())
            tied = [norm for norm, c in votes.items() if c == best]
            total += sum(correct[norm] for norm in tied) / len(tied)
    return total / count


def bootstrap_interval(values: Sequence[Sequence[float]], *, resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the mean over groups of per-question values (one group per dataset; the groups'
    means are averaged, as a paper's "average" column is), resampling questions within each group."""
    import numpy as np

    groups = [np.asarray(g, dtype=float) for g in values if len(g)]
    if not groups:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    mean = float(np.mean([g.mean() for g in groups]))
    draws = np.zeros(resamples)
    for group in groups:
        picks = rng.integers(0, len(group), size=(resamples, len(group)))
        draws += group[picks].mean(axis=1)
    draws /= len(groups)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return mean, float(low), float(high)


def paired_interval(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], **kwargs) -> tuple[float, float, float]:
    """(mean, low, high) of the difference b − a over the same questions (paired: each resample takes the
    same questions from both runs)."""
    diffs = [[y - x for x, y in zip(ga, gb, strict=True)] for ga, gb in zip(a, b, strict=True)]
    return bootstrap_interval(diffs, **kwargs)
