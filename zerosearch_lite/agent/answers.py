"""Answer normalization, exact match and token F1 (SQuAD / Search-R1 conventions), used everywhere.

Normalization: lower-case, drop punctuation and the articles a/an/the, collapse whitespace.
`contains_answer` (is an answer written in this text?) reads words more leniently: see its docstring.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str | None, golds: Iterable[str]) -> float:
    """1.0 when the normalized prediction equals a normalized gold answer; nothing equals an answer that
    normalizes to empty ("", "The", "?"), so an empty prediction never scores."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(bool(pred) and any(pred == normalize_answer(g) for g in golds))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str | None, golds: Iterable[str]) -> float:
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction).split()
    scores = [_f1(pred, normalize_answer(g).split()) for g in golds]
    return max(scores, default=0.0) if pred else 0.0


def _spaced_words(text: str) -> str:
    """Lower-case words with every Unicode punctuation mark read as a space ("Shelley's" -> "shelley s",
    "Paris-based" -> "paris based", curly quotes and dashes included), articles dropped."""
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answer_forms(text: str) -> set[str]:
    """The two readings of a text's words: punctuation deleted (SQuAD's "1,000" -> "1000") and punctuation
    as a space ("Shelley's" -> "shelley s"); an answer counts as written when one reading holds it."""
    return {normalize_answer(text), _spaced_words(text)} - {""}


def contains_answer(text: str, golds: Iterable[str]) -> bool:
    """Whether a gold answer is written in the text as whole words: "Mary Shelley" in "Mary Shelley's novel",
    "Paris" in "Paris-based" or "“Paris”", "1949" in "1949–1950", but not "Paris" in "Parisian"."""
    haystacks = [f" {form} " for form in _answer_forms(text)]
    needles = {form for gold in golds for form in _answer_forms(gold)}
    return any(f" {needle} " in haystack for needle in needles for haystack in haystacks)
