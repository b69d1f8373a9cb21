"""`zsl tui`: options reach the app, bad values and a missing textual are one-line errors."""

from __future__ import annotations

import sys

import pytest

from zerosearch_lite.errors import ZslError
from zerosearch_lite.tui.command import tui_command


def test_options_reach_the_workbench_and_the_training_screen(monkeypatch, tmp_path):
    from zerosearch_lite.tui.app import ZslApp

    started = []
    monkeypatch.setattr(ZslApp, "run", lambda self: started.append(self))
    tui_command(policy="org/policy", engine="corpus", simulator="embedded", simulator_adapter=None, preset="zsl",
                corpus="c.jsonl", url=None, k=3, max_turns=2, max_tokens=64, temperature=0.0, seed=7,
                grammar="on", min_searches=1, cache=False, store=False, run=tmp_path, screen="training")
    app = started[0]
    settings = app.workbench.settings
    assert (settings.policy, settings.engine, settings.corpus, settings.store) == ("org/policy", "corpus", "c.jsonl", False)
    assert (settings.agent.k, settings.agent.max_turns, settings.agent.seed) == (3, 2, 7)
    assert app.run_dir == tmp_path and app.start_screen == "training"
    assert not app.workbench.policy_loaded  # nothing loads before the first question


def call(**overrides):
    options = {
        "policy": "embedded", "engine": "simulated", "simulator": "embedded", "simulator_adapter": None,
        "preset": "zsl", "corpus": None, "url": None, "k": 5, "max_turns": 4, "max_tokens": 256,
        "temperature": 0.7, "seed": None, "grammar": "auto", "min_searches": 1, "cache": True, "store": True,
        "run": None, "screen": "ask",
    }
    tui_command(**(options | overrides))


def test_bad_values_are_one_line_errors():
    with pytest.raises(ZslError, match="unknown screen"):
        call(screen="nowhere")
    with pytest.raises(ZslError, match="min_searches"):
        call(max_turns=1, min_searches=1)


def test_missing_textual_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "textual", None)  # import textual now raises ImportError
    with pytest.raises(ZslError, match="pip install textual textual-plotext"):
        call()
