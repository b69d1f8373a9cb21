"""Simulation prompts: how the simulator LLM is asked for k useful or noisy documents for a query.

Two presets: `zsl` (our wording, "Doc i: (Title) text" lines) and `zerosearch` (compatible with the public
ZeroSearch simulation format, so its released simulator checkpoints work as drop-in models). The
question and gold answers enter the prompt only when a training `SearchContext` is given.
Also builds the optional GBNF grammar that forces exactly k document lines from an untuned model.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ZslError
from .types import Mode, SearchContext

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def _count(k: int) -> str:
    return NUMBER_WORDS.get(k, str(k))


def _answers(context: SearchContext) -> str:
    return " or ".join(f'"{a}"' for a in context.golden_answers) or "unknown"


@dataclass(frozen=True)
class PromptPreset:
    name: str
    version: str  # part of the cache key: change it whenever the wording changes

    def messages(self, query: str, k: int, mode: Mode, context: SearchContext | None = None) -> list[dict]:
        builder = {"zsl": _zsl_messages, "zerosearch": _zerosearch_messages}[self.name]
        return builder(query, k, mode, context)


def _zsl_messages(query: str, k: int, mode: Mode, context: SearchContext | None) -> list[dict]:
    if mode == "useful":
        goal = "Each document is accurate and directly helps to answer the query."
    else:
        goal = (
            "Each document looks related to the query but is unhelpful: off-topic, vague, outdated or "
            "subtly wrong, and must not contain the correct answer."
        )
    hint = ""
    if context is not None and context.question:
        if mode == "useful":
            hint = f"\nThe query was written to answer: {context.question}\nThe documents must contain the answer {_answers(context)}."
        else:
            hint = f"\nThe query was written to answer: {context.question}\nNever mention {_answers(context)}."
    system = "You are a web search engine. You answer a query with a list of short documents."
    user = (
        f"Write {_count(k)} documents of about 30 words each for the search query below. {goal}"
        f"{hint}\nWrite one document per line as: Doc N: (Title) text\n\nQuery: {query}"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _zerosearch_messages(query: str, k: int, mode: Mode, context: SearchContext | None) -> list[dict]:
    label = "Useful" if mode == "useful" else "Noisy"
    lines = [
        "You are the Google search engine.",
        f"Given a query, you need to generate {_count(k)} {mode} documents for the query.",
    ]
    if context is not None and context.question:
        lines.append(
            f'The user is trying to answer the question: "{context.question}" whose answer is {_answers(context)}.'
        )
    lines += [
        f"Each document should contain about 30 words, and these documents should contain {mode} information.",
        "",
        f"Query: {query}",
        f"{label} Output:",
    ]
    return [{"role": "user", "content": "\n".join(lines)}]


PRESETS: dict[str, PromptPreset] = {
    "zsl": PromptPreset("zsl", "zsl-v1"),
    "zerosearch": PromptPreset("zerosearch", "zerosearch-v1"),
}


def get_preset(name: str) -> PromptPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ZslError(f"unknown prompt preset {name!r}: choose one of {', '.join(PRESETS)}") from None


DOC_MIN_CHARS = 40
DOC_MAX_CHARS = 280  # about 45 words; ZeroSearch asks for about 30
TOKENS_PER_DOC = 64  # the budget of a free-text document (no grammar to end it)


def documents_grammar(k: int, min_chars: int = DOC_MIN_CHARS, max_chars: int = DOC_MAX_CHARS) -> str:
    """GBNF forcing exactly k lines `Doc i: text` (one document each, bounded length)."""
    docs = ' "\\n" '.join(f'"Doc {i}: " doc' for i in range(1, k + 1))
    return f'root ::= {docs} "\\n"\ndoc ::= [^\\n]{{{min_chars},{max_chars}}}\n'


def documents_token_budget(k: int, structured: bool) -> int:
    """`max_tokens` of one call for k documents. Free text gets `TOKENS_PER_DOC` a document. Under
    `documents_grammar` the grammar ends each document by its length in characters, so the budget only has to
    outlast it: a token of ASCII text holds at least one character (URLs and random strings run at 1.4–1.7,
    prose at about 4), so k full-length lines with their `Doc i: ` prefixes always fit and a budget cut can
    never leave the last document unfinished. Backends clamp `max_tokens` to the context, and generation ends
    where the grammar does, so the large bound costs nothing."""
    if not structured:
        return TOKENS_PER_DOC * k
    return k * (len(f"Doc {k}: ") + DOC_MAX_CHARS + 1)
