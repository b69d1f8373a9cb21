"""End-to-end CLI runs on the embedded model, with the network unplugged (integration)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_zsl

from zerosearch_lite.agent.schema import TrajectoryModel
from zerosearch_lite.agent.store import SessionStore

NETGUARD = str(Path(__file__).parent / "netguard")
pytestmark = pytest.mark.integration


def offline(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run zsl with sockets refused in-process, and in an empty network namespace where allowed."""
    env = {"PYTHONPATH": NETGUARD, "HF_HUB_OFFLINE": "1"}
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], check=False, capture_output=True).returncode == 0:
        import os
        import sys

        return subprocess.run(
            ["unshare", "-n", sys.executable, "-m", "zerosearch_lite.cli", *args],
            check=False, capture_output=True, text=True, env=os.environ | env, timeout=timeout,
        )
    return run_zsl(*args, env=env, timeout=timeout)


def test_ask_offline_prints_full_trajectory_and_stores_it(zsl_home):
    result = offline("ask", "who wrote the novel frankenstein?", "--seed", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    labels = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"think", "search", "answer"} <= labels  # a step line of each kind, not words of the summary
    assert " 1. " in out  # the documents of the first search are listed
    sessions = SessionStore(zsl_home / "sessions.db").list()
    assert len(sessions) == 1
    stored = SessionStore(zsl_home / "sessions.db").get(sessions[0].id)
    assert stored.trajectories[0].searches and stored.trajectories[0].searches[0].docs


def test_ask_json_validates_against_the_schema():
    result = offline("ask", "who wrote the novel frankenstein?", "--json", "--seed", "5", "--max-turns", "3")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    model = TrajectoryModel.model_validate(payload)
    assert model.steps and {s.type for s in model.steps} <= {"think", "search", "answer", "invalid"}
    search = next(s for s in model.steps if s.type == "search")
    assert search.query and search.docs and search.mode == "useful" and search.cache_hit is not None
    assert model.usage.prompt_tokens > 0 and model.usage.completion_tokens > 0
    assert model.usage.decode_seconds > 0 and model.usage.prompt_seconds > 0  # timing, apart from each other
    assert len(model.turn_usage) == model.turns
    assert sum(t.completion_tokens for t in model.turn_usage) == model.usage.completion_tokens
    assert set(payload) >= {"question", "steps", "answer", "finished", "stop_reason", "usage", "seconds"}


def test_ask_samples_votes(zsl_home):
    result = offline("ask", "who wrote the novel frankenstein?", "--samples", "2", "--max-turns", "2",
                     "--max-tokens", "96", "--json", "--seed", "1")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert len(payload["samples"]) == 2 and payload["vote"]["total"] == 2
    from collections import Counter

    from zerosearch_lite.agent.answers import normalize_answer

    answered = [normalize_answer(s["answer"]) for s in payload["samples"] if s["finished"] and s.get("answer")]
    assert payload["vote"]["counts"] == dict(Counter(answered))
    if answered:
        assert normalize_answer(payload["vote"]["answer"]) == Counter(answered).most_common(1)[0][0]


@pytest.mark.parametrize("mode", ["useful", "noisy"])
def test_search_modes_return_k_docs_and_second_call_is_a_cache_hit(mode):
    first = offline("search", "frankenstein novel author", "--mode", mode, "-k", "3", "--json")
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    assert one["mode"] == mode and len(one["docs"]) == 3 and not one["cache_hit"]
    assert {d["source"] for d in one["docs"]} == {f"simulated:{mode}"}
    second = json.loads(offline("search", "Frankenstein novel author", "--mode", mode, "-k", "3", "--json").stdout)
    assert second["cache_hit"] and second["docs"] == one["docs"]
    assert second["seconds"] < one["seconds"] / 10


def test_history_lists_and_shows_sessions(zsl_home):
    assert offline("ask", "what is the capital of france?", "--max-turns", "2", "--seed", "2").returncode == 0
    listing = run_zsl("history", "--json")
    rows = json.loads(listing.stdout)
    assert rows and rows[0]["question"] == "what is the capital of france?"
    shown = run_zsl("history", "--show", str(rows[0]["id"]))
    assert shown.returncode == 0 and "capital of france" in shown.stdout


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_model_file(tmp_path):
    missing = tmp_path / "missing.gguf"
    _assert_one_line_error(run_zsl("ask", "q", "--policy", str(missing)), "not found", str(missing))


def test_corrupt_model_file(tmp_path, embedded_path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(embedded_path.read_bytes()[:1_000_000])
    _assert_one_line_error(run_zsl("search", "q", "--simulator", str(truncated)), str(truncated))
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a model at all")
    _assert_one_line_error(run_zsl("ask", "q", "--policy", str(garbage)), "not a GGUF file", str(garbage))


def test_unknown_model_name():
    _assert_one_line_error(run_zsl("ask", "q", "--simulator", "no-such-model"), "unknown model 'no-such-model'")


def test_unreadable_corpus(tmp_path):
    missing = tmp_path / "corpus.jsonl"
    _assert_one_line_error(run_zsl("search", "q", "--engine", "corpus", "--corpus", str(missing)), str(missing))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    _assert_one_line_error(run_zsl("search", "q", "--engine", "corpus", "--corpus", str(bad)), str(bad))


def test_models_lists_embedded():
    result = run_zsl("models", "--json")
    assert result.returncode == 0
    assert any(m["name"] == "embedded" and m["format"] == "gguf" for m in json.loads(result.stdout))


def test_ask_with_a_peft_policy_adapter_names_it_in_the_session(zsl_home, tmp_path, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    corpus = Path(__file__).parent / "data" / "corpus_small.jsonl"
    result = offline("ask", "who directed doctor strange?", "--policy", str(tiny_model_dir), "--policy-adapter",
                     str(tmp_path / "adapter"), "--engine", "corpus", "--corpus", str(corpus), "--max-turns", "2",
                     "--max-tokens", "24", "--grammar", "on", "--seed", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert TrajectoryModel.model_validate(json.loads(result.stdout)).turns >= 1
    (row,) = json.loads(run_zsl("history", "--json").stdout)
    assert row["policy"] == f"{tiny_model_dir}+{tmp_path / 'adapter'}"


def test_dense_and_hybrid_search_work_offline_from_a_fresh_home(zsl_home):
    """With the network unplugged and an empty $ZSL_HOME: the embedded embedding model converts to ONNX,
    the dense index builds, and both engines answer; a second run reuses both."""
    from conftest import DATA

    args = ["search", "Scott Derrickson nationality", "--corpus", str(DATA / "corpus_small.jsonl"), "-k", "3",
            "--json"]
    for engine in ("dense", "hybrid"):
        result = offline(*args, "--engine", engine)
        assert result.returncode == 0, result.stderr
        docs = json.loads(result.stdout)["docs"]
        assert len(docs) == 3 and all(d["source"] == engine for d in docs)
        assert any("Derrickson" in d["title"] + d["text"] for d in docs)
    assert list((zsl_home / "embeddings" / "onnx").glob("*/model.onnx"))  # converted once, kept


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_ask_refuses_a_blank_question_before_loading_a_model(question, monkeypatch):
    from typer.testing import CliRunner

    from zerosearch_lite.agent import session
    from zerosearch_lite.cli import app
    from zerosearch_lite.errors import ZslError

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(session, "open_agent", no_model)
    result = CliRunner().invoke(app, ["ask", question])
    assert isinstance(result.exception, ZslError) and str(result.exception) == "the question is empty"


def test_history_search_takes_any_text(zsl_home):
    for text in ('"', '""'):
        result = run_zsl("history", "--search", text)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
