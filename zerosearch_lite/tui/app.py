"""`ZslApp`: the Textual app behind `zsl tui`. Six screens as modes (F1–F6), every action also in the
command palette (Ctrl+P), styles in `app.tcss`.

The app owns a `Workbench` (models loaded lazily and once, the stores); screens call it from thread
workers. Tests build the app with a workbench holding fake or preloaded backends and drive it with
`App.run_test()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from .screens import AskScreen, EvalScreen, HistoryScreen, ModelsScreen, SimulatorScreen, TrainingScreen
from .services import Workbench
from .widgets import SCREENS


class ZslApp(App):
    TITLE = "zerosearch-lite"
    CSS_PATH = "app.tcss"
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = {
        "ask": AskScreen,
        "history": HistoryScreen,
        "simulator": SimulatorScreen,
        "training": TrainingScreen,
        "eval": EvalScreen,
        "models": ModelsScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(key, f"switch_mode('{mode}')", title, show=False, priority=True) for mode, key, title in SCREENS
    ]

    def __init__(
        self,
        workbench: Workbench | None = None,
        *,
        run_dir: str | Path | None = None,
        screen: str = "ask",
        timings: bool = True,
        refresh_seconds: float = 2.0,
    ):
        """`timings=False` hides durations (stable screenshots); `refresh_seconds` paces the Training poll."""
        super().__init__()
        self.workbench = workbench or Workbench()
        self.run_dir = Path(run_dir) if run_dir else None
        self.start_screen = screen
        self.timings = timings
        self.refresh_seconds = refresh_seconds

    def on_mount(self) -> None:
        self.switch_mode(self.start_screen)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for mode, key, title in SCREENS:
            yield SystemCommand(f"Go to {title}", f"Open the {title} screen ({key.upper()})",
                                partial(self.switch_mode, mode))
        for binding in getattr(screen, "BINDINGS", []):
            if isinstance(binding, Binding) and binding.description:
                title = type(screen).__name__.removesuffix("Screen")
                yield SystemCommand(f"{title}: {binding.description}", f"Key: {binding.key}",
                                    partial(screen.run_action, binding.action))
        yield from super().get_system_commands(screen)

    async def on_unmount(self) -> None:
        self.workbench.close()
