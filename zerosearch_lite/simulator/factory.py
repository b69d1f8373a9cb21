"""Build a search engine from user-facing names: `simulated` (an LLM), `corpus` (BM25), `http` (a URL),
`template` (no model; training only: documents written from the gold answers).

Shared by the CLI, the TUI and the trainer, so every entry point means the same thing by a name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..errors import ZslError
from .engine import SearchEngine

EngineKind = Literal["simulated", "corpus", "http", "template"]
ENGINE_KINDS = ("simulated", "corpus", "http", "template")


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
) -> SearchEngine:
    """`backend_options` go to the simulator's backend (e.g. `load_in_4bit` for transformers)."""
    if kind == "simulated":
        from .. import paths
        from ..models.loading import load_backend
        from .cache import DocumentCache
        from .simulated import SimulatedSearchEngine

        backend = load_backend(simulator, simulator_backend, adapter=adapter, **(backend_options or {}))  # type: ignore[arg-type]
        cache = DocumentCache(cache_path or paths.cache_db()) if use_cache else None
        return SimulatedSearchEngine(backend, preset=preset, cache=cache, structured=structured)
    if kind == "corpus":
        if corpus is None:
            raise ZslError("the corpus engine needs --corpus FILE.jsonl (rows of {\"id\", \"contents\"})")
        from .corpus import CorpusSearchEngine

        return CorpusSearchEngine(corpus)
    if kind == "http":
        if not url:
            raise ZslError("the http engine needs --url http://HOST:PORT/retrieve")
        from .http_engine import HttpSearchEngine

        return HttpSearchEngine(url)
    if kind == "template":
        from .template import TemplateSearchEngine

        return TemplateSearchEngine()
    raise ZslError(f"unknown engine {kind!r}: choose one of {', '.join(ENGINE_KINDS)}")
