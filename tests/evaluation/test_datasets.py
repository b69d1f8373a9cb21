import json

import pytest

from zerosearch_lite.errors import ZslError
from zerosearch_lite.evaluation.datasets import load_qa
from zerosearch_lite.train_lite.rewards import reward


def test_good_and_broken_rows_are_counted(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [
        json.dumps({"id": "a", "question": "q1?", "golden_answers": ["x", "y"]}),
        "{not json",
        json.dumps({"question": "", "golden_answers": ["x"]}),
        json.dumps({"question": "q2?", "golden_answers": []}),
        json.dumps(["a list"]),
        json.dumps({"question": "q3?", "golden_answers": "single"}),
        "",
    ]
    path.write_text("\n".join(rows))
    ds = load_qa(path)
    assert [e.question for e in ds.examples] == ["q1?", "q3?"]
    assert ds.examples[1].golden_answers == ("single",)
    assert ds.skipped == 4 and ds.reasons[0].startswith("line 2: invalid JSON")
    assert "skipped 4 broken rows" in ds.summary()


def test_field_mapping_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "qa.parquet"
    pq.write_table(pa.table({"query": ["q?"], "answer": [["a"]]}), path)
    ds = load_qa(path, question_field="query", answers_field="answer")
    assert ds.examples[0].golden_answers == ("a",)


def test_errors(tmp_path):
    with pytest.raises(ZslError, match="dataset not found"):
        load_qa(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage\n")
    with pytest.raises(ZslError, match="no usable rows"):
        load_qa(bad)


def test_the_shipped_data_loads_whole_and_is_a_closed_world():
    import json

    from conftest import REPO_DATA

    assert (len(load_qa(REPO_DATA / "nq_open_dev.jsonl")), len(load_qa(REPO_DATA / "hotpot_dev_sample.jsonl"))) == (3610, 53)
    titles = {json.loads(line)["contents"].split("\n")[0].strip('"')
              for line in (REPO_DATA / "wiki_sample_corpus.jsonl").open()}
    supporting = {t for line in (REPO_DATA / "hotpot_dev_sample.jsonl").open()
                  for t in json.loads(line)["supporting_titles"]}
    assert len(titles) > 900 and supporting <= titles  # every gold passage is in the corpus (DPR passages share titles)


def test_reward_zero_without_answer():
    assert reward([None, "Paris", "paris france"], [["Paris"]] * 3) == [0.0, 1.0, pytest.approx(2 / 3)]
    assert reward(["paris"], [["Paris"]], kind="em") == [1.0]
