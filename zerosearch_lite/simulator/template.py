"""A simulated engine without a model: documents written from fixed templates and the gold answers.

For training runs only, where every search carries a `SearchContext` (the question and its gold answers):
*useful* documents state a gold answer verbatim, *noisy* ones talk around the query and never contain a
gold answer. It is the ideal simulator, at no cost: a policy trained against it learns the protocol and
to read documents before any simulator is fine-tuned, and a GRPO configuration can be checked for
learning in minutes (`zsl train grpo --engine template`). It is not a search engine for questions
without gold answers: those get no documents and a warning.

No library writes documents from templates; the few lines here are the whole engine.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

from .engine import SearchEngine
from .types import Doc, Mode, SearchContext, SearchResult

USEFUL = (
    "The answer to the question {question!r} is {answer}.",
    "{topic}: records and reference works name {answer}.",
    "Asked {question!r}, most sources reply: {answer}.",
    "According to an encyclopedia entry on {topic}, it is {answer}.",
)
NOISY = (
    "{topic} is mentioned in several listings, none of which go into detail.",
    "A forum thread about {topic} drifts into unrelated topics without settling anything.",
    "An outdated page on {topic}; most of its links are broken.",
    "A short note that mentions {topic} in passing among other subjects.",
)
NO_CONTEXT = "the template engine writes documents only for training questions with gold answers"


def _choose(seed: str, count: int) -> int:
    return int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=4).digest(), "big") % count


def template_docs(query: str, k: int, mode: Mode, context: SearchContext) -> list[Doc]:
    """k documents for `query`; deterministic in (query, mode, context), so caching them adds nothing."""
    question = (context.question or query).strip()
    topic = query.strip() or question
    answers = context.golden_answers
    templates = USEFUL if mode == "useful" else NOISY
    start = _choose(f"{mode}\n{query}\n{question}", len(templates))
    docs = []
    for i in range(k):
        template = templates[(start + i) % len(templates)]
        answer = answers[(start + i) % len(answers)]  # the engine only calls this with gold answers
        docs.append(Doc(title=topic[:60], text=template.format(question=question, topic=topic, answer=answer),
                        source=f"template:{mode}"))
    return docs


class TemplateSearchEngine(SearchEngine):
    name = "template"

    def lookup(
        self,
        queries: Sequence[str],
        k: int = 5,
        *,
        mode: Mode | None = None,
        context: SearchContext | None = None,
    ) -> list[SearchResult]:
        chosen: Mode = mode or "useful"
        results = []
        for query in queries:
            started = time.perf_counter()
            if context is None or not context.golden_answers:
                results.append(SearchResult(query, [], chosen, warnings=[NO_CONTEXT]))
                continue
            docs = template_docs(query, k, chosen, context)
            results.append(SearchResult(query, docs, chosen, seconds=time.perf_counter() - started))
        return results
