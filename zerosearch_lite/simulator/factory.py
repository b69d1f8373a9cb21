"""Build a search engine from user-facing names: `simulated` (an LLM), `corpus` (BM25), `dense`
(sentence embeddings), `hybrid` (BM25 + dense, RRF), `http` (a URL), `template` (no model; training only:
documents written from the gold answers); and the simulator's document cache (`open_document_cache`).

Shared by the CLI, the TUI and the trainer, so every entry point means the same thing by a name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from ..errors import ZslError
from .engine import SearchEngine

EngineKind = Literal["simulated", "corpus", "dense", "hybrid", "http", "template"]
ENGINE_KINDS = ("simulated", "corpus", "dense", "hybrid", "http", "template")
CacheKind = Literal["exact", "semantic"]
CORPUS_NEEDED = 'the {kind} engine needs --corpus FILE.jsonl (rows of {{"id", "contents"}})'


def open_document_cache(
    path: str | Path | None = None,
    *,
    kind: str = "exact",
    semantic_threshold: float = 0.9,
    embedding_model: str | None = None,
):
    """The simulator's cache: exact (`DocumentCache`) or with the semantic layer over it."""
    from .. import paths
    from .cache import DocumentCache

    if kind not in ("exact", "semantic"):
        raise ZslError(f"unknown cache {kind!r}: choose exact or semantic")
    exact = DocumentCache(path or paths.cache_db())
    if kind == "exact":
        return exact
    from .embeddings import EmbeddingOptions, OnnxEmbedder
    from .semantic_cache import SemanticDocumentCache

    embedder = OnnxEmbedder(EmbeddingOptions(model=embedding_model or "embedded"))
    return SemanticDocumentCache(exact, embedder, semantic_threshold)


def build_engine(
    kind: str = "simulated",
    *,
    simulator: str | None = None,
    simulator_backend: str = "auto",
    adapter: str | None = None,
    preset: str = "zsl",
    structured: bool | None = None,
    corpus: str | Path | None = None,
    url: str | None = None,
    cache_path: str | Path | None = None,
    use_cache: bool = True,
    backend_options: dict | None = None,
    cache_kind: str = "exact",
    semantic_threshold: float = 0.9,
    embedding_model: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    guard: str = "off",
    http_retry_s: float = 60.0,
) -> SearchEngine:
    """`backend_options` go to the simulator's backend (e.g. `load_in_4bit` for transformers).

    `embedding_model` serves the dense and hybrid engines and the semantic cache (`cache_kind`);
    `progress(done, total)` follows the embedding of a corpus while its dense index is built. `guard` is the
    simulated engine's noise guard (off, drop or retry; it acts only on searches with gold answers);
    `http_retry_s` how long the http engine keeps retrying an unreachable or busy server."""
    if kind == "simulated":
        from ..models.loading import load_backend
        from .simulated import SimulatedSearchEngine

        cache = None
        if use_cache:  # opened first: a bad cache option fails before a model loads
            cache = open_document_cache(
                cache_path, kind=cache_kind, semantic_threshold=semantic_threshold, embedding_model=embedding_model
            )
        backend = load_backend(simulator, simulator_backend, adapter=adapter, **(backend_options or {}))  # type: ignore[arg-type]
        return SimulatedSearchEngine(backend, preset=preset, cache=cache, structured=structured, guard=guard)  # type: ignore[arg-type]
    if kind in ("corpus", "dense", "hybrid") and corpus is None:
        raise ZslError(CORPUS_NEEDED.format(kind=kind))
    if kind == "corpus":
        from .corpus import CorpusSearchEngine

        return CorpusSearchEngine(corpus)  # type: ignore[arg-type]
    if kind in ("dense", "hybrid"):
        from .dense import DenseSearchEngine
        from .embeddings import EmbeddingOptions
        from .hybrid import HybridSearchEngine

        embedding = EmbeddingOptions(model=embedding_model or "embedded")
        engine_class = DenseSearchEngine if kind == "dense" else HybridSearchEngine
        return engine_class(corpus, embedding=embedding, progress=progress)  # type: ignore[arg-type]
    if kind == "http":
        if not url:
            raise ZslError("the http engine needs --url http://HOST:PORT/retrieve")
        from .http_engine import HttpSearchEngine

        return HttpSearchEngine(url, retry_deadline=http_retry_s)
    if kind == "template":
        from .template import TemplateSearchEngine

        return TemplateSearchEngine()
    raise ZslError(f"unknown engine {kind!r}: choose one of {', '.join(ENGINE_KINDS)}")
