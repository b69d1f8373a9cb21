"""Screenshots of every screen at 80×24 (pytest-textual-snapshot), from scripted models and fixed data.

Durations are hidden (`timings=False`), stored sessions get a fixed time, and the run directory is named
relative to the working directory, so the pictures do not depend on the machine or the clock.
Update them after a deliberate change with `pytest tests/tui --snapshot-update`.
"""

from __future__ import annotations

import json

from textual.widgets import Input
from tui_fakes import fake_workbench

from zerosearch_lite.train_lite.metrics import MetricsStore, StepMetrics
from zerosearch_lite.tui.app import ZslApp
from zerosearch_lite.tui.screens import SessionScreen
from zerosearch_lite.tui.screens.base import ZslScreen

SIZE = (80, 24)
FIXED_TIME = "2025-01-02T03:04:05+00:00"


async def settle(pilot) -> None:
    """Wait until the first screen is up, every worker has finished and its messages are handled.

    pytest-textual-snapshot starts the app with `App.run(auto_pilot=...)`, which may call us before the
    first screen has mounted (and started its workers), so waiting once is not enough.
    """
    app = pilot.app
    for _ in range(200):
        await pilot.pause()
        if isinstance(app.screen, ZslScreen | SessionScreen) and not any(w.is_running for w in app.workers):
            await pilot.pause(0.05)
            if not any(w.is_running for w in app.workers):
                for field in app.screen.query(Input):
                    field.cursor_blink = False  # a blinking cursor would be caught in either phase
                return
        await app.workers.wait_for_complete()
    raise AssertionError("the app did not settle")


async def type_and_settle(pilot, text: str) -> None:
    await settle(pilot)
    await pilot.press(*text, "enter")
    await settle(pilot)


def app_with_sessions(tmp_path, **kwargs) -> ZslApp:
    """An app whose store already holds two answered questions with a fixed creation time."""
    workbench = fake_workbench(tmp_path)
    for question in ("who wrote frankenstein?", "when was frankenstein published?"):
        workbench.settings.agent.seed = 1
        workbench._policy.enqueue(  # type: ignore[union-attr]
            ["<think>look it up</think><search>frankenstein</search>", "<think>found it</think><answer>Mary Shelley</answer>"]
        )
        list(workbench.ask(question))
    store = workbench.open_store()
    for row in list(store.db["sessions"].rows):
        store.db["sessions"].update(row["id"], {"created_at": FIXED_TIME, "seconds": 1.5})
    return ZslApp(workbench, timings=False, **kwargs)


def test_ask_screen(snap_compare, tmp_path):
    async def ask(pilot):
        await type_and_settle(pilot, "who wrote frankenstein?")

    assert snap_compare(ZslApp(fake_workbench(tmp_path), timings=False), terminal_size=SIZE, run_before=ask)


def test_ask_screen_with_votes(snap_compare, tmp_path):
    """Three samples, two agreeing; a taller terminal so that every step is in view (no scroll position)."""
    from tui_fakes import ANSWER_TURN, SEARCH_TURN

    outputs = [SEARCH_TURN, ANSWER_TURN, SEARCH_TURN, ANSWER_TURN, "<think>I know it</think><answer>Percy Shelley</answer>"]
    app = ZslApp(fake_workbench(tmp_path, policy_outputs=outputs), timings=False)

    async def ask(pilot):
        await settle(pilot)
        pilot.app.screen.query_one("#samples").value = "3"
        await pilot.click("#question")
        await type_and_settle(pilot, "who wrote frankenstein?")

    assert snap_compare(app, terminal_size=(100, 40), run_before=ask)


def test_history_screen(snap_compare, tmp_path):
    assert snap_compare(app_with_sessions(tmp_path, screen="history"), terminal_size=SIZE, run_before=settle)


def test_session_screen(snap_compare, tmp_path):
    async def open_first(pilot):
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(app_with_sessions(tmp_path, screen="history"), terminal_size=SIZE, run_before=open_first)


def test_history_delete_confirmation(snap_compare, tmp_path):
    async def delete(pilot):
        await settle(pilot)
        await pilot.press("d")
        await pilot.pause()

    assert snap_compare(app_with_sessions(tmp_path, screen="history"), terminal_size=SIZE, run_before=delete)


def test_simulator_screen(snap_compare, tmp_path):
    async def search(pilot):
        await type_and_settle(pilot, "frankenstein author")

    app = ZslApp(fake_workbench(tmp_path), screen="simulator", timings=False)
    assert snap_compare(app, terminal_size=SIZE, run_before=search)


def test_training_screen(snap_compare, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model": "embedded", "group_size": 4, "steps": 20}))
    store = MetricsStore(run_dir)
    for step in range(12):
        store.write(StepMetrics(
            step=step, reward_mean=0.1 + 0.03 * step, noise_p=0.5 * (4 ** (step / 11) - 1) / 3, kl=0.001 * step,
            pool_share=0.05 * (step % 5), searches_per_question=1.5, answered_share=0.75, time=FIXED_TIME,
        ))
    store.close()
    monkeypatch.chdir(tmp_path)

    app = ZslApp(fake_workbench(tmp_path), screen="training", run_dir="run", refresh_seconds=60)
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_models_screen(snap_compare, tmp_path):
    app = ZslApp(fake_workbench(tmp_path), screen="models", timings=False)
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_eval_screen(snap_compare, tmp_path, zsl_home):
    from tui_fakes import eval_runs

    eval_runs(zsl_home)
    for run in (zsl_home / "evals").iterdir():  # a fixed order: the newest first, by file time
        stamp = 1_700_000_000 + (run.name == "agent")
        import os

        os.utime(run / "report.json", (stamp, stamp))
    app = ZslApp(fake_workbench(tmp_path), screen="eval", timings=False)
    assert snap_compare(app, terminal_size=(100, 30), run_before=settle)
