"""Simulator: one query, the useful and the noisy documents side by side, each marked cache hit or
generated. The lookups run in a thread worker through the same engine the agent uses."""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Input, Static

from ...simulator.types import SearchResult
from ..widgets import DocList, search_label
from .base import ZslScreen


class SimulatorScreen(ZslScreen):
    MODE = "simulator"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "search", "Search"), Binding("ctrl+l", "clear", "Clear")]

    class Results(Message):
        def __init__(self, query: str, useful: SearchResult, noisy: SearchResult):
            super().__init__()
            self.query, self.useful, self.noisy = query, useful, noisy

    def __init__(self) -> None:
        super().__init__()
        self.results: tuple[SearchResult, SearchResult] | None = None

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Input(placeholder="A search query: the simulator writes useful and noisy documents", id="query")
        yield Static(f"engine: {self.workbench.settings.engine.label} · k = {self.workbench.settings.agent.k}",
                     id="sim-status")
        with Horizontal(id="columns"):
            for mode in ("useful", "noisy"):
                with Vertical(classes="column", id=f"{mode}-column"):
                    yield Static(Content.from_markup("[b]$m[/]", m=mode), classes="column-title", id=f"{mode}-title")
                    yield VerticalScroll(id=f"{mode}-docs", classes="docs")
        yield self.footer()

    def on_mount(self) -> None:
        self.query_one("#query", Input).focus()

    @on(Input.Submitted, "#query")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_search()

    def action_search(self) -> None:
        query = self.query_one("#query", Input).value.strip()
        if not query:
            self.notify("type a query first", severity="warning")
            return
        loading = "" if self.workbench.engine_loaded else " (loading the simulator model first)"
        self.query_one("#sim-status", Static).update(Content(f"searching…{loading}"))
        self._lookup(query)

    @work(thread=True, exclusive=True, exit_on_error=False, group="simulate")
    def _lookup(self, query: str) -> None:
        try:
            useful, noisy = self.workbench.simulate(query)
        except Exception as exc:  # noqa: BLE001 - shown as a notification
            self.post_message(self.Failed(exc, "Search"))
            return
        self.post_message(self.Results(query, useful, noisy))

    async def on_simulator_screen_results(self, message: Results) -> None:
        self.results = (message.useful, message.noisy)
        timings = self.zsl.timings
        for result in (message.useful, message.noisy):
            mode = result.mode or "useful"
            label = search_label(result, timings=timings, mode=False)
            title = Content.from_markup("[b]$m[/] [dim]· $label[/]", m=mode, label=label)
            self.query_one(f"#{mode}-title", Static).update(title)
            docs = self.query_one(f"#{mode}-docs", VerticalScroll)
            await docs.remove_children()
            await docs.mount(DocList(result.docs, result.warnings))
        real = "" if self.workbench.settings.engine.kind == "simulated" else " · a real engine ignores the mode"
        self.query_one("#sim-status", Static).update(
            Content.from_markup("query: [b]$q[/]$real", q=message.query, real=real)
        )

    def on_zsl_screen_failed(self) -> None:
        self.query_one("#sim-status", Static).update("search failed")  # then ZslScreen's handler notifies

    async def action_clear(self) -> None:
        self.results = None
        self.query_one("#query", Input).value = ""
        for mode in ("useful", "noisy"):
            self.query_one(f"#{mode}-title", Static).update(Content.from_markup("[b]$m[/]", m=mode))
            await self.query_one(f"#{mode}-docs", VerticalScroll).remove_children()
