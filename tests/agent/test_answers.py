import pytest

from zerosearch_lite.agent.answers import contains_answer, exact_match, normalize_answer, token_f1


def test_normalize():
    assert normalize_answer("  The Quick, brown FOX! ") == "quick brown fox"


@pytest.mark.parametrize(
    "pred,golds,em,f1",
    [("Mary Shelley", ["mary shelley"], 1.0, 1.0), ("Shelley", ["Mary Shelley"], 0.0, 2 / 3), (None, ["x"], 0.0, 0.0),
     ("", ["x"], 0.0, 0.0), ("Paris", ["London", "paris"], 1.0, 1.0), ("", ["The"], 0.0, 0.0),
     ("a", ["an"], 0.0, 0.0)],
)
def test_em_f1(pred, golds, em, f1):
    assert exact_match(pred, golds) == em
    assert token_f1(pred, golds) == pytest.approx(f1)


def test_contains_answer_whole_words():
    assert contains_answer("It was written by Mary Shelley in 1818.", ["mary shelley"])
    assert not contains_answer("Parisian cafes", ["Paris"])


@pytest.mark.parametrize("text,gold", [
    ("Mary Shelley's novel", "Mary Shelley"), ("a Paris-based firm", "Paris"), ("Paris/Lyon", "Paris"),
    ("“Paris”, she said", "Paris"), ("Paris’s streets", "Paris"), ("from 1949–1950", "1949"),
    ("1000 men", "1,000"), ("1,000 men", "1,000"), ("the U.S. Army", "U.S."),
])
def test_contains_answer_reads_punctuation_as_a_word_boundary(text, gold):
    assert contains_answer(text, [gold])


@pytest.mark.parametrize("text,gold", [("Parisian cafes", "Paris"), ("in 19491", "1949"), ("Shelleyan", "Shelley")])
def test_contains_answer_needs_whole_words(text, gold):
    assert not contains_answer(text, [gold])
