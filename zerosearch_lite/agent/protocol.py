"""The policy protocol, one source of truth for training and inference.

The policy writes <think>…</think>, then <search>query</search> or <answer>…</answer>; generation stops
at </search> or </answer>; the runtime appends <information>…</information>. This module holds the
instruction text, the tag parser (malformed output becomes an `Invalid` step, never an exception),
the rendering of documents, and the GBNF grammar for protocol-constrained decoding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..simulator.types import Doc
from .types import Answer, Invalid, Search, Step, Think

STOP_SEQUENCES = ["</search>", "</answer>"]
MAX_QUERY_CHARS = 300
MAX_ANSWER_CHARS = 300

INSTRUCTION = (
    "Answer the question below. Reason step by step inside <think> and </think> every time you get new "
    "information. If you need facts, search for them by writing a short query inside <search> and "
    "</search>; the results come back inside <information> and </information>. You may search several "
    "times. When you know the answer, write it inside <answer> and </answer>, with no explanation, "
    "for example <answer> Paris </answer>.\nQuestion: {question}"
)

RETRY_MESSAGE = (
    "\nMy previous action is invalid. To search, I put a query between <search> and </search>. "
    "To answer, I put the answer between <answer> and </answer>. Let me try again.\n"
)

TAG = re.compile(r"</?(think|search|answer|information)>")


# The baselines of ZeroSearch's table: answer without retrieval, and answer from one retrieval with the
# question. Same tags, so one parser, one grammar and one scorer serve every method.
DIRECT_INSTRUCTION = (
    "Answer the question below. Reason step by step inside <think> and </think>, then write the answer "
    "inside <answer> and </answer>, with no explanation, for example <answer> Paris </answer>.\n"
    "Question: {question}"
)
RAG_INSTRUCTION = (
    "Answer the question below using the documents that follow it. Reason step by step inside <think> and "
    "</think>, then write the answer inside <answer> and </answer>, with no explanation, for example "
    "<answer> Paris </answer>.\nQuestion: {question}{information}"
)


def user_message(question: str) -> list[dict]:
    return [{"role": "user", "content": INSTRUCTION.format(question=question.strip())}]


def method_message(question: str, method: str = "agent", docs: Sequence[Doc] | None = None) -> list[dict]:
    """The first user message of a trajectory for an evaluation method: agent, rag (with its documents) or
    direct."""
    if method == "agent":
        return user_message(question)
    if method == "direct":
        return [{"role": "user", "content": DIRECT_INSTRUCTION.format(question=question.strip())}]
    if method == "rag":
        information = render_information(docs or []).rstrip()
        return [{"role": "user", "content": RAG_INSTRUCTION.format(question=question.strip(), information=information)}]
    raise ValueError(f"unknown method {method!r}")


def render_information(docs: Sequence[Doc]) -> str:
    """The text appended after a search; the same in rollouts and at inference."""
    lines = [f"Doc {i} {doc.render()}" for i, doc in enumerate(docs, 1)] or ["No results."]
    return "\n\n<information>" + "\n".join(lines) + "</information>\n\n"


def _think(text: str) -> tuple[Think | None, str]:
    """Split off the thinking part; returns (think step or None, the rest of the text)."""
    start = text.find("<think>")
    end = text.find("</think>")
    if end >= 0:
        body = text[start + len("<think>") if 0 <= start < end else 0 : end]
        return (Think(body.strip()) if body.strip() else None), text[end + len("</think>") :]
    action = re.search(r"<(search|answer)>", text)
    if start >= 0 and action and action.start() > start:  # unclosed <think> before an action
        body = text[start + len("<think>") : action.start()]
        return (Think(body.strip()) if body.strip() else None), text[action.start() :]
    return None, text


def parse_turn(text: str, finish_reason: str = "stop") -> list[Step]:
    """Parse one generated turn into steps: an optional Think, then one Search, Answer or Invalid.

    `finish_reason == "stop"` means generation ended at a stop sequence (which llama.cpp strips), so an
    unterminated final <search> or <answer> is complete; with "length" it is runaway output.
    """
    think, rest = _think(text)
    steps: list[Step] = [think] if think else []
    action = re.search(r"<(search|answer)>", rest)
    if action is None:
        reason = "runaway output: no <search> or <answer> before the token limit" if finish_reason == "length" \
            else "no <search> or <answer> tag"
        return steps + [Invalid(text, reason)]
    tag = action.group(1)
    body = rest[action.end() :]
    close = body.find(f"</{tag}>")
    if close >= 0:
        body = body[:close]
    elif finish_reason == "length":
        return steps + [Invalid(text, f"unterminated <{tag}>: the token limit was reached")]
    if TAG.search(body):
        return steps + [Invalid(text, f"nested tags inside <{tag}>")]
    body = " ".join(body.split())
    if not body:
        return steps + [Invalid(text, f"empty <{tag}>")]
    limit = MAX_QUERY_CHARS if tag == "search" else MAX_ANSWER_CHARS
    if len(body) > limit:
        return steps + [Invalid(text, f"<{tag}> longer than {limit} characters")]
    return steps + [Search(body) if tag == "search" else Answer(body)]


def closing_tag(step: Step) -> str:
    """The stop sequence llama.cpp removed, put back so the transcript stays well formed."""
    if isinstance(step, Search):
        return "</search>"
    if isinstance(step, Answer):
        return "</answer>"
    return ""


def protocol_grammar(
    allow_search: bool = True, allow_answer: bool = True, think_chars: int = 240, query_chars: int = 80
) -> str:
    """GBNF for one turn: <think>…</think> then <search>…</search> and/or <answer>…</answer>; the single
    definition of the protocol for every backend (llama.cpp and transformers enforce it through
    `models.backends.grammar`, vLLM and llama.cpp servers take it as is).

    Free text never holds '<' or a newline (no nested tags), and a query or answer starts with at most one
    space and then a visible character, so `parse_turn` never finds it empty; the length caps (characters
    after that space) keep a turn able to close within its token budget (`turn_limits`)."""
    actions = []
    if allow_search:
        actions.append('"<search>" query "</search>"')
    if allow_answer:
        actions.append('"<answer>" query "</answer>"')
    if not actions:
        raise ValueError("a turn must allow a search or an answer")
    if think_chars < 1 or query_chars < 1:
        raise ValueError("a turn needs think_chars and query_chars of at least 1")
    return (
        f'root ::= "<think>" think "</think>\\n" ( {" | ".join(actions)} )\n'
        f"think ::= [^<\\n]{{1,{think_chars}}}\n"
        f'query ::= " "? [^ \\t\\r<\\n] [^<\\n]{{0,{query_chars - 1}}}\n'
    )


# What a turn writes besides its think and query text: the tags, the newline, the query's optional space.
TURN_FIXED_CHARS = len("<think>") + len("</think>\n") + len("<search>") + len("</search>") + 1


def turn_limits(max_tokens: int) -> tuple[int, int]:
    """(think characters, query characters) of a turn budgeted `max_tokens` new tokens, sized for prose
    (about 4 characters a token, ~30 tokens of tags), so that the caps, not the budget, end a normal turn."""
    room = max(max_tokens - 30, 8) * 4
    query = min(80, max(16, room // 3))
    return min(240, max(16, room - query)), query


def turn_token_bound(max_tokens: int) -> int:
    """New tokens that let the longest turn `turn_grammar(max_tokens)` allows always close: one token a
    character (a token of ASCII text holds at least one, and SmolLM2 writes a run of digits a token a
    digit), and never less than `max_tokens`."""
    return max(max_tokens, TURN_FIXED_CHARS + sum(turn_limits(max_tokens)))


def turn_grammar(max_tokens: int, allow_search: bool = True, allow_answer: bool = True) -> str:
    """`protocol_grammar` sized for a turn of at most `max_tokens` new tokens."""
    think_chars, query_chars = turn_limits(max_tokens)
    return protocol_grammar(allow_search, allow_answer, think_chars=think_chars, query_chars=query_chars)
