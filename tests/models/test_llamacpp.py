"""llama.cpp backend on the embedded GGUF: KV prefix reuse, token-in/token-out, timings, stop sequences,
streaming, and grammar-constrained turns and documents that parse."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import drain

from zerosearch_lite.agent.protocol import (
    STOP_SEQUENCES,
    parse_turn,
    render_information,
    turn_grammar,
    user_message,
)
from zerosearch_lite.agent.types import Answer, Search
from zerosearch_lite.errors import ZslError
from zerosearch_lite.models.backends.base import SamplingParams
from zerosearch_lite.simulator.parsing import parse_documents
from zerosearch_lite.simulator.prompts import documents_grammar
from zerosearch_lite.simulator.types import Doc

GREEDY = SamplingParams(max_tokens=12, temperature=0)
DOCS = [Doc("Frankenstein", "Mary Shelley wrote Frankenstein, published in 1818.", "corpus")]
FORCED = 'root ::= "<think>look it up</think>\\n<search> frankenstein author</search>"\n'


def first_prompt(backend, question: str = "who wrote frankenstein?") -> str:
    return backend.render_chat(user_message(question))


def test_turn_two_of_an_appended_transcript_reuses_the_kv_prefix(llama_policy):
    prompt = first_prompt(llama_policy, "who painted the mona lisa?")
    turn_one = llama_policy.generate([prompt], GREEDY)[0]
    transcript = prompt + turn_one.text + render_information(DOCS)
    turn_two = llama_policy.generate([transcript], GREEDY)[0]
    assert turn_two.cached_prompt_tokens >= llama_policy.count_tokens(prompt)
    assert turn_two.prompt_tokens - turn_two.cached_prompt_tokens < turn_two.prompt_tokens // 2


def test_token_id_prompts_reuse_every_token_already_evaluated(llama_policy):
    prompt_ids = llama_policy.tokenize(first_prompt(llama_policy, "what is the capital of australia?"))
    turn_one = llama_policy.generate([prompt_ids], GREEDY)[0]
    information = llama_policy.tokenize(render_information(DOCS), starts_sequence=False)
    turn_two = llama_policy.generate([prompt_ids + turn_one.token_ids + information], GREEDY)[0]
    # Only the last sampled token of turn one was never evaluated.
    assert turn_two.cached_prompt_tokens == len(prompt_ids) + len(turn_one.token_ids) - 1
    assert turn_two.prompt_tokens == len(prompt_ids) + len(turn_one.token_ids) + len(information)


def test_a_token_id_prompt_decodes_like_its_text(llama_policy):
    prompt = first_prompt(llama_policy)
    from_text = llama_policy.generate([prompt], GREEDY)[0]
    from_ids = llama_policy.generate([llama_policy.tokenize(prompt)], GREEDY)[0]
    assert from_ids.text == from_text.text and from_ids.token_ids == from_text.token_ids


def test_completion_carries_its_token_ids_and_prompt_and_decode_times(llama_policy):
    llama_policy.llm.reset()  # a cold prompt, so that prefill takes measurable time
    (completion,) = llama_policy.generate([first_prompt(llama_policy)], replace(GREEDY, max_tokens=8))
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == len(completion.token_ids) == 8
    assert llama_policy.llm.detokenize(completion.token_ids).decode() == completion.text
    assert completion.prompt_seconds > 0 and completion.decode_seconds > 0
    total = completion.prompt_seconds + completion.decode_seconds
    assert total == pytest.approx(completion.seconds, rel=0.05)


def test_stop_sequence_is_cut_from_the_text_and_kept_in_the_token_ids(llama_policy):
    params = SamplingParams(max_tokens=40, temperature=0.7, seed=1, stop=list(STOP_SEQUENCES), grammar=FORCED)
    completion = llama_policy.generate([first_prompt(llama_policy)], params)[0]
    assert completion.finish_reason == "stop"
    assert completion.text == "<think>look it up</think>\n<search> frankenstein author"
    assert llama_policy.llm.detokenize(completion.token_ids).decode() == completion.text + "</search>"


def test_stream_yields_the_text_without_any_part_of_the_stop_sequence(llama_policy):
    params = SamplingParams(max_tokens=40, temperature=0.7, seed=1, stop=list(STOP_SEQUENCES), grammar=FORCED)
    chunks, completion = drain(llama_policy.stream(first_prompt(llama_policy), params))
    assert "".join(chunks) == completion.text == "<think>look it up</think>\n<search> frankenstein author"
    assert not any("</" in chunk and "search" in chunk for chunk in chunks[-2:])
    assert completion.token_ids and completion.decode_seconds > 0


def test_seed_makes_sampling_reproducible(llama_policy):
    params = SamplingParams(max_tokens=6, temperature=1.0, seed=5, n=2)
    first = [c.token_ids for c in llama_policy.generate([first_prompt(llama_policy)], params)]
    again = [c.token_ids for c in llama_policy.generate([first_prompt(llama_policy)], params)]
    assert first == again and first[0] != first[1]


def test_each_prompt_of_a_call_samples_with_its_own_seed(llama_policy):
    prompt = first_prompt(llama_policy)
    params = SamplingParams(max_tokens=6, temperature=1.0)
    apart = llama_policy.generate([prompt, prompt], replace(params, seeds=(5, 6)))
    assert apart[0].token_ids != apart[1].token_ids  # two samples of one prompt, not one sample twice
    alone = llama_policy.generate([prompt], replace(params, seed=6))[0]
    assert alone.token_ids == apart[1].token_ids  # prompt 1's seed, as if it ran alone


@pytest.mark.parametrize("rules", [(True, True), (True, False), (False, True)],
                         ids=["search+answer", "search only", "answer only"])
def test_constrained_turns_parse_under_every_turn_rule(llama_policy, rules):
    params = SamplingParams(max_tokens=48, temperature=0.7, stop=list(STOP_SEQUENCES), seed=3, n=2,
                            grammar=turn_grammar(48, *rules))
    allowed = tuple(kind for kind, ok in zip((Search, Answer), rules, strict=True) if ok)
    for completion in llama_policy.generate([first_prompt(llama_policy)], params):
        assert completion.finish_reason == "stop", completion.text
        assert isinstance(parse_turn(completion.text, completion.finish_reason)[-1], allowed), completion.text


def test_structured_documents_have_k_lines_that_parse(llama_simulator):
    request = [{"role": "user", "content": "Write two short documents about Paris."}]
    params = SamplingParams(max_tokens=60, temperature=0.7, repeat_penalty=1.1, seed=4,
                            grammar=documents_grammar(2, 20, 60))
    prompt = llama_simulator.render_chat(request)
    (completion,) = llama_simulator.generate([prompt], params)
    assert completion.finish_reason == "stop", completion.text
    assert [line[:7] for line in completion.text.splitlines()] == ["Doc 1: ", "Doc 2: "]
    assert parse_documents(completion.text, 2).format == "markers"


def test_an_invalid_grammar_is_a_zsl_error(llama_policy):
    with pytest.raises(ZslError, match="invalid GBNF grammar"):
        llama_policy.generate(["hi"], SamplingParams(max_tokens=2, grammar='root ::= "a" undefined_rule'))


def test_a_continuation_is_tokenized_without_bos(llama_policy, monkeypatch):
    calls = []
    record = lambda text, add_bos, special: calls.append(add_bos) or []
    monkeypatch.setattr(llama_policy.llm, "tokenize", record)
    llama_policy.tokenize("hello")
    llama_policy.tokenize("hello", starts_sequence=False)
    llama_policy.tokenize(llama_policy._special["bos_token"] + "hello")  # the template already wrote BOS
    assert calls == [True, False, False]


def test_a_prompt_longer_than_the_context_is_a_zsl_error(llama_simulator):
    with pytest.raises(ZslError, match="does not fit the context window"):
        llama_simulator.generate([[1] * llama_simulator.context_size], GREEDY)
