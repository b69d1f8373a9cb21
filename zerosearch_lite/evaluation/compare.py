"""`zsl eval compare RUN_A RUN_B …`: evaluation runs side by side, per dataset and metric, each later run with the
difference to the first and a paired 95% bootstrap interval of it (the same questions resampled in both runs).

Reads run directories only (`config.json`, `predictions.jsonl`); never runs a model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..config_cli import flag
from ..errors import ZslError
from ..saved_settings import CONFIG_FILE
from .metrics import METRIC_LABELS, bootstrap_interval, paired_interval
from .runner import EvalConfig, read_predictions

SCORES = tuple(METRIC_LABELS)


class CompareConfig(BaseModel):
    """`zsl eval compare`: the runs, and the resamples of each interval (the evaluation's own setting)."""

    runs: list[str] = Field(..., min_length=2, json_schema_extra=flag(argument=True),
                            description="Evaluation run directories; the first is the baseline.")
    bootstrap: int = EvalConfig.model_fields["bootstrap"]


def _label(run_dir: Path) -> str:
    try:
        config = json.loads((run_dir / CONFIG_FILE).read_text())
        policy = config.get("policy", {})
        name = policy.get("name", "?") + (f"+{policy['adapter']}" if policy.get("adapter") else "")
        return f"{config.get('method', '?')} · {name} · n={config.get('samples', 1)}"
    except (OSError, ValueError, AttributeError):
        return run_dir.name


def _question_scores(run_dir: Path) -> dict[str, dict[tuple[str, int], dict[str, Any]]]:
    """dataset → question key → metric → mean over the question's samples (and the question's text).

    A question is keyed by its id and which occurrence of that id it is in its dataset, in the run's order:
    two files of one `data_source` may both number their rows 0, 1, …, and those are different questions."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise ZslError(f"not an evaluation run directory (no {CONFIG_FILE}): {run_dir}")
    rows = read_predictions(run_dir)
    if not rows:
        raise ZslError(f"{run_dir} has no predictions yet")
    by_index: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_index[row["index"]].append(row)
    seen: dict[tuple[str, str], int] = defaultdict(int)
    scores: dict[str, dict[tuple[str, int], dict[str, Any]]] = defaultdict(dict)
    for index in sorted(by_index):
        question_rows = by_index[index]
        dataset, qid = question_rows[0]["dataset"], str(question_rows[0]["id"])
        key = (qid, seen[(dataset, qid)])
        seen[(dataset, qid)] += 1
        scores[dataset][key] = {m: sum(r[m] for r in question_rows) / len(question_rows) for m in SCORES}
        scores[dataset][key]["question"] = question_rows[0].get("question")
    return scores


def _shared_questions(runs: list[dict], dataset: str, run_dirs: list[Path]) -> list[tuple[str, int]]:
    """The questions of `dataset` every run answered, checked to be the same questions (same text)."""
    shared = sorted(set.intersection(*(set(r[dataset]) for r in runs)))
    if not shared:
        raise ZslError(f"the runs share no question of dataset {dataset!r}")
    for key in shared:
        texts = {r[dataset][key]["question"] for r in runs}
        if len(texts) > 1:
            raise ZslError(f"question {key[0]!r} of {dataset!r} differs between {run_dirs[0]} and another run: "
                           "compare runs over the same files")
    return shared


def compare_runs(run_dirs: list[Path], *, resamples: int = 1000) -> dict[str, Any]:
    """Each run's mean per dataset and metric, and for runs after the first the paired difference to it, over
    the questions both runs answered."""
    if len(run_dirs) < 2:
        raise ZslError("give at least two run directories to compare")
    runs = [_question_scores(Path(d)) for d in run_dirs]
    base = runs[0]
    datasets = [d for d in base if all(d in r for r in runs[1:])]
    if not datasets:
        raise ZslError("the runs share no dataset")
    table = []
    for dataset in datasets:
        shared = _shared_questions(runs, dataset, [Path(d) for d in run_dirs])
        for metric in SCORES:
            columns = []
            for i, run in enumerate(runs):
                values = [run[dataset][q][metric] for q in shared]
                mean, low, high = bootstrap_interval([values], resamples=resamples)
                cell: dict[str, Any] = {"mean": mean, "low": low, "high": high}
                if i:
                    first = [base[dataset][q][metric] for q in shared]
                    diff, dlow, dhigh = paired_interval([first], [values], resamples=resamples)
                    cell["diff"] = {"mean": diff, "low": dlow, "high": dhigh}
                columns.append(cell)
            table.append({"dataset": dataset, "metric": metric, "questions": len(shared), "runs": columns})
    return {"runs": [{"dir": str(d), "label": _label(Path(d))} for d in run_dirs], "metrics": METRIC_LABELS,
            "rows": table}


def is_significant(diff: dict[str, float]) -> bool:
    """Whether a difference's interval excludes 0 (never for an undefined one)."""
    return diff["low"] > 0 or diff["high"] < 0


def render_comparison(result: dict[str, Any]) -> str:
    """A markdown table: one row per dataset and metric, each run's mean, later runs with Δ and its interval."""
    runs = result["runs"]
    header = "| dataset | metric | questions | " + " | ".join(
        f"{chr(65 + i)}: {r['label']}" for i, r in enumerate(runs)) + " |"
    lines = [header, "| --- | --- | ---: |" + " ---: |" * len(runs)]
    for row in result["rows"]:
        cells = []
        for i, col in enumerate(row["runs"]):
            cell = f"{col['mean']:.3f}"
            if i:
                d = col["diff"]
                significant = " *" if is_significant(d) else ""
                cell += f" (Δ {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{significant})"
            cells.append(cell)
        lines.append(f"| {row['dataset']} | {row['metric']} | {row['questions']} | " + " | ".join(cells) + " |")
    lines += ["", "Δ: run minus run A over the same questions, with a paired 95% bootstrap interval; * marks an "
                  "interval that excludes 0. Metrics: " + "; ".join(result["metrics"].values()) + "."]
    for i, r in enumerate(runs):
        lines.append(f"{chr(65 + i)}: {r['dir']}")
    return "\n".join(lines) + "\n"
