"""CLI commands of models/: `zsl models` (what resolves on this machine, with formats, sizes and paths) and
`zsl export` (base + LoRA adapter → verified GGUF with a model card). Thin: options, progress and printing;
the export itself is the `export` package."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from ..config_cli import config_command
from ..console import err, out
from .export import ExportConfig


def models_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List models resolvable here: the embedded one, local exports and the Hugging Face cache."""
    from rich.table import Table

    from .catalog import available_models

    rows = available_models()
    if as_json:
        print(json.dumps([r.__dict__ for r in rows]))
        return
    table = Table(show_edge=False)
    for column in ("name", "format", "source", "size", "path"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r.name, r.format, r.source, f"{r.size_bytes / 2**20:.1f} MiB", r.path)
    out.print(table)


@config_command(ExportConfig)
def export_command(
    config: ExportConfig,
    as_json: Annotated[bool, typer.Option("--json", help="Print the model card as JSON.")] = False,
) -> None:
    """Merge a LoRA adapter into its base, write a GGUF, quantize it with llama.cpp and verify it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .export import export_model

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True)
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        result = export_model(config, progress)
    card = result.card
    if as_json:
        print(json.dumps(card, ensure_ascii=False))
        return
    out.print(
        f"[bold]wrote[/] {escape(str(result.path))}  ({card['size_bytes'] / 2**20:.1f} MiB, {card['route']} "
        f"{card['quant']}, {card['seconds'].get('total', 0):.1f} s)"
    )
    out.print(f"sha256 {card['sha256']}")
    out.print(f"card   {escape(str(result.card_path))}")
    checked = card.get("verification")
    if checked and "top1_agrees" in checked:
        agrees = "agrees" if checked["top1_agrees"] else "[yellow]differs[/]"
        out.print(f"verified: tokenizer identical on {checked['tokenizer_probes']} probes; next-token top-1 "
                  f"{agrees}; max |Δlogit| {checked['max_abs_logit_diff']:.3f}")
    elif checked:
        out.print("verified: the LoRA loads beside its base in llama.cpp")
    if card["route"] == "adapter":
        base = "embedded" if card["base"]["name"] == "embedded" else card["base"]["path"]
        out.print(f"use it beside its base: zsl search QUERY --simulator {escape(base)} "
                  f"--adapter {escape(str(result.path))}")
