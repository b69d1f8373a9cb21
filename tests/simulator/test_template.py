"""The template engine: useful documents state a gold answer verbatim, noisy ones never do."""

from zerosearch_lite.simulator.factory import build_engine
from zerosearch_lite.simulator.template import NO_CONTEXT
from zerosearch_lite.simulator.types import SearchContext

CONTEXT = SearchContext("Belmora: who founded this town?", ("Marta Lindqvist", "M. Lindqvist"))


def test_useful_documents_contain_a_gold_answer_and_noisy_ones_none():
    engine = build_engine("template")
    for query in ("Belmora founder", "who founded Belmora", ""):
        useful, noisy = (engine.lookup([query], 3, mode=mode, context=CONTEXT)[0] for mode in ("useful", "noisy"))
        assert len(useful.docs) == len(noisy.docs) == 3
        assert all(any(a in d.text for a in CONTEXT.golden_answers) for d in useful.docs)
        assert not any(a.split()[-1] in d.text for d in noisy.docs for a in CONTEXT.golden_answers)
        assert {d.source for d in useful.docs} == {"template:useful"} and noisy.mode == "noisy"


def test_documents_are_deterministic_and_vary_with_the_query():
    engine = build_engine("template")
    first = engine.lookup(["a", "b"], 2, mode="useful", context=CONTEXT)
    again = engine.lookup(["a", "b"], 2, mode="useful", context=CONTEXT)
    assert [r.docs for r in first] == [r.docs for r in again]
    assert {r.docs[0].title for r in first} == {"a", "b"}


def test_without_gold_answers_there_are_no_documents_and_a_warning():
    engine = build_engine("template")
    for context in (None, SearchContext("a question", ())):
        (result,) = engine.lookup(["anything"], 3, context=context)
        assert result.docs == [] and result.warnings == [NO_CONTEXT]
