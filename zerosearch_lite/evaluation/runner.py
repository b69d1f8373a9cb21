"""`zsl eval`: run a policy over QA files the way the papers do and keep every prediction.

The questions of all files, in file order, are cut into units: one question on backends that run
trajectories one at a time (llama.cpp, with its KV prefix), `batch_questions` on backends that batch
(transformers, servers). A unit runs through the same rollout code as GRPO (`agent.rollout`) with seeds
fixed by (seed, question, sample) or (seed, unit), and its rows are appended to `predictions.jsonl` only
when the whole unit is done. So Ctrl-C loses at most the running unit, and rerunning the same command
skips every finished unit and gives the report an uninterrupted run gives. A finished run is not
recomputed. The run directory holds `config.json`, `trajectories.jsonl`, `predictions.jsonl`,
`report.json`, `report.md` and `coverage.png` (with several samples).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator

from .. import paths
from ..agent.config import AgentConfig, Method, PolicyConfig
from ..agent.types import Invalid, Trajectory
from ..config_cli import flag
from ..saved_settings import check_rerun, exclude_spec
from ..saved_settings import save as save_settings
from ..simulator.config import EngineConfig
from .datasets import QAExample, load_qa
from .metrics import SCORERS

PREDICTIONS_FILE = "predictions.jsonl"
TRAJECTORIES_FILE = "trajectories.jsonl"


# Settings a rerun into the same run folder may change: they do not change a prediction.
RERUN_FREE = frozenset({"out", "bootstrap", "engine.http_retry_s"})


class EvalConfig(BaseModel):
    """Everything an evaluation needs; saved as `config.json` in its run directory."""

    data: list[str] = Field(
        ..., min_length=1, json_schema_extra=flag("--data", "-d"),
        description="QA file: FlashRAG/Search-R1 JSONL or parquet (question + golden_answers); repeat for several.",
    )
    out: str | None = Field(
        None, description="Run directory (default: $ZSL_HOME/evals/<files>-<method>-<hash of the settings>); "
        "rerun the same command to resume.",
    )
    method: Method = Field(
        "agent", description="agent (think/search/answer loop), rag (one retrieval with the question, then "
        "answer) or direct (answer without retrieval).",
    )
    samples: int = Field(1, ge=1, le=256, json_schema_extra=flag("--samples", "-n"),
                         description="Trajectories per question (pass@k for k = 1..N, majority@k at k = 1, 2, "
                         "4, …, N).")
    limit: int | None = Field(None, ge=1, description="The first N questions of each file (a subset: say so).")
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    agent: AgentConfig = Field(default_factory=lambda: AgentConfig(seed=0))
    batch_questions: int = Field(
        8, ge=1, description="Questions per rollout batch where the backend batches (transformers, servers); "
        "llama.cpp runs one question at a time with its KV prefix.",
    )
    rollout_batch: int | None = Field(None, ge=1, description="Largest number of rows per generate call (memory cap).")
    bootstrap: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples of each 95% interval.")
    question_field: str = Field("question", description="Field of the question in the QA files.")
    answers_field: str = Field("golden_answers", description="Field of the gold answers in the QA files.")

    @field_validator("data", mode="before")
    @classmethod
    def _one_file(cls, value):
        """`data = "x.jsonl"` in a config file means the list of that one file."""
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _seeded(self) -> EvalConfig:
        if self.agent.seed is None:
            raise ValueError("an evaluation needs a --seed (resuming relies on it)")
        return self

    def fingerprint(self) -> str:
        """A hash of every setting that changes predictions (not where they go, how they are summarized, or how
        long a search server is waited for)."""
        settings = self.model_dump(exclude=exclude_spec(RERUN_FREE))
        return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        stems = "+".join(Path(d).stem for d in self.data)[:60]
        return paths.home() / "evals" / f"{stems}-{self.method}-{self.fingerprint()}"


@dataclass(frozen=True)
class EvalQuestion:
    index: int  # position among all questions of the run
    dataset: str
    example: QAExample


@dataclass(frozen=True)
class Unit:
    index: int
    questions: tuple[EvalQuestion, ...]


@dataclass
class EvalProgress:
    questions_done: int
    questions_total: int
    strict_em: float | None
    cover_em: float | None
    seconds_per_question: float | None
    resumed: int = 0


@dataclass
class EvalResult:
    run_dir: Path
    report: dict
    resumed_units: int = 0
    new_units: int = 0
    notes: list[str] = field(default_factory=list)


def load_questions(cfg: EvalConfig) -> tuple[list[EvalQuestion], list[str]]:
    """Every question of every file, in order, named by dataset (`data_source`, else the file name), and a
    line per file that had broken rows (skipped, so the report must say the scores cover fewer rows)."""
    found: list[EvalQuestion] = []
    skipped: list[str] = []
    for file in cfg.data:
        dataset = load_qa(file, question_field=cfg.question_field, answers_field=cfg.answers_field, limit=cfg.limit)
        for example in dataset.examples:
            found.append(EvalQuestion(len(found), example.source, example))
        if dataset.skipped:
            skipped.append(dataset.summary())
    return found, skipped


def plan_units(questions: list[EvalQuestion], per_unit: int) -> list[Unit]:
    return [Unit(i // per_unit, tuple(questions[i : i + per_unit])) for i in range(0, len(questions), per_unit)]


def trajectory_seed(base: int, question: int, sample: int) -> int:
    """A 31-bit seed per (run seed, question, sample): llama.cpp takes 32-bit seeds, and turn t adds t."""
    return zlib.crc32(f"{base}:{question}:{sample}".encode()) % (2**31 - 64)


def prediction_row(unit: Unit, question: EvalQuestion, sample: int, traj: Trajectory) -> dict:
    golds = question.example.golden_answers
    answer = traj.answer if traj.finished else None
    scores = {name: score(answer, golds) for name, score in SCORERS.items()}
    u = traj.usage
    return {
        "unit": unit.index,
        "unit_rows": 0,  # filled by the caller: rows of the whole unit (a unit is complete with all of them)
        "dataset": question.dataset,
        "index": question.index,
        "id": question.example.id,
        "sample": sample,
        "question": question.example.question,
        "golden_answers": list(golds),
        "answer": answer,
        **scores,
        "finished": traj.finished,
        "stop_reason": traj.stop_reason,
        "searches": len(traj.searches),
        "turns": traj.turns,
        "invalid_steps": sum(isinstance(s, Invalid) for s in traj.steps),
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cached_prompt_tokens": u.cached_prompt_tokens,
        "prompt_seconds": round(u.prompt_seconds, 4),
        "decode_seconds": round(u.decode_seconds, 4),
        "seconds": round(traj.seconds, 4),
        "trajectory_id": f"{question.dataset}:{question.example.id}:{sample}",
    }


def read_predictions(run_dir: Path, *, repair: bool = False) -> list[dict]:
    """The rows of complete units. With `repair` (the runner, before it appends) a unit cut short by a crash is
    also dropped from the file, to be re-run; readers (`compare`, scripts) leave the file alone, since an
    evaluation may be appending to it at that moment."""
    path = run_dir / PREDICTIONS_FILE
    if not path.exists():
        return []
    rows, torn = [], False
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                torn = True
    by_unit: dict[int, list[dict]] = {}
    for row in rows:
        by_unit.setdefault(row["unit"], []).append(row)
    complete = [r for unit_rows in by_unit.values() if len(unit_rows) == unit_rows[0]["unit_rows"] for r in unit_rows]
    if repair and (torn or len(complete) != len(rows)):
        _rewrite(path, complete)
    return complete


def _prune_trajectories(run_dir: Path, done_units: set[int]) -> None:
    """Drop stored trajectories of units that never finished (they run again)."""
    path = run_dir / TRAJECTORIES_FILE
    if not path.exists():
        return
    kept, dropped = [], False
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                dropped = True
                continue
            if record.get("unit") in done_units:
                kept.append(record)
            else:
                dropped = True
    if dropped:
        _rewrite(path, kept)


def _rewrite(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def _append(path: Path, records: list[dict]) -> None:
    """All records in one write, flushed to disk: a unit's rows land together or (after a crash) as a torn
    unit that `read_predictions` drops."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        handle.flush()
        os.fsync(handle.fileno())


def _check_config(run_dir: Path, cfg: EvalConfig) -> None:
    """Refuse a run folder that holds an evaluation under other settings (where the run is written and how many
    resamples summarize it may differ); record the settings of a new one."""
    if check_rerun(cfg, run_dir, "an evaluation", free=RERUN_FREE) is None:
        save_settings(cfg, run_dir)


def run_eval(cfg: EvalConfig, *, on_progress: Callable[[EvalProgress], None] = lambda p: None,
             on_status: Callable[[str], None] = lambda text: None, policy=None, engine=None) -> EvalResult:
    """Run (or resume) the evaluation `cfg` describes; `policy`/`engine` may be passed pre-built (tests)."""
    from .report import build_report, write_report

    run_dir = cfg.run_dir()
    questions, skipped = load_questions(cfg)
    _check_config(run_dir, cfg)
    done_rows = read_predictions(run_dir, repair=True)
    done_units = {r["unit"] for r in done_rows}
    _prune_trajectories(run_dir, done_units)
    result = EvalResult(run_dir, {})
    runner = _Runner(cfg, run_dir, policy=policy, engine=engine, on_status=on_status)
    try:
        units = plan_units(questions, cfg.batch_questions if runner.batches else 1)
        pending = [u for u in units if u.index not in done_units]
        result.resumed_units, rows = len(units) - len(pending), list(done_rows)
        tracker = _Progress(len(questions), rows, cfg.samples, on_progress)
        tracker.report(resumed=len({r["index"] for r in rows}))
        if pending:
            runner.load()
        for unit in pending:
            new_rows = runner.run_unit(unit)
            rows += new_rows
            result.new_units += 1
            tracker.add(new_rows)
    finally:
        runner.close()
    result.report = build_report(rows, cfg, resamples=cfg.bootstrap, skipped=skipped)
    result.notes = skipped + write_report(run_dir, result.report)
    return result


class _Progress:
    """Running strict EM / cover-EM and time per question for the progress bar."""

    def __init__(self, total: int, rows: list[dict], samples: int, callback: Callable[[EvalProgress], None]):
        self.total, self.samples, self.callback = total, samples, callback
        self.rows = list(rows)
        self.timed_rows: list[dict] = []

    def add(self, rows: list[dict]) -> None:
        self.rows += rows
        self.timed_rows += rows
        self.report()

    def report(self, resumed: int = 0) -> None:
        n = len(self.rows)
        seconds = sum(r["seconds"] for r in self.timed_rows) / max(1, len(self.timed_rows) / self.samples)
        self.callback(EvalProgress(
            questions_done=n // self.samples, questions_total=self.total,
            strict_em=sum(r["strict_em"] for r in self.rows) / n if n else None,
            cover_em=sum(r["cover_em"] for r in self.rows) / n if n else None,
            seconds_per_question=seconds if self.timed_rows else None, resumed=resumed,
        ))


class _Runner:
    """The models and the rollout of one evaluation, loaded only when a unit is left to run."""

    def __init__(self, cfg: EvalConfig, run_dir: Path, *, policy, engine, on_status):
        self.cfg, self.run_dir, self.on_status = cfg, run_dir, on_status
        self.policy, self.engine = policy, engine
        self.owned: list = []
        self.model = None
        self.rollout = None

    @property
    def batches(self) -> bool:
        """Whether the policy's backend batches; known before loading it, from the model's name."""
        if self.policy is not None:
            return self.policy.batches_prompts
        from ..models.loading import backend_kind_for
        from ..models.spec import resolve_model

        kind = backend_kind_for(resolve_model(self.cfg.policy.name), self.cfg.policy.backend, self.cfg.policy.adapter)
        return kind != "llama.cpp"

    def load(self) -> None:
        from ..agent.config import use_protocol_grammar
        from ..agent.rollout import Rollout
        from ..models.loading import load_model
        from ..simulator.config import NoSearchEngine, open_engine

        cfg = self.cfg
        if self.policy is None:
            self.on_status(f"loading policy {cfg.policy.label} …")
            loaded = load_model(cfg.policy.name, cfg.policy.backend, adapter=cfg.policy.adapter,
                                n_ctx=max(cfg.agent.max_context, 2048))
            self.policy, self.model = loaded.backend, loaded.model
            self.owned.append(self.policy)
        if self.engine is None:
            if cfg.method == "direct":
                self.engine = NoSearchEngine()
            else:
                self.on_status(f"loading the {cfg.engine.label} engine …")
                self.engine = open_engine(cfg.engine, policy=self.policy)
                self.owned.insert(0, self.engine)
        constrained = use_protocol_grammar(cfg.agent.grammar, self.model)
        self.rollout = Rollout(self.policy, self.engine, cfg.agent, method=cfg.method, constrained=constrained,
                               max_rows=cfg.rollout_batch)

    def run_unit(self, unit: Unit) -> list[dict]:
        from ..agent.rollout import RolloutRequest
        from ..agent.schema import TrajectoryModel

        cfg, seed = self.cfg, self.cfg.agent.seed or 0
        requests = [RolloutRequest(q.example.question, None, trajectory_seed(seed, q.index, s))
                    for q in unit.questions for s in range(cfg.samples)]
        assert self.rollout is not None
        trajectories, _ = self.rollout.run(requests, batch_seed=trajectory_seed(seed, -1, unit.index))
        rows, stored = [], []
        pairs = [(q, s) for q in unit.questions for s in range(cfg.samples)]
        for (question, sample), traj in zip(pairs, trajectories, strict=True):
            row = prediction_row(unit, question, sample, traj)
            rows.append(row)
            stored.append({"trajectory_id": row["trajectory_id"], "unit": unit.index,
                           **TrajectoryModel.from_trajectory(traj, with_transcript=True).model_dump(mode="json")})
        for row in rows:
            row["unit_rows"] = len(rows)
        # Trajectories first: the predictions mark the unit as done.
        _append(self.run_dir / TRAJECTORIES_FILE, stored)
        _append(self.run_dir / PREDICTIONS_FILE, rows)
        return rows

    def close(self) -> None:
        for resource in self.owned:
            resource.close()
        self.owned = []
