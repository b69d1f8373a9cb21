"""`DenseSearchEngine`: cosine search over sentence embeddings of a JSONL corpus — a real engine.

The index is built once per (corpus file, embedding model), saved under `paths.index_dir()` and reloaded;
a corpus changed since indexing (its content hash) is rebuilt with a warning, a damaged index likewise.
Must not modify the corpus, and must not use the question or gold answers (`mode`, `context` ignored).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .. import paths
from .contents import Passage
from .corpus import CorpusFile, corpus_fingerprint, read_corpus, read_index_meta
from .dense_index import DamagedIndex, build_index, load_index
from .embeddings import EmbeddingOptions, OnnxEmbedder
from .engine import PassageEngine

INDEX_FORMAT = 2  # bump when the saved layout or the fingerprint changes: old indexes are then rebuilt
# 2: the corpus fingerprint hashes the file's content (1: size and mtime)


class DenseOptions(BaseModel):
    """How the dense index is built and searched."""

    ann_min_passages: int = Field(
        200_000, ge=1,
        description="Corpora of at least this many passages are searched through a usearch HNSW graph "
        "(approximate); smaller ones exactly with numpy.",
    )
    chunk_passages: int = Field(
        4096, ge=8, le=1_000_000,
        description="Passages embedded between saves while indexing; an interrupted build resumes from the "
        "last saved chunk.",
    )


class DenseSearchEngine(PassageEngine):
    name = "dense"
    source = "dense"

    def __init__(
        self,
        corpus_path: str | Path,
        *,
        embedding: EmbeddingOptions | None = None,
        options: DenseOptions | None = None,
        embedder: OnnxEmbedder | None = None,
        index_dir: str | Path | None = None,
        corpus: CorpusFile | None = None,
        progress: Callable[[int, int], None] | None = None,
    ):
        """`embedder` and `corpus` may be shared with other parts (the hybrid engine reads the file once)."""
        self.corpus = corpus or read_corpus(corpus_path)
        self.path = self.corpus.path
        self.options = options or DenseOptions()
        self.embedder = embedder or OnnxEmbedder(embedding)
        self.warnings: list[str] = []
        if self.corpus.skipped:
            first = "; ".join(self.corpus.reasons)
            self.warnings.append(f"skipped {self.corpus.skipped} broken rows of {self.path} (first: {first})")
        model = self.embedder
        # The folder is named by corpus file and model; the corpus version is checked through the metadata.
        model_key = f"{self.path.resolve()}|{model.model_id}|{model.passage_prefix}|{model.max_length}"
        if index_dir is None:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.path.stem)[:60] or "corpus"
            index_dir = paths.index_dir() / f"{slug}-dense-{hashlib.sha1(model_key.encode()).hexdigest()[:12]}"
        self.index_path = Path(index_dir)
        self.fingerprint = corpus_fingerprint(self.corpus, model_key, INDEX_FORMAT)
        self.loaded_from_disk = False
        self.index = self._load_or_build(progress)

    @property
    def doc_count(self) -> int:
        return len(self.corpus.contents)

    def _meta(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "kind": "dense",
            "fingerprint": self.fingerprint,
            "corpus": str(self.path.resolve()),
            "doc_count": self.doc_count,
            "model_id": self.embedder.model_id,
            "passage_prefix": self.embedder.passage_prefix,
            "max_length": self.embedder.max_length,
            "dim": self.embedder.dim,
            "dtype": "float16",
            "ann": "usearch-hnsw" if self.doc_count >= self.options.ann_min_passages else None,
        }

    def _load_or_build(self, progress):
        meta = self._meta()
        try:
            index = load_index(self.index_path, meta)
        except DamagedIndex as exc:
            self.warnings.append(f"the dense index {self.index_path} was damaged ({exc}); rebuilt it")
            index = None
        if index is not None:
            self.loaded_from_disk = True
            return index
        if self._corpus_changed(meta):
            self.warnings.append(f"{self.path} changed since it was indexed; rebuilt its dense index")
        return build_index(
            self.index_path, meta, self.corpus.contents,
            lambda texts, report: self.embedder.encode_passages(texts, progress=report),
            chunk_size=self.options.chunk_passages, use_ann=bool(meta["ann"]), progress=progress,
            warnings=self.warnings,
        )

    def _corpus_changed(self, meta: dict[str, Any]) -> bool:
        """Whether the saved index is of this corpus file, in this format, but of other contents (an index
        of an older format is rebuilt without a warning: its fingerprint was computed differently)."""
        saved = read_index_meta(self.index_path) or {}
        return (saved.get("corpus") == meta["corpus"] and saved.get("format") == meta["format"]
                and saved.get("fingerprint") != meta["fingerprint"])

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        """Passages with ids and cosine scores per query, best first; an empty query gets none."""
        found: list[list[Passage]] = [[] for _ in queries]
        live = [i for i, query in enumerate(queries) if query.strip()]
        if k < 1 or not live:
            return found
        vectors = self.embedder.encode_queries([queries[i] for i in live])
        rows, scores = self.index.search(vectors, k)
        for i, doc_rows, doc_scores in zip(live, rows.tolist(), scores.tolist(), strict=True):
            found[i] = [
                Passage(self.corpus.ids[row], self.corpus.contents[row], float(score))
                for row, score in zip(doc_rows, doc_scores, strict=True)
                if 0 <= row < self.doc_count  # usearch pads a short result with out-of-range keys
            ]
        return found

