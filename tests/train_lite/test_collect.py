"""Collection against a scripted engine and policy: labelling, SFT rows, resume after interruption."""

import json

from zerosearch_lite.agent.config import AgentConfig
from zerosearch_lite.agent.loop import Agent
from zerosearch_lite.errors import ZslError
from zerosearch_lite.evaluation.datasets import QAExample
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.simulator.engine import SearchEngine
from zerosearch_lite.simulator.parsing import parse_documents
from zerosearch_lite.simulator.types import Doc, SearchResult
from zerosearch_lite.train_lite.collect import COLLECT_FILE, SFT_FILE, collect, render_docs


class ListEngine(SearchEngine):
    def lookup(self, queries, k=5, *, mode=None, context=None):
        return [SearchResult(q, [Doc("Paris", "Paris is the capital of France.", "corpus")]) for q in queries]


EXAMPLES = [QAExample("1", "capital of france?", ("Paris",)), QAExample("2", "capital of peru?", ("Lima",))]


def policy_outputs():
    return ["<search>capital</search>", "<answer>Paris</answer>"] * 2


def test_outcome_labels_and_chat_rows(tmp_path):
    agent = Agent(FakeBackend(policy_outputs()), ListEngine(), AgentConfig(grammar="off", k=3))
    stats = collect(agent, EXAMPLES, tmp_path)
    assert (stats.questions, stats.correct, stats.useful, stats.noisy) == (2, 1, 1, 1)
    rows = [json.loads(line) for line in (tmp_path / SFT_FILE).read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["useful", "noisy"]
    prompt, target = rows[0]["messages"][-2]["content"], rows[0]["messages"][-1]["content"]
    assert "capital of france?" in prompt and '"Paris"' in prompt  # training context in the prompt
    assert target == "Doc 1: (Paris) Paris is the capital of France."
    assert parse_documents(target, 3).docs == [("Paris", "Paris is the capital of France.")]


def test_contains_labelling(tmp_path):
    agent = Agent(FakeBackend(policy_outputs()), ListEngine(), AgentConfig(grammar="off"))
    stats = collect(agent, EXAMPLES, tmp_path, labelling="contains")
    assert (stats.useful, stats.noisy) == (1, 1)  # docs hold "Paris", not "Lima"


def test_contains_labelling_reads_the_guards_rule_and_yes_no_by_outcome():
    from zerosearch_lite.train_lite.collect import label

    glued = [Doc("Shelley", "Mary Shelley's first novel.", "corpus")]
    prose = [Doc("Record", "There is no record of it.", "corpus")]
    assert label(False, glued, ("Mary Shelley",), "contains") == "useful"  # punctuation is a word boundary
    assert label(False, prose, ("no",), "contains") == "noisy"  # "no" in prose is not the answer...
    assert label(True, prose, ("no",), "contains") == "useful"  # ...a yes/no question is labelled by outcome


def test_resume_skips_done_questions_and_drops_orphans(tmp_path):
    agent = Agent(FakeBackend(policy_outputs()[:2]), ListEngine(), AgentConfig(grammar="off"))
    collect(agent, EXAMPLES[:1], tmp_path)
    with (tmp_path / SFT_FILE).open("a") as fh:  # a kill after an SFT row, before the trajectory record
        fh.write(json.dumps({"question_id": "2", "mode": "noisy", "messages": []}) + "\n")
        fh.write('{"question_id": "2", "tor')  # and a torn line
    policy = FakeBackend(policy_outputs()[2:])
    stats = collect(Agent(policy, ListEngine(), AgentConfig(grammar="off")), EXAMPLES, tmp_path)
    assert stats.resumed == 1 and stats.questions == 1 and len(policy.history) == 2
    ids = [json.loads(line)["question_id"] for line in (tmp_path / SFT_FILE).read_text().splitlines()]
    assert ids == ["1", "2"]
    assert len((tmp_path / COLLECT_FILE).read_text().splitlines()) == 2


def test_render_docs_without_titles():
    assert render_docs([Doc("", "a b c", "x"), Doc("T", "d e f", "x")]) == "Doc 1: a b c\nDoc 2: (T) d e f"


def run_collect(tmp_path, monkeypatch, *flags):
    """`zsl sim collect` in-process, with the scripted policy and engine in place of real ones."""
    from typer.testing import CliRunner

    from zerosearch_lite.cli import app
    from zerosearch_lite.models import loading
    from zerosearch_lite.simulator import config as engine_config

    monkeypatch.setattr(loading, "load_model", lambda *a, **kw: loading.LoadedModel(None, FakeBackend(
        policy_outputs() * 4)))
    monkeypatch.setattr(engine_config, "open_engine", lambda *a, **kw: ListEngine())
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": e.id, "question": e.question, "golden_answers": list(e.golden_answers)})
                            + "\n" for e in EXAMPLES))
    return CliRunner().invoke(app, ["sim", "collect", "--data", str(data), "--out", str(tmp_path / "out"),
                                    "--corpus", "unused.jsonl", "--grammar", "off", *flags])


def test_a_rerun_resumes_with_the_same_settings_and_refuses_others(tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = run_collect(tmp_path, monkeypatch, "--limit", "1")
    assert first.exit_code == 0, first.output
    assert json.loads((out / "config.json").read_text())["labelling"] == "outcome"
    more = run_collect(tmp_path, monkeypatch, "--limit", "2")  # a larger --limit collects more into the same files
    assert more.exit_code == 0 and "(1 already done)" in more.output, more.output
    rows = (out / SFT_FILE).read_text()
    for flags, changed in ((["--labelling", "contains"], "labelling"), (["-k", "3"], "agent.k"),
                           (["--preset", "zerosearch", "--max-turns", "2"], "agent.max_turns, sft_preset")):
        refused = run_collect(tmp_path, monkeypatch, *flags)
        assert isinstance(refused.exception, ZslError), refused.output
        assert f"other settings ({changed} differ)" in str(refused.exception)
    assert (out / SFT_FILE).read_text() == rows
    assert json.loads((out / "config.json").read_text())["labelling"] == "outcome"
