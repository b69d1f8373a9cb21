"""Training: pick a run directory; its reward, noise probability, KL and recycle-pool share are plotted
and re-read every few seconds while the trainer writes (`read_metrics` on `metrics.db`, in a worker)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.content import Content
from textual.message import Message
from textual.widgets import Input, Static

from ..services import read_run
from ..widgets import MetricPlot
from .base import ZslScreen

PLOTS = (("reward", "reward_mean"), ("noise p", "noise_p"), ("KL", "kl"), ("pool share", "pool_share"))
CONFIG_KEYS = 12  # config.json values shown (one line, cut with an ellipsis when narrow)


class TrainingScreen(ZslScreen):
    MODE = "training"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "load", "Load run"), Binding("ctrl+r", "refresh", "Refresh")]

    class Loaded(Message):
        def __init__(self, run_dir: Path, rows: list, config: dict):
            super().__init__()
            self.run_dir, self.rows, self.config = run_dir, rows, config

    def __init__(self) -> None:
        super().__init__()
        self.run_dir: Path | None = None
        self.rows: list = []
        self._shown: tuple | None = None  # (run dir, rows, last row) last drawn: redraw only on change

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Input(placeholder="A run directory (holds metrics.db and config.json)", id="run-dir")
        yield Static("no run loaded", id="run-status")
        yield Static("", id="run-config")
        with Grid(id="plots"):
            for title, field in PLOTS:
                yield MetricPlot(title, field, id=f"plot-{field.replace('_', '-')}")
        yield self.footer()

    def on_mount(self) -> None:
        run_dir = self.zsl.run_dir
        if run_dir is not None:
            self.query_one("#run-dir", Input).value = str(run_dir)
            self.action_load()
        else:
            self.query_one("#run-dir", Input).focus()
        self.set_interval(self.zsl.refresh_seconds, self.action_refresh)

    @on(Input.Submitted, "#run-dir")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_load()

    def action_load(self) -> None:
        raw = self.query_one("#run-dir", Input).value.strip()
        if not raw:
            self.notify("type a run directory first", severity="warning")
            return
        path = Path(raw).expanduser()
        if not path.is_dir():
            self.notify(f"not a directory: {raw}", severity="error", markup=False)
            return
        self.run_dir, self._shown = path, None
        self.action_refresh()

    def action_refresh(self) -> None:
        if self.run_dir is not None:
            self._read(self.run_dir)

    @work(thread=True, exclusive=True, exit_on_error=False, group="metrics")
    def _read(self, run_dir: Path) -> None:
        try:
            rows, config = read_run(run_dir)
        except Exception as exc:  # noqa: BLE001 - e.g. a metrics.db being replaced
            self.post_message(self.Failed(exc, "Reading metrics"))
            return
        self.post_message(self.Loaded(run_dir, rows, config))

    def on_training_screen_loaded(self, message: Loaded) -> None:
        if message.run_dir != self.run_dir:
            return
        rows = message.rows
        shown = (message.run_dir, len(rows), rows[-1] if rows else None)
        if shown == self._shown:
            return
        self._shown, self.rows = shown, rows
        steps = [r.step for r in rows]
        for plot in self.query(MetricPlot):
            plot.set_series(steps, [getattr(r, plot.field) for r in rows])
        head, settings = _summary(rows, message.config)
        self.query_one("#run-status", Static).update(head)
        self.query_one("#run-config", Static).update(settings)


def _summary(rows: list, config: dict) -> tuple[Content, Content]:
    scalars = [(k, v) for k, v in config.items() if isinstance(v, str | int | float | bool) and v is not None]
    settings = " · ".join(f"{k}={v}" for k, v in scalars[:CONFIG_KEYS])
    if not rows:
        head = "no metrics yet: waiting for the trainer to write its first step"
    else:
        last = rows[-1]
        parts = [f"step {last.step}", f"{len(rows)} rows"]
        for label, value in (("searches/q", last.searches_per_question), ("answered", last.answered_share),
                             ("cache hits", last.cache_hit_rate), ("pool", last.pool_size)):
            if value is not None:
                parts.append(f"{label} {value:.3g}")
        head = " · ".join(parts)
    return (Content.from_markup("[b]$head[/]", head=head),
            Content.from_markup("[dim]$settings[/]", settings=settings or "no config.json"))
