"""An evaluation's report from its predictions: per dataset and averaged over datasets, every score with a 95%
bootstrap interval over questions; pass@k and majority@k with several samples. Written as `report.json`,
`report.md` (the table, each column naming its metric) and `coverage.png` (matplotlib, when installed).

Pure functions of the prediction rows: the same rows always give the same report (seeded bootstrap).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import METRIC_LABELS, bootstrap_interval, majority_at_k, pass_at_k

if TYPE_CHECKING:
    from .runner import EvalConfig

SCORES = ("strict_em", "cover_em", "f1")
EXACT = ("strict_em", "cover_em")  # the right/wrong metrics pass@k and majority@k count
AVERAGE = "average"


def _interval(groups: list[list[float]], resamples: int) -> dict[str, float]:
    mean, low, high = bootstrap_interval(groups, resamples=resamples)
    return {"mean": round(mean, 4), "low": round(low, 4), "high": round(high, 4)}


def _per_question(rows: list[dict]) -> dict[int, list[dict]]:
    grouped: dict[int, list[dict]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r["index"], r["sample"])):
        grouped[row["index"]].append(row)
    return grouped


def question_values(rows: list[dict], samples: int) -> dict[str, list[float]]:
    """Per-question values of every reported quantity: sample means of the scores, pass@k at every k (exact and
    cheap) and majority@k at the k of `k_columns` (an expectation over up to 256 subsets a k: every k of 256
    samples would take seconds a question)."""
    values: dict[str, list[float]] = defaultdict(list)
    for question_rows in _per_question(rows).values():
        n = len(question_rows)
        for name in SCORES:
            values[name].append(sum(r[name] for r in question_rows) / n)
        if samples > 1:
            answers = [r["answer"] for r in question_rows]
            golds = question_rows[0]["golden_answers"]
            for name in EXACT:
                correct = sum(r[name] >= 1.0 for r in question_rows)
                for k in range(1, n + 1):
                    values[f"pass@{k}:{name}"].append(pass_at_k(n, correct, k))
                for k in k_columns(n):  # majority@k costs subsets × k votes: the k the report shows
                    values[f"maj@{k}:{name}"].append(majority_at_k(answers, golds, k, name))
    return values


def _usage(rows: list[dict]) -> dict[str, float | None]:
    """Per-trajectory means (seconds per question counts every sample of a question)."""
    n = max(1, len(rows))
    questions = max(1, len({r["index"] for r in rows}))
    turns = sum(r["turns"] for r in rows)
    decode_seconds = sum(r.get("decode_seconds") or 0 for r in rows)
    generated = sum(r["completion_tokens"] for r in rows)
    return {
        "answered": round(sum(r["answer"] is not None for r in rows) / n, 4),
        "invalid_step_rate": round(sum(r["invalid_steps"] for r in rows) / max(1, turns), 4),
        "searches": round(sum(r["searches"] for r in rows) / n, 3),
        "turns": round(turns / n, 3),
        "prompt_tokens": round(sum(r["prompt_tokens"] for r in rows) / n, 1),
        "generated_tokens": round(generated / n, 1),
        "seconds_per_question": round(sum(r["seconds"] for r in rows) / questions, 3),
        "decode_tokens_per_second": round(generated / decode_seconds, 1) if decode_seconds > 0 else None,
    }


def _curves(values_by_dataset: list[dict[str, list[float]]], samples: int, resamples: int) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    for kind, key, ks in (("pass", "pass_at_k", range(1, samples + 1)), ("maj", "majority_at_k", k_columns(samples))):
        for name in EXACT:
            curves.setdefault(key, {})[name] = [
                {"k": k, **_interval([v[f"{kind}@{k}:{name}"] for v in values_by_dataset], resamples)}
                for k in ks
            ]
    return curves


def build_report(rows: list[dict], cfg: EvalConfig, *, resamples: int = 1000,
                 skipped: list[str] = ()) -> dict[str, Any]:
    """The report of a run's prediction rows; `skipped` names the files whose broken rows were left out."""
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_dataset[row["dataset"]].append(row)
    samples = cfg.samples
    entries, all_values = [], []
    for name, dataset_rows in by_dataset.items():
        values = question_values(dataset_rows, samples)
        all_values.append(values)
        entry: dict[str, Any] = {
            "name": name,
            "questions": len({r["index"] for r in dataset_rows}),
            "trajectories": len(dataset_rows),
            "scores": {s: _interval([values[s]], resamples) for s in SCORES},
            **_usage(dataset_rows),
        }
        if samples > 1:
            entry.update(_curves([values], samples, resamples))
        entries.append(entry)
    average: dict[str, Any] = {"name": AVERAGE, "questions": sum(e["questions"] for e in entries),
                               "trajectories": len(rows)}
    if entries:
        average["scores"] = {s: _interval([v[s] for v in all_values], resamples) for s in SCORES}
        average.update(_usage(rows))
        if samples > 1:
            average.update(_curves(all_values, samples, resamples))
    return {
        "settings": {
            "method": cfg.method, "policy": cfg.policy.label,
            "engine": "none" if cfg.method == "direct" else cfg.engine.label,
            "data": cfg.data, "limit": cfg.limit, "samples": samples, "k": cfg.agent.k,
            "max_turns": cfg.agent.max_turns, "temperature": cfg.agent.temperature, "grammar": cfg.agent.grammar,
            "seed": cfg.agent.seed,
        },
        "metrics": METRIC_LABELS,
        "interval": f"95% bootstrap interval over questions ({resamples} resamples); the average row averages "
                    "dataset means, resampling questions within each dataset",
        "datasets": entries,
        "average": average,
        "skipped_rows": list(skipped),
    }


def _cell(score: dict[str, float] | None) -> str:
    if not score:
        return "-"
    return f"{score['mean']:.3f} [{score['low']:.3f}, {score['high']:.3f}]"


def k_columns(samples: int) -> list[int]:
    """The k a report shows (and majority@k is computed at): powers of two up to the samples, and the samples."""
    return sorted({k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= samples} | {samples})


def render_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"# Evaluation: {s['method']} · policy {s['policy']} · engine {s['engine']}",
        "",
        (f"k {s['k']} documents · at most {s['max_turns']} turns · {s['samples']} sample(s) per question · "
         f"temperature {s['temperature']} · grammar {s['grammar']} · seed {s['seed']} · "
         f"{'first ' + str(s['limit']) + ' questions of each file' if s['limit'] else 'all questions'}"),
        "",
        ("| dataset | questions | strict EM | cover-EM | F1 | answered | searches/q | turns/q | invalid steps "
         "| tokens in / out per q | s/q |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines[4:4] = [f"**Broken rows left out:** {line}." for line in report.get("skipped_rows", [])] + \
        ([""] if report.get("skipped_rows") else [])
    rows = report["datasets"] + ([report["average"]] if len(report["datasets"]) > 1 else [])
    for e in rows:
        if "scores" not in e:
            continue
        sc = e["scores"]
        lines.append(
            f"| {e['name']} | {e['questions']} | {_cell(sc['strict_em'])} | {_cell(sc['cover_em'])} | "
            f"{_cell(sc['f1'])} | {e['answered']:.2f} | {e['searches']:.2f} | {e['turns']:.2f} | "
            f"{e['invalid_step_rate']:.2f} | {e['prompt_tokens']:.0f} / {e['generated_tokens']:.0f} | "
            f"{e['seconds_per_question']:.2f} |"
        )
    lines += ["", "Metrics: " + "; ".join(f"**{label}**" for label in report["metrics"].values()) + ".",
              f"Scores average the samples of each question; [low, high] is the {report['interval']}."]
    if s["samples"] > 1:
        ks = k_columns(s["samples"])
        for name, title in (("strict_em", "strict EM"), ("cover_em", "cover-EM")):
            lines += ["", f"## Repeated sampling, {title}", "",
                      "| dataset | " + " | ".join(f"pass@{k}" for k in ks) + " | "
                      + " | ".join(f"maj@{k}" for k in ks) + " |",
                      "| --- |" + " ---: |" * (2 * len(ks))]
            for e in rows:
                if "pass_at_k" not in e:
                    continue
                passes = {p["k"]: p for p in e["pass_at_k"][name]}
                majors = {p["k"]: p for p in e["majority_at_k"][name]}
                lines.append(f"| {e['name']} | " + " | ".join(f"{passes[k]['mean']:.3f}" for k in ks) + " | "
                             + " | ".join(f"{majors[k]['mean']:.3f}" for k in ks) + " |")
        lines += ["", ("pass@k: the unbiased estimate 1 − C(n−c, k)/C(n, k) of at least one correct answer among "
                       "k samples (coverage); maj@k: the expected score of the majority vote over k of the samples' "
                       "normalized answers (all k-subsets, ties scored as the mean of the tied answers).")]
    return "\n".join(lines) + "\n"


def plot_coverage(report: dict[str, Any], path: Path) -> None:
    """pass@k and majority@k against k (log-scale k), strict EM and cover-EM, for the average of the datasets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entry = report["average"] if len(report["datasets"]) > 1 else report["datasets"][0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    styles = {("pass", "strict_em"): ("C0", "-"), ("maj", "strict_em"): ("C0", "--"),
              ("pass", "cover_em"): ("C1", "-"), ("maj", "cover_em"): ("C1", "--")}
    for (kind, name), (color, line) in styles.items():
        points = entry["pass_at_k" if kind == "pass" else "majority_at_k"][name]
        ks = [p["k"] for p in points]
        label = f"{'pass' if kind == 'pass' else 'majority'}@k, {'strict EM' if name == 'strict_em' else 'cover-EM'}"
        ax.plot(ks, [p["mean"] for p in points], color=color, linestyle=line, marker="o", markersize=3, label=label)
        ax.fill_between(ks, [p["low"] for p in points], [p["high"] for p in points], color=color, alpha=0.08)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("score")
    s = report["settings"]
    ax.set_title(f"{s['method']} · {s['policy']} · {entry['name']} ({entry['questions']} questions)", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(run_dir: Path, report: dict[str, Any]) -> list[str]:
    """report.json, report.md and (with several samples) coverage.png; returns notes about what was skipped."""
    notes = []
    (run_dir / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    (run_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    if report["settings"]["samples"] > 1 and report["datasets"]:
        try:
            plot_coverage(report, run_dir / "coverage.png")
        except ImportError:
            notes.append("coverage.png skipped: matplotlib is not installed (pip install matplotlib)")
    return notes
