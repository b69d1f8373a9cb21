"""CLI commands of the agent: `zsl ask` and `zsl history` (thin: they parse options and print)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from .. import paths
from ..config_cli import config_command
from ..console import err, out
from ..errors import ZslError
from ..simulator.config import INFERENCE_EXCLUDED
from .config import AskConfig
from .store import SessionStore


@config_command(AskConfig, exclude=INFERENCE_EXCLUDED)
def ask_command(
    config: AskConfig,
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of the live view.")] = False,
) -> None:
    """Answer a question: the policy thinks, searches, reads and answers, fully offline."""
    from .display import LivePrinter, print_vote
    from .schema import SampledAnswerModel, TrajectoryModel, VoteModel
    from .session import AskOutcome, ask_events, open_agent

    if not question.strip():
        raise ZslError("the question is empty")
    with open_agent(config) as agent:
        session_store = SessionStore(paths.sessions_db()) if config.store else None
        printer = None if as_json else LivePrinter(out, show_sample=config.samples > 1)
        if printer:
            out.print(f"[bold]question:[/] {escape(question)}")
        outcome: AskOutcome | None = None
        for item in ask_events(agent, question, samples=config.samples, store=session_store,
                               policy_name=config.policy.label, engine_name=config.engine.label):
            if isinstance(item, AskOutcome):
                outcome = item
            elif printer:
                printer.event(item.sample, item.event)
    assert outcome is not None
    if as_json:
        trajectories = [TrajectoryModel.from_trajectory(t) for t in outcome.trajectories]
        if config.samples == 1:
            payload = trajectories[0].model_dump(exclude_none=True) | {"session_id": outcome.session_id}
        else:
            payload = SampledAnswerModel(
                question=question, answer=outcome.answer, samples=trajectories, seconds=round(outcome.seconds, 3),
                vote=VoteModel(answer=outcome.vote.answer, counts=outcome.vote.counts, total=outcome.vote.total),
            ).model_dump(exclude_none=True) | {"session_id": outcome.session_id}
        print(json.dumps(payload, ensure_ascii=False))
        return
    if config.samples > 1:
        print_vote(out, outcome)
    if outcome.session_id is not None:
        err.print(f"[dim]saved as session {outcome.session_id} in {paths.sessions_db()}[/]")


def history_command(
    limit: Annotated[int, typer.Option(min=1, help="Sessions to list.")] = 20,
    search: Annotated[str | None, typer.Option("--search", help="Full-text search over questions and answers.")] = None,
    show: Annotated[int | None, typer.Option("--show", help="Print one session with its trajectories.")] = None,
    delete: Annotated[int | None, typer.Option("--delete", help="Delete one session.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List, search, show or delete past sessions."""
    from rich.table import Table

    from .display import LivePrinter, print_docs, search_header
    from .schema import TrajectoryModel
    from .types import Answer, Invalid, Search, Think

    store = SessionStore(paths.sessions_db())
    if delete is not None:
        if not store.delete(delete):
            raise ZslError(f"no session {delete} in {store.path}")
        err.print(f"deleted session {delete}")
        return
    if show is not None:
        record = store.get(show)
        if record is None:
            raise ZslError(f"no session {show} in {store.path}")
        if as_json:
            data = {k: v for k, v in vars(record).items() if k != "trajectories"}
            data["trajectories"] = [TrajectoryModel.from_trajectory(t).model_dump() for t in record.trajectories or []]
            print(json.dumps(data, ensure_ascii=False))
            return
        out.print(f"[bold]#{record.id}[/] {escape(record.question)}  [dim]{record.created_at} · {record.policy} · {record.engine}[/]")
        printer = LivePrinter(out)
        for i, traj in enumerate(record.trajectories or []):
            if record.samples > 1:
                out.print(f"[bold]sample {i + 1}[/]")
            for step in traj.steps:
                if isinstance(step, Think):
                    out.print(f"[magenta]think[/]   {escape(step.text)}")
                elif isinstance(step, Search):
                    out.print(f"[cyan]search[/]  [bold]{escape(step.query)}[/]" + search_header(step))
                    print_docs(out, step.docs)
                elif isinstance(step, Answer):
                    out.print(f"[green]answer[/]  [bold green]{escape(step.text)}[/]")
                elif isinstance(step, Invalid):
                    out.print(f"[yellow]invalid[/] {escape(step.reason)}")
            printer.summary(traj)
        return
    records = store.list(limit=limit, query=search)
    if as_json:
        print(json.dumps([{k: v for k, v in vars(r).items() if k != "trajectories"} for r in records], ensure_ascii=False))
        return
    table = Table(show_edge=False)
    for column in ("id", "when", "question", "answer", "samples", "seconds"):
        table.add_column(column)
    for r in records:
        table.add_row(str(r.id), r.created_at.replace("T", " ")[:19], escape(r.question), escape(r.answer or "—"),
                      str(r.samples), f"{r.seconds:.1f}")
    if not records:
        out.print(f"[dim]no sessions match {escape(repr(search))}[/]" if search and search.strip()
                  else "[dim]no sessions yet: try zsl ask \"...\"[/]")
        return
    out.print(table)
