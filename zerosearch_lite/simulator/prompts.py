"""Simulation prompts: how the simulator LLM is asked for k useful or noisy documents for a query.

Two presets: `zsl` (our wording, "Doc i: (Title) text" lines) and `zerosearch` (compatible with the public
ZeroSearch simulation format, so its released simulator checkpoints work as drop-in models). The
question and gold answers enter the prompt only when a training `SearchContext` is given.
Also builds the optional GBNF grammar that forces exactly k document lines from an untuned model.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from ..errors import ZslError
from .parsing import MIN_WORDS
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
LEAD_WORD_MAX_CHARS = 24  # the grammar's cap on each of a document's first MIN_WORDS - 1 words


@functools.cache
def _word_initial() -> str:
    """GBNF for how a word starts, as `str.split` and the parser count words: a character that is neither
    whitespace (every code point `str.isspace` names) nor `*`, after at most two `*` (the parser strips
    `**` markup, so `**` alone is no word). One to three characters."""
    excluded = [c for c in range(0x110000) if chr(c).isspace()] + [ord("*")]
    return '"*"{0,2} [^' + "".join(f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in excluded) + "]"


def documents_grammar(k: int, min_chars: int = DOC_MIN_CHARS, max_chars: int = DOC_MAX_CHARS) -> str:
    """GBNF forcing exactly k lines `Doc i: text`, each a document the parser keeps: between `min_chars`
    and `max_chars` characters holding at least `parsing.MIN_WORDS` words (a line of bare URLs is one long
    word). Each of the first MIN_WORDS - 1 words is capped (at `LEAD_WORD_MAX_CHARS`, less for short
    documents) and the rest of the line is bounded for lead words at that cap, so a line never exceeds
    `max_chars`; one whose lead words are short ends up to 2 x the cap earlier."""
    lead = MIN_WORDS - 1
    cap = max(1, min(LEAD_WORD_MAX_CHARS, (max_chars - min_chars) // (2 * lead)))
    rest_min = max(0, min_chars - 2 * lead - 1)  # lead words at their shortest: one character and a space
    rest_max = max_chars - lead * (cap + 3) - 3  # lead words at their longest: two `*`, cap, a space
    if rest_max < rest_min:
        raise ValueError(f"documents of {min_chars}-{max_chars} characters cannot hold {MIN_WORDS} words")
    docs = ' "\\n" '.join(f'"Doc {i}: " doc' for i in range(1, k + 1))
    return (f'root ::= {docs} "\\n"\n'
            f'doc ::= {"lead " * lead}initial [^\\n]{{{rest_min},{rest_max}}}\n'
            f'lead ::= initial [^ \\n]{{0,{cap - 1}}} " "\n'
            f"initial ::= {_word_initial()}\n")


@functools.cache
def documents_grammar_version() -> str:
    """A short digest of the documents grammar, part of a structured simulator's cache key: documents cached
    under an older grammar are not served as if this one had made them."""
    return hashlib.sha256(documents_grammar(1).encode()).hexdigest()[:8]


def output_version(preset: PromptPreset, structured: bool) -> str:
    """What makes a simulator's documents for the same model and query differ: the prompt wording and, when
    decoding is constrained, the grammar. Keys the document cache and the rows `zsl sim eval` resumes from."""
    return preset.version + (f"+grammar-{documents_grammar_version()}" if structured else "")


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
