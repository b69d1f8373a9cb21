"""History: the stored sessions, newest first, with full-text search; open one to read its trajectories
and documents, delete one after a confirmation. Reads and writes only through `SessionStore`."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from ...agent.store import SessionRecord, SessionStore
from ..widgets import ConfirmScreen, TrajectoryView, VoteTally, plural
from .base import ZslScreen


class HistoryScreen(ZslScreen):
    MODE = "history"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "open", "Open"),
        Binding("d", "delete", "Delete"),
        Binding("slash", "focus_search", "Search"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._store: SessionStore | None = None
        self.records: list[SessionRecord] = []

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Input(placeholder="search questions and answers", id="history-search")
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Static("", id="history-status")
        yield self.footer()

    @property
    def store(self) -> SessionStore:
        if self._store is None:
            self._store = self.workbench.open_store()
        return self._store

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("id", key="id")
        table.add_column("when", key="when")
        table.add_column("question", key="question")
        table.add_column("answer", key="answer")
        table.add_column("n", key="samples")
        table.focus()

    def on_screen_resume(self) -> None:
        self.action_refresh()  # on first display, and again later: a question asked meanwhile shows up

    def on_resize(self) -> None:
        self.action_refresh()

    @on(Input.Changed, "#history-search")
    def _search_changed(self) -> None:
        self.action_refresh()

    @on(Input.Submitted, "#history-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one(DataTable).focus()

    def action_refresh(self) -> None:
        query = self.query_one("#history-search", Input).value.strip() or None
        try:
            self.records = self.store.list(limit=200, query=query)
        except Exception as exc:  # noqa: BLE001 - e.g. a full-text query SQLite rejects
            self.report(exc, "Search")
            return
        table = self.query_one(DataTable)
        selected = self.selected_id()
        table.clear()
        # Question and answer share what the id, time and count columns leave, so both stay in view.
        text_width = max(30, (self.size.width or 80) - 36)
        longest_answer = max((len(r.answer or "—") for r in self.records), default=1)
        question_width = text_width - min(longest_answer, text_width // 3)
        for r in self.records:
            table.add_row(
                str(r.id), r.created_at.replace("T", " ")[:16], _clip(r.question, question_width),
                _clip(r.answer or "—", text_width - question_width), str(r.samples), key=str(r.id),
            )
        if selected is not None and str(selected) in table.rows:
            table.move_cursor(row=table.get_row_index(str(selected)))
        total = self.store.count()
        shown = f"{len(self.records)} of {plural(total, 'session')}" if query else plural(total, "session")
        hint = " · Enter or o opens, d deletes" if self.records else " · ask a question on the Ask screen (F1)"
        self.query_one("#history-status", Static).update(shown + hint)

    def selected_id(self) -> int | None:
        table = self.query_one(DataTable)
        if not table.row_count or table.cursor_row < 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return int(key) if key is not None else None

    def action_focus_search(self) -> None:
        self.query_one("#history-search", Input).focus()

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        session_id = self.selected_id()
        if session_id is None:
            return
        record = self.store.get(session_id)
        if record is None:
            self.notify(f"session {session_id} no longer exists", severity="warning")
            self.action_refresh()
            return
        self.app.push_screen(SessionScreen(record))

    def action_delete(self) -> None:
        session_id = self.selected_id()
        if session_id is None:
            return
        record = next((r for r in self.records if r.id == session_id), None)
        question = _clip(record.question, 50) if record else ""

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.store.delete(session_id)
                self.notify(f"deleted session {session_id}")
                self.action_refresh()

        self.app.push_screen(ConfirmScreen(f"Delete session {session_id}?\n{question}"), confirmed)


class SessionScreen(Screen):
    """One stored session: question, vote and every sample's steps, documents collapsible."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, record: SessionRecord):
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        r = self.record
        yield Static(Content.from_markup("[b]session $id[/]  $q", id=r.id, q=r.question), id="session-title")
        yield Static(
            Content.from_markup("[dim]$when · $policy · $engine · $n[/]", when=r.created_at.replace("T", " "),
                                policy=r.policy, engine=r.engine, n=plural(r.samples, "sample")),
            id="session-meta",
        )
        yield TrajectoryView(timings=getattr(self.app, "timings", True), follow=False, id="trajectory")
        yield VoteTally(id="tally")
        yield Footer()

    def on_mount(self) -> None:
        from ...agent.session import AskOutcome
        from ...agent.voting import Vote

        r = self.record
        view = self.query_one(TrajectoryView)
        view.show_trajectories(r.trajectories or [])
        vote = Vote(r.answer, r.votes, r.samples)
        timings = getattr(self.app, "timings", True)
        self.query_one(VoteTally).show(AskOutcome(r.question, r.trajectories or [], vote, r.seconds), timings=timings)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
