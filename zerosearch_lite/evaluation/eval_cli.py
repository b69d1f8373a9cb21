"""CLI group `zsl eval`: `zsl eval [run] --data FILE …` evaluates a policy (the default subcommand, so `run` may be
left out) and `zsl eval compare RUN_A RUN_B …` puts runs side by side. Thin: options come from `EvalConfig`,
the work from `runner.py`, `report.py` and `compare.py`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..config_cli import config_command
from ..console import err, out
from ..simulator.config import INFERENCE_EXCLUDED
from .compare import CompareConfig
from .runner import EvalConfig


class DefaultCommandGroup(TyperGroup):
    """A group whose first argument may be left out: anything that is not a subcommand runs `run`."""

    default_command = "run"

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=DefaultCommandGroup, no_args_is_help=True,
    help="Evaluate a search agent on QA files (strict EM, cover-EM, F1, pass@k, majority@k) and compare runs. "
         "`zsl eval --data FILE …` is `zsl eval run --data FILE …`.",
)


@eval_app.command("run")
@config_command(EvalConfig, exclude=INFERENCE_EXCLUDED)
def run_command(config: EvalConfig) -> None:
    """Evaluate: agent, rag or direct over QA files; resumable (rerun the same command after Ctrl-C)."""
    from rich.markdown import Markdown

    from ..console import progress_bar
    from .report import render_markdown
    from .runner import run_eval

    run_dir = config.run_dir()
    err.print(f"evaluation run: {escape(str(run_dir))}")
    with progress_bar() as bar:
        task = bar.add_task("eval", total=None, info="")

        def update(p) -> None:
            parts = [f"strict EM {p.strict_em:.3f}" if p.strict_em is not None else "",
                     f"cover-EM {p.cover_em:.3f}" if p.cover_em is not None else "",
                     f"{p.seconds_per_question:.1f} s/q" if p.seconds_per_question else "",
                     f"{p.resumed} resumed" if p.resumed else ""]
            bar.update(task, total=p.questions_total, completed=p.questions_done,
                       info=" · ".join(x for x in parts if x))

        try:
            result = run_eval(config, on_progress=update, on_status=lambda text: bar.update(task, info=text))
        except KeyboardInterrupt:
            err.print(f"interrupted: finished questions are kept in {escape(str(run_dir))}; "
                      "run the same command to resume")
            raise typer.Exit(130) from None
    out.print(Markdown(render_markdown(result.report)))
    for note in result.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    files = ["report.md", "report.json", "predictions.jsonl"] + (["coverage.png"] if config.samples > 1 else [])
    err.print(f"[dim]{escape(str(run_dir))}: {', '.join(files)}"
              + (f" ({result.resumed_units} units resumed)" if result.resumed_units else "") + "[/]")


@eval_app.command("compare")
@config_command(CompareConfig)
def compare_command(
    config: CompareConfig,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Runs side by side per dataset and metric, with paired bootstrap intervals of each difference to the first."""
    from rich.markdown import Markdown

    from .compare import compare_runs, render_comparison

    result = compare_runs([Path(run) for run in config.runs], resamples=config.bootstrap)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    out.print(Markdown(render_comparison(result)))
