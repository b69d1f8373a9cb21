"""Ask: a question box and a samples count; the trajectory streams in as it is generated (tokens, then
thinking, each search with its documents, the answer), then the vote. Escape cancels between tokens.

Generation runs in a thread worker that posts each event as a message; the UI thread only renders.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Collapsible, Input, Label, Static
from textual.worker import Worker, get_current_worker

from ...agent.session import AskOutcome, SampleEvent
from ..widgets import TrajectoryView, VoteTally
from .base import ZslScreen

MAX_SAMPLES = 16


class AskScreen(ZslScreen):
    MODE = "ask"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "ask", "Ask"),
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+l", "clear", "Clear"),
        Binding("ctrl+o", "toggle_docs", "Docs"),
    ]

    class Progress(Message):
        def __init__(self, run: int, item: SampleEvent | AskOutcome):
            super().__init__()
            self.run, self.item = run, item

    class Status(Message):
        def __init__(self, run: int, text: str):
            super().__init__()
            self.run, self.text = run, text

    class Ended(Message):
        def __init__(self, run: int, error: BaseException | None = None):
            super().__init__()
            self.run, self.error = run, error

    def __init__(self) -> None:
        super().__init__()
        self._run = 0
        self._worker: Worker | None = None
        self.outcome: AskOutcome | None = None

    def compose(self) -> ComposeResult:
        yield self.nav()
        with Horizontal(id="ask-bar"):
            yield Input(placeholder="Ask a question and press Enter", id="question")
            yield Label("samples", id="samples-label")
            yield Input("1", type="integer", max_length=2, id="samples", tooltip=f"1 to {MAX_SAMPLES}: vote over N samples")
        yield Static("idle", id="status")
        yield TrajectoryView(timings=self.zsl.timings, id="trajectory")
        yield VoteTally(id="tally")
        yield self.footer()

    def on_mount(self) -> None:
        self.query_one("#question", Input).focus()

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_running

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_ask()

    def _samples(self) -> int | None:
        raw = self.query_one("#samples", Input).value.strip() or "1"
        try:
            samples = int(raw)
        except ValueError:
            samples = 0
        if not 1 <= samples <= MAX_SAMPLES:
            self.notify(f"samples must be between 1 and {MAX_SAMPLES}", severity="warning")
            return None
        return samples

    def action_ask(self) -> None:
        question = self.query_one("#question", Input).value.strip()
        if not question:
            self.notify("type a question first", severity="warning")
            return
        samples = self._samples()
        if samples is None:
            return
        self._run += 1
        self.outcome = None
        view = self.query_one(TrajectoryView)
        view.call_later(view.reset, samples)
        self.query_one(VoteTally).show(None)
        self.set_status("starting…")
        self._worker = self._generate(self._run, question, samples)

    @work(thread=True, exclusive=True, exit_on_error=False, group="ask")
    def _generate(self, run: int, question: str, samples: int) -> None:
        worker = get_current_worker()
        try:
            for item in self.workbench.ask(
                question, samples=samples, cancelled=lambda: worker.is_cancelled,
                on_status=lambda text: self.post_message(self.Status(run, text)),
            ):
                self.post_message(self.Progress(run, item))
        except Exception as exc:  # noqa: BLE001 - shown as a notification, the app keeps running
            self.post_message(self.Ended(run, exc))
            return
        self.post_message(self.Ended(run))

    def action_cancel(self) -> None:
        if self.running and self._worker is not None:
            self._worker.cancel()
            self.set_status("cancelling…")

    def action_clear(self) -> None:
        if self.running:
            self.action_cancel()
        self._run += 1
        self.outcome = None
        view = self.query_one(TrajectoryView)
        view.call_later(view.reset)
        self.query_one(VoteTally).show(None)
        self.query_one("#question", Input).value = ""
        self.set_status("idle")

    def action_toggle_docs(self) -> None:
        boxes = list(self.query_one(TrajectoryView).query(Collapsible))
        collapse = any(not box.collapsed for box in boxes)
        for box in boxes:
            box.collapsed = collapse

    def on_ask_screen_status(self, message: Status) -> None:
        if message.run == self._run:
            self.set_status(message.text)

    def on_ask_screen_progress(self, message: Progress) -> None:
        if message.run != self._run:
            return  # a cancelled question still draining
        item = message.item
        if isinstance(item, AskOutcome):
            self.outcome = item
            self.query_one(VoteTally).show(item, timings=self.zsl.timings)
            return
        event = item.event
        self.query_one(TrajectoryView).add_event(item.sample, event)
        total = self.query_one(TrajectoryView).samples
        where = f"sample {item.sample + 1} of {total}: " if total > 1 else ""
        if event.kind == "search_started":
            self.set_status(f"{where}searching…")
        elif event.kind in ("docs", "think", "error"):
            self.set_status(f"{where}generating…")

    def on_ask_screen_ended(self, message: Ended) -> None:
        if message.run != self._run:
            return
        if message.error is not None:
            self.set_status("failed")
            self.report(message.error, "Ask")
            return
        cancelled = self._worker is not None and self._worker.is_cancelled
        outcome = self.outcome
        if cancelled:
            self.set_status("cancelled")
        elif outcome is not None:
            saved = f" · saved as session {outcome.session_id}" if outcome.session_id is not None else ""
            self.set_status(f"done{saved}")
