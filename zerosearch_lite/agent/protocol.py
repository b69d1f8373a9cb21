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


def user_message(question: str) -> list[dict]:
    return [{"role": "user", "content": INSTRUCTION.format(question=question.strip())}]


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
    """GBNF for one turn: <think>…</think> then <search>…</search> and/or <answer>…</answer>."""
    actions = []
    if allow_search:
        actions.append('"<search>" query "</search>"')
    if allow_answer:
        actions.append('"<answer>" query "</answer>"')
    if not actions:
        raise ValueError("a turn must allow a search or an answer")
    return (
        f'root ::= "<think>" think "</think>\\n" ( {" | ".join(actions)} )\n'
        f"think ::= [^<\\n]{{1,{think_chars}}}\n"
        f"query ::= [^<\\n]{{1,{query_chars}}}\n"
    )


class ProtocolConstraint:
    """The turn structure of `protocol_grammar` as a `TextConstraint`, for backends without GBNF
    (transformers): <think> free text </think>, newline, then <search> or <answer> free text and its
    closing tag. Free text excludes '<' and newlines, as in the grammar."""

    excluded = "<\n"

    def __init__(self, allow_search: bool = True, allow_answer: bool = True, think_chars: int = 240,
                 query_chars: int = 80):
        if not (allow_search or allow_answer):
            raise ValueError("a turn must allow a search or an answer")
        self.actions = [tag for tag, ok in (("search", allow_search), ("answer", allow_answer)) if ok]
        self.think_chars, self.query_chars = think_chars, query_chars

    @classmethod
    def for_budget(cls, max_tokens: int, allow_search: bool = True, allow_answer: bool = True) -> ProtocolConstraint:
        """Limits that let a turn close within `max_tokens` (about 4 characters a token, ~30 tag tokens)."""
        room = max(max_tokens - 30, 8) * 4
        query = min(80, max(16, room // 3))
        return cls(allow_search, allow_answer, think_chars=min(240, max(16, room - query)), query_chars=query)

    @staticmethod
    def _literal(text: str, pos: int, literal: str):
        """(new position, None) when `literal` is fully at pos; (None, options) when text ends inside it."""
        from ..models.backends.constraint import Options

        rest = text[pos:]
        if rest.startswith(literal):
            return pos + len(literal), None
        if literal.startswith(rest):
            return None, Options(literals=(literal[len(rest):],))
        return None, Options(dead=True)

    def _free(self, text: str, pos: int, limit: int, closing: str):
        from ..models.backends.constraint import Options

        end = next((i for i in range(pos, len(text)) if text[i] in self.excluded), len(text))
        if end == len(text):  # still inside the free text
            length = end - pos
            return None, Options(free=length < limit, literals=(closing,) if length else ())
        if end == pos:
            return None, Options(dead=True)
        return end, None

    def options(self, text: str):
        from ..models.backends.constraint import Options

        pos, early = self._literal(text, 0, "<think>")
        if early:
            return early
        pos, early = self._free(text, pos, self.think_chars, "</think>\n")
        if early:
            return early
        pos, early = self._literal(text, pos, "</think>\n")
        if early:
            return early
        found = []
        for tag in self.actions:
            p, early = self._literal(text, pos, f"<{tag}>")
            if early is None:
                p, early = self._free(text, p, self.query_chars, f"</{tag}>")
            if early is None:
                p, early = self._literal(text, p, f"</{tag}>")
            found.append(early or Options(done=True))
        live = [o for o in found if not o.dead]
        if not live:
            return Options(dead=True)
        if any(o.done for o in live):
            return Options(done=True)
        return Options(free=any(o.free for o in live), literals=tuple(dict.fromkeys(l for o in live for l in o.literals)))
