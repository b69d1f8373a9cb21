"""Batched rollouts (`agent.rollout.Rollout`): how the rows of one generate call are seeded."""

from __future__ import annotations

from zerosearch_lite.agent.config import AgentConfig
from zerosearch_lite.agent.rollout import Rollout, RolloutRequest
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.simulator.template import TemplateSearchEngine
from zerosearch_lite.simulator.types import SearchContext


class BatchingFake(FakeBackend):
    batches_prompts = True  # one generate call for all rows, as transformers, vLLM and servers take them


def policy_turn(prompt: str) -> str:
    """Searches on the first turn, answers once it has searched."""
    return "<think>t</think>\n<answer>Paris</answer>" if "<search>capital of france" in prompt else \
        "<think>t</think>\n<search>capital of france</search>"


def seeds_by_turn(policy: FakeBackend, rows: int) -> list[list[int | None]]:
    seeds = [params.seed for _, params in policy.history]
    return [seeds[i : i + rows] for i in range(0, len(seeds), rows)]


def test_samples_of_one_question_in_one_batch_sample_with_their_own_seeds():
    policy = BatchingFake(default=policy_turn)
    context = SearchContext("Capital of France?", ("Paris",))
    requests = [RolloutRequest("Capital of France?", context, seed) for seed in (100, 200, 300)]
    agent = AgentConfig(grammar="off", max_turns=2, k=2)
    trajectories, _ = Rollout(policy, TemplateSearchEngine(), agent).run(requests, batch_seed=7)
    assert [t.answer for t in trajectories] == ["Paris"] * 3
    assert seeds_by_turn(policy, 3) == [[100, 200, 300], [101, 201, 301]]  # the request's seed + turn


def test_requests_without_seeds_get_one_per_row_from_the_batch_seed_or_none():
    policy = BatchingFake(default=policy_turn)
    requests = [RolloutRequest("Capital of France?", SearchContext("Capital of France?", ("Paris",)))] * 2
    agent = AgentConfig(grammar="off", max_turns=2, k=2)
    Rollout(policy, TemplateSearchEngine(), agent).run(requests, batch_seed=7)
    first, second = seeds_by_turn(policy, 2)
    assert len(set(first)) == 2 and [s + 1 for s in first] == second
    unseeded = BatchingFake(default=policy_turn)
    Rollout(unseeded, TemplateSearchEngine(), agent).run(requests)
    assert {params.seed for _, params in unseeded.history} == {None}  # GRPO: the backend's own randomness


def test_a_backend_that_cannot_apply_the_grammar_is_refused_not_decoded_free():
    import pytest

    from zerosearch_lite.errors import ZslError

    class NoGrammar(FakeBackend):
        supports_grammar = False

    agent = AgentConfig(grammar="on", max_turns=2)
    with pytest.raises(ZslError, match="cannot decode under the protocol grammar: use --grammar off"):
        Rollout(NoGrammar(), TemplateSearchEngine(), agent, constrained=True)
    Rollout(NoGrammar(), TemplateSearchEngine(), agent, constrained=False)  # free decoding needs nothing
