"""What the TUI's screens call: one `Workbench` holding the chosen models, loaded lazily and once.

It only wires the runtime's own functions together (`ask_events`, `build_engine`, `SessionStore`,
`available_models`, `read_metrics`) and serializes access to each model, because screens run them in
thread workers and a llama.cpp model must not be driven by two threads at once. No Textual here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..agent.config import AskConfig, use_protocol_grammar
from ..agent.loop import Agent
from ..agent.session import AskOutcome, SampleEvent, ask_events
from ..agent.store import SessionStore
from ..models.backends.base import GenerationBackend
from ..models.spec import ResolvedModel
from ..simulator.engine import SearchEngine
from ..simulator.types import Mode, SearchContext, SearchResult

Settings = AskConfig  # the choices `zsl tui` was started with: the same config `zsl ask` takes


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
        protocol_grammar: bool = False,
    ):
        """`protocol_grammar`: for an injected `policy`, whether to decode it under the protocol (as for a model
        not trained on it); a policy loaded by name decides it itself (`use_protocol_grammar`)."""
        self.settings = settings or Settings()
        self._policy = policy
        self._policy_model: ResolvedModel | None = None
        self._protocol_grammar = protocol_grammar
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
        return self._policy_model is not None and self._policy_model.name != self.settings.policy.name

    @property
    def engine_loaded(self) -> bool:
        return self._engine is not None

    def _load_policy(self) -> GenerationBackend:
        """Called with the policy lock held, so swapping models never pulls one from under a question."""
        if self._policy is not None and self._policy_stale():
            self._policy.close()
            self._policy = None
        if self._policy is None:
            from ..models.loading import load_model

            chosen = self.settings.policy
            loaded = load_model(chosen.name, chosen.backend, adapter=chosen.adapter,
                                n_ctx=max(self.settings.agent.max_context, 2048))
            self._policy, self._policy_model = loaded.backend, loaded.model
            self._owned.add(id(self._policy))
            self._protocol_grammar = use_protocol_grammar(self.settings.agent.grammar, loaded.model)
        return self._policy

    def engine(self) -> SearchEngine:
        """The search engine, built on first use (the simulator model loads here)."""
        with self._engine_lock:
            if self._engine is None:
                from ..simulator.config import open_engine

                policy = self._policy if self.settings.engine.kind == "self" else None
                self._engine = LockedEngine(open_engine(self.settings.engine, policy=policy))
                self._owned.add(id(self._engine))
            return self._engine

    def set_policy(self, name: str) -> None:
        """Use another policy model from the next question on; never blocks on a running one. The
        adapter given at start belonged to the old base, so it is dropped."""
        if name != self.settings.policy.name:
            self.settings.policy.adapter = None
        self.settings.policy.name = name
        if self._policy_model is None:  # an injected backend has no name to compare: drop it
            self._policy = None

    def set_simulator(self, name: str) -> None:
        """Use another simulator from the next search on; the old engine is closed when the app exits,
        because a running question may still hold it."""
        with self._engine_lock:
            if self._engine is not None:
                self._retired.append(self._engine)
            self._engine, self.settings.engine.simulator = None, name

    def model_rows(self) -> list[ModelRow]:
        if self._list_models is None:
            from ..models.catalog import available_models

            self._list_models = available_models
        rows = []
        for model in self._list_models():
            chosen = (("policy", self.settings.policy.name), ("simulator", self.settings.engine.simulator))
            roles = [role for role, name in chosen
                     if name in (model.name, model.path) and (role == "policy" or self.settings.engine.kind == "simulated")]
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
                on_status(f"loading policy model {self.settings.policy.name}…")
            policy = self._load_policy()
            if not self.engine_loaded:
                on_status(f"loading search engine ({self.settings.engine.label})…")
            engine = self.engine()
            agent = Agent(policy, engine, self.settings.agent, protocol_grammar=self._protocol_grammar)
            store = self.open_store() if self.settings.store else None
            on_status("generating…")
            policy_name = self.settings.policy.label if self._policy_model else getattr(policy, "model_id", "policy")
            try:
                yield from ask_events(
                    agent, question, samples=samples, store=store, policy_name=policy_name,
                    engine_name=self.settings.engine.label, cancelled=cancelled,
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


@dataclass
class EvalRunRow:
    """One evaluation run as the Eval screen lists it (from its report.json)."""

    path: Path
    method: str
    policy: str
    engine: str
    samples: int
    questions: int
    strict_em: float | None
    cover_em: float | None
    f1: float | None


def eval_roots() -> list[Path]:
    """Where evaluation runs are looked for: `$ZSL_HOME/evals` (the default `--out` of `zsl eval`)."""
    return [paths.home() / "evals"]


def list_eval_runs(roots: Sequence[Path], extra: Sequence[Path] = ()) -> list[EvalRunRow]:
    """Every run directory with a report under `roots` (and the `extra` directories), newest first."""
    import json

    found = [d for root in roots if root.is_dir() for d in root.iterdir() if (d / "report.json").is_file()]
    found += [d for d in extra if (d / "report.json").is_file() and d not in found]
    rows = []
    for run_dir in sorted(found, key=lambda d: (d / "report.json").stat().st_mtime, reverse=True):
        try:
            report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        entry = report["average"] if len(report.get("datasets", [])) > 1 else (report.get("datasets") or [{}])[0]
        scores = entry.get("scores", {})
        s = report.get("settings", {})
        rows.append(EvalRunRow(
            run_dir, s.get("method", "?"), s.get("policy", "?"), s.get("engine", "?"), s.get("samples", 1),
            entry.get("questions", 0), *(scores.get(m, {}).get("mean") for m in ("strict_em", "cover_em", "f1")),
        ))
    return rows


def read_eval_report(run_dir: Path) -> dict:
    """A run's report.json (the Eval screen draws its table and coverage curve from it)."""
    import json

    return json.loads((Path(run_dir) / "report.json").read_text(encoding="utf-8"))


def compare_eval_runs(first: Path, second: Path) -> dict:
    """`zsl eval compare FIRST SECOND` as data (paired intervals of second − first)."""
    from ..evaluation.compare import compare_runs

    return compare_runs([first, second])
