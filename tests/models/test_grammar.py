"""The shipped GBNF grammars, from their single definition, on every engine that enforces them: llama.cpp's
own grammar sampler, llguidance over llama.cpp's vocabulary (the llama.cpp backend) and llguidance over the
Hugging Face tokenizer (the transformers backend's logits processor). Token sequences are replayed through
each matcher: no model weights."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from zerosearch_lite.agent.config import AgentConfig
from zerosearch_lite.agent.protocol import (
    STOP_SEQUENCES,
    parse_turn,
    protocol_grammar,
    turn_grammar,
    turn_limits,
)
from zerosearch_lite.agent.turns import turn_params
from zerosearch_lite.agent.types import Answer, Search
from zerosearch_lite.errors import ZslError
from zerosearch_lite.models.backends.base import SamplingParams
from zerosearch_lite.models.backends.grammar import GrammarLogitsProcessor, compile_gbnf, llama_grammars
from zerosearch_lite.models.loading import load_backend
from zerosearch_lite.simulator.parsing import parse_documents
from zerosearch_lite.simulator.prompts import documents_grammar

THINK = "<think>The novel is famous, so a search should find its author.</think>\n"
SEARCH = THINK + "<search> frankenstein novel author</search>"
ANSWER = THINK + "<answer>Mary Shelley</answer>"
# (allow_search, allow_answer) of each `turn_rules` case -> the well-formed turns it accepts
TURN_RULES = {(True, True): (SEARCH, ANSWER), (True, False): (SEARCH,), (False, True): (ANSWER,)}
MALFORMED_TURNS = {
    "no think": "<search> frankenstein</search>",
    "newline inside think": "<think>two\nlines</think>\n<answer>x</answer>",
    "nested tag": THINK + "<search> a <b> c</search>",
    "empty query": THINK + "<search></search>",
    "blank query": THINK + "<search>   </search>",
    "no newline after think": "<think>thinking</think><answer>x</answer>",
    "text after the action": ANSWER + " and more",
    "unclosed action": THINK + "<answer>Mary Shelley",
}


def doc_lines(k: int, text: str = "(Frankenstein) Mary Shelley wrote the novel Frankenstein in 1818.") -> str:
    return "".join(f"Doc {i}: {text}\n" for i in range(1, k + 1))


MALFORMED_DOCUMENTS = {
    "one document short": doc_lines(4),
    "one document too many": doc_lines(6),
    "a document under 40 characters": doc_lines(5, "(Short) too short to count."),
    "documents out of order": doc_lines(5).replace("Doc 2:", "Doc 3:", 1),
    "no line break at the end": doc_lines(5)[:-1],
    "a document of one long word": doc_lines(5, "https://en.wikipedia.org/wiki/Frankenstein_(novel)"),
    "a document of two words": doc_lines(5, "Frankenstein; https://en.wikipedia.org/wiki/Frankenstein"),
    "words that are only whitespace": doc_lines(5, "\u3000 \t " + "https://en.wikipedia.org/wiki/Mary_Shelley"),
    "words that are only bold markup": doc_lines(5, "** ** https://en.wikipedia.org/wiki/Mary_Shelley_(author)"),
    "a document over 280 characters": doc_lines(5, "Mary Shelley wrote Frankenstein. " * 9),
}
# Lines at the edges of the document rule: the parser must keep every one the grammar accepts.
EDGE_DOCUMENTS = [
    "(Frankenstein) novel https://en.wikipedia.org/wiki/Frankenstein_(novel)",  # a title, then two words
    "Frankenstein: novel https://en.wikipedia.org/wiki/Frankenstein_(novel)",
    "a b https://en.wikipedia.org/wiki/Frankenstein_(novel)_by_Mary",
    "**Frankenstein** is a novel by Mary Shelley, published in London in 1818.",
    "Mary Shelley wrote Frankenstein. " * 7,
    "x y z" + "." * 35,  # 40 characters
]


@pytest.fixture(scope="module")
def vocab_llama(embedded_path):
    """The embedded model's vocabulary alone (llama.cpp loads no weights with vocab_only)."""
    from llama_cpp import Llama

    llm = Llama(str(embedded_path), vocab_only=True, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def hf_tokenizer(embedded_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedded_path.parent), gguf_file=embedded_path.name)


def llama_cpp_accepts(llm, gbnf: str, tokens: list[int]) -> bool:
    """Replay through llama.cpp's own grammar sampler: each token must survive it, then end of sequence."""
    import llama_cpp as lc

    vocab = lc.llama_model_get_vocab(llm.model)
    sampler = lc.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    assert sampler, "llama.cpp did not compile the grammar"
    candidate = (lc.llama_token_data * 1)()
    array = lc.llama_token_data_array(data=candidate, size=1, selected=-1, sorted=False)
    try:
        for token in [*tokens, lc.llama_vocab_eos(vocab)]:
            candidate[0].id, candidate[0].logit, candidate[0].p = token, 1.0, 0.0
            lc.llama_sampler_apply(sampler, ctypes.byref(array))
            if candidate[0].logit == -np.inf:
                return False
            if token != lc.llama_vocab_eos(vocab):
                lc.llama_sampler_accept(sampler, token)
        return True
    finally:
        lc.llama_sampler_free(sampler)


def llguidance_llama_accepts(grammars, gbnf: str, tokens: list[int], eos: int) -> bool:
    """Replay through the matcher the llama.cpp backend uses (llguidance over llama.cpp's vocabulary)."""
    matcher = grammars.matcher(gbnf)
    for token in tokens:
        if not matcher.allows(token):
            return False
        matcher.consume(token)
    return matcher.finished or matcher.allows(eos)


def transformers_accepts(tokenizer, gbnf: str, tokens: list[int]) -> bool:
    """Replay through the transformers backend's logits processor: each next token must keep a finite score,
    then end of sequence."""
    import torch

    processor = GrammarLogitsProcessor(gbnf, tokenizer, prompt_width=1)
    input_ids = torch.zeros((1, 1), dtype=torch.long)
    for token in [*tokens, tokenizer.eos_token_id]:
        scores = processor(input_ids, torch.zeros((1, len(tokenizer))))
        if scores[0, token] == -np.inf:
            return False
        input_ids = torch.cat([input_ids, torch.tensor([[token]])], dim=1)
    return True


ENGINES = ["llama.cpp", "llguidance+llama.cpp", "llguidance+transformers"]


@pytest.fixture(scope="module")
def accepts(vocab_llama, hf_tokenizer):
    import llama_cpp as lc

    vocab = lc.llama_model_get_vocab(vocab_llama.model)
    grammars = llama_grammars(vocab, vocab_llama.n_vocab())

    def check(engine: str, gbnf: str, text: str) -> bool:
        if engine == "llguidance+transformers":
            tokens = hf_tokenizer.encode(text, add_special_tokens=False)
            return transformers_accepts(hf_tokenizer, gbnf, tokens)
        tokens = vocab_llama.tokenize(text.encode(), add_bos=False, special=True)
        if engine == "llama.cpp":
            return llama_cpp_accepts(vocab_llama, gbnf, tokens)
        return llguidance_llama_accepts(grammars, gbnf, tokens, lc.llama_vocab_eos(vocab))

    return check


def test_every_shipped_grammar_compiles_with_llama_grammar_and_llguidance(vocab_llama):
    import llama_cpp as lc
    from llama_cpp import LlamaGrammar

    vocab = lc.llama_model_get_vocab(vocab_llama.model)
    shipped = [turn_grammar(256, *rules) for rules in TURN_RULES] + [protocol_grammar()]
    shipped += [documents_grammar(k) for k in (1, 3, 5)]
    for gbnf in shipped:
        # LlamaGrammar only holds the text: llama.cpp parses it where llama-cpp-python does, in the sampler.
        grammar = LlamaGrammar.from_string(gbnf, verbose=False)
        sampler = lc.llama_sampler_init_grammar(vocab, grammar._grammar.encode(), grammar._root.encode())
        assert sampler, f"llama.cpp refused the grammar:\n{gbnf}"
        lc.llama_sampler_free(sampler)
        assert compile_gbnf(gbnf)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rules", list(TURN_RULES), ids=["search+answer", "search only", "answer only"])
def test_turn_grammar_accepts_the_turns_its_rule_allows_and_refuses_the_others(accepts, engine, rules):
    gbnf = turn_grammar(256, *rules)
    for turn in (SEARCH, ANSWER):
        assert accepts(engine, gbnf, turn) == (turn in TURN_RULES[rules]), turn


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", list(MALFORMED_TURNS))
def test_turn_grammar_refuses_malformed_turns(accepts, engine, name):
    assert not accepts(engine, turn_grammar(256), MALFORMED_TURNS[name])


@pytest.mark.parametrize("engine", ENGINES)
def test_turn_grammar_caps_think_and_query_lengths(accepts, engine):
    gbnf = protocol_grammar(think_chars=20, query_chars=10)
    assert accepts(engine, gbnf, "<think>" + "a" * 20 + "</think>\n<search>" + "q" * 10 + "</search>")
    assert not accepts(engine, gbnf, "<think>" + "a" * 21 + "</think>\n<search>q</search>")
    assert not accepts(engine, gbnf, "<think>a</think>\n<search>" + "q" * 11 + "</search>")


@pytest.mark.parametrize("max_tokens", [24, 64, 256, 1024])
def test_the_longest_turn_the_grammar_allows_closes_within_the_turns_token_budget(accepts, vocab_llama, max_tokens):
    params = turn_params(AgentConfig(max_tokens_per_turn=max_tokens), turn=0, searches=0, constrained=True)
    think, query = turn_limits(max_tokens)
    longest = "<think>" + "1" * think + "</think>\n<search> " + "1" * query + "</search>"  # a digit a token
    assert accepts("llguidance+llama.cpp", params.grammar, longest)
    assert not accepts("llguidance+llama.cpp", params.grammar, longest.replace("<think>", "<think>1"))
    assert len(vocab_llama.tokenize(longest.encode(), add_bos=False, special=True)) <= params.max_tokens
    assert params.max_tokens >= max_tokens  # never less than the user's budget


@pytest.mark.parametrize("engine", ENGINES)
def test_documents_grammar_accepts_k_lines_and_refuses_malformed_ones(accepts, engine):
    gbnf = documents_grammar(5)
    assert accepts(engine, gbnf, doc_lines(5))
    for name, text in MALFORMED_DOCUMENTS.items():
        assert not accepts(engine, gbnf, text), name


@pytest.mark.parametrize("engine", ENGINES)
def test_every_document_the_grammar_accepts_is_one_the_parser_keeps(accepts, engine):
    gbnf = documents_grammar(1)
    for text in [*EDGE_DOCUMENTS, *(lines.splitlines()[0].removeprefix("Doc 1: ") for lines in MALFORMED_DOCUMENTS.values())]:
        if accepts(engine, gbnf, f"Doc 1: {text}\n"):
            assert len(parse_documents(f"Doc 1: {text}", 1).docs) == 1, text
    assert [text for text in EDGE_DOCUMENTS if not accepts(engine, gbnf, f"Doc 1: {text.strip()}\n")] == []


def test_invalid_gbnf_is_a_zsl_error():
    with pytest.raises(ZslError, match="invalid GBNF grammar"):
        compile_gbnf('root ::= "a" missing_rule')


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    return load_backend(str(tiny_model_dir), "transformers")


@pytest.mark.parametrize("rules", list(TURN_RULES), ids=["search+answer", "search only", "answer only"])
def test_random_transformers_model_writes_well_formed_turns_under_the_grammar(tiny_backend, rules):
    assert tiny_backend.supports_grammar
    params = SamplingParams(max_tokens=60, temperature=1.0, top_p=0.95, stop=list(STOP_SEQUENCES), n=2,
                            seed=1, grammar=protocol_grammar(*rules, think_chars=12, query_chars=8))
    allowed = tuple(kind for kind, ok in zip((Search, Answer), rules, strict=True) if ok)
    for completion in tiny_backend.generate(["Question: who wrote frankenstein?"], params):
        assert completion.finish_reason == "stop", completion.text
        assert isinstance(parse_turn(completion.text, completion.finish_reason)[-1], allowed), completion.text
    unconstrained = tiny_backend.generate(["Question: who wrote frankenstein?"],
                                          SamplingParams(max_tokens=4, temperature=1.0, n=2, seed=1))
    assert not any(c.text.startswith("<think>") for c in unconstrained)  # the grammar did the work


def test_random_transformers_model_writes_k_document_lines_under_the_grammar(tiny_backend):
    params = SamplingParams(max_tokens=120, temperature=1.0, seed=2, grammar=documents_grammar(3, 10, 30))
    (completion,) = tiny_backend.generate(["Query: frankenstein"], params)
    lines = completion.text.splitlines()
    assert completion.finish_reason == "stop"
    assert [line[:7] for line in lines] == ["Doc 1: ", "Doc 2: ", "Doc 3: "]
    assert all(10 <= len(line) - 7 <= 30 for line in lines), lines
