"""How well a simulator obeys the useful/noisy instruction: the "usefulness gap", with and without the
simulated engine's noise guard.

For held-out questions with gold answers, the simulator writes k useful and k noisy documents for the
question used as the query (with the training context: question and gold answers, as in GRPO). A mode
"holds the answer" when one of its documents holds a gold answer (normalized, whole words, the guard's
own test). The gap is useful-rate minus noisy-rate: high for a controllable simulator, near zero for one
that ignores the instruction. Beside it: the share of noisy documents holding an answer, documents and
format compliance (k "Doc i:" documents written), seconds and guard regenerations per query.
Results are kept per question (`QuestionRow`), so a stored evaluation resumes where it stopped; this
module loads no model and draws nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from .. import paths
from ..agent.config import AgentConfig
from ..config_cli import flag
from ..evaluation.datasets import QAExample
from ..simulator.config import EngineConfig
from ..simulator.simulated import GuardMode, NoiseGuard, SimulatedSearchEngine, holds_answer
from ..simulator.types import SearchContext, SearchResult


class SimEvalConfig(BaseModel):
    """`zsl sim eval`: which simulators to compare, on which held-out questions, with which noise guards."""

    data: str = Field(..., description="QA JSONL/parquet with question + golden_answers.")
    base: str = Field("embedded", description="Base simulator model.")
    adapter: list[str] = Field(default_factory=list,
                               description="Tuned simulator: a peft adapter folder of the base (repeatable).")
    tuned: list[str] = Field(default_factory=list,
                             description="Tuned simulator as a full model: a merged folder or GGUF (repeatable).")
    backend: Literal["auto", "llama.cpp", "transformers"] = Field(
        "transformers", description="Backend of every simulator row (auto: by each model's format).")
    preset: Literal["zsl", "zerosearch"] = EngineConfig.model_fields["preset"]
    limit: int = Field(10, ge=1, description="Questions evaluated.")
    offset: int = Field(0, ge=0, description="Skip the first N questions (e.g. those used for training).")
    k: int = AgentConfig.model_fields["k"]
    # Not the engine's auto default: a tuned simulator is measured as it writes, free, unless asked.
    structured: bool = Field(False, json_schema_extra=flag("--structured/--free"),
                             description="Force exactly k 'Doc i:' lines with a grammar.")
    guard: list[GuardMode] = Field(
        default_factory=lambda: ["drop"],
        description="Noise guard(s) shown beside the unguarded simulator (repeatable): drop, retry, or off.")
    guard_attempts: int = Field(2, ge=0, le=8, description=NoiseGuard.model_fields["attempts"].description)
    out: str | None = Field(
        None, description="Per-question rows, kept so a rerun resumes (default: $ZSL_HOME/sim-eval/<data>.jsonl).")

    def rows_file(self) -> Path:
        return Path(self.out) if self.out else paths.home() / "sim-eval" / f"{Path(self.data).stem}.jsonl"


@dataclass
class QuestionRow:
    """One question's useful and noisy searches under one simulator setting."""

    setting: str  # the simulator, guard and options that produced it: with `question_id`, the resume key
    question_id: str
    useful_hit: bool
    noisy_hit: bool
    noisy_docs: int
    noisy_docs_with_answer: int
    docs: int
    formatted: int  # searches (of 2) whose output parsed as k "Doc i:" documents, before the guard
    seconds: float
    generated_tokens: int
    guard_retries: int
    guard_dropped: int
    guard_replaced: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> QuestionRow | None:
        """The row of a stored record, or None for a record of another shape (an older file, a torn line)."""
        names = {f.name for f in fields(cls)}
        if not names <= set(record):
            return None
        try:
            return cls(**{name: record[name] for name in names})
        except TypeError:
            return None


@dataclass
class UsefulnessReport:
    name: str
    guard: str
    questions: int
    useful_rate: float
    noisy_rate: float
    noisy_doc_rate: float  # share of noisy documents holding a gold answer
    docs_per_query: float
    format_ok: float
    seconds: float
    generated_tokens: int
    retries_per_query: float

    @property
    def gap(self) -> float:
        return self.useful_rate - self.noisy_rate

    @property
    def seconds_per_query(self) -> float:
        return self.seconds / max(1, 2 * self.questions)


def question_row(setting: str, example: QAExample, useful: SearchResult, noisy: SearchResult, k: int) -> QuestionRow:
    golds = example.golden_answers
    both = (useful, noisy)
    return QuestionRow(
        setting=setting,
        question_id=example.id,
        useful_hit=any(holds_answer(d, golds) for d in useful.docs),
        noisy_hit=any(holds_answer(d, golds) for d in noisy.docs),
        noisy_docs=len(noisy.docs),
        noisy_docs_with_answer=sum(holds_answer(d, golds) for d in noisy.docs),
        docs=len(useful.docs) + len(noisy.docs),
        formatted=sum(not any("markers" in w for w in r.warnings) and len(r.docs) + r.guard_dropped == k
                      for r in both),
        seconds=sum(r.seconds for r in both),
        generated_tokens=sum(r.generated_tokens for r in both),
        guard_retries=sum(r.guard_retries for r in both),
        guard_dropped=noisy.guard_dropped,
        guard_replaced=noisy.guard_replaced,
    )


def evaluate_rows(
    engine: SimulatedSearchEngine,
    examples: Sequence[QAExample],
    *,
    setting: str,
    k: int = 5,
    batch_size: int = 8,
    on_rows: Callable[[list[QuestionRow]], None] = lambda rows: None,
) -> list[QuestionRow]:
    """Useful and noisy documents for every question, `batch_size` questions per backend batch; `on_rows`
    gets each batch's rows as soon as they exist (to store them, to show progress)."""
    rows: list[QuestionRow] = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        requests = [
            (e.question, mode, SearchContext(e.question, e.golden_answers))
            for mode in ("useful", "noisy")
            for e in batch
        ]
        results = engine.lookup_requests(requests, k)  # type: ignore[arg-type]
        useful, noisy = results[: len(batch)], results[len(batch) :]
        batch_rows = [question_row(setting, e, u, n, k) for e, u, n in zip(batch, useful, noisy, strict=True)]
        rows.extend(batch_rows)
        on_rows(batch_rows)
    return rows


def summarize(name: str, guard: str, rows: Iterable[QuestionRow]) -> UsefulnessReport:
    rows = list(rows)
    n = max(1, len(rows))
    noisy_docs = sum(r.noisy_docs for r in rows)
    return UsefulnessReport(
        name=name,
        guard=guard,
        questions=len(rows),
        useful_rate=sum(r.useful_hit for r in rows) / n,
        noisy_rate=sum(r.noisy_hit for r in rows) / n,
        noisy_doc_rate=sum(r.noisy_docs_with_answer for r in rows) / max(1, noisy_docs),
        docs_per_query=sum(r.docs for r in rows) / (2 * n),
        format_ok=sum(r.formatted for r in rows) / (2 * n),
        seconds=sum(r.seconds for r in rows),
        generated_tokens=sum(r.generated_tokens for r in rows),
        retries_per_query=sum(r.guard_retries for r in rows) / (2 * n),
    )


def evaluate_simulator(
    engine: SimulatedSearchEngine,
    examples: list[QAExample],
    *,
    name: str,
    k: int = 5,
    batch_size: int = 8,
    on_progress: Callable[[int], None] = lambda done: None,
) -> UsefulnessReport:
    """The report of one simulator setting over `examples`, nothing stored."""
    done = 0

    def progress(rows: list[QuestionRow]) -> None:
        nonlocal done
        done += len(rows)
        on_progress(done)

    rows = evaluate_rows(engine, examples, setting=name, k=k, batch_size=batch_size, on_rows=progress)
    return summarize(name, engine.guard.mode, rows)
