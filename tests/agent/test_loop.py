"""The agent loop with a scripted policy and a scripted simulator: no weights needed."""

from zerosearch_lite.agent.config import AgentConfig
from zerosearch_lite.agent.loop import Agent
from zerosearch_lite.agent.protocol import RETRY_MESSAGE
from zerosearch_lite.agent.types import Answer, Invalid, Search, Think
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.simulator.cache import DocumentCache
from zerosearch_lite.simulator.simulated import SimulatedSearchEngine

DOCS = "\n".join(f"Doc {i}: (Mary Shelley) fact number {i} about the novel" for i in range(1, 6))


def make_agent(policy_outputs, *, config=None, cache=None, grammar_default=None):
    policy = FakeBackend(policy_outputs)
    simulator = FakeBackend(default=DOCS)
    engine = SimulatedSearchEngine(simulator, cache=cache, structured=False)
    return Agent(policy, engine, config or AgentConfig(grammar="off"), protocol_grammar=grammar_default), policy, simulator


def test_search_then_answer_builds_an_append_only_transcript():
    agent, policy, _ = make_agent(
        ["<think>look it up</think>\n<search>frankenstein author</search>", "<think>found</think><answer>Mary Shelley</answer>"]
    )
    traj = agent.run("who wrote frankenstein?")
    assert [type(s) for s in traj.steps] == [Think, Search, Think, Answer]
    assert traj.finished and traj.answer == "Mary Shelley" and traj.stop_reason == "answer"
    search = traj.steps[1]
    assert search.query == "frankenstein author" and len(search.docs) == 5
    assert search.docs[0].source == "simulated:useful"
    first_prompt, second_prompt = policy.history[0][0], policy.history[1][0]
    assert second_prompt.startswith(first_prompt)  # prefix reuse needs an append-only transcript
    assert "</search>\n\n<information>Doc 1 (Mary Shelley)" in second_prompt
    assert [s.generated for s in traj.segments] == [False, True, False, True]


def test_invalid_output_gets_retry_message_and_run_continues():
    agent, policy, _ = make_agent(["I think it is Mary.", "<answer>Mary Shelley</answer>"])
    traj = agent.run("q")
    assert isinstance(traj.steps[0], Invalid) and traj.finished
    assert RETRY_MESSAGE in policy.history[1][0]


def test_max_turns_ends_unfinished_and_a_search_on_the_last_turn_is_not_run():
    agent, _, simulator = make_agent(["<search>a</search>", "<search>b</search>", "<search>c</search>"],
                                     config=AgentConfig(grammar="off", max_turns=3))
    traj = agent.run("q")
    assert not traj.finished and traj.stop_reason == "max_turns" and len(traj.searches) == 2
    assert isinstance(traj.steps[-1], Invalid) and "last turn" in traj.steps[-1].reason
    assert len(simulator.history) == 2  # the third search would go unread: the engine never sees it
    # the refused search keeps the "</search>" that ended it (its ids are trained on), so the transcript
    # stays well formed and the retry hint does not land inside an open <search>
    last_turn = [seg.text for seg in traj.segments if seg.generated][-1]
    assert last_turn.endswith("<search>c</search>")


def test_context_limit_ends_unfinished():
    config = AgentConfig(grammar="off", max_context=256, max_tokens_per_turn=200)
    agent, _, _ = make_agent(["<search>a b c</search>"] * 4, config=config)
    traj = agent.run("question " * 20)
    assert not traj.finished and traj.stop_reason == "context_limit"


def test_group_searches_hit_the_cache(tmp_path):
    cache = DocumentCache(tmp_path / "cache.db")
    outputs = ["<search>same query</search>", "<answer>x</answer>"] * 2
    agent, _, simulator = make_agent(outputs, cache=cache)
    first, second = agent.run("q"), agent.run("q")
    assert not first.searches[0].cache_hit and second.searches[0].cache_hit
    assert len(simulator.history) == 1


def test_grammar_requires_min_searches_and_forces_answer_on_last_turn():
    config = AgentConfig(grammar="on", max_turns=3, min_searches=1)
    agent, policy, _ = make_agent(["<search>a</search>", "<search>b</search>", "<answer>c</answer>"], config=config)
    agent.run("q")
    grammars = [params.grammar for _, params in policy.history]
    assert "<answer>" not in grammars[0] and "<search>" in grammars[0]
    assert "<answer>" in grammars[1] and "<search>" in grammars[1]
    assert "<search>" not in grammars[2]


def test_events_stream_tokens_and_steps_and_cancel():
    agent, _, _ = make_agent(["<search>a</search>", "<answer>b</answer>"])
    kinds = [e.kind for e in agent.events("q")]
    assert kinds[0] == "token" and kinds[-1] == "done"
    assert kinds.index("search_started") < kinds.index("docs") < kinds.index("answer")
    agent, _, _ = make_agent(["<search>a</search>", "<answer>b</answer>"])
    events = list(agent.events("q", cancelled=lambda: True))
    assert events[-1].trajectory.stop_reason == "cancelled" and not events[-1].trajectory.finished


def test_one_turn_under_auto_grammar_answers_at_once():
    """`--max-turns 1` needs no `--min-searches 0` unless the grammar is forced on: the last turn answers."""
    from zerosearch_lite.agent.turns import turn_rules

    config = AgentConfig(max_turns=1)  # grammar auto, min_searches 1
    assert turn_rules(config, 0, 0) == (False, True)
    agent, _, _ = make_agent(["<think>t</think>\n<answer>Mary Shelley</answer>"], config=config)
    assert agent.run("who wrote frankenstein?").answer == "Mary Shelley"
