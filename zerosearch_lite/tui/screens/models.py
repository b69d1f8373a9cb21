"""Models: what is resolvable on this machine (the embedded GGUF, local exports, the Hugging Face cache),
which one is the active policy and simulator, and whether it is loaded; p / s switch the active one."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.widgets import DataTable, Static

from ..services import ModelRow
from .base import ZslScreen


class ModelsScreen(ZslScreen):
    MODE = "models"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "use_policy", "Use as policy"),
        Binding("s", "use_simulator", "Use as simulator"),
        Binding("r", "refresh", "Refresh"),
    ]

    class Listed(Message):
        def __init__(self, rows: list[ModelRow]):
            super().__init__()
            self.rows = rows

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[ModelRow] = []

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Static("", id="active")
        yield DataTable(id="models", cursor_type="row", zebra_stripes=True)
        yield Static("", id="model-path")
        yield self.footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in ("name", "format", "source", "size", "role", "loaded"):
            table.add_column(column, key=column)
        self._show_active()
        table.focus()

    def on_screen_resume(self) -> None:
        self.action_refresh()  # on first display, and again later: a question may have loaded a model

    def _show_active(self) -> None:
        s = self.workbench.settings
        simulated = s.engine.kind == "simulated"
        simulator = "simulator [b]$sim[/]" if simulated else "engine [b]$sim[/]"
        self.query_one("#active", Static).update(Content.from_markup(
            f"policy [b]$policy[/] ({'loaded' if self.workbench.policy_loaded else 'not loaded'}) · "
            f"{simulator} ({'loaded' if self.workbench.engine_loaded else 'not loaded'})",
            policy=s.policy.name, sim=s.engine.simulator if simulated else s.engine.label,
        ))

    def action_refresh(self) -> None:
        self._list()

    @work(thread=True, exclusive=True, exit_on_error=False, group="models")
    def _list(self) -> None:
        try:
            rows = self.workbench.model_rows()  # scans the Hugging Face cache: off the UI thread
        except Exception as exc:  # noqa: BLE001 - shown as a notification
            self.post_message(self.Failed(exc, "Listing models"))
            return
        self.post_message(self.Listed(rows))

    def on_models_screen_listed(self, message: Listed) -> None:
        self.rows = message.rows
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for i, row in enumerate(self.rows):
            m = row.model
            size = f"{m.size_bytes / 2**20:.1f} MiB" if m.size_bytes else "—"
            table.add_row(m.name, m.format, m.source, size, " + ".join(row.roles) or "—",
                          "yes" if row.loaded else "no", key=str(i))
        if self.rows:
            table.move_cursor(row=min(max(cursor, 0), len(self.rows) - 1))
        self._show_active()
        self._show_path()

    def on_data_table_row_highlighted(self) -> None:
        self._show_path()

    def _selected(self) -> ModelRow | None:
        table = self.query_one(DataTable)
        if not self.rows or not 0 <= table.cursor_row < len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def _show_path(self) -> None:
        row = self._selected()
        text = Content.from_markup("[dim]$path[/]", path=row.model.path) if row else "no models found"
        self.query_one("#model-path", Static).update(text)

    def action_use_policy(self) -> None:
        row = self._selected()
        if row is not None:
            self.workbench.set_policy(row.model.name)
            self.notify(f"policy: {row.model.name} (loads with the next question)", markup=False)
            self.action_refresh()

    def action_use_simulator(self) -> None:
        row = self._selected()
        if row is None:
            return
        if self.workbench.settings.engine.kind != "simulated":
            self.notify("the search engine is not simulated: start with --engine simulated", severity="warning")
            return
        self.workbench.set_simulator(row.model.name)
        self.notify(f"simulator: {row.model.name} (loads with the next search)", markup=False)
        self.action_refresh()
