"""`SimulatedSearchEngine`: an LLM answers each query with k useful or noisy documents.

Cache first (exact key), then one batched generation for all misses. With a backend that supports
grammars (llama.cpp), decoding can be constrained to exactly k "Doc i:" lines (`structured`), which
makes even an untuned model return k parseable documents; a fine-tuned simulator does not need it.

The noise guard (training only: it needs the gold answers of a `SearchContext`, so it never acts at
inference). The curriculum assumes a noisy search cannot be answered, but a weak simulator copies the
answer its noisy prompt tells it to avoid. A noisy document holding a gold answer (normalized, whole
words) is replaced by a clean document of a regeneration of the same query, at most `attempts` times;
what still leaks is then dropped ("drop") or replaced by a clean noisy document another query of the same
batch produced ("retry"), and under "retry" a useful result holding no gold answer is regenerated too.
Guarded results are cached under their own key, never mixed with unguarded ones.

What counts as a leak is one rule, `holds_answer`: a gold answer written as whole words (punctuation read
both ways, so "Mary Shelley's" holds "Mary Shelley"), yes/no answers excepted: a comparison question's
"no" is not something a document can give away, and ordinary prose is full of it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..agent.answers import contains_answer, normalize_answer
from ..errors import ZslError
from ..models.backends.base import GenerationBackend, SamplingParams
from .cache import CacheKey, DocumentCache, context_key, normalize_query
from .engine import SearchEngine
from .parsing import ParsedDocs, parse_documents
from .prompts import documents_grammar, documents_token_budget, get_preset, output_version
from .types import Doc, Mode, SearchContext, SearchResult

GuardMode = Literal["off", "drop", "retry"]
GUARD_MODES: tuple[GuardMode, ...] = ("off", "drop", "retry")
LEAK_RULE = "leak2"  # the version of `holds_answer`: part of every key that stores what it decided
UNLEAKABLE_ANSWERS = frozenset({"yes", "no"})


class NoiseGuard(BaseModel):
    """How the simulated engine keeps gold answers out of noisy documents in training."""

    model_config = ConfigDict(frozen=True)

    mode: GuardMode = Field(
        "off",
        description="Noise guard (training only): off; drop (noisy documents holding a gold answer are "
        "regenerated, then dropped); retry (then replaced by clean noisy documents of other queries, and "
        "useful results holding no answer are regenerated too).",
    )
    attempts: int = Field(2, ge=0, le=8, description="Regenerations of a guarded result before the rest is dropped "
                          "or replaced.")

    def active(self, context: SearchContext | None) -> bool:
        return self.mode != "off" and context is not None and bool(leakable_answers(context.golden_answers))

    @property
    def tag(self) -> str:
        """Part of the cache key's prompt version, so guarded and unguarded results never mix (nor results
        guarded under another leak rule)."""
        return f"+guard-{self.mode}{self.attempts}-{LEAK_RULE}"


def leakable_answers(golden_answers: Sequence[str]) -> list[str]:
    """The gold answers a document could give away: not empty, not yes/no."""
    return [a for a in golden_answers if (norm := normalize_answer(a)) and norm not in UNLEAKABLE_ANSWERS]


def holds_answer(doc: Doc, golden_answers: Sequence[str]) -> bool:
    """Whether a document's title or text gives a gold answer away (whole words; see the module docstring)."""
    return contains_answer(f"{doc.title} {doc.text}", leakable_answers(golden_answers))


class SimulatedSearchEngine(SearchEngine):
    name = "simulated"
    owns_backend = True  # False where the backend is shared (`--engine self` writes with the policy's)

    def __init__(
        self,
        backend: GenerationBackend,
        *,
        preset: str = "zsl",
        cache: DocumentCache | None = None,
        structured: bool | None = None,
        temperature: float = 0.7,
        repeat_penalty: float = 1.1,
        seed: int | None = 0,
        guard: NoiseGuard | GuardMode = "off",
    ):
        self.backend = backend
        self.preset = get_preset(preset)
        self.cache = cache
        self.structured = backend.supports_grammar if structured is None else structured
        self.temperature = temperature
        self.repeat_penalty = repeat_penalty
        self.seed = seed
        try:
            self.guard = guard if isinstance(guard, NoiseGuard) else NoiseGuard(mode=guard)
        except ValidationError:
            raise ZslError(f"unknown noise guard {guard!r}: choose one of {', '.join(GUARD_MODES)}") from None

    def prompt(self, query: str, k: int, mode: Mode, context: SearchContext | None = None) -> str:
        return self.backend.render_chat(self.preset.messages(query, k, mode, context))

    def close(self) -> None:
        """Close the document cache (after its last write), then free the backend if this engine owns it."""
        if self.cache is not None:
            self.cache.close()
        if self.owns_backend:
            self.backend.close()

    def _key(self, query: str, k: int, mode: Mode, context: SearchContext | None) -> CacheKey:
        version = output_version(self.preset, self.structured)
        if self.guard.active(context):
            version += self.guard.tag
        return CacheKey(self.backend.model_id, version, mode, normalize_query(query), k, context_key(context))

    def lookup(
        self,
        queries: Sequence[str],
        k: int = 5,
        *,
        mode: Mode | None = None,
        context: SearchContext | None = None,
    ) -> list[SearchResult]:
        return self.lookup_requests([(q, mode or "useful", context) for q in queries], k)

    def lookup_requests(
        self, requests: Sequence[tuple[str, Mode, SearchContext | None]], k: int = 5
    ) -> list[SearchResult]:
        """Like `lookup`, with a mode and context per query: all misses go to the backend in one batch."""
        results: list[SearchResult] = []
        pending: dict[CacheKey, list[int]] = {}
        contexts: dict[CacheKey, SearchContext | None] = {}
        for i, (query, mode, context) in enumerate(requests):
            started = time.perf_counter()
            result = SearchResult(query=query, docs=[], mode=mode)
            results.append(result)
            if not query.strip():
                result.warnings.append("empty query")
                continue
            key = self._key(query, k, mode, context)
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is not None:
                result.docs, result.cache_hit = cached, True
                result.seconds = time.perf_counter() - started
            else:
                if hasattr(self.cache, "batch_key"):  # a semantic cache folds near-duplicates of this batch
                    key = self.cache.batch_key(key, pending)
                pending.setdefault(key, []).append(i)  # duplicates in a batch cost one generation
                contexts[key] = context
        if pending:
            self._generate(pending, contexts, results, k)
        return results

    def _generate(self, pending, contexts, results, k) -> None:
        keys = list(pending)
        leads = {key: results[pending[key][0]] for key in keys}  # counters go on the first result only
        parsed_docs, seconds = self._run(keys, leads, contexts, k, attempt=0)
        docs_by_key: dict[CacheKey, list[Doc]] = {}
        warnings: dict[CacheKey, list[str]] = {}
        for key, parsed in zip(keys, parsed_docs, strict=True):
            docs_by_key[key], warnings[key] = self._docs(parsed, key.mode), parsed.warnings
            leads[key].seconds = seconds
        guarded = [key for key in keys if self.guard.active(contexts[key])]
        if guarded:
            self._guard(guarded, docs_by_key, leads, contexts, k)
        for key in keys:
            docs = docs_by_key[key]
            if self.cache is not None:
                self.cache.put(key, docs)
            for i in pending[key]:
                results[i].docs, results[i].seconds = list(docs), leads[key].seconds
                results[i].warnings.extend(warnings[key])

    def _run(self, keys, leads, contexts, k, *, attempt: int) -> tuple[list[ParsedDocs], float]:
        """One batched generation for `keys` (a new seed per guard attempt); returns the parsed outputs
        and each key's share of the seconds, and adds the tokens written to the lead results."""
        prompts = [self.prompt(leads[key].query, k, key.mode, contexts[key]) for key in keys]
        params = SamplingParams(
            max_tokens=documents_token_budget(k, self.structured),
            temperature=self.temperature,
            repeat_penalty=self.repeat_penalty,
            seed=self.seed,
            stop=[f"Doc {k + 1}:"],
            grammar=documents_grammar(k) if self.structured else None,
        ).with_seed(attempt)
        started = time.perf_counter()
        completions = self.backend.generate(prompts, params)
        seconds = (time.perf_counter() - started) / max(1, len(keys))
        for key, completion in zip(keys, completions, strict=True):
            leads[key].generated_tokens += completion.completion_tokens
        return [parse_documents(c.text, k) for c in completions], seconds

    @staticmethod
    def _docs(parsed: ParsedDocs, mode: Mode) -> list[Doc]:
        return [Doc(title, text, f"simulated:{mode}") for title, text in parsed.docs]

    def _guard(self, keys, docs_by_key, leads, contexts, k) -> None:
        """Regenerate guarded results in batches, at most `attempts` rounds, then drop or replace leaks."""
        golds = {key: contexts[key].golden_answers for key in keys}
        # Every noisy document of this batch, in the order written: the pool "retry" replaces leaks from.
        noisy_written = [(key, doc) for key, docs in docs_by_key.items() if key.mode == "noisy" for doc in docs]
        for key in keys:
            if key.mode == "noisy":
                leads[key].guard_leaked = sum(holds_answer(d, golds[key]) for d in docs_by_key[key])
        for attempt in range(1, self.guard.attempts + 1):
            todo = [key for key in keys if self._wants_retry(key, docs_by_key[key], golds[key])]
            if not todo:
                break
            parsed_docs, seconds = self._run(todo, leads, contexts, k, attempt=attempt)
            for key, parsed in zip(todo, parsed_docs, strict=True):
                lead, fresh = leads[key], self._docs(parsed, key.mode)
                lead.guard_retries += 1
                lead.guard_seconds += seconds
                lead.seconds += seconds
                if key.mode == "useful":
                    if any(holds_answer(d, golds[key]) for d in fresh):
                        docs_by_key[key] = fresh
                    continue
                noisy_written.extend((key, doc) for doc in fresh)
                docs = docs_by_key[key]
                clean = iter([d for d in fresh if not holds_answer(d, golds[key]) and d not in docs])
                for i, doc in enumerate(docs):  # a clean document takes the leaked one's place
                    if holds_answer(doc, golds[key]) and (substitute := next(clean, None)) is not None:
                        docs[i] = substitute
                        lead.guard_regenerated += 1
        for key in keys:
            if key.mode == "noisy":
                docs_by_key[key] = self._settle(key, docs_by_key[key], noisy_written, contexts, golds[key],
                                                leads[key])

    def _wants_retry(self, key: CacheKey, docs: list[Doc], golds: Sequence[str]) -> bool:
        if key.mode == "noisy":
            return any(holds_answer(d, golds) for d in docs)
        return self.guard.mode == "retry" and not any(holds_answer(d, golds) for d in docs)

    def _settle(self, key, docs, noisy_written, contexts, golds, lead) -> list[Doc]:
        """Leaks left after the last regeneration: replaced ("retry"; other queries of the same question
        first, since their noise is on topic) from clean noisy documents of the batch, else dropped."""
        docs = list(docs)
        if self.guard.mode == "retry" and any(holds_answer(d, golds) for d in docs):
            pool: list[Doc] = []
            for other, doc in sorted(noisy_written, key=lambda item: contexts.get(item[0]) != contexts[key]):
                if other != key and doc not in pool and doc not in docs and not holds_answer(doc, golds):
                    pool.append(doc)
            for i, doc in enumerate(docs):
                if holds_answer(doc, golds) and pool:
                    docs[i] = pool.pop(0)
                    lead.guard_replaced += 1
        kept = [d for d in docs if not holds_answer(d, golds)]
        lead.guard_dropped += len(docs) - len(kept)
        return kept
