"""CLI command `zsl tui`: the same options as `zsl ask` (one `AskConfig`), then the app.

Textual is imported only inside the command, so `zsl` works without the `tui` extra installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ..agent.config import AskConfig
from ..config_cli import config_command
from ..errors import ZslError
from ..simulator.config import INFERENCE_EXCLUDED

ScreenName = Literal["ask", "history", "simulator", "training", "eval", "models"]


@config_command(AskConfig, exclude=INFERENCE_EXCLUDED)
def tui_command(
    config: AskConfig,
    run: Annotated[Path | None, typer.Option("--run", help="Training run directory to show on the Training screen.")] = None,
    screen: Annotated[ScreenName, typer.Option(help="Screen to open first.")] = "ask",
) -> None:
    """Open the terminal UI: ask and watch the agent, browse history, compare simulations, watch training."""
    try:
        import textual  # noqa: F401
        import textual_plotext  # noqa: F401
    except ImportError:
        # No square brackets here (the "tui" extra): the CLI prints errors as Rich markup.
        raise ZslError("the TUI needs textual and textual-plotext: pip install textual textual-plotext") from None
    from .app import ZslApp
    from .services import Workbench

    ZslApp(Workbench(config), run_dir=run, screen=screen).run()
