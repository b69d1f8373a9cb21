"""`zsl tui`: the same options as `zsl ask` reach the app; bad values and a missing textual are one-line errors."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from zerosearch_lite.cli import app as zsl_app


def run(*args: str):
    return CliRunner().invoke(zsl_app, ["tui", *args])


def test_options_reach_the_workbench_and_the_training_screen(monkeypatch, tmp_path):
    from zerosearch_lite.tui.app import ZslApp

    started = []
    monkeypatch.setattr(ZslApp, "run", lambda self: started.append(self))
    result = run("--policy", "org/policy", "--engine", "corpus", "--corpus", "c.jsonl", "-k", "3", "--max-turns", "2",
                 "--max-tokens", "64", "--temperature", "0", "--seed", "7", "--grammar", "on", "--cache", "off",
                 "--no-store", "--run", str(tmp_path), "--screen", "training")
    assert result.exit_code == 0, result.output
    app = started[0]
    settings = app.workbench.settings
    assert (settings.policy.name, settings.engine.kind, settings.engine.corpus, settings.store) == (
        "org/policy", "corpus", "c.jsonl", False)
    assert (settings.agent.k, settings.agent.max_turns, settings.agent.seed, settings.engine.cache) == (3, 2, 7, "off")
    assert app.run_dir == tmp_path and app.start_screen == "training"
    assert not app.workbench.policy_loaded  # nothing loads before the first question


def test_bad_values_are_one_line_errors(monkeypatch):
    from zerosearch_lite.tui.app import ZslApp

    monkeypatch.setattr(ZslApp, "run", lambda self: None)
    assert run("--screen", "nowhere").exit_code != 0
    result = run("--max-turns", "1", "--min-searches", "1", "--grammar", "on")
    assert isinstance(result.exception, Exception) and "min_searches" in str(result.exception)


def test_missing_textual_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "textual", None)  # import textual now raises ImportError
    result = run()
    assert "pip install textual textual-plotext" in str(result.exception)


@pytest.mark.parametrize("command", ["ask", "tui", "eval", "search"])
def test_a_config_file_sets_options_and_flags_override_it(tmp_path, command):
    """`--config FILE`: values from the file, flags on top (checked on the config each command builds)."""
    from zerosearch_lite import config_cli

    seen = []
    real = config_cli.build_config
    monkeypatch_target = config_cli
    config = tmp_path / "settings.toml"
    config.write_text('[engine]\nkind = "corpus"\ncorpus = "file.jsonl"\n'
                      + ('[agent]\nmax_turns = 3\n' if command != "search" else ""))

    def capture(*args, **kwargs):
        built = real(*args, **kwargs)
        seen.append(built)
        raise SystemExit(0)

    monkeypatch_target.build_config = capture
    try:
        extra = {"ask": ["q"], "tui": [], "eval": ["--data", "x.jsonl"], "search": ["q"]}[command]
        CliRunner().invoke(zsl_app, [command, *extra, "--config", str(config), "--corpus", "flag.jsonl"])
    finally:
        monkeypatch_target.build_config = real
    (built,) = seen
    assert built.engine.kind == "corpus" and built.engine.corpus == "flag.jsonl"
    if command != "search":
        assert built.agent.max_turns == 3
