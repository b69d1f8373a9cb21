"""Protocol-constrained decoding without GBNF: the constraint's options, and a random model held to them."""

from __future__ import annotations

import pytest

from zerosearch_lite.agent.protocol import STOP_SEQUENCES, ProtocolConstraint, parse_turn
from zerosearch_lite.agent.types import Answer, Search
from zerosearch_lite.models.backends.base import SamplingParams
from zerosearch_lite.models.backends.constraint import Options
from zerosearch_lite.models.loading import load_backend


@pytest.mark.parametrize(("text", "expected"), [
    ("", Options(literals=("<think>",))),
    ("<th", Options(literals=("ink>",))),
    ("<think>", Options(free=True)),
    ("<think>abc", Options(free=True, literals=("</think>\n",))),
    ("<think>abc</", Options(literals=("think>\n",))),
    ("<think>abc</think>\n", Options(literals=("<search>", "<answer>"))),
    ("<think>abc</think>\n<a", Options(literals=("nswer>",))),
    ("<think>abc</think>\n<search>q", Options(free=True, literals=("</search>",))),
    ("<think>abc</think>\n<search>q</search>", Options(done=True)),
    ("no think tag", Options(dead=True)),
    ("<think>two\nlines", Options(dead=True)),
])
def test_protocol_constraint_options(text, expected):
    assert ProtocolConstraint().options(text) == expected


def test_limits_and_rules():
    short = ProtocolConstraint(think_chars=3)
    assert short.options("<think>abc") == Options(literals=("</think>\n",))  # no more free text
    assert ProtocolConstraint(allow_search=False).options("<think>a</think>\n") == Options(literals=("<answer>",))
    with pytest.raises(ValueError):
        ProtocolConstraint(allow_search=False, allow_answer=False)


@pytest.mark.parametrize("allow_search", [True, False])
def test_random_model_writes_well_formed_turns_under_the_constraint(tiny_model_dir, allow_search):
    backend = load_backend(str(tiny_model_dir), "transformers")
    constraint = ProtocolConstraint(allow_search=allow_search, think_chars=20, query_chars=12)
    params = SamplingParams(max_tokens=80, temperature=1.0, top_p=1.0, stop=list(STOP_SEQUENCES), n=4, seed=1,
                            constraint=constraint)
    completions = backend.generate(["Question: who wrote frankenstein?"], params)
    for completion in completions:
        assert completion.finish_reason == "stop", completion.text
        action = parse_turn(completion.text, completion.finish_reason)[-1]
        assert isinstance(action, (Search, Answer) if allow_search else Answer), completion.text
    unconstrained = backend.generate(["Question: who wrote frankenstein?"], SamplingParams(
        max_tokens=80, temperature=1.0, top_p=1.0, stop=list(STOP_SEQUENCES), n=4, seed=1))
    assert not any(c.text.startswith("<think>") for c in unconstrained)  # the constraint did the work
