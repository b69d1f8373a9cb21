"""Eval: the evaluation runs found under `$ZSL_HOME/evals` (or typed in), a run's table (strict EM, cover-EM and
F1 per dataset with their intervals) and its coverage curve (pass@k and majority@k against k), and two runs
compared with paired bootstrap intervals. Reads run directories through `services`; never runs a model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Input, Static
from textual_plotext import PlotextPlot

from ...evaluation.compare import is_significant, render_comparison
from ...evaluation.report import render_markdown
from ..services import compare_eval_runs, eval_roots, list_eval_runs, read_eval_report
from .base import ZslScreen


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _interval(score: dict) -> str:
    return f"{score['mean']:.3f} [{score['low']:.2f}–{score['high']:.2f}]"


def report_table(report: dict) -> Group:
    """A run's report, narrow enough for half a terminal: scores with intervals, then usage, then coverage."""
    s = report["settings"]
    entries = report["datasets"] + ([report["average"]] if len(report["datasets"]) > 1 else [])
    scores = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    for column in ("dataset", "n", "strict EM", "cover-EM", "F1"):
        scores.add_column(column, justify="left" if column == "dataset" else "right")
    usage = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    for column in ("dataset", "answered", "searches/q", "turns/q", "invalid", "s/q"):
        usage.add_column(column, justify="left" if column == "dataset" else "right")
    for e in entries:
        if "scores" not in e:
            continue
        sc = e["scores"]
        scores.add_row(e["name"], str(e["questions"]), _interval(sc["strict_em"]), _interval(sc["cover_em"]),
                       _interval(sc["f1"]))
        usage.add_row(e["name"], f"{e['answered']:.2f}", f"{e['searches']:.2f}", f"{e['turns']:.2f}",
                      f"{e['invalid_step_rate']:.2f}", f"{e['seconds_per_question']:.1f}")
    parts: list = [Text(f"{s['method']} · {s['policy']} · {s['engine']} · k {s['k']} · {s['samples']} sample(s) · "
                        f"seed {s['seed']}", style="bold"), scores, usage]
    last = entries[-1] if entries else {}
    if "pass_at_k" in last:
        ks = [p["k"] for p in last["pass_at_k"]["strict_em"]]
        shown = [k for k in ks if k & (k - 1) == 0 or k == ks[-1]]
        curve = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False, title=f"{last['name']}, by k")
        curve.add_column("metric")
        for k in shown:
            curve.add_column(str(k), justify="right")
        for key, label in (("pass_at_k", "pass"), ("majority_at_k", "maj")):
            for metric, name in (("strict_em", "EM"), ("cover_em", "cover")):
                values = {p["k"]: p["mean"] for p in last[key][metric]}
                curve.add_row(f"{label}@k {name}", *(f"{values[k]:.3f}" for k in shown))
        parts.append(curve)
    parts.append(Text("strict EM: Search-R1's; cover-EM: ZeroSearch's \"EM\" (gold inside the answer); "
                      "[low–high]: 95% bootstrap interval", style="dim"))
    return Group(*parts)


def comparison_table(result: dict) -> Group:
    """`compare_runs` for two runs: each dataset and metric, A, B, and B − A with its paired interval."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    for column in ("dataset", "metric", "A", "B", "B − A [95%]"):
        table.add_column(column, justify="left" if column in ("dataset", "metric") else "right")
    for row in result["rows"]:
        first, second = row["runs"][:2]
        d = second["diff"]
        mark = " *" if is_significant(d) else ""
        table.add_row(row["dataset"], row["metric"], f"{first['mean']:.3f}", f"{second['mean']:.3f}",
                      f"{d['mean']:+.3f} [{d['low']:+.2f}, {d['high']:+.2f}]{mark}")
    runs = result["runs"]
    return Group(table, Text(f"A: {runs[0]['dir']}\nB: {runs[1]['dir']}\n* the interval excludes 0", style="dim"))


class CoveragePlot(PlotextPlot):
    """pass@k and majority@k (strict EM and cover-EM) against k, log-scale k, for one report."""

    def show(self, report: dict | None) -> None:
        plt = self.plt
        plt.clear_figure()
        entry = None
        if report and report.get("datasets"):
            entry = report["average"] if len(report["datasets"]) > 1 else report["datasets"][0]
        if not entry or "pass_at_k" not in entry:
            plt.title("coverage: one sample per question (run with --samples N)")
            self.refresh()
            return
        plt.title(f"coverage · {entry['name']}")
        ks = [p["k"] for p in entry["pass_at_k"]["strict_em"]]
        for kind, label in (("pass_at_k", "pass"), ("majority_at_k", "maj")):
            for metric, name in (("strict_em", "EM"), ("cover_em", "cover")):
                points = entry[kind][metric]  # majority@k has points only at the report's k columns
                x = [math.log2(p["k"]) for p in points]  # log-scale k: log2 positions, k as the labels
                plt.plot(x, [p["mean"] for p in points], marker="braille", label=f"{label}@k {name}")
        ticks = [k for k in ks if k & (k - 1) == 0 or k == ks[-1]]
        plt.xticks([math.log2(k) for k in ticks], [str(k) for k in ticks])
        plt.xlabel("k")
        self.refresh()


class EvalScreen(ZslScreen):
    MODE = "eval"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "mark", "Mark for compare"),
        Binding("c", "compare", "Compare with mark"),
        Binding("r", "refresh", "Refresh"),
    ]

    class Listed(Message):
        def __init__(self, rows: list):
            super().__init__()
            self.rows = rows

    def __init__(self) -> None:
        super().__init__()
        self.rows: list = []
        self.extra: list[Path] = []
        self.marked: Path | None = None
        self.report_text = ""  # the markdown shown below the table (a run's report or a comparison)

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Input(placeholder="An evaluation run directory to add (runs under $ZSL_HOME/evals are listed)",
                    id="eval-dir")
        yield DataTable(id="eval-runs", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="eval-detail"):
            with VerticalScroll(id="eval-report-box"):
                yield Static("select a run", id="eval-report")
            yield CoveragePlot(id="coverage")
        yield self.footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in ("run", "method", "policy", "n", "questions", "strict EM", "cover-EM", "F1"):
            table.add_column(column, key=column)
        table.focus()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self._list(list(self.extra))

    @work(thread=True, exclusive=True, exit_on_error=False, group="eval-runs")
    def _list(self, extra: list[Path]) -> None:
        try:
            rows = list_eval_runs(eval_roots(), extra)
        except Exception as exc:  # noqa: BLE001 - shown as a notification
            self.post_message(self.Failed(exc, "Listing evaluation runs"))
            return
        self.post_message(self.Listed(rows))

    def on_eval_screen_listed(self, message: Listed) -> None:
        self.rows = message.rows
        table = self.query_one(DataTable)
        table.clear()
        for row in self.rows:
            mark = "* " if row.path == self.marked else ""
            table.add_row(mark + row.path.name, row.method, row.policy, str(row.samples), str(row.questions),
                          _score(row.strict_em), _score(row.cover_em), _score(row.f1), key=str(row.path))
        if self.rows:
            self._show(self.rows[min(table.cursor_row, len(self.rows) - 1)].path)

    @on(Input.Submitted, "#eval-dir")
    def _add(self, event: Input.Submitted) -> None:
        event.stop()
        path = Path(event.value.strip()).expanduser()
        if not (path / "report.json").is_file():
            self.notify(f"no report.json in {event.value.strip()}", severity="error", markup=False)
            return
        self.extra.append(path)
        self.action_refresh()

    @on(DataTable.RowHighlighted, "#eval-runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value:
            self._show(Path(event.row_key.value))

    def _current(self) -> Path | None:
        table = self.query_one(DataTable)
        return self.rows[table.cursor_row].path if self.rows else None

    def _show(self, run_dir: Path) -> None:
        try:
            report = read_eval_report(run_dir)
        except (OSError, ValueError) as exc:
            self.report(exc, "Reading the report")
            return
        self._show_text(render_markdown(report), report_table(report))
        self.query_one(CoveragePlot).show(report)

    def _show_text(self, text: str, shown) -> None:
        self.report_text = text
        self.query_one("#eval-report", Static).update(shown)

    def action_mark(self) -> None:
        self.marked = self._current()
        if self.marked:
            self.notify(f"marked {self.marked.name}: select another run and press c", markup=False)
            self.action_refresh()

    def action_compare(self) -> None:
        current = self._current()
        if self.marked is None or current is None or current == self.marked:
            self.notify("mark a run with m, then select another and press c", severity="warning")
            return
        self._compare(self.marked, current)

    @work(thread=True, exclusive=True, exit_on_error=False, group="eval-compare")
    def _compare(self, first: Path, second: Path) -> None:
        try:
            result = compare_eval_runs(first, second)
        except Exception as exc:  # noqa: BLE001 - shown as a notification
            self.post_message(self.Failed(exc, "Comparing runs"))
            return
        self.app.call_from_thread(self._show_text, render_comparison(result), comparison_table(result))
