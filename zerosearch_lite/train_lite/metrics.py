"""Per-step training metrics of a run, stored in `RUN_DIR/metrics.db` (SQLite, WAL).

One row per optimizer step, keyed by `step`, written with upsert: a step that is re-run after a resume
replaces its row instead of duplicating it, and a reader (the TUI's Training screen, `zsl train show`)
can poll the file while the trainer writes. Columns are the `StepMetrics` fields; a field added later is
added to the table by `alter=True`, so old run directories stay readable.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from pydantic import BaseModel

from ..errors import ZslError
from ..storage import open_db, open_db_readonly, utc_now

METRICS_FILE = "metrics.db"


class StepMetrics(BaseModel):
    """What one GRPO (or SFT) step reports. Optional fields are absent for trainers that lack them."""

    step: int
    reward_mean: float | None = None
    reward_std: float | None = None
    noise_p: float | None = None
    kl: float | None = None
    loss: float | None = None
    response_tokens: float | None = None  # mean policy-generated tokens per trajectory
    searches_per_question: float | None = None
    answered_share: float | None = None
    zero_variance_groups: int | None = None
    pool_size: int | None = None
    pool_share: float | None = None  # share of the effective batch drawn from the recycle pool
    recovered: int | None = None  # pool questions that showed reward variance again (cumulative)
    cache_hit_rate: float | None = None
    noisy_share: float | None = None  # share of the step's searches that drew noisy documents
    clip_fraction: float | None = None  # share of trained tokens whose probability ratio was clipped
    searches: int | None = None  # searches sent to the engine this step (the API calls a real engine would bill)
    cache_hits: int | None = None
    simulator_tokens: int | None = None  # tokens the simulator wrote this step (0 for cache hits, real engines)
    search_seconds: float | None = None  # time spent in the engine (the simulator's own compute)
    guarded_documents: int | None = None  # noisy documents the guard caught holding a gold answer (then
    # regenerated, dropped or replaced)
    guard_retries: int | None = None  # regenerations the guard asked of the simulator
    guard_dropped: int | None = None  # caught documents dropped (their searches returned fewer than k)
    guard_seconds: float | None = None  # simulator time of those regenerations (part of search_seconds)
    rollout_seconds: float | None = None
    update_seconds: float | None = None
    lr: float | None = None
    heldout_strict_em: float | None = None  # held-out scores, on the steps that have one
    heldout_cover_em: float | None = None
    heldout_f1: float | None = None
    heldout_searches: float | None = None
    heldout_answered: float | None = None
    warning: str | None = None  # what the step's held-out score warns about (collapse signs)
    time: str | None = None


def _create_metrics(db: sqlite_utils.Database) -> None:
    db["metrics"].create({"step": int, "time": str}, pk="step")


MIGRATIONS = [_create_metrics]


class MetricsStore:
    """The trainer's writer: append (or replace) step rows. Readers use `read_metrics`."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS_FILE
        self.db = open_db(self.path, MIGRATIONS)

    def write(self, row: StepMetrics) -> None:
        record = row.model_dump()
        record["time"] = record["time"] or utc_now()
        with self.db.conn:
            self.db["metrics"].upsert(record, pk="step", alter=True)

    def truncate_after(self, step: int) -> int:
        """Drop rows past `step` (a resume from an earlier checkpoint re-runs them); returns how many."""
        with self.db.conn:
            cursor = self.db.execute("DELETE FROM metrics WHERE step > ?", [step])
        return cursor.rowcount

    def close(self) -> None:
        self.db.conn.close()


@dataclass
class RunTotals:
    """Sums over a run's step rows: what the simulator was asked and what it cost."""

    searches: int = 0
    cache_hits: int = 0
    simulator_tokens: int = 0
    search_seconds: float = 0.0
    guarded_documents: int = 0
    guard_retries: int = 0
    guard_dropped: int = 0
    guard_seconds: float = 0.0


def run_totals(rows: list[StepMetrics]) -> RunTotals:
    totals = RunTotals()
    for row in rows:
        totals.searches += row.searches or 0
        totals.cache_hits += row.cache_hits or 0
        totals.simulator_tokens += row.simulator_tokens or 0
        totals.search_seconds += row.search_seconds or 0.0
        totals.guarded_documents += row.guarded_documents or 0
        totals.guard_retries += row.guard_retries or 0
        totals.guard_dropped += row.guard_dropped or 0
        totals.guard_seconds += row.guard_seconds or 0.0
    return totals


def read_metrics(run_dir: str | Path) -> list[StepMetrics]:
    """All rows of a run directory, or [] when it has none yet (for readers that poll)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    db = open_db_readonly(path)
    try:
        if not db["metrics"].exists():  # the trainer has created the file but not yet its schema
            return []
        query = "SELECT * FROM metrics ORDER BY step"
        return [StepMetrics.model_validate(record) for record in db.query(query)]
    except sqlite3.DatabaseError as exc:
        raise ZslError(f"cannot read {path}: {exc}") from None
    finally:
        db.conn.close()
