"""`zsl eval compare RUN_A RUN_B …`: evaluation runs side by side, per dataset and metric, each later run with the
difference to the first and a paired 95% bootstrap interval of it (the same questions resampled in both runs).

Reads run directories only (`config.json`, `predictions.jsonl`); never runs a model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import ZslError
from .metrics import METRIC_LABELS, bootstrap_interval, paired_interval
from .runner import CONFIG_FILE, read_predictions

SCORES = tuple(METRIC_LABELS)


def _label(run_dir: Path) -> str:
    try:
        config = json.loads((run_dir / CONFIG_FILE).read_text())
        policy = config.get("policy", {})
        name = policy.get("name", "?") + (f"+{policy['adapter']}" if policy.get("adapter") else "")
        return f"{config.get('method', '?')} · {name} · n={config.get('samples', 1)}"
    except (OSError, ValueError, AttributeError):
        return run_dir.name


def _question_scores(run_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """dataset → question id → metric → mean over the question's samples."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise ZslError(f"not an evaluation run directory (no {CONFIG_FILE}): {run_dir}")
    rows = read_predictions(run_dir)
    if not rows:
        raise ZslError(f"{run_dir} has no predictions yet")
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(row["dataset"], str(row["id"]))].append(row)
    scores: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (dataset, qid), question_rows in grouped.items():
        scores[dataset][qid] = {m: sum(r[m] for r in question_rows) / len(question_rows) for m in SCORES}
    return scores


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
        shared = sorted(set.intersection(*(set(r[dataset]) for r in runs)))
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
                significant = "" if d["low"] <= 0 <= d["high"] else " *"
                cell += f" (Δ {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{significant})"
            cells.append(cell)
        lines.append(f"| {row['dataset']} | {row['metric']} | {row['questions']} | " + " | ".join(cells) + " |")
    lines += ["", "Δ: run minus run A over the same questions, with a paired 95% bootstrap interval; * marks an "
                  "interval that excludes 0. Metrics: " + "; ".join(result["metrics"].values()) + "."]
    for i, r in enumerate(runs):
        lines.append(f"{chr(65 + i)}: {r['dir']}")
    return "\n".join(lines) + "\n"
