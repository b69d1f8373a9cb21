"""What the TUI's screens call: one `Workbench` holding the chosen models, loaded lazily and once.

It only wires the runtime's own functions together (`ask_events`, `build_engine`, `SessionStore`,
`available_models`, `read_metrics`) and serializes access to each model, because screens run them in
thread workers and a llama.cpp model must not be driven by two threads at once. No Textual here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..agent.config import AgentConfig
from ..agent.loop import Agent
from ..agent.session import AskOutcome, SampleEvent, ask_events, engine_label, policy_label
from ..agent.store import SessionStore
from ..models.backends.base import GenerationBackend
from ..models.spec import ResolvedModel
from ..simulator.engine import SearchEngine
from ..simulator.types import Mode, SearchContext, SearchResult


@dataclass
class Settings:
    """The choices `zsl tui` was started with (the same names `zsl ask` takes)."""

    policy: str = "embedded"
    policy_adapter: str | None = None
    engine: str = "simulated"
    simulator: str = "embedded"
    simulator_adapter: str | None = None
    preset: str = "zsl"
    corpus: str | None = None
    url: str | None = None
    use_cache: bool = True
    store: bool = True
    agent: AgentConfig = field(default_factory=AgentConfig)

    @property
    def engine_label(self) -> str:
        return engine_label(self.engine, self.simulator, self.corpus, self.url)


class LockedEngine(SearchEngine):
    """Serializes lookups: the Ask and Simulator screens share one engine from two worker threads."""

    def __init__(self, inner: SearchEngine):
        self.inner = inner
        self.name = inner.name
        self.lock = threading.Lock()

    def lookup(
        self, queries: Sequence[str], k: int = 5, *, mode: Mode | None = None, context: SearchContext | None = None
    ) -> list[SearchResult]:
        with self.lock:
            return self.inner.lookup(queries, k, mode=mode, context=context)

    def close(self) -> None:
        with self.lock:
            self.inner.close()


@dataclass
class ModelRow:
    model: ResolvedModel
    roles: list[str]  # "policy" and/or "simulator" when the model is the active one
    loaded: bool


class Workbench:
    """Models, engine and stores behind the screens; pass ready-made `policy`/`engine` to inject fakes."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        policy: GenerationBackend | None = None,
        engine: SearchEngine | None = None,
        list_models: Callable[[], list[ResolvedModel]] | None = None,
        sessions_path: str | Path | None = None,
        grammar_default: bool = False,
    ):
        """`grammar_default`: for an injected `policy`, whether protocol-constrained decoding is on by
        default (as for a model not trained on the protocol); a policy loaded by name decides it itself."""
        self.settings = settings or Settings()
        self._policy = policy
        self._policy_model: ResolvedModel | None = None
        self._grammar_default = grammar_default
        self._engine = LockedEngine(engine) if engine is not None else None
        self._owned: set[int] = set()  # ids of the backends/engines loaded here (injected ones are the caller's)
        self._list_models = list_models
        self._sessions_path = Path(sessions_path) if sessions_path else None
        self._policy_lock = threading.Lock()  # held for a whole question: one generation at a time
        self._engine_lock = threading.Lock()  # guards building the engine, not its lookups
        self._retired: list[SearchEngine] = []

    # models -------------------------------------------------------------------------------------
    @property
    def policy_loaded(self) -> bool:
        """Whether the chosen policy is in memory (false while a switch waits for the next question)."""
        return self._policy is not None and not self._policy_stale()

    def _policy_stale(self) -> bool:
        return self._policy_model is not None and self._policy_model.name != self.settings.policy

    @property
    def engine_loaded(self) -> bool:
        return self._engine is not None

    def _load_policy(self) -> GenerationBackend:
        """Called with the policy lock held, so swapping models never pulls one from under a question."""
        if self._policy is not None and self._policy_stale():
            self._policy.close()
            self._policy = None
        if self._policy is None:
            from ..models.loading import load_backend
            from ..models.spec import resolve_model

            model = resolve_model(self.settings.policy)
            self._policy = load_backend(model, n_ctx=max(self.settings.agent.max_context, 2048),
                                        adapter=self.settings.policy_adapter)
            self._owned.add(id(self._policy))
            self._policy_model = model
            self._grammar_default = model.source == "embedded"
        return self._policy

    def engine(self) -> SearchEngine:
        """The search engine, built on first use (the simulator model loads here)."""
        with self._engine_lock:
            if self._engine is None:
                from ..simulator.factory import build_engine

                s = self.settings
                self._engine = LockedEngine(
                    build_engine(
                        s.engine, simulator=s.simulator, adapter=s.simulator_adapter, preset=s.preset,
                        corpus=s.corpus, url=s.url, use_cache=s.use_cache,
                    )
                )
                self._owned.add(id(self._engine))
            return self._engine

    def set_policy(self, name: str) -> None:
        """Use another policy model from the next question on; never blocks on a running one. The
        adapter given at start belonged to the old base, so it is dropped."""
        if name != self.settings.policy:
            self.settings.policy_adapter = None
        self.settings.policy = name
        if self._policy_model is None:  # an injected backend has no name to compare: drop it
            self._policy = None

    def set_simulator(self, name: str) -> None:
        """Use another simulator from the next search on; the old engine is closed when the app exits,
        because a running question may still hold it."""
        with self._engine_lock:
            if self._engine is not None:
                self._retired.append(self._engine)
            self._engine, self.settings.simulator = None, name

    def model_rows(self) -> list[ModelRow]:
        if self._list_models is None:
            from ..models.catalog import available_models

            self._list_models = available_models
        rows = []
        for model in self._list_models():
            roles = [role for role, name in (("policy", self.settings.policy), ("simulator", self.settings.simulator))
                     if name in (model.name, model.path) and (role == "policy" or self.settings.engine == "simulated")]
            loaded = ("policy" in roles and self.policy_loaded) or ("simulator" in roles and self.engine_loaded)
            rows.append(ModelRow(model, roles, loaded))
        return rows

    # sessions -----------------------------------------------------------------------------------
    def open_store(self) -> SessionStore:
        """A store for the calling thread (each thread keeps its own SQLite connection)."""
        return SessionStore(self._sessions_path or paths.sessions_db())

    def ask(
        self, question: str, *, samples: int = 1, cancelled: Callable[[], bool] = lambda: False,
        on_status: Callable[[str], None] = lambda text: None,
    ) -> Iterator[SampleEvent | AskOutcome]:
        """`ask_events` with the configured models; the session is stored unless `--no-store`."""
        with self._policy_lock:
            if not self.policy_loaded:
                on_status(f"loading policy model {self.settings.policy}…")
            policy = self._load_policy()
            if not self.engine_loaded:
                on_status(f"loading search engine ({self.settings.engine_label})…")
            engine = self.engine()
            agent = Agent(policy, engine, self.settings.agent, grammar_default=self._grammar_default)
            store = self.open_store() if self.settings.store else None
            on_status("generating…")
            policy_name = (policy_label(self._policy_model.name, self.settings.policy_adapter) if self._policy_model
                           else getattr(policy, "model_id", "policy"))
            try:
                yield from ask_events(
                    agent, question, samples=samples, store=store, policy_name=policy_name,
                    engine_name=self.settings.engine_label, cancelled=cancelled,
                )
            finally:
                if store is not None:
                    store.db.conn.close()

    # simulator ----------------------------------------------------------------------------------
    def simulate(self, query: str, k: int | None = None) -> tuple[SearchResult, SearchResult]:
        """The same query in useful and in noisy mode (real engines ignore the mode)."""
        engine = self.engine()
        k = k or self.settings.agent.k
        useful = engine.lookup([query], k, mode="useful")[0]
        noisy = engine.lookup([query], k, mode="noisy")[0]
        return useful, noisy

    def close(self) -> None:
        """Free the models (the app calls this on exit, after its workers stopped)."""
        for resource in [self._policy, *self._retired, self._engine]:
            if resource is not None and id(resource) in self._owned:
                resource.close()
        self._policy, self._engine, self._retired = None, None, []


def read_run(run_dir: str | Path) -> tuple[list, dict]:
    """A run directory's metric rows and its config.json (an empty dict when absent or unreadable)."""
    import json

    from ..train_lite.metrics import read_metrics

    run_dir = Path(run_dir)
    config: dict = {}
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    return read_metrics(run_dir), config if isinstance(config, dict) else {}
