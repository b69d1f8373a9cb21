"""The usefulness gap with and without the noise guard (`train_lite.sim_eval`) on a scripted simulator, and
`zsl sim eval` storing per-question rows and resuming from them on the tiny random model."""

from __future__ import annotations

import json
from dataclasses import replace

from conftest import DATA
from typer.testing import CliRunner

from zerosearch_lite.evaluation.datasets import QAExample
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.simulator.prompts import PRESETS
from zerosearch_lite.simulator.simulated import NoiseGuard, SimulatedSearchEngine
from zerosearch_lite.train_lite.sim_cli import sim_app
from zerosearch_lite.train_lite.sim_eval import QuestionRow, evaluate_simulator

EXAMPLES = [QAExample("q1", "Who wrote Frankenstein?", ("Mary Shelley",)),
            QAExample("q2", "Who wrote Dracula?", ("Bram Stoker",))]


def obedient_but_leaky(prompt: str) -> str:
    """Useful documents state the answer; noisy ones repeat the answer the prompt told them to avoid."""
    answer = "Mary Shelley" if "Frankenstein" in prompt else "Bram Stoker"
    if "unhelpful" in prompt:
        return f"Doc 1: (Rumour) Some say {answer} did it.\nDoc 2: (Weather) Rain expected all week long."
    return f"Doc 1: (Book) It was written by {answer}.\nDoc 2: (Library) The catalogue lists the novel."


def test_guard_takes_noisy_answers_to_zero_and_counts_its_cost():
    unguarded = evaluate_simulator(SimulatedSearchEngine(FakeBackend(default=obedient_but_leaky), structured=False),
                                   EXAMPLES, name="base", k=2)
    backend = FakeBackend(default=obedient_but_leaky)
    guarded = evaluate_simulator(SimulatedSearchEngine(backend, structured=False,
                                                       guard=NoiseGuard(mode="drop", attempts=1)),
                                 EXAMPLES, name="base", k=2)
    assert (unguarded.guard, unguarded.useful_rate, unguarded.noisy_rate, unguarded.noisy_doc_rate) == ("off", 1, 1, 0.5)
    assert unguarded.gap == 0 and unguarded.retries_per_query == 0 and unguarded.format_ok == 1
    assert (guarded.guard, guarded.useful_rate, guarded.noisy_rate, guarded.noisy_doc_rate) == ("drop", 1, 0, 0)
    assert guarded.gap == 1
    assert guarded.retries_per_query == 0.5  # one regeneration per noisy query, none for useful ones
    assert guarded.docs_per_query == 1.5 and guarded.format_ok == 1  # the dropped leak was written, then removed
    assert len(backend.history) == 6 and guarded.generated_tokens > unguarded.generated_tokens
    assert guarded.seconds_per_query == guarded.seconds / 4


def test_stored_row_reads_back_and_foreign_records_are_ignored():
    row = QuestionRow("base|x|guard=off", "q1", True, False, 2, 0, 4, 2, 1.5, 80, 0, 0, 0)
    assert QuestionRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row
    assert QuestionRow.from_dict({"setting": "base", "question_id": "q1"}) is None


def test_sim_eval_keeps_rows_and_resumes_without_redoing_a_question(tmp_path, tiny_model_dir, monkeypatch):
    rows_file = tmp_path / "eval.jsonl"
    # Shrunk for speed: one document a search, the drop guard (a random model's useful documents never
    # hold the answer, so the retry guard would regenerate each of them twice)
    args = ["eval", "--data", str(DATA / "hotpot_small.jsonl"), "--base", str(tiny_model_dir), "--offset", "4",
            "-k", "1", "--guard", "drop", "--out", str(rows_file)]
    runner = CliRunner()
    first = runner.invoke(sim_app, [*args, "--limit", "1"])
    assert first.exit_code == 0, first.output
    assert len(rows_file.read_text().splitlines()) == 2  # one question, unguarded and with the guard
    second = runner.invoke(sim_app, [*args, "--limit", "2"])
    assert second.exit_code == 0, second.output
    stored = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert len(stored) == 4 and len({(r["setting"], r["question_id"]) for r in stored}) == 4  # nothing twice
    assert {r["setting"].rsplit("|", 1)[1] for r in stored} == {"guard=off", "guard=drop/2"}
    assert "usefulness gap on 2 questions" in second.output and "drop" in second.output
    again = runner.invoke(sim_app, [*args, "--limit", "2", "--base", str(tmp_path / "no-such-model")])
    assert again.exit_code != 0  # another model: its rows are not the stored ones, so it must load (and fails)
    assert runner.invoke(sim_app, [*args, "--limit", "2"]).exit_code == 0
    assert len(rows_file.read_text().splitlines()) == 4
    # Rows made under other wording (or another documents grammar) are not this simulator's: redone.
    monkeypatch.setitem(PRESETS, "zsl", replace(PRESETS["zsl"], version="zsl-reworded"))
    assert runner.invoke(sim_app, [*args, "--limit", "1"]).exit_code == 0
    assert len(rows_file.read_text().splitlines()) == 6
