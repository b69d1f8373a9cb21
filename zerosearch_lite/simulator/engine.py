"""The `SearchEngine` interface: batched `search` returning documents, `lookup` adding per-query detail."""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence

from .contents import Passage
from .types import Doc, Mode, SearchContext, SearchResult


class SearchEngine(abc.ABC):
    """A search engine answers each query with up to k documents.

    `mode` asks a simulated engine for useful or noisy documents; real engines ignore it.
    `context` carries training-only hints (question, gold answers); engines must not need it.
    """

    name: str = "engine"

    @abc.abstractmethod
    def lookup(
        self,
        queries: Sequence[str],
        k: int = 5,
        *,
        mode: Mode | None = None,
        context: SearchContext | None = None,
    ) -> list[SearchResult]:
        """One `SearchResult` per query, in order."""

    def lookup_requests(
        self, requests: Sequence[tuple[str, Mode, SearchContext | None]], k: int = 5
    ) -> list[SearchResult]:
        """Like `lookup`, with a mode and context per query (mixed useful/noisy searches of a training
        batch). This default asks `lookup` once per distinct (mode, context); engines that batch better
        override it."""
        results: list[SearchResult | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, (_, mode, context) in enumerate(requests):
            groups.setdefault((mode, context), []).append(i)
        for (mode, context), indices in groups.items():
            found = self.lookup([requests[i][0] for i in indices], k, mode=mode, context=context)
            for i, result in zip(indices, found, strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def search(
        self,
        queries: Sequence[str],
        k: int = 5,
        *,
        mode: Mode | None = None,
        context: SearchContext | None = None,
    ) -> list[list[Doc]]:
        return [r.docs for r in self.lookup(queries, k, mode=mode, context=context)]

    def close(self) -> None:
        """Release models, files and connections."""


class PassageEngine(SearchEngine):
    """A real engine that retrieves passages with ids and scores (BM25, dense, hybrid, a remote /retrieve):
    `retrieve` is its own, `lookup` is derived from it. Real engines ignore `mode` and `context`."""

    source = "corpus"  # the `Doc.source` of its documents

    @abc.abstractmethod
    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        """Passages per query, best first, with the engine's ids and scores (None where it has none)."""

    def warnings_for(self, query: str, hits: list[Passage], k: int) -> list[str]:
        return [] if query.strip() else ["empty query"]

    def lookup(
        self,
        queries: Sequence[str],
        k: int = 5,
        *,
        mode: Mode | None = None,
        context: SearchContext | None = None,
    ) -> list[SearchResult]:
        started = time.perf_counter()
        passages = self.retrieve(queries, k)
        seconds = (time.perf_counter() - started) / max(1, len(queries))
        return [
            SearchResult(query, [hit.to_doc(self.source) for hit in hits], None, False, seconds,
                         self.warnings_for(query, hits, k))
            for query, hits in zip(queries, passages, strict=True)
        ]
