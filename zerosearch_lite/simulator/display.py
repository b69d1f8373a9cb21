"""Rich rendering of documents for the terminal, shared by `zsl search` and the agent's live view.

Presentation only: it reads `Doc`s and prints; it never runs an engine.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from .types import Doc


def print_docs(console: Console, docs: list[Doc], *, indent: str = "    ") -> None:
    if not docs:
        console.print(f"{indent}[yellow](no documents)[/]")
    for i, doc in enumerate(docs, 1):
        title = f"[bold]{escape(doc.title)}[/] " if doc.title else ""
        console.print(f"{indent}[dim]{i}.[/] {title}{escape(doc.text)}")
