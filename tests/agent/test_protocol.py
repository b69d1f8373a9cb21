from zerosearch_lite.agent.protocol import parse_turn, protocol_grammar, render_information
from zerosearch_lite.agent.types import Answer, Invalid
from zerosearch_lite.simulator.types import Doc


def kinds(steps):
    return [type(s).__name__ for s in steps]


def test_think_then_search_stopped_at_stop_sequence():
    steps = parse_turn("<think>I need the author.</think>\n<search>Frankenstein author", "stop")
    assert kinds(steps) == ["Think", "Search"]
    assert steps[0].text == "I need the author."
    assert steps[1].query == "Frankenstein author"


def test_closed_answer_tag():
    steps = parse_turn("<think>ok</think><answer> Mary Shelley </answer> trailing", "stop")
    assert isinstance(steps[-1], Answer) and steps[-1].text == "Mary Shelley"


def test_missing_tags_is_invalid():
    steps = parse_turn("Mary Shelley wrote it.", "stop")
    assert kinds(steps) == ["Invalid"]
    assert steps[0].reason == "no <search> or <answer> tag"
    assert steps[0].raw == "Mary Shelley wrote it."


def test_unterminated_search_at_token_limit_is_invalid():
    steps = parse_turn("<think>x</think><search>who wrote frankenstein and also", "length")
    assert isinstance(steps[-1], Invalid)
    assert "unterminated <search>" in steps[-1].reason


def test_empty_query_is_invalid():
    for text in ("<search>   </search>", "<think>t</think><search>"):
        step = parse_turn(text, "stop")[-1]
        assert isinstance(step, Invalid) and step.reason == "empty <search>"


def test_runaway_text_without_action():
    step = parse_turn("blah " * 500, "length")[-1]
    assert isinstance(step, Invalid) and step.reason.startswith("runaway output")


def test_nested_tags_are_invalid():
    step = parse_turn("<search>a <search>b</search>", "stop")[-1]
    assert isinstance(step, Invalid) and step.reason == "nested tags inside <search>"


def test_unclosed_think_before_action_still_yields_think():
    steps = parse_turn("<think>need to look it up <search>frankenstein", "stop")
    assert kinds(steps) == ["Think", "Search"]
    assert steps[0].text == "need to look it up"


def test_overlong_query_is_invalid():
    step = parse_turn("<search>" + "x" * 400, "stop")[-1]
    assert isinstance(step, Invalid) and "longer than" in step.reason


def test_information_rendering_numbers_docs_and_handles_none():
    text = render_information([Doc("T", "body one", "corpus"), Doc("", "body two", "corpus")])
    assert text == "\n\n<information>Doc 1 (T) body one\nDoc 2 body two</information>\n\n"
    assert "No results." in render_information([])


def test_grammar_variants():
    both = protocol_grammar()
    assert '"<search>" query "</search>"' in both and '"<answer>" query "</answer>"' in both
    only_search = protocol_grammar(allow_answer=False)
    assert "<answer>" not in only_search
    only_answer = protocol_grammar(allow_search=False)
    assert "<search>" not in only_answer
