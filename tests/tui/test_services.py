"""The TUI's workbench without Textual: lazy one-time loading, ask, simulate, model roles, run reading."""

from __future__ import annotations

import json

from tui_fakes import ANSWER_TURN, SEARCH_TURN, fake_workbench, simulated_docs

from zerosearch_lite.agent.session import AskOutcome, SampleEvent
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.models.spec import ResolvedModel
from zerosearch_lite.simulator.config import EngineConfig
from zerosearch_lite.simulator.simulated import SimulatedSearchEngine
from zerosearch_lite.train_lite.metrics import MetricsStore, StepMetrics
from zerosearch_lite.tui.services import Settings, Workbench, read_run


def test_models_load_lazily_and_once(monkeypatch, tmp_path):
    loads: list[str] = []

    def fake_load_backend(model, kind="auto", **options):
        loads.append(f"policy:{model.name}")
        return FakeBackend([SEARCH_TURN, ANSWER_TURN] * 2)

    def fake_build_engine(kind, **options):
        loads.append(f"engine:{options['simulator']}")
        return SimulatedSearchEngine(FakeBackend(default=simulated_docs), structured=False)

    monkeypatch.setattr("zerosearch_lite.models.loading.load_backend", fake_load_backend)
    monkeypatch.setattr("zerosearch_lite.simulator.factory.build_engine", fake_build_engine)
    workbench = Workbench(Settings(store=False))
    assert loads == [] and not workbench.policy_loaded and not workbench.engine_loaded
    statuses: list[str] = []
    for _ in range(2):
        items = list(workbench.ask("who wrote frankenstein?", on_status=statuses.append))
        assert isinstance(items[-1], AskOutcome) and items[-1].answer == "Mary Shelley"
        assert all(isinstance(i, SampleEvent) for i in items[:-1])
    assert loads == ["policy:embedded", "engine:embedded"]
    assert statuses[0].startswith("loading policy model") and statuses[-1] == "generating…"
    workbench.simulate("frankenstein")
    assert len(loads) == 2
    workbench.set_simulator("org/other")
    workbench.simulate("frankenstein")
    assert loads[-1] == "engine:org/other"


def test_ask_stores_the_session_and_simulate_returns_both_modes(tmp_path):
    workbench = fake_workbench(tmp_path)
    outcome = list(workbench.ask("who wrote frankenstein?"))[-1]
    stored = workbench.open_store().get(outcome.session_id)
    assert stored.answer == "Mary Shelley" and stored.policy == "fake-policy"
    assert stored.engine == "simulated:embedded"
    useful, noisy = workbench.simulate("frankenstein")
    assert (useful.mode, noisy.mode) == ("useful", "noisy")
    assert useful.docs[0].text != noisy.docs[0].text and len(useful.docs) == 3
    assert workbench.simulate("frankenstein")[0].cache_hit


def test_model_rows_mark_the_active_roles(tmp_path):
    workbench = fake_workbench(tmp_path)
    rows = workbench.model_rows()
    assert rows[0].roles == ["policy", "simulator"] and rows[1].roles == []
    workbench.set_policy("org/simulator-3b")
    rows = workbench.model_rows()
    assert rows[0].roles == ["simulator"] and rows[1].roles == ["policy"]
    corpus = Workbench(Settings(engine=EngineConfig(kind="corpus")), list_models=lambda: [ResolvedModel("embedded", "gguf", "/x", "embedded")])
    assert corpus.model_rows()[0].roles == ["policy"]  # no simulator behind a real engine


def test_read_run_gives_rows_and_config(tmp_path):
    assert read_run(tmp_path) == ([], {})
    store = MetricsStore(tmp_path)
    store.write(StepMetrics(step=0, reward_mean=0.5))
    store.close()
    (tmp_path / "config.json").write_text(json.dumps({"steps": 3}))
    rows, config = read_run(tmp_path)
    assert [r.reward_mean for r in rows] == [0.5] and config == {"steps": 3}
    (tmp_path / "config.json").write_text("{broken")
    assert read_run(tmp_path)[1] == {}
