"""Run metrics: upsert per step, and readers that poll the file while a trainer writes it."""

import sqlite3

from zerosearch_lite.train_lite.metrics import METRICS_FILE, MetricsStore, StepMetrics, read_metrics


def test_a_rerun_step_replaces_its_row_and_truncate_drops_later_ones(tmp_path):
    store = MetricsStore(tmp_path)
    for step in (1, 2, 3):
        store.write(StepMetrics(step=step, reward_mean=step / 10))
    store.write(StepMetrics(step=2, reward_mean=0.9))
    assert store.truncate_after(2) == 1
    store.close()
    assert [(r.step, r.reward_mean) for r in read_metrics(tmp_path)] == [(1, 0.1), (2, 0.9)]


def test_reader_sees_committed_rows_while_the_writer_holds_a_write_transaction(tmp_path):
    store = MetricsStore(tmp_path)
    store.write(StepMetrics(step=1, reward_mean=0.5))
    writer = sqlite3.connect(tmp_path / METRICS_FILE)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO metrics (step, time) VALUES (2, 'now')")
    try:
        assert [r.step for r in read_metrics(tmp_path)] == [1]
    finally:
        writer.rollback()
        writer.close()
        store.close()


def test_reader_of_a_file_without_its_schema_yet_gets_no_rows_and_creates_nothing(tmp_path):
    assert read_metrics(tmp_path) == []
    (tmp_path / METRICS_FILE).touch()  # the trainer's connect() has created the file, not yet the table
    assert read_metrics(tmp_path) == []
    assert (tmp_path / METRICS_FILE).stat().st_size == 0
