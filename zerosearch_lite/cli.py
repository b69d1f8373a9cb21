"""The `zsl` command: assembles each package's commands into one Typer app and turns expected
failures (`ZslError`) into a one-line message and a non-zero exit code, never a traceback."""

from __future__ import annotations

import sys

import typer

from .agent.cli import ask_command, history_command
from .errors import ZslError
from .evaluation.eval_cli import eval_app
from .models.cli import export_command, models_command
from .simulator.cli import search_command, serve_command
from .train_lite.sim_cli import sim_app
from .train_lite.train_cli import train_app
from .tui.cli import tui_command

app = typer.Typer(
    name="zsl",
    help="zerosearch-lite: offline LLM search agents with a simulated search engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("ask")(ask_command)
app.command("search")(search_command)
app.command("serve")(serve_command)
app.command("models")(models_command)
app.command("export")(export_command)
app.command("history")(history_command)
app.command("tui")(tui_command)
app.add_typer(sim_app, name="sim")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")


def main() -> None:
    from .console import LazyBar
    from .simulator import config as engine_config

    engine_config.index_progress = LazyBar("embedding the corpus")
    try:
        app(prog_name="zsl")
    except ZslError as exc:
        from .console import err

        err.print(f"[red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
