"""The real app driven through Textual's pilot: ask (embedded model), cancel, history, simulator,
training, models, errors as notifications, the command palette, and layouts at 80×24 and 200×50."""

from __future__ import annotations

import json
import time

import pytest
from textual.widgets import Collapsible, DataTable, Input, Static
from tui_fakes import FIXED_MODELS, fake_workbench

from zerosearch_lite.agent.config import AgentConfig, PolicyConfig
from zerosearch_lite.models.backends.base import Completion, SamplingParams
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.train_lite.metrics import MetricsStore, StepMetrics
from zerosearch_lite.tui.app import ZslApp
from zerosearch_lite.tui.screens import (
    AskScreen,
    HistoryScreen,
    ModelsScreen,
    SessionScreen,
    SimulatorScreen,
    TrainingScreen,
)
from zerosearch_lite.tui.services import Settings, Workbench
from zerosearch_lite.tui.widgets import ConfirmScreen, DocList, MetricPlot, TrajectoryView, VoteTally

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run through anyio's pytest plugin (anyio comes with httpx), on asyncio as Textual needs."""
    return "asyncio"


def text(widget: Static) -> str:
    return str(widget.render())


async def ask(pilot, question: str) -> None:
    await pilot.click("#question")
    await pilot.press(*question, "enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.fixture(scope="module")
def embedded_backends():
    """Policy and simulator on the embedded GGUF, one thread each: on a shared 2-core CPU, llama.cpp's
    spinning worker threads cost several times more wall time than they save."""
    from zerosearch_lite.models.loading import load_backend

    policy = load_backend("embedded", n_ctx=2048, n_threads=1)
    simulator = load_backend("embedded", n_ctx=2048, n_threads=1)
    yield policy, simulator
    policy.close()
    simulator.close()


@pytest.mark.integration
async def test_ask_on_the_embedded_model_streams_documents_and_answer(zsl_home, embedded_backends):
    from zerosearch_lite.simulator.cache import DocumentCache
    from zerosearch_lite.simulator.simulated import SimulatedSearchEngine

    policy, simulator = embedded_backends
    # Small limits keep the run short: 2 turns (the grammar forces a search, then an answer), 1 document.
    config = AgentConfig(max_turns=2, max_tokens_per_turn=160, k=1, seed=3, min_searches=1)
    engine = SimulatedSearchEngine(simulator, cache=DocumentCache(zsl_home / "doc_cache.db"))
    workbench = Workbench(Settings(agent=config), policy=policy, engine=engine, protocol_grammar=True)
    app = ZslApp(workbench)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, AskScreen)
        await ask(pilot, "who wrote the novel frankenstein?")
        outcome = screen.outcome
        assert outcome is not None and outcome.answer, text(screen.query_one("#status", Static))
        view = screen.query_one(TrajectoryView)
        docs = [d for doc_list in view.query(DocList) for d in doc_list.docs or []]
        assert docs, "no document reached the screen"
        assert docs[0].text in " ".join(text(s) for s in view.query(".doc").results(Static))
        assert outcome.answer in text(screen.query_one(VoteTally))
        assert text(screen.query_one("#status", Static)).startswith("done")
    assert (zsl_home / "sessions.db").exists()


class SlowBackend(FakeBackend):
    """Streams one word every few milliseconds and counts what it produced: shows where a cancel lands."""

    def __init__(self, words: int = 400):
        super().__init__(default=" ".join(f"word{i}" for i in range(words)))
        self.chunks = 0

    def stream(self, prompt: str, params: SamplingParams):
        for word in self.default.split()[: params.max_tokens]:
            time.sleep(0.005)
            self.chunks += 1
            yield word + " "
        return Completion(text=self.default, finish_reason="length")


async def test_cancel_stops_a_running_question(tmp_path):
    policy = SlowBackend()
    workbench = fake_workbench(tmp_path, policy=policy)
    workbench.settings.agent = AgentConfig(grammar="off", max_turns=2, max_tokens_per_turn=400, k=3)
    app = ZslApp(workbench, timings=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.click("#question")
        await pilot.press(*"a slow question", "enter")
        for _ in range(200):
            await pilot.pause(0.02)
            if policy.chunks >= 5:
                break
        assert screen.running and screen.query(".live"), "tokens should stream into the live line"
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not screen.running
        assert text(screen.query_one("#status", Static)) == "cancelled"
        assert policy.chunks < 400  # stopped between tokens, long before the turn's end
        trajectory = screen.outcome.trajectories[0]
        assert trajectory.stop_reason == "cancelled" and not trajectory.finished


async def test_history_finds_opens_and_deletes_an_asked_question(tmp_path):
    app = ZslApp(fake_workbench(tmp_path), timings=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(pilot, "who wrote frankenstein?")
        await pilot.press("f2")
        await pilot.pause()
        history = app.screen
        assert isinstance(history, HistoryScreen)
        table = history.query_one(DataTable)
        assert table.row_count == 1 and "who wrote frankenstein?" in table.get_row_at(0)
        await pilot.click("#history-search")
        await pilot.press(*"shelley")  # full-text search matches the answer too
        await pilot.pause()
        assert table.row_count == 1
        await pilot.press(*"xyz")
        await pilot.pause()
        assert table.row_count == 0
        history.query_one("#history-search", Input).value = ""
        await pilot.pause()
        table.focus()
        await pilot.press("enter")
        await pilot.pause()
        session = app.screen
        assert isinstance(session, SessionScreen) and session.record.answer == "Mary Shelley"
        assert session.query(Collapsible) and session.query(DocList)
        await pilot.press("escape")
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert table.row_count == 1
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert table.row_count == 0 and history.store.count() == 0


async def test_simulator_shows_useful_and_noisy_documents_and_the_cache_hit(tmp_path):
    app = ZslApp(fake_workbench(tmp_path), screen="simulator", timings=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, SimulatorScreen)
        for expected in ("generated", "cache hit"):
            await pilot.click("#query")
            screen.query_one("#query", Input).value = ""
            await pilot.press(*"frankenstein author", "enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            useful = screen.query_one("#useful-docs").query_one(DocList)
            noisy = screen.query_one("#noisy-docs").query_one(DocList)
            assert len(useful.docs) == 3 and len(noisy.docs) == 3
            assert "Mary Shelley" in useful.docs[0].text and "gothic" in noisy.docs[0].text
            assert expected in text(screen.query_one("#useful-title", Static))
            assert expected in text(screen.query_one("#noisy-title", Static))


def write_run(run_dir, steps: range) -> None:
    store = MetricsStore(run_dir)
    for step in steps:
        store.write(StepMetrics(step=step, reward_mean=0.1 * step, noise_p=0.05 * step, kl=0.001 * step,
                                pool_share=0.25, time="fixed"))
    store.close()


async def test_training_plots_hold_the_run_values_and_follow_new_rows(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model": "embedded", "steps": 10}))
    write_run(run_dir, range(4))
    app = ZslApp(fake_workbench(tmp_path), screen="training", refresh_seconds=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrainingScreen)
        await pilot.click("#run-dir")
        await pilot.press(*str(run_dir), "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        plots = {plot.field: plot for plot in screen.query(MetricPlot)}
        assert plots["reward_mean"].steps == [0, 1, 2, 3]
        assert plots["reward_mean"].values == pytest.approx([0.0, 0.1, 0.2, 0.3])
        assert plots["noise_p"].values == pytest.approx([0.0, 0.05, 0.1, 0.15])
        assert plots["kl"].values == pytest.approx([0.0, 0.001, 0.002, 0.003])
        assert plots["pool_share"].values == [0.25] * 4
        assert "step 3" in text(screen.query_one("#run-status", Static))
        assert "model=embedded" in text(screen.query_one("#run-config", Static))
        write_run(run_dir, range(4, 6))  # the trainer writes on: the screen re-reads on its own
        for _ in range(100):
            await pilot.pause(0.05)
            if len(plots["reward_mean"].values) == 6:
                break
        assert plots["reward_mean"].values[-1] == pytest.approx(0.5)


async def test_models_lists_resolvable_models_and_switches_the_policy(tmp_path):
    workbench = fake_workbench(tmp_path)
    app = ZslApp(workbench, screen="models")
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        table = screen.query_one(DataTable)
        assert table.row_count == len(FIXED_MODELS)
        assert table.get_row_at(0)[4] == "policy + simulator"
        await pilot.press("down", "p")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert workbench.settings.policy.name == "org/simulator-3b" and not workbench.policy_loaded
        assert table.get_row_at(1)[4] == "policy"


async def test_a_missing_model_is_a_notification_not_a_crash(tmp_path):
    settings = Settings(policy=PolicyConfig(name=str(tmp_path / "missing.gguf")))
    app = ZslApp(Workbench(settings, sessions_path=tmp_path / "s.db"))
    async with app.run_test(size=(80, 24)) as pilot:
        await ask(pilot, "anything?")
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and "model file not found" in errors[0].message
        assert text(app.screen.query_one("#status", Static)) == "failed"
        assert app.is_running


async def test_every_screen_action_has_a_command_palette_entry(tmp_path):
    app = ZslApp(fake_workbench(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        for key in ("f1", "f2", "f3", "f4", "f5", "f6"):
            await pilot.press(key)
            await pilot.pause()
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert {"Go to Ask", "Go to History", "Go to Simulator", "Go to Training", "Go to Eval", "Go to Models"} <= titles
            for binding in app.screen.BINDINGS:
                assert any(t.endswith(binding.description) for t in titles), binding
        use_as_policy = next(c for c in app.get_system_commands(app.screen) if c.title == "Models: Use as policy")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await use_as_policy.callback()  # palette entries run the same actions as the keys
        assert app.workbench.settings.policy.name == "embedded"  # the first row is highlighted
        await pilot.press("down")
        await next(c for c in app.get_system_commands(app.screen) if c.title == "Models: Use as policy").callback()
        assert app.workbench.settings.policy.name == "org/simulator-3b"


async def test_eval_lists_runs_shows_the_table_and_curve_and_compares_two(tmp_path, zsl_home):
    from tui_fakes import eval_runs

    from zerosearch_lite.tui.screens.eval import CoveragePlot

    first, second = eval_runs(zsl_home)
    app = ZslApp(fake_workbench(tmp_path), screen="eval", timings=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert table.row_count == 2
        assert {table.get_row_at(i)[0] for i in range(2)} == {"direct", "agent"}
        newest = table.get_row_at(0)
        assert newest[0] == "agent" and newest[5] == "0.500"  # strict EM of the run that got France right
        report = app.screen.report_text
        assert "strict EM" in report and "pass@3" in report
        plot = app.screen.query_one(CoveragePlot)
        assert "coverage" in plot.plt.build()
        await pilot.press("m")  # mark "agent"
        await pilot.press("down", "c")  # compare "direct" against it
        await app.workers.wait_for_complete()
        await pilot.pause()
        compared = app.screen.report_text
        assert "Δ -0.500" in compared and str(second) in compared and str(first) in compared


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
async def test_screens_fit_the_terminal_without_overlap(tmp_path, size):
    app = ZslApp(fake_workbench(tmp_path), timings=False)
    async with app.run_test(size=size) as pilot:
        await ask(pilot, "who wrote frankenstein?")
        for key in ("f1", "f2", "f3", "f4", "f5", "f6"):
            await pilot.press(key)
            await app.workers.wait_for_complete()
            await pilot.pause()
            screen = app.screen
            parts = [w for w in screen.children if w.display]
            for widget in parts:
                region = widget.region
                assert region.height >= 1 and region.width >= 1, (key, widget)
                assert region.right <= size[0] and region.bottom <= size[1], (key, widget, region)
            for i, a in enumerate(parts):
                for b in parts[i + 1 :]:
                    assert not a.region.overlaps(b.region), (key, a, b)
