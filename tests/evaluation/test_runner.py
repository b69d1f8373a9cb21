"""`zsl eval`: methods, predictions, reports, resume after Ctrl-C, bad input, comparisons."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import DATA, takes_ctrl_c

from zerosearch_lite.errors import ZslError
from zerosearch_lite.evaluation.compare import compare_runs, render_comparison
from zerosearch_lite.evaluation.runner import EvalConfig, read_predictions, run_eval
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.simulator.config import open_engine

CORPUS = str(DATA / "corpus_small.jsonl")


def qa_file(tmp_path, rows, name="qa.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def scripted_policy(prompt: str) -> str:
    """Searches first (agent), then answers 'Paris' for questions about France and 'Rome' otherwise."""
    if "search for them" in prompt and "<search>capital city" not in prompt:
        return "<think>look</think>\n<search>capital city</search>"
    return "<think>ok</think>\n<answer>" + ("Paris" if "France" in prompt else "Rome") + "</answer>"


ROWS = [{"id": "a", "question": "Capital of France?", "golden_answers": ["Paris"]},
        {"id": "b", "question": "Capital of Spain?", "golden_answers": ["Madrid"]},
        {"id": "c", "question": "Capital of Italy?", "golden_answers": ["Rome"]}]


def config(tmp_path, path, **overrides) -> EvalConfig:
    values = {"data": [str(path)], "out": str(tmp_path / "run"), "engine": {"kind": "corpus", "corpus": CORPUS},
              "agent": {"grammar": "off", "max_turns": 3, "seed": 0}}
    return EvalConfig.model_validate(values | overrides)


@pytest.mark.parametrize(("method", "searches"), [("agent", 1), ("rag", 1), ("direct", 0)])
def test_each_method_writes_predictions_and_a_labelled_report(tmp_path, method, searches):
    policy = FakeBackend(default=scripted_policy)
    cfg = config(tmp_path, qa_file(tmp_path, ROWS), method=method)
    result = run_eval(cfg, policy=policy, engine=open_engine(cfg.engine) if method != "direct" else None)
    rows = read_predictions(result.run_dir)
    assert [(r["id"], r["answer"], r["strict_em"]) for r in rows] == [("a", "Paris", 1.0), ("b", "Rome", 0.0),
                                                                    ("c", "Rome", 1.0)]
    assert all(r["searches"] == searches for r in rows)
    if method == "rag":  # the question's documents are in the first prompt
        assert "<information>Doc 1" in policy.history[0][0] and "Question: Capital of France?" in policy.history[0][0]
    if method == "direct":
        assert "search" not in policy.history[0][0].split("Question:")[0]
    entry = result.report["datasets"][0]
    assert entry["name"] == "qa" and entry["questions"] == 3
    assert entry["scores"]["strict_em"]["mean"] == pytest.approx(2 / 3, abs=1e-4)
    md = (result.run_dir / "report.md").read_text()
    assert "strict EM (Search-R1" in md and "cover-EM (ZeroSearch" in md and f"Evaluation: {method}" in md
    stored = [json.loads(line) for line in (result.run_dir / "trajectories.jsonl").open()]
    assert [s["trajectory_id"] for s in stored] == [r["trajectory_id"] for r in rows]


def test_samples_give_pass_at_k_and_majority_at_k_and_a_coverage_plot(tmp_path):
    answers = iter(["Paris", "Lyon", "Lyon", "Paris"] * 3)
    policy = FakeBackend(default=lambda prompt: f"<think>t</think>\n<answer>{next(answers)}</answer>")
    rows = [{"id": "a", "question": "Capital of France?", "golden_answers": ["Paris"]}]
    cfg = config(tmp_path, qa_file(tmp_path, rows), method="direct", samples=4)
    report = run_eval(cfg, policy=policy).report
    entry = report["datasets"][0]
    assert [p["mean"] for p in entry["pass_at_k"]["strict_em"]] == pytest.approx([0.5, 5 / 6, 1.0, 1.0], abs=1e-4)
    # majority@k at the k the report shows (1, 2, 4, …, n): 2 Paris, 2 Lyon
    assert [(p["k"], p["mean"]) for p in entry["majority_at_k"]["strict_em"]] == [(1, 0.5), (2, 0.5), (4, 0.5)]
    assert entry["scores"]["strict_em"]["mean"] == 0.5
    assert (tmp_path / "run" / "coverage.png").stat().st_size > 1000
    assert "pass@4" in (tmp_path / "run" / "report.md").read_text()


def test_a_finished_run_is_not_recomputed_and_other_settings_are_refused(tmp_path):
    path = qa_file(tmp_path, ROWS)
    cfg = config(tmp_path, path, method="direct")
    first = FakeBackend(default=scripted_policy)
    run_eval(cfg, policy=first)
    again = FakeBackend(default=scripted_policy)
    result = run_eval(cfg, policy=again)
    assert again.history == [] and result.new_units == 0 and result.resumed_units == 3
    with pytest.raises(ZslError, match="other settings.*samples"):
        run_eval(config(tmp_path, path, method="direct", samples=2), policy=again)


def test_a_unit_cut_short_is_run_again_and_nothing_appears_twice(tmp_path):
    path = qa_file(tmp_path, ROWS)
    cfg = config(tmp_path, path, method="direct", samples=2)
    calls = {"n": 0}

    def dies_on_the_fourth_call(prompt: str) -> str:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second question's samples
        return scripted_policy(prompt)

    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, policy=FakeBackend(default=dies_on_the_fourth_call))
    assert len(read_predictions(tmp_path / "run")) == 2  # the first question only: its unit finished
    with (tmp_path / "run" / "predictions.jsonl").open("a") as handle:  # and a torn line from a kill
        handle.write('{"unit": 1, "unit_rows": 2, "dat')
    run_eval(cfg, policy=FakeBackend(default=scripted_policy))
    rows = read_predictions(tmp_path / "run")
    assert sorted((r["id"], r["sample"]) for r in rows) == [(q, s) for q in "abc" for s in (0, 1)]
    stored = [json.loads(line)["trajectory_id"] for line in (tmp_path / "run" / "trajectories.jsonl").open()]
    assert sorted(stored) == sorted(r["trajectory_id"] for r in rows)


@pytest.mark.parametrize(("content", "message"), [
    ('{"id": 1, "golden_answers": ["x"]}\n', "no usable rows.*missing 'question'"),
    ('{"id": 1, "question": "q?"}\n', "no usable rows.*golden_answers"),
    ("", "no usable rows.*empty"),
])
def test_bad_qa_files_are_one_line_errors_and_write_nothing(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ZslError, match=message):
        run_eval(config(tmp_path, path, method="direct"), policy=FakeBackend())
    assert not (tmp_path / "run").exists()


def test_one_data_file_may_be_given_as_a_string():
    assert EvalConfig.model_validate({"data": "qa.jsonl"}).data == ["qa.jsonl"]


def test_broken_rows_are_left_out_and_the_report_says_so(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"id": "x", "question": "q?"}\n' + "{not json\n")
    result = run_eval(config(tmp_path, path, method="direct"), policy=FakeBackend(default=scripted_policy))
    assert result.report["average"]["questions"] == 1
    assert len(result.notes) == 1 and "skipped 2 broken rows" in result.notes[0]
    assert result.report["skipped_rows"] == result.notes
    assert "Broken rows left out:** 1 questions from" in (tmp_path / "run" / "report.md").read_text()


def test_parquet_layouts_search_r1_and_unknown(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    search_r1 = tmp_path / "nq_test.parquet"
    pq.write_table(pa.table({
        "id": ["a"], "question": ["Capital of France?"], "data_source": ["nq"],
        "reward_model": [{"style": "rule", "ground_truth": {"target": ["Paris"]}}],
    }), search_r1)
    result = run_eval(config(tmp_path, search_r1, method="direct"), policy=FakeBackend(default=scripted_policy))
    assert result.report["datasets"][0]["name"] == "nq" and result.report["datasets"][0]["scores"]["strict_em"]["mean"] == 1
    unknown = tmp_path / "other.parquet"
    pq.write_table(pa.table({"prompt": ["x"], "label": ["y"]}), unknown)
    with pytest.raises(ZslError, match="unknown parquet layout.*prompt, label"):
        run_eval(config(tmp_path, unknown, method="direct", out=str(tmp_path / "run2")), policy=FakeBackend())


def test_a_question_that_overflows_the_context_is_recorded_not_fatal(tmp_path):
    rows = [{"id": "long", "question": "word " * 400, "golden_answers": ["x"]}] + ROWS[:1]
    cfg = config(tmp_path, qa_file(tmp_path, rows), method="direct",
                 agent={"grammar": "off", "max_context": 256, "max_tokens_per_turn": 64, "seed": 0})
    run_eval(cfg, policy=FakeBackend(default=scripted_policy))
    rows = read_predictions(tmp_path / "run")
    assert [r["stop_reason"] for r in rows] == ["context_limit", "answer"] and rows[0]["answer"] is None


def test_compare_pairs_the_same_questions_and_reports_the_difference(tmp_path):
    path = qa_file(tmp_path, ROWS)
    run_eval(config(tmp_path, path, method="direct", out=str(tmp_path / "a")), policy=FakeBackend(default="<answer>Rome</answer>"))
    run_eval(config(tmp_path, path, method="direct", out=str(tmp_path / "b")), policy=FakeBackend(default=scripted_policy))
    result = compare_runs([tmp_path / "a", tmp_path / "b"])
    strict = next(r for r in result["rows"] if r["metric"] == "strict_em")
    assert strict["questions"] == 3
    assert strict["runs"][0]["mean"] == pytest.approx(1 / 3) and strict["runs"][1]["mean"] == pytest.approx(2 / 3, abs=1e-4)
    assert strict["runs"][1]["diff"]["mean"] == pytest.approx(1 / 3)
    assert "Δ +0.333" in render_comparison(result)
    with pytest.raises(ZslError, match="not an evaluation run"):
        compare_runs([tmp_path / "a", tmp_path])


def test_compare_pairs_same_id_questions_of_two_files_apart_and_refuses_other_questions(tmp_path):
    first = qa_file(tmp_path, [{"id": 0, "question": "Capital of France?", "golden_answers": ["Paris"],
                                "data_source": "geo"}], "one.jsonl")
    second = qa_file(tmp_path, [{"id": 0, "question": "Capital of Italy?", "golden_answers": ["Rome"],
                                 "data_source": "geo"}], "two.jsonl")
    both = {"data": [str(first), str(second)], "method": "direct"}
    run_eval(config(tmp_path, first, **both, out=str(tmp_path / "a")), policy=FakeBackend(default="<answer>Rome</answer>"))
    run_eval(config(tmp_path, first, **both, out=str(tmp_path / "b")), policy=FakeBackend(default=scripted_policy))
    strict = next(r for r in compare_runs([tmp_path / "a", tmp_path / "b"])["rows"] if r["metric"] == "strict_em")
    assert strict["questions"] == 2  # one id in two files: two questions, not one averaged pair
    assert [run["mean"] for run in strict["runs"]] == pytest.approx([0.5, 1.0], abs=1e-4)
    run_eval(config(tmp_path, second, method="direct", out=str(tmp_path / "c")), policy=FakeBackend(default=scripted_policy))
    with pytest.raises(ZslError, match="differs between"):
        compare_runs([tmp_path / "a", tmp_path / "c"])


def test_reading_predictions_leaves_a_live_run_file_alone(tmp_path):
    run_eval(config(tmp_path, qa_file(tmp_path, ROWS[:1]), method="direct"), policy=FakeBackend(default=scripted_policy))
    path = tmp_path / "run" / "predictions.jsonl"
    with path.open("a") as handle:  # another question's unit, half appended by a running evaluation
        handle.write(json.dumps({"unit": 1, "unit_rows": 2, "index": 1}) + "\n")
    before = path.read_bytes()
    assert len(read_predictions(tmp_path / "run")) == 1
    compare_runs([tmp_path / "run", tmp_path / "run"])
    assert path.read_bytes() == before


def report_without_timings(path) -> dict:
    report = json.loads(path.read_text())
    for entry in [*report["datasets"], report["average"]]:
        entry.pop("seconds_per_question", None)
        entry.pop("decode_tokens_per_second", None)
    return report


def test_ctrl_c_then_the_same_command_gives_each_sample_once_and_the_uninterrupted_report(tmp_path):
    """The real command on the embedded model (llama.cpp) against BM25: SIGINT once the first question is
    stored, the same command again, and the result equals a run that was never interrupted."""
    base = [sys.executable, "-m", "zerosearch_lite.cli", "eval", "--data", str(DATA / "hotpot_small.jsonl"),
            "--limit", "3", "--samples", "2", "--engine", "corpus", "--corpus", CORPUS, "--max-turns", "2",
            "--max-tokens-per-turn", "48", "-k", "2"]
    env = os.environ | {"ZSL_THREADS": "1"}
    straight = subprocess.run([*base, "--out", str(tmp_path / "straight")], capture_output=True, text=True, env=env,
                              timeout=600, check=False)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "interrupted"
    process = subprocess.Popen([*base, "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, preexec_fn=takes_ctrl_c)  # noqa: PLW1509 - only resets a signal
    predictions = run / "predictions.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (sum(1 for _ in predictions.open()) if predictions.exists() else 0) < 2:
        time.sleep(0.05)  # counted, not read with `read_predictions`, which may rewrite the file
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err  # the interrupt happened: the run had not finished
    assert 2 <= len(read_predictions(run)) < 6 and "run the same command to resume" in " ".join(err.split())
    resumed = subprocess.run([*base, "--out", str(run)], capture_output=True, text=True, env=env, timeout=600,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_predictions(run)
    assert sorted((r["id"], r["sample"]) for r in rows) == sorted(
        (r["id"], r["sample"]) for r in read_predictions(tmp_path / "straight"))
    assert len({(r["id"], r["sample"]) for r in rows}) == len(rows) == 6
    assert report_without_timings(run / "report.json") == report_without_timings(tmp_path / "straight" / "report.json")
