"""What every top-level screen shares: the navigation bar on top, the footer of key bindings below,
and the way a thread worker reports an error (a notification, never a crash)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer

from ...errors import ZslError
from ..widgets import NavBar

if TYPE_CHECKING:
    from ..app import ZslApp
    from ..services import Workbench


def error_text(exc: BaseException) -> str:
    """One line for a notification: the message of an expected error, the type and message otherwise."""
    if isinstance(exc, ZslError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class ZslScreen(Screen):
    MODE = ""

    class Failed(Message):
        """A thread worker's error, carried to the UI thread; `what` names the work in the notification."""

        def __init__(self, error: BaseException, what: str):
            super().__init__()
            self.error, self.what = error, what

    @property
    def zsl(self) -> ZslApp:
        return self.app  # type: ignore[return-value]

    @property
    def workbench(self) -> Workbench:
        return self.zsl.workbench

    def nav(self) -> NavBar:
        return NavBar(self.MODE)

    def footer(self) -> Footer:
        return Footer()

    def report(self, exc: BaseException, what: str) -> None:
        """Show a worker's failure; safe to call from the worker's thread."""
        self.app.notify(error_text(exc), title=f"{what} failed", severity="error", timeout=10, markup=False)

    def on_zsl_screen_failed(self, message: Failed) -> None:
        # Textual also calls a subclass's own `on_zsl_screen_failed` first (e.g. to update a status line).
        self.report(message.error, message.what)
