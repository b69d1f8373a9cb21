import pytest

from zerosearch_lite.errors import ZslError
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.simulator.cache import DocumentCache
from zerosearch_lite.simulator.prompts import DOC_MAX_CHARS, documents_token_budget
from zerosearch_lite.simulator.simulated import NoiseGuard, SimulatedSearchEngine, holds_answer
from zerosearch_lite.simulator.types import SearchContext

DOCS = "Doc 1: (A) alpha beta gamma\nDoc 2: (B) delta epsilon zeta\nDoc 3: (C) eta theta iota"


def test_modes_use_different_prompts_and_sources(tmp_path):
    backend = FakeBackend(default=DOCS)
    engine = SimulatedSearchEngine(backend, cache=DocumentCache(tmp_path / "c.db"), structured=False)
    useful = engine.lookup(["q"], 3, mode="useful")[0]
    noisy = engine.lookup(["q"], 3, mode="noisy")[0]
    assert [d.source for d in useful.docs] == ["simulated:useful"] * 3
    assert [d.source for d in noisy.docs] == ["simulated:noisy"] * 3
    prompts = [p for p, _ in backend.history]
    assert "accurate" in prompts[0] and "unhelpful" in prompts[1]


def test_cache_hits_counted_and_batch_duplicates_generate_once(tmp_path):
    backend = FakeBackend(default=DOCS)
    cache = DocumentCache(tmp_path / "c.db")
    engine = SimulatedSearchEngine(backend, cache=cache, structured=False)
    results = engine.lookup(["Same Query?", "same   query", "other"], 3)
    assert len(backend.history) == 2  # duplicates after normalization share one generation
    again = engine.lookup(["same query"], 3)[0]
    assert again.cache_hit and again.docs == results[0].docs
    assert cache.hits == 1 and cache.misses == 3


def test_training_context_enters_prompt_and_cache_key(tmp_path):
    backend = FakeBackend(default=DOCS)
    engine = SimulatedSearchEngine(backend, cache=DocumentCache(tmp_path / "c.db"), structured=False)
    ctx = SearchContext("who wrote frankenstein?", ("Mary Shelley",))
    engine.lookup(["q"], 3, context=ctx)
    engine.lookup(["q"], 3)  # no context: a different cache entry
    assert '"Mary Shelley"' in backend.history[0][0] and "Mary Shelley" not in backend.history[1][0]


def test_broken_output_gives_fewer_docs_warnings_and_is_not_cached(tmp_path):
    backend = FakeBackend(["", "just one line of text here"], default=DOCS)
    cache = DocumentCache(tmp_path / "c.db")
    engine = SimulatedSearchEngine(backend, cache=cache, structured=False)
    empty = engine.lookup(["q"], 3)[0]
    assert empty.docs == [] and empty.warnings
    one = engine.lookup(["q"], 3)[0]  # the empty result was not cached: generated again
    assert len(one.docs) == 1 and "1 of 3" in one.warnings[-1]
    assert engine.lookup([""], 3)[0].warnings == ["empty query"]


def test_structured_mode_sends_a_k_line_grammar():
    backend = FakeBackend(default=DOCS)
    SimulatedSearchEngine(backend, structured=True).lookup(["q"], 3)
    grammar = backend.history[0][1].grammar
    assert '"Doc 3: " doc' in grammar and "Doc 4" not in grammar


def test_a_structured_call_has_the_tokens_to_finish_k_full_length_documents_of_url_text(llama_simulator):
    """The grammar ends a document at DOC_MAX_CHARS characters, not tokens: the budget must outlast k documents
    of the densest text a simulator writes (URLs: under 2 characters a token in the embedded vocabulary),
    or the last document is cut mid-line."""
    url = "https://www.facebook.com/mccannabbwjcrkfavrngvrbhgceycndz@123mqAACFB1,R-lG-S-L-H-C-D-M-J-W-N-K-E-X-P"
    doc = (url * 4)[:DOC_MAX_CHARS]
    for k in (1, 3, 5):
        text = "".join(f"Doc {i}: {doc}\n" for i in range(1, k + 1))
        tokens = len(llama_simulator.llm.tokenize(text.encode(), add_bos=False))
        assert tokens <= documents_token_budget(k, structured=True), (k, tokens)
    backend = FakeBackend(default=DOCS)
    SimulatedSearchEngine(backend, structured=True).lookup(["q"], 5)
    assert backend.history[0][1].max_tokens == documents_token_budget(5, structured=True)


def test_zerosearch_preset_format():
    backend = FakeBackend(default=DOCS)
    engine = SimulatedSearchEngine(backend, preset="zerosearch", structured=False)
    engine.lookup(["q"], 5, mode="noisy", context=SearchContext("Q?", ("A",)))
    prompt = backend.history[0][0]
    assert "five noisy documents" in prompt and prompt.rstrip().endswith("Noisy Output:<|im_end|>\n<|im_start|>assistant")
    assert 'question: "Q?" whose answer is "A"' in prompt


# ---------------------------------------------------------------------------------------------- noise guard

CONTEXT = SearchContext("Who wrote Frankenstein?", ("Mary Shelley",))
LEAKY = "Doc 1: (Gothic) A novel of 1818.\nDoc 2: (Author) Mary Shelley wrote it.\nDoc 3: (Shelley) Percy's early poems."
CLEAN = "Doc 1: (Library) Old catalogue cards.\nDoc 2: (Shelving) Maryland library shelves.\nDoc 3: (Books) A short list."
ALL_LEAKY = "Doc 1: (A) written by mary shelley!\nDoc 2: (B) By Mary Shelley, 1818.\nDoc 3: (C) An unrelated page."
USEFUL_MISS = "Doc 1: (A) a gothic novel.\nDoc 2: (B) printed in London.\nDoc 3: (C) three volumes."
USEFUL_HIT = "Doc 1: (A) Mary Shelley wrote Frankenstein.\nDoc 2: (B) printed in London.\nDoc 3: (C) 1818."


def holds(docs):
    return [holds_answer(d, CONTEXT.golden_answers) for d in docs]


def test_guard_regenerates_a_leaked_noisy_document_in_its_place():
    backend = FakeBackend([LEAKY, CLEAN])
    engine = SimulatedSearchEngine(backend, structured=False, guard="drop")
    result = engine.lookup(["frankenstein author"], 3, mode="noisy", context=CONTEXT)[0]
    # "Maryland" and "Percy's" are not the answer: whole words only
    assert [d.text for d in result.docs] == ["A novel of 1818.", "Old catalogue cards.", "Percy's early poems."]
    assert (result.guard_leaked, result.guard_regenerated, result.guard_dropped, result.guard_retries) == (1, 1, 0, 1)
    assert [params.seed for _, params in backend.history] == [0, 1]  # a regeneration gets a new seed
    assert result.generated_tokens == sum(len(text.split()) for text in (LEAKY, CLEAN))
    assert result.guard_seconds > 0 and result.seconds >= result.guard_seconds


def test_drop_guard_drops_what_still_leaks_after_the_attempts():
    backend = FakeBackend(default=ALL_LEAKY)
    engine = SimulatedSearchEngine(backend, structured=False, guard=NoiseGuard(mode="drop", attempts=2))
    result = engine.lookup(["frankenstein author"], 3, mode="noisy", context=CONTEXT)[0]
    assert len(backend.history) == 3  # the first generation and two regenerations
    assert [d.text for d in result.docs] == ["An unrelated page."]
    assert (result.guard_leaked, result.guard_regenerated, result.guard_dropped) == (2, 0, 2)
    useful = engine.lookup(["frankenstein author"], 3, mode="useful", context=CONTEXT)[0]
    assert useful.guard_retries == 0  # "drop" leaves useful results alone


def test_retry_guard_replaces_leaks_with_clean_noisy_documents_of_other_queries():
    def respond(prompt):
        return ALL_LEAKY if "Query: frankenstein author" in prompt else CLEAN

    backend = FakeBackend(default=respond)
    engine = SimulatedSearchEngine(backend, structured=False, guard=NoiseGuard(mode="retry", attempts=1))
    other_question = SearchContext("Who wrote Dracula?", ("Bram Stoker",))
    leaky, clean, elsewhere = engine.lookup_requests(
        [("frankenstein author", "noisy", CONTEXT), ("frankenstein novel", "noisy", CONTEXT),
         ("dracula author", "noisy", other_question)], 3)
    assert len(leaky.docs) == 3 and not any(holds(leaky.docs))  # k documents kept, none holds the answer
    assert [d.text for d in leaky.docs] == ["Old catalogue cards.", "Maryland library shelves.", "An unrelated page."]
    assert (leaky.guard_leaked, leaky.guard_replaced, leaky.guard_dropped, leaky.guard_retries) == (2, 2, 0, 1)
    assert clean.guard_leaked == 0 and clean.guard_retries == 0 and elsewhere.guard_retries == 0


def test_retry_guard_regenerates_a_useful_result_without_an_answer():
    backend = FakeBackend([USEFUL_MISS, USEFUL_HIT])
    engine = SimulatedSearchEngine(backend, structured=False, guard="retry")
    result = engine.lookup(["frankenstein author"], 3, mode="useful", context=CONTEXT)[0]
    assert any(holds(result.docs)) and result.guard_retries == 1
    hopeless = FakeBackend(default=USEFUL_MISS)
    kept = SimulatedSearchEngine(hopeless, structured=False, guard="retry").lookup(
        ["frankenstein author"], 3, mode="useful", context=CONTEXT)[0]
    assert len(hopeless.history) == 3 and kept.docs[0].text == "a gothic novel."


def test_guard_catches_an_answer_glued_to_punctuation():
    glued = "Doc 1: (A) Mary Shelley's novel.\nDoc 2: (B) “Mary Shelley” again.\nDoc 3: (C) An unrelated page."
    result = SimulatedSearchEngine(FakeBackend(default=glued), structured=False, guard="drop").lookup(
        ["frankenstein author"], 3, mode="noisy", context=CONTEXT)[0]
    assert result.guard_leaked == 2 and [d.text for d in result.docs] == ["An unrelated page."]


def test_yes_no_answers_are_not_guarded():
    prose = "Doc 1: (A) There is no record of it.\nDoc 2: (B) Yes was a rock band.\nDoc 3: (C) No one knows."
    backend = FakeBackend(default=prose)
    engine = SimulatedSearchEngine(backend, structured=False, guard="retry")
    for golds in (("no",), ("yes", "Yes.")):
        context = SearchContext("Are both bands from England?", golds)
        assert not engine.guard.active(context)
        result = engine.lookup(["band origins"], 3, mode="noisy", context=context)[0]
        assert len(result.docs) == 3 and result.guard_leaked == 0 and result.guard_retries == 0
    assert len(backend.history) == 2  # one generation each, no regeneration
    mixed = SearchContext("Which one?", ("no", "Yes was"))
    assert engine.guard.active(mixed) and holds_answer(engine.lookup(["x"], 3, mode="useful")[0].docs[1],
                                                       mixed.golden_answers)


def test_no_guard_without_gold_answers(tmp_path):
    cache = DocumentCache(tmp_path / "c.db")
    backend = FakeBackend(default=ALL_LEAKY)
    engine = SimulatedSearchEngine(backend, cache=cache, structured=False, guard="retry")
    for context in (None, SearchContext("Who wrote Frankenstein?", ())):  # inference, or a question without answers
        result = engine.lookup(["frankenstein author"], 3, mode="noisy", context=context)[0]
        assert len(result.docs) == 3 and result.guard_retries == 0 and not result.cache_hit
    assert len(backend.history) == 2
    unguarded = SimulatedSearchEngine(FakeBackend(), cache=cache, structured=False)
    assert unguarded.lookup(["frankenstein author"], 3, mode="noisy")[0].cache_hit  # the same key as unguarded


def test_guarded_and_unguarded_results_never_share_a_cache_entry(tmp_path):
    cache = DocumentCache(tmp_path / "c.db")
    plain = SimulatedSearchEngine(FakeBackend(default=LEAKY), cache=cache, structured=False)
    assert any(holds(plain.lookup(["frankenstein author"], 3, mode="noisy", context=CONTEXT)[0].docs))
    backend = FakeBackend([LEAKY, CLEAN])
    guarded = SimulatedSearchEngine(backend, cache=cache, structured=False, guard="drop")
    first = guarded.lookup(["frankenstein author"], 3, mode="noisy", context=CONTEXT)[0]
    assert not first.cache_hit and len(backend.history) == 2  # the leaky unguarded entry was not reused
    again = guarded.lookup(["frankenstein author"], 3, mode="noisy", context=CONTEXT)[0]
    assert again.cache_hit and again.docs == first.docs and not any(holds(again.docs))
    assert again.guard_retries == 0 and again.generated_tokens == 0
    assert any(holds(plain.lookup(["frankenstein author"], 3, mode="noisy", context=CONTEXT)[0].docs))
    other_attempts = SimulatedSearchEngine(FakeBackend(default=CLEAN), cache=cache, structured=False,
                                           guard=NoiseGuard(mode="drop", attempts=1))
    assert not other_attempts.lookup(["frankenstein author"], 3, mode="noisy", context=CONTEXT)[0].cache_hit


def test_generated_tokens_are_counted_once_for_a_shared_generation(tmp_path):
    backend = FakeBackend(default=DOCS)
    engine = SimulatedSearchEngine(backend, cache=DocumentCache(tmp_path / "c.db"), structured=False)
    first, duplicate, other = engine.lookup(["same query", "Same query?", "other"], 3)
    assert first.generated_tokens == len(DOCS.split()) == other.generated_tokens
    assert duplicate.generated_tokens == 0 and duplicate.docs == first.docs
    assert engine.lookup(["same query"], 3)[0].generated_tokens == 0  # a cache hit writes nothing


def test_unknown_guard_is_a_one_line_error():
    with pytest.raises(ZslError, match="unknown noise guard 'always'"):
        SimulatedSearchEngine(FakeBackend(), guard="always")  # type: ignore[arg-type]


def test_documents_made_under_another_grammar_are_not_served_from_the_cache(tmp_path, monkeypatch):
    backend = FakeBackend(default=DOCS)
    cache = DocumentCache(tmp_path / "c.db")
    SimulatedSearchEngine(backend, cache=cache, structured=True).lookup(["q"], 3)
    assert SimulatedSearchEngine(backend, cache=cache, structured=True).lookup(["q"], 3)[0].cache_hit
    monkeypatch.setattr("zerosearch_lite.simulator.prompts.documents_grammar_version", lambda: "changed")
    assert not SimulatedSearchEngine(backend, cache=cache, structured=True).lookup(["q"], 3)[0].cache_hit
    assert len(backend.history) == 2
