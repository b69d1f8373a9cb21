"""Every command line in README.md (and the `zsl` lines of docs/*.md) parses: each `zsl …` line runs with
`--help` appended (unknown commands or flags fail), and each `python bench/….py` line does too."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zerosearch_lite.cli import app

ROOT = Path(__file__).resolve().parents[1]


def readme_commands(path: Path = ROOT / "README.md") -> list[str]:
    """Shell lines of a page's bash blocks, continuations joined, comments and env assignments dropped."""
    lines, block, pending = [], False, ""
    for raw in path.read_text().splitlines():
        if raw.startswith("```"):
            block = raw.strip() == "```bash"
            continue
        if not block:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # CMAKE_ARGS=… pip install …, ZSL_THREADS=1 python …
        if words:
            lines.append(shlex.join(words))
    return lines


def inline_commands() -> list[str]:
    """`zsl …` and `python bench/…` spans in the prose (not the CLI table, whose cells show alternatives)."""
    import re

    spans = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.lstrip().startswith("|"):
            spans += re.findall(r"`((?:zsl|python bench/)[^`]*)`", line)
    return spans


COMMANDS = readme_commands() + inline_commands()
DOC_COMMANDS = [c for page in sorted((ROOT / "docs").glob("*.md")) for c in readme_commands(page) if c.startswith("zsl ")]


def test_the_readme_has_commands():
    assert sum(c.startswith("zsl ") for c in COMMANDS) >= 20


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("zsl ")] + DOC_COMMANDS)
def test_each_zsl_line_parses(line):
    result = CliRunner().invoke(app, [*shlex.split(line)[1:], "--help"])
    assert result.exit_code == 0, f"{line}\n{result.output}"


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("python bench/")])
def test_each_bench_line_parses(line):
    words = shlex.split(line)
    result = subprocess.run([sys.executable, *words[1:], "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"
