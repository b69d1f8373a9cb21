"""Stage 1a of ZeroSearch: run the policy against a *real* engine and turn what it saw into SFT data for
the simulator.

For every question, the agent searches a real engine (BM25 corpus or HTTP). Every (query, documents)
pair is labelled by the trajectory's outcome: documents from trajectories that reached a gold answer
are *useful*, the others *noisy* (no judge model needed). Each pair becomes one chat example: the
simulation prompt for that mode (with the question and gold answers, as in training) → the documents
as "Doc i:" lines. Records are appended per question, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ..agent.answers import exact_match, token_f1
from ..agent.config import AgentConfig, PolicyConfig
from ..agent.loop import Agent
from ..config_cli import flag
from ..evaluation.datasets import QAExample
from ..saved_settings import check_rerun
from ..simulator.config import EngineConfig
from ..simulator.prompts import get_preset
from ..simulator.simulated import holds_answer, leakable_answers
from ..simulator.types import Doc, Mode, SearchContext
from .jsonl import JsonlWriter, read_records

COLLECT_FILE = "trajectories.jsonl"
SFT_FILE = "sft.jsonl"
# Settings a rerun into the same folder may change: where the files are (`out`) and how many questions it takes
# (`limit`: a larger one collects more questions, each once; rows depend only on their own question). Everything
# else (data and its fields, policy, engine, agent, labelling, preset) changes the rows a question gets, and
# rows made two ways must not end up in one sft.jsonl.
# (`engine.http_retry_s`, how long a search server is waited for, changes no row either.)
RERUN_SETTINGS = frozenset({"out", "limit", "engine.http_retry_s"})
REAL_ENGINES = ("corpus", "http")


def _collect_agent() -> AgentConfig:
    return AgentConfig(max_turns=3, seed=0)


def _real_engine() -> EngineConfig:
    return EngineConfig(kind="corpus")


class CollectConfig(BaseModel):
    """`zsl sim collect`: a policy searches a real engine; what it saw becomes simulator SFT data."""

    data: str = Field(..., description="QA JSONL/parquet with question + golden_answers.")
    out: str = Field(..., description="Output folder (trajectories.jsonl, sft.jsonl); rerun to resume.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    engine: EngineConfig = Field(default_factory=_real_engine)
    agent: AgentConfig = Field(default_factory=_collect_agent)
    limit: int | None = Field(None, ge=1, description="Use the first N questions.")
    labelling: Literal["outcome", "contains"] = Field(
        "outcome", description="Label a search's documents useful when the trajectory reached a gold answer "
        "(outcome) or when the documents hold one (contains); noisy otherwise.",
    )
    sft_preset: Literal["zsl", "zerosearch"] = Field(
        "zsl", json_schema_extra=flag("--sft-preset", "--preset"),
        description="Simulation prompt of the SFT rows: zsl or zerosearch.",
    )
    question_field: str = Field("question", description="Field of the question in the QA file.")
    answers_field: str = Field("golden_answers", description="Field of the gold answers in the QA file.")

    @model_validator(mode="after")
    def _real(self) -> CollectConfig:
        if self.engine.kind not in REAL_ENGINES:
            raise ValueError(f"collect needs a real engine ({' or '.join(REAL_ENGINES)}), not {self.engine.kind}")
        return self


def check_saved_settings(cfg: CollectConfig) -> None:
    """Refuse to add to `cfg.out` when the collection saved there ran under settings that change its rows."""
    check_rerun(cfg, Path(cfg.out), "a collection", free=RERUN_SETTINGS)


def render_docs(docs: list[Doc]) -> str:
    """The simulator's target text: the same "Doc i: (Title) text" lines the parser reads back."""
    return "\n".join(f"Doc {i}: " + (f"({d.title}) {d.text}" if d.title else d.text) for i, d in enumerate(docs, 1))


def sft_example(query: str, docs: list[Doc], mode: Mode, example: QAExample, preset: str, k: int) -> dict:
    context = SearchContext(example.question, example.golden_answers)
    messages = get_preset(preset).messages(query, k, mode, context)
    return {
        "messages": messages + [{"role": "assistant", "content": render_docs(docs)}],
        "mode": mode,
        "query": query,
        "question_id": example.id,
    }


@dataclass
class CollectStats:
    questions: int = 0
    resumed: int = 0
    correct: int = 0
    useful: int = 0
    noisy: int = 0


def done_ids(out_dir: Path) -> set[str]:
    return {r["question_id"] for r in read_records(out_dir / COLLECT_FILE) if "question_id" in r}


def drop_orphan_rows(out_dir: Path, done: set[str]) -> int:
    """Remove SFT rows of a question whose trajectory record was never written (killed in between)."""
    path = out_dir / SFT_FILE
    rows = list(read_records(path))
    kept = [r for r in rows if r.get("question_id") in done]
    if len(kept) != len(rows):
        tmp = path.with_suffix(".tmp")
        with JsonlWriter(tmp) as writer:
            for row in kept:
                writer.write(row)
        tmp.replace(path)
    return len(rows) - len(kept)


def label(traj_correct: bool, docs: list[Doc], golds: tuple[str, ...], how: str) -> Mode:
    """`outcome`: the trajectory reached a gold answer; `contains`: these documents hold one, by the noise
    guard's rule (`holds_answer`). A yes/no question's documents cannot be seen to hold its answer, so
    `contains` labels those by outcome."""
    if how == "contains" and leakable_answers(golds):
        return "useful" if any(holds_answer(d, golds) for d in docs) else "noisy"
    return "useful" if traj_correct else "noisy"


def collect(
    agent: Agent,
    examples: list[QAExample],
    out_dir: str | Path,
    *,
    preset: str = "zsl",
    correct_if: str = "em",
    labelling: str = "outcome",
    on_progress: Callable[[CollectStats], None] = lambda s: None,
) -> CollectStats:
    """Collect trajectories for `examples` into `out_dir`, skipping questions already collected."""
    out = Path(out_dir)
    stats = CollectStats()
    seen = done_ids(out)
    drop_orphan_rows(out, seen)
    k = agent.config.k
    with JsonlWriter(out / COLLECT_FILE) as raw, JsonlWriter(out / SFT_FILE) as sft:
        for example in examples:
            if example.id in seen:
                stats.resumed += 1
                on_progress(stats)
                continue
            traj = agent.run(example.question)
            score = exact_match if correct_if == "em" else token_f1
            correct = traj.finished and score(traj.answer, example.golden_answers) >= (1.0 if correct_if == "em" else 0.5)
            searches = [s for s in traj.searches if s.docs]
            modes = [label(correct, s.docs, example.golden_answers, labelling) for s in searches]
            # SFT rows first, the trajectory record last: the record marks the question as done.
            for search, mode in zip(searches, modes, strict=True):
                sft.write(sft_example(search.query, search.docs, mode, example, preset, k))
            raw.write(
                {
                    "question_id": example.id,
                    "question": example.question,
                    "golden_answers": list(example.golden_answers),
                    "answer": traj.answer,
                    "correct": correct,
                    "searches": [
                        {"query": s.query, "mode": m, "docs": [d.to_dict() for d in s.docs]}
                        for s, m in zip(searches, modes, strict=True)
                    ],
                }
            )
            stats.questions += 1
            stats.correct += int(correct)
            stats.useful += modes.count("useful")
            stats.noisy += modes.count("noisy")
            on_progress(stats)
    return stats
