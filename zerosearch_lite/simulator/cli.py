"""CLI commands of the simulator: `zsl search` (one engine query) and `zsl serve` (the /retrieve server)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from ..config_cli import config_command
from ..console import err, out
from ..errors import ZslError
from .config import INFERENCE_EXCLUDED, SearchConfig, ServeCommandConfig, open_engine
from .engine import SearchEngine


@config_command(SearchConfig, exclude=INFERENCE_EXCLUDED)
def search_command(
    config: SearchConfig,
    query: Annotated[str, typer.Argument(help="The search query.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print {query, mode, docs, cache_hit, seconds}.")] = False,
) -> None:
    """Query a search engine alone: the simulator writes k useful or noisy documents."""
    from .display import print_docs

    search_engine = open_engine(config.engine)
    print_engine_warnings(search_engine)
    try:
        result = search_engine.lookup([query], config.k, mode=config.mode)[0]
    finally:
        search_engine.close()
    if as_json:
        payload = {
            "query": result.query,
            "mode": result.mode,
            "docs": [d.to_dict() for d in result.docs],
            "cache_hit": result.cache_hit,
            "seconds": round(result.seconds, 4),
            "warnings": result.warnings,
        }
        print(json.dumps(payload, ensure_ascii=False))
        return
    kind = config.engine.kind
    source = "cache hit" if result.cache_hit else "generated" if kind in ("simulated", "self") else kind
    label = f"{result.mode}, " if result.mode else ""
    out.print(f"[cyan]search[/] [bold]{escape(query)}[/]  [dim]({label}{source}, {result.seconds:.2f}s)[/]")
    print_docs(out, result.docs)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")


@config_command(ServeCommandConfig, exclude=INFERENCE_EXCLUDED)
def serve_command(config: ServeCommandConfig) -> None:
    """Serve an engine over HTTP with a Search-R1-compatible POST /retrieve and GET /health."""
    from .server import serve

    if config.engine.kind in ("self", "none"):
        raise ZslError(f"--engine {config.engine.kind} has no engine of its own to serve")
    engine = open_engine(config.engine)
    print_engine_warnings(engine)
    serve(engine, config.server, say=lambda line: err.print(escape(line)))


def print_engine_warnings(engine: SearchEngine) -> None:
    """What the engine noticed while opening (skipped corpus rows, a rebuilt index): a line each, on stderr."""
    for warning in getattr(engine, "warnings", None) or []:
        err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
