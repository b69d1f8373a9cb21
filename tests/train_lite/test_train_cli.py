"""The training commands as a user runs them: `zsl sim collect → sft → eval` and `zsl train grpo`, each
interrupted with Ctrl-C (SIGINT) mid-run and continued, on a tiny random policy/simulator (integration)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DATA, run_zsl, takes_ctrl_c

from zerosearch_lite.train_lite.metrics import read_metrics

pytestmark = pytest.mark.integration


def start_zsl(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zerosearch_lite.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"},
                            preexec_fn=takes_ctrl_c)  # noqa: PLW1509 - only resets a signal


def interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 600) -> tuple[int, str]:
    """Send SIGINT once `ready()` holds (or let the process finish first); returns (exit code, stderr)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def lines(path: Path) -> int:
    return sum(1 for _ in path.open()) if path.exists() else 0


def test_sim_collect_sft_eval_chain_with_interruptions(tmp_path, tiny_model_dir):
    collect_dir, sft_dir = tmp_path / "collect", tmp_path / "sft"
    # The embedded policy (llama.cpp) writes real-word queries, so BM25 finds documents to label; a random
    # model's queries match nothing and would leave no SFT rows.
    collect = ["sim", "collect", "--data", str(DATA / "hotpot_small.jsonl"), "--corpus",
               str(DATA / "corpus_small.jsonl"), "--out", str(collect_dir), "--policy", "embedded",
               "--limit", "4", "--max-turns", "2", "-k", "2", "--labelling", "contains",
               "--max-tokens-per-turn", "48"]
    code, err = interrupt_when(start_zsl(*collect), lambda: lines(collect_dir / "trajectories.jsonl") >= 1)
    assert code == 130, err  # the interrupt happened before the run finished
    done_before = lines(collect_dir / "trajectories.jsonl")
    resumed = run_zsl(*collect)
    assert resumed.returncode == 0, resumed.stderr
    assert lines(collect_dir / "trajectories.jsonl") == 4 and f"({done_before} already done)" in resumed.stdout
    ids = [json.loads(line)["question_id"] for line in (collect_dir / "trajectories.jsonl").open()]
    assert len(set(ids)) == 4  # nothing collected twice

    sft = ["sim", "sft", "--data", str(collect_dir / "sft.jsonl"), "--out", str(sft_dir), "--model",
           str(tiny_model_dir), "--max-steps", "40", "--batch-size", "2", "--max-length", "256", "--save-every", "2",
           "--lr", "1e-3"]
    code, err = interrupt_when(start_zsl(*sft), lambda: lines(sft_dir / "metrics.jsonl") >= 3)
    assert code == 130, err
    resumed = run_zsl(*sft)
    assert resumed.returncode == 0, resumed.stderr
    assert (sft_dir / "adapter" / "adapter_config.json").is_file() and (sft_dir / "merged" / "config.json").is_file()
    steps = [json.loads(line)["step"] for line in (sft_dir / "metrics.jsonl").open()]
    assert steps[-1] == 40 and set(range(1, 41)) <= set(steps)

    evaluated = run_zsl("sim", "eval", "--data", str(DATA / "hotpot_small.jsonl"), "--base", str(tiny_model_dir),
                        "--adapter", str(sft_dir / "adapter"), "--offset", "4", "--limit", "2", "-k", "2")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "usefulness gap" in evaluated.stdout and "base" in evaluated.stdout and "adapter" in evaluated.stdout


def test_train_grpo_interrupted_then_resumed_has_every_step_once(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    args = ["train", "grpo", "--data", str(DATA / "hotpot_small.jsonl"), "--out", str(run), "--policy",
            str(tiny_model_dir), "--engine", "corpus", "--corpus", str(DATA / "corpus_small.jsonl"), "--steps", "4",
            "--batch-questions", "2", "-G", "2", "--max-turns", "2", "--max-tokens-per-turn", "16", "-k", "2",
            "--save-every", "1"]
    code, err = interrupt_when(start_zsl(*args), lambda: len(read_metrics(run)) >= 1)
    assert code == 130 and "--resume" in err, err
    assert run_zsl(*args).returncode == 1  # a second start refuses to overwrite the run
    resumed = run_zsl("train", "grpo", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert [row.step for row in read_metrics(run)] == [1, 2, 3, 4]
    shown = run_zsl("train", "show", str(run))
    assert shown.returncode == 0 and "· 4 steps" in " ".join(shown.stdout.split())
    as_json = run_zsl("train", "show", str(run), "--json")
    assert [json.loads(line)["step"] for line in as_json.stdout.splitlines()] == [1, 2, 3, 4]


def test_train_show_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    result = run_zsl("train", "show", str(tmp_path))
    assert result.returncode == 1 and result.stderr.strip() == f"error: not a GRPO run directory (no metrics.db): {tmp_path}"


def guard_header(run: Path) -> list[str] | None:
    """The cells of steps 1 and 2 under the `guarded` column of `zsl train show`, or None without that column."""
    shown = run_zsl("train", "show", str(run), env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout.splitlines()
    header = next(line.split() for line in table if line.split()[:1] == ["step"])
    if "guarded" not in header:
        return None
    return [line.split()[header.index("guarded")] for line in table if line.split()[:1] in (["1"], ["2"])]


def test_train_show_has_a_guarded_column_when_the_run_used_a_guard(tmp_path):
    from zerosearch_lite.train_lite.grpo_config import GRPOConfig
    from zerosearch_lite.train_lite.metrics import MetricsStore, StepMetrics

    guarded, plain = tmp_path / "guarded", tmp_path / "plain"
    for run, guard, counts in ((guarded, "drop", (3, 0)), (plain, "off", (0, 0))):
        store = MetricsStore(run)
        for step, count in enumerate(counts, 1):
            store.write(StepMetrics(step=step, reward_mean=0.5, searches=4, cache_hits=0, guarded_documents=count))
        store.close()
        config = GRPOConfig(data="qa.jsonl", out=str(run)).model_dump()
        config["engine"]["guard"] = guard
        (run / "config.json").write_text(json.dumps(config))
    assert guard_header(guarded) == ["3", "0"]
    assert guard_header(plain) is None


def test_train_show_totals_are_the_sums_of_the_step_rows_and_price_them(tmp_path):
    import re

    from zerosearch_lite.train_lite.metrics import MetricsStore, StepMetrics

    store = MetricsStore(tmp_path)
    steps = [(40, 3, 1200, 2.25, 1), (36, 9, 900, 1.5, 0), (44, 0, 1500, 3.0, 2)]
    for step, (searches, hits, tokens, seconds, guarded) in enumerate(steps, 1):
        store.write(StepMetrics(step=step, reward_mean=0.5, searches=searches, cache_hits=hits,
                                simulator_tokens=tokens, search_seconds=seconds, guarded_documents=guarded,
                                guard_retries=2 * guarded, guard_dropped=guarded // 2, guard_seconds=0.5 * guarded))
    store.close()
    shown = run_zsl("train", "show", str(tmp_path), "--api-price", "7.5", env={"COLUMNS": "300"})
    assert shown.returncode == 0, shown.stderr
    totals = " ".join(shown.stdout.split())
    assert re.search(r"120 searches over 3 steps: 12 cache hits, 108 sent to the engine · simulator: 3600 tokens "
                     r"in 7 s · a search API at \$7\.5 per 1k queries would have cost \$0\.90 · 3 documents guarded "
                     r"\(6 regenerations in 2 s, 1 dropped\)",
                     totals), totals


def test_resume_continues_the_run_where_it_lies_not_where_it_started(tmp_path, monkeypatch):
    """A run copied elsewhere resumes in the copy: its config's `out` still names the original."""
    from typer.testing import CliRunner

    from zerosearch_lite.cli import app
    from zerosearch_lite.train_lite import grpo
    from zerosearch_lite.train_lite.grpo_config import GRPOConfig

    original, copy = tmp_path / "a", tmp_path / "b"
    copy.mkdir()
    (copy / "config.json").write_text(GRPOConfig(data="qa.jsonl", out=str(original)).model_dump_json())
    seen = {}

    def stop_here(cfg, **_):
        seen["out"] = cfg.out
        raise KeyboardInterrupt

    monkeypatch.setattr(grpo, "build_trainer", stop_here)
    CliRunner().invoke(app, ["train", "grpo", "--resume", str(copy)])
    assert seen["out"] == str(copy) and not original.exists()
