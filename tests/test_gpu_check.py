"""`bench/gpu_check.py` runs to the end anywhere: without CUDA every GPU row says why it was skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def run_check(*args: str, tmp_path: Path, timeout: int) -> dict:
    out = tmp_path / "check.json"
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}  # the same answer on a machine with a GPU
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--json", str(out)], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| check | measured |" in done.stdout
    return json.loads(out.read_text())


def test_without_cuda_every_row_is_skipped_with_its_reason(tmp_path):
    rows = run_check(tmp_path=tmp_path, timeout=300)["rows"]
    assert len(rows) == 11  # 3 peaks, the 24 GB verdict, 2 transformers, 4 vLLM and 1 llama.cpp rows
    assert all(row["value"].startswith("skipped: no CUDA GPU") for row in rows)
    peaks = [row for row in rows if row["check"].startswith("peak memory")]
    assert len(peaks) == 3 and all("estimate" in row["note"] for row in peaks)


@pytest.mark.slow
def test_quick_run_measures_what_the_cpu_can(tmp_path):
    rows = {row["check"]: row for row in run_check("--quick", tmp_path=tmp_path, timeout=900)["rows"]}
    assert rows["rollout tokens/s: transformers"]["number"] > 0
    assert rows["simulator docs/s: transformers"]["number"] > 0
    assert rows["simulator docs/s: llama.cpp (CPU build)"]["number"] > 0
    assert rows["rollout tokens/s: vLLM"]["value"] == "skipped: vLLM needs a CUDA GPU"
    assert rows["peak memory: GRPO update"]["value"].startswith("skipped: no CUDA (the step ran on CPU")
