"""Rich rendering of agent runs for the terminal: streamed steps, documents, votes and timings.

Presentation only: it reads dataclasses and prints; it never runs models or touches the store.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..simulator.display import print_docs
from .session import AskOutcome
from .types import AgentEvent, Search, Trajectory

__all__ = ["LivePrinter", "print_docs", "print_vote", "search_header"]


def search_header(step: Search) -> str:
    cached = "cache hit" if step.cache_hit else "generated"
    mode = f"{step.mode}, " if step.mode else ""
    return f"  [dim]({mode}{cached}, {step.seconds:.2f}s)[/]"


class LivePrinter:
    """Prints agent events as they arrive (no token echo: steps appear whole, as soon as they end)."""

    def __init__(self, console: Console, show_sample: bool = False):
        self.console = console
        self.show_sample = show_sample

    def event(self, sample: int, event: AgentEvent) -> None:
        c = self.console
        prefix = f"[dim]#{sample + 1}[/] " if self.show_sample else ""
        if event.kind == "think":
            c.print(f"{prefix}[magenta]think[/]   {escape(event.text)}")
        elif event.kind == "search_started":
            c.print(f"{prefix}[cyan]search[/]  [bold]{escape(event.text)}[/]")
        elif event.kind == "docs" and isinstance(event.step, Search):
            c.print(search_header(event.step))
            print_docs(c, event.step.docs)
            for warning in event.step.warnings:
                c.print(f"    [yellow]warning:[/] {escape(warning)}")
        elif event.kind == "answer":
            c.print(f"{prefix}[green]answer[/]  [bold green]{escape(event.text)}[/]")
        elif event.kind == "error":
            c.print(f"{prefix}[yellow]invalid[/] {escape(event.text)}")
        elif event.kind == "done" and event.trajectory is not None:
            self.summary(event.trajectory, prefix)

    def summary(self, traj: Trajectory, prefix: str = "") -> None:
        u = traj.usage
        status = "finished" if traj.finished else f"[yellow]not finished[/] ({traj.stop_reason})"
        speed = f" ({u.decode_tokens_per_second:.0f} tok/s decode)" if u.decode_tokens_per_second else ""
        self.console.print(
            f"{prefix}[dim]{status} · {traj.turns} turns · {len(traj.searches)} searches · "
            f"{u.prompt_tokens} prompt tokens ({u.cached_prompt_tokens} reused) · "
            f"{u.completion_tokens} generated{speed} · {traj.seconds:.1f}s[/]"
        )


def print_vote(console: Console, outcome: AskOutcome) -> None:
    table = Table(title=f"vote over {outcome.vote.total} samples", show_edge=False)
    table.add_column("answer (normalized)")
    table.add_column("votes", justify="right")
    for answer, count in outcome.vote.counts.items():
        table.add_row(escape(answer), str(count))
    unanswered = outcome.vote.total - sum(outcome.vote.counts.values())
    if unanswered:
        table.add_row("[dim](no answer)[/]", str(unanswered))
    console.print(table)
    final = escape(outcome.answer) if outcome.answer else "[yellow](no answer)[/]"
    console.print(f"[bold]answer:[/] [bold green]{final}[/]  [dim]{outcome.seconds:.1f}s[/]")
