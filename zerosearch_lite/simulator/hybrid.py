"""`HybridSearchEngine`: BM25 and dense rankings of one corpus fused by reciprocal rank fusion.

RRF (Cormack, Clarke & Büttcher, SIGIR 2009) scores a passage by the sum over rankings of 1 / (c + rank):
it needs no score calibration between BM25 and cosine, which live on unrelated scales. Written here in a
few lines because it is the whole algorithm. Must not use the question or gold answers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field

from .contents import Passage
from .corpus import CorpusSearchEngine
from .dense import DenseOptions, DenseSearchEngine
from .embeddings import EmbeddingOptions, OnnxEmbedder
from .engine import PassageEngine

Item = TypeVar("Item", bound=Hashable)


class HybridOptions(BaseModel):
    """How BM25 and dense rankings are fused."""

    rrf_constant: int = Field(
        60, ge=1, le=10_000,
        description="c in 1/(c + rank): larger values flatten the advantage of the very first ranks.",
    )
    candidates: int | None = Field(
        None, ge=1, le=1000,
        description="Passages taken from each of BM25 and dense before fusing (default: k, the heads of both "
        "rankings interleaved).",
    )


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Item]], constant: int = 60) -> list[tuple[Item, float]]:
    """Items of all rankings (best first, ranks from 1) by descending sum of 1 / (constant + rank).

    Ties keep the order in which items were first seen (earlier ranking, then higher rank)."""
    scores: dict[Item, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (constant + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])  # sorted() is stable: ties keep first-seen order


class HybridSearchEngine(PassageEngine):
    name = "hybrid"
    source = "hybrid"

    def __init__(
        self,
        corpus_path: str | Path,
        *,
        embedding: EmbeddingOptions | None = None,
        dense_options: DenseOptions | None = None,
        options: HybridOptions | None = None,
        embedder: OnnxEmbedder | None = None,
        progress: Callable[[int, int], None] | None = None,
    ):
        self.options = options or HybridOptions()
        self.bm25 = CorpusSearchEngine(corpus_path)
        self.dense = DenseSearchEngine(
            corpus_path, embedding=embedding, options=dense_options, embedder=embedder,
            corpus=self.bm25.corpus, progress=progress,
        )
        self.warnings = list(dict.fromkeys(self.bm25.warnings + self.dense.warnings))

    @property
    def doc_count(self) -> int:
        return self.bm25.doc_count

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        """Fused passages per query with their RRF scores, best first."""
        if k < 1:
            return [[] for _ in queries]
        depth = max(k, self.options.candidates or k)
        fused = []
        for lexical, semantic in zip(self.bm25.retrieve(queries, depth), self.dense.retrieve(queries, depth),
                                     strict=True):
            by_key = {(p.id, p.contents): p for p in lexical + semantic}
            ranked = reciprocal_rank_fusion(
                [[(p.id, p.contents) for p in lexical], [(p.id, p.contents) for p in semantic]],
                self.options.rrf_constant,
            )
            fused.append([Passage(key[0], by_key[key].contents, score) for key, score in ranked[:k]])
        return fused

