"""`zsl search` and `zsl serve` tell the user what the engine noticed while opening (skipped corpus rows,
rebuilt indexes): one stderr line per engine warning, stdout left to results."""

import json

import typer
from conftest import DATA
from typer.testing import CliRunner

from zerosearch_lite.simulator import server as server_module
from zerosearch_lite.simulator.cli import search_command, serve_command


def app_of(command) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)
    return app


def broken_corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = (DATA / "corpus_small.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:20]
    path.write_text("".join(rows) + "not json at all\n", encoding="utf-8")
    return path


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_zsl_search_prints_the_engines_warnings_on_stderr(tmp_path):
    corpus = broken_corpus(tmp_path)
    result = CliRunner().invoke(app_of(search_command), ["Ed Wood", "--engine", "corpus", "--corpus", str(corpus),
                                                         "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["docs"]  # stdout stays one JSON document
    lines = warning_lines(result.stderr)
    assert len(lines) == 1 and f"skipped 1 broken rows of {corpus}" in lines[0] and "line 21" in lines[0]


def test_zsl_serve_prints_the_engines_warnings_before_serving(tmp_path, monkeypatch):
    corpus = broken_corpus(tmp_path)
    served = []
    monkeypatch.setattr(server_module, "serve", lambda engine, config, say: served.append(engine))
    result = CliRunner().invoke(app_of(serve_command), ["--engine", "corpus", "--corpus", str(corpus), "--port", "0"])
    assert result.exit_code == 0, result.output
    assert served and served[0].name == "corpus"
    lines = warning_lines(result.stderr)
    assert len(lines) == 1 and f"skipped 1 broken rows of {corpus}" in lines[0]
