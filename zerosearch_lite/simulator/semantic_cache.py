"""A semantic layer over the document cache: a query close enough to a cached one reuses its documents.

Exact hits come first (the wrapped `DocumentCache`); otherwise the query's embedding is compared with
those of cached queries that share the model id, prompt version, mode, k and training context, and the
nearest one above the cosine threshold answers. Query vectors are stored beside the documents (same
SQLite file, own table), so a reopened cache does not embed its queries again. Must not generate docs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from sqlite_utils.db import NotFoundError

from ..storage import apply_migrations, utc_now
from .cache import PK, CacheKey, DocumentCache
from .embeddings import OnnxEmbedder
from .types import Doc

CacheKind = Literal["exact", "semantic"]
MAX_MATCHES = 100  # (query, cached query, cosine) kept for display, latest last
SQL_CHUNK = 900  # values per `in (...)`: under SQLite's variable limit (999 before 3.32)


class CacheOptions(BaseModel):
    """The document cache of simulated searches."""

    kind: CacheKind = Field(
        "exact", description="exact: only repeated queries are hits; semantic: near-identical ones too."
    )
    semantic_threshold: float = Field(
        0.9, gt=0.0, le=1.0,
        description="Cosine between query embeddings above which a cached query's documents are reused.",
    )


def m001_semantic_query_vectors(db) -> None:
    db["query_vectors"].create(
        {"embedding_model": str, "query": str, "vector": bytes}, pk=("embedding_model", "query")
    )


MIGRATIONS = [m001_semantic_query_vectors]  # named apart from cache.py's: both share `_migrations`


@dataclass
class _Group:
    """Cached queries that may answer each other (same key apart from the query) and their vectors."""

    queries: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    matrix: np.ndarray | None = None  # stacked `vectors`, rebuilt lazily after additions

    def add(self, query: str, vector: np.ndarray) -> None:
        self.queries.append(query)
        self.vectors.append(vector)
        self.matrix = None

    def nearest(self, vector: np.ndarray) -> tuple[str, float] | None:
        if not self.queries:
            return None
        if self.matrix is None:
            self.matrix = np.stack(self.vectors).astype(np.float32)
        scores = self.matrix @ vector
        best = int(np.argmax(scores))
        return self.queries[best], float(scores[best])


def _group_of(key: CacheKey) -> tuple:
    return (key.model_id, key.prompt_version, key.mode, key.k, key.context)


class SemanticDocumentCache:
    """`get` / `put` like `DocumentCache`, counting exact and semantic hits apart."""

    def __init__(self, exact: DocumentCache, embedder: OnnxEmbedder, threshold: float = 0.9):
        self.exact = exact
        self.embedder = embedder
        self.threshold = threshold
        self.path = exact.path
        self.db = exact.db
        apply_migrations(self.db, MIGRATIONS)
        self.vector_table = self.db["query_vectors"]
        self.semantic_hits = 0
        self.matches: list[tuple[str, str, float]] = []  # (query, cached query it reused, cosine), latest last
        self._groups: dict[tuple, _Group] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ the DocumentCache interface

    def get(self, key: CacheKey) -> list[Doc] | None:
        docs = self.exact.get(key)
        if docs is not None:
            return docs
        with self._lock:
            found = self._group(key).nearest(self._vectors_of([key.query])[0])
            if found is None or found[1] < self.threshold:
                return None
            similar = CacheKey(key.model_id, key.prompt_version, key.mode, found[0], key.k, key.context)
            docs = self._read(similar)
            if docs is None:
                return None
            self._matched(key.query, found[0], found[1])
            return docs

    def put(self, key: CacheKey, docs: list[Doc]) -> None:
        self.exact.put(key, docs)
        if not docs:
            return
        with self._lock:
            group = self._group(key)
            if key.query not in group.queries:
                group.add(key.query, self._vectors_of([key.query])[0])

    def batch_key(self, key: CacheKey, pending: Iterable[CacheKey]) -> CacheKey:
        """The pending key of this batch that `key` is a near-duplicate of (one generation for both),
        else `key`: GRPO groups search near-identical queries in the same batch, before any `put`."""
        group = _group_of(key)
        candidates = [other for other in pending if _group_of(other) == group and other.query != key.query]
        if not candidates:
            return key
        with self._lock:
            vectors = self._vectors_of([key.query] + [other.query for other in candidates])
        scores = vectors[1:].astype(np.float32) @ vectors[0].astype(np.float32)
        best = int(np.argmax(scores))
        if scores[best] < self.threshold:
            return key
        with self._lock:
            self._matched(key.query, candidates[best].query, float(scores[best]))
        return candidates[best]

    @property
    def hits(self) -> int:
        return self.exact.hits + self.semantic_hits

    @property
    def misses(self) -> int:
        # The wrapped cache counted every semantic hit as one of its misses first.
        return max(0, self.exact.misses - self.semantic_hits)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def stats(self) -> dict:
        return self.exact.stats() | {
            "hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate,
            "exact_hits": self.exact.hits, "semantic_hits": self.semantic_hits, "threshold": self.threshold,
        }

    def clear(self) -> None:
        with self._lock:
            self.exact.clear()
            self._groups.clear()

    def close(self) -> None:
        self.exact.close()

    # ------------------------------------------------------------------ internals

    def _matched(self, query: str, cached: str, cosine: float) -> None:
        """Count a semantic hit and remember it, keeping the latest `MAX_MATCHES`."""
        self.semantic_hits += 1
        self.matches.append((query, cached, cosine))
        del self.matches[:-MAX_MATCHES]

    def _group(self, key: CacheKey) -> _Group:
        """The group of `key`, read from the documents table on first use in this process."""
        group_key = _group_of(key)
        group = self._groups.get(group_key)
        if group is None:
            where = " and ".join(f"[{c}] = ?" for c in PK if c != "query")
            values = [key.as_row()[c] for c in PK if c != "query"]
            queries = [row["query"] for row in self.exact.table.rows_where(where, values, select="query")]
            group = _Group()
            for query, vector in zip(queries, self._vectors_of(queries), strict=True):
                group.add(query, vector)
            self._groups[group_key] = group
        return group

    def _vectors_of(self, queries: list[str]) -> np.ndarray:
        """Unit vectors of normalized queries: from memory, else the table, else the model (then stored)."""
        model = self.embedder.model_id
        missing = [q for q in dict.fromkeys(queries) if q not in self._vectors]
        if missing:
            self._read_vectors(model, missing)
            to_embed = [q for q in missing if q not in self._vectors]
            if to_embed:
                encoded = self.embedder.encode_queries(to_embed).astype(np.float16)
                self.vector_table.upsert_all(
                    [{"embedding_model": model, "query": q, "vector": v.tobytes()} for q, v in zip(to_embed, encoded, strict=True)],
                    pk=("embedding_model", "query"),
                )
                self._vectors.update(zip(to_embed, encoded, strict=True))
        dim = next(iter(self._vectors.values())).shape[0] if self._vectors else 0
        if not queries:
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack([self._vectors[q] for q in queries]).astype(np.float32)

    def _read_vectors(self, model: str, queries: list[str]) -> None:
        """Stored vectors of `queries` into memory, `SQL_CHUNK` queries per statement: a group may hold
        more cached queries than SQLite allows variables in one statement."""
        for start in range(0, len(queries), SQL_CHUNK):
            chunk = queries[start:start + SQL_CHUNK]
            for row in self.vector_table.rows_where(
                f"embedding_model = ? and query in ({', '.join('?' * len(chunk))})", [model, *chunk]
            ):
                self._vectors[row["query"]] = np.frombuffer(row["vector"], dtype=np.float16)

    def _read(self, key: CacheKey) -> list[Doc] | None:
        """The documents of a cached row, counting the reuse on that row (not as an exact hit)."""
        pk = tuple(key.as_row()[c] for c in PK)
        try:
            row = self.exact.table.get(pk)
        except NotFoundError:  # cleared meanwhile
            return None
        self.exact.table.update(pk, {"hits": row["hits"] + 1, "last_hit_at": utc_now()})
        try:
            return [Doc(**d) for d in json.loads(row["docs"])]
        except (ValueError, TypeError):
            return None
