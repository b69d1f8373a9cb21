"""`EngineConfig`: which search engine answers the agent's searches, declared once for every command that picks
one (ask, search, serve, sim collect, eval, train grpo, the TUI), and `open_engine`, which builds it.

Two kinds need the policy and are built here rather than in `factory.build_engine`: `self` (the policy writes
its own documents with the simulator prompt: one model, no search engine, as in SSRL) and `none` (searching
is off: every search gets no documents). Must not know about agents or training beyond that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from ..config_cli import flag
from ..errors import ZslError
from .engine import SearchEngine
from .server import ServeConfig
from .types import Mode, SearchContext, SearchResult

if TYPE_CHECKING:
    from ..models.backends.base import GenerationBackend

EngineKind = Literal["simulated", "corpus", "dense", "hybrid", "http", "template", "self", "none"]
REAL_ENGINES = ("corpus", "dense", "hybrid", "http")
# Who hears about a dense index being built when the caller passes no `progress`: nobody, unless the
# command line installs its progress bar here (as logging handlers are installed by an application).
index_progress: Callable[[int, int], None] | None = None
NO_SEARCH = "searching is off (--engine none)"
# Engine settings with no effect where no gold answer is known (the noise guard needs one): not options of the
# inference commands (ask, tui, search, serve, eval).
INFERENCE_EXCLUDED = ("engine.guard",)


class EngineConfig(BaseModel):
    kind: EngineKind = Field(
        "simulated", json_schema_extra=flag("--engine", "-e"),
        description="Search engine: simulated (an LLM writes documents), corpus (BM25 over --corpus), dense "
        "(sentence embeddings over --corpus), hybrid (BM25 + dense, rank fusion), http (a /retrieve --url), self "
        "(the policy writes its own documents), template (training only: documents from the gold answers) or none.",
    )
    simulator: str = Field(
        "embedded", json_schema_extra=flag("--simulator", "-s"),
        description="Simulator model (--engine simulated): embedded, a .gguf, a model folder, a hub id or a URL.",
    )
    simulator_adapter: str | None = Field(
        None, json_schema_extra=flag("--simulator-adapter", "--adapter"),
        description="LoRA adapter of the simulator: a GGUF LoRA (llama.cpp) or a peft folder (transformers).",
    )
    simulator_backend: Literal["auto", "llama.cpp", "transformers", "openai", "vllm"] = Field(
        "auto", description="Backend of the simulator: auto, llama.cpp, transformers, openai or vllm."
    )
    simulator_4bit: bool = Field(False, description="Load the simulator in 4-bit NF4 (transformers, CUDA).")
    preset: Literal["zsl", "zerosearch"] = Field(
        "zsl", description="Simulation prompt: zsl, or zerosearch (the public ZeroSearch format, for its "
        "released simulator checkpoints)."
    )
    structured: bool | None = Field(
        None, json_schema_extra=flag("--structured/--free"),
        description="Force exactly k 'Doc i:' lines with a grammar (default: on where the backend supports it).",
    )
    corpus: str | None = Field(None, description="JSONL corpus of {id, contents} rows for --engine "
                               "corpus, dense or hybrid.")
    url: str | None = Field(None, description="A /retrieve URL for --engine http.")
    http_retry_s: float = Field(
        60.0, ge=0.0, le=3600.0, description="Seconds --engine http keeps retrying a server that is unreachable "
        "or busy (503/429) before the search fails (0: fail at once): a training run rides out a restart.",
    )
    embedding_model: str = Field(
        "embedded", description="Sentence-embedding model of the dense and hybrid engines and the semantic "
        "cache: embedded (all-MiniLM-L6-v2, converted to ONNX once), a sentence-transformers folder, an .onnx "
        "file or a hub id.",
    )
    cache: Literal["exact", "semantic", "off"] = Field(
        "exact", description="Document cache of simulated searches: exact (repeated queries are hits), semantic "
        "(also near-identical queries, by embedding) or off.",
    )
    semantic_threshold: float = Field(0.9, gt=0.0, le=1.0, description="Cosine similarity above which "
                                      "--cache semantic reuses another query's documents.")
    guard: Literal["off", "drop", "retry"] = Field(
        "off", description="Noise guard of a simulated engine (training only: it needs the gold answers): noisy "
        "documents holding a gold answer are regenerated, then dropped (drop) or replaced by clean noisy ones, "
        "with useful results holding none regenerated too (retry).",
    )

    @property
    def label(self) -> str:
        """How sessions and reports name the engine: `simulated:<model>`, `corpus:<file>`, `http:<url>`..."""
        detail = {"simulated": self.simulator, "corpus": self.corpus, "http": self.url}.get(self.kind)
        return f"{self.kind}:{detail}" if detail else self.kind


class SearchConfig(BaseModel):
    """`zsl search`: one query to one engine."""

    engine: EngineConfig = Field(default_factory=EngineConfig)
    mode: Mode = Field("useful", description="Documents a simulated engine writes: useful or noisy.")
    k: int = Field(5, ge=1, le=20, json_schema_extra=flag("-k"), description="Documents to return.")


class ServeCommandConfig(BaseModel):
    """`zsl serve`: the engine to serve and the server's own knobs."""

    engine: EngineConfig = Field(default_factory=EngineConfig)
    server: ServeConfig = Field(default_factory=ServeConfig)


class NoSearchEngine(SearchEngine):
    """`--engine none`: every search comes back empty, with a warning saying why."""

    name = "none"

    def lookup(self, queries: Sequence[str], k: int = 5, *, mode: Mode | None = None,
               context: SearchContext | None = None) -> list[SearchResult]:
        return [SearchResult(query, [], mode, warnings=[NO_SEARCH]) for query in queries]


def open_engine(config: EngineConfig, *, policy: GenerationBackend | None = None,
                cache_path: str | Path | None = None,
                progress: Callable[[int, int], None] | None = None) -> SearchEngine:
    """The engine `config` names; `self` reuses `policy`'s backend (no second model in memory). `progress(done,
    total)` follows the embedding of a corpus while a dense index is built."""
    progress = progress or index_progress
    if config.kind == "none":
        return NoSearchEngine()
    if config.kind == "self":
        if policy is None:
            raise ZslError("--engine self needs the policy model, and none is loaded here")
        from .factory import open_document_cache
        from .simulated import SimulatedSearchEngine

        cache = None if config.cache == "off" else open_document_cache(
            cache_path, kind=config.cache, semantic_threshold=config.semantic_threshold,
            embedding_model=config.embedding_model)
        engine = SimulatedSearchEngine(policy, preset=config.preset, cache=cache, structured=config.structured,
                                       guard=config.guard)
        engine.owns_backend = False  # the policy's: whoever loaded the policy closes it
        return engine
    from .factory import build_engine

    return build_engine(
        config.kind, simulator=config.simulator, simulator_backend=config.simulator_backend,
        adapter=config.simulator_adapter, preset=config.preset, structured=config.structured,
        corpus=config.corpus, url=config.url, cache_path=cache_path, use_cache=config.cache != "off",
        cache_kind="exact" if config.cache == "off" else config.cache, semantic_threshold=config.semantic_threshold,
        embedding_model=config.embedding_model, progress=progress, guard=config.guard,
        http_retry_s=config.http_retry_s,
        backend_options={"load_in_4bit": True} if config.simulator_4bit else None,
    )
