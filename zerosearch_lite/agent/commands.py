"""CLI commands of the agent: `zsl ask` and `zsl history` (thin: they parse options and print)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from .. import paths
from ..console import err, out
from ..errors import ZslError
from . import options
from .session import engine_label, policy_label


def ask_command(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    engine: options.Engine = "simulated",
    policy: options.Policy = "embedded",
    policy_adapter: options.PolicyAdapter = None,
    simulator: options.Simulator = "embedded",
    simulator_adapter: options.SimulatorAdapter = None,
    preset: options.Preset = "zsl",
    corpus: options.Corpus = None,
    url: options.Url = None,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, max=64, help="Trajectories to sample and vote over.")] = 1,
    k: options.TopK = 5,
    max_turns: options.MaxTurns = 4,
    max_tokens: options.MaxTokens = 256,
    temperature: options.Temperature = 0.7,
    seed: options.Seed = None,
    grammar: options.Grammar = "auto",
    min_searches: options.MinSearches = 1,
    cache: options.Cache = True,
    store: options.Store = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of the live view.")] = False,
) -> None:
    """Answer a question: the policy thinks, searches, reads and answers, fully offline."""
    from ..models.loading import load_backend
    from ..models.spec import resolve_model
    from ..simulator.factory import build_engine
    from .display import LivePrinter, print_vote
    from .loop import Agent
    from .schema import SampledAnswerModel, TrajectoryModel, VoteModel
    from .session import AskOutcome, ask_events
    from .store import SessionStore

    config = options.agent_config(
        max_turns=max_turns, max_tokens=max_tokens, k=k, temperature=temperature, seed=seed, grammar=grammar,
        min_searches=min_searches,
    )
    policy_model = resolve_model(policy)
    search_engine = build_engine(
        engine, simulator=simulator, adapter=simulator_adapter, preset=preset, corpus=corpus, url=url,
        use_cache=cache,
    )
    backend = load_backend(policy_model, n_ctx=max(config.max_context, 2048), adapter=policy_adapter)
    agent = Agent(backend, search_engine, config, grammar_default=policy_model.source == "embedded")
    session_store = SessionStore(paths.sessions_db()) if store else None
    printer = None if as_json else LivePrinter(out, show_sample=samples > 1)
    if printer:
        out.print(f"[bold]question:[/] {escape(question)}")
    outcome: AskOutcome | None = None
    for item in ask_events(
        agent, question, samples=samples, store=session_store,
        policy_name=policy_label(policy_model.name, policy_adapter),
        engine_name=engine_label(engine, simulator, corpus, url),
    ):
        if isinstance(item, AskOutcome):
            outcome = item
        elif printer:
            printer.event(item.sample, item.event)
    assert outcome is not None
    search_engine.close()
    backend.close()
    if as_json:
        trajectories = [TrajectoryModel.from_trajectory(t) for t in outcome.trajectories]
        if samples == 1:
            payload = trajectories[0].model_dump(exclude_none=True) | {"session_id": outcome.session_id}
        else:
            payload = SampledAnswerModel(
                question=question, answer=outcome.answer, samples=trajectories, seconds=round(outcome.seconds, 3),
                vote=VoteModel(answer=outcome.vote.answer, counts=outcome.vote.counts, total=outcome.vote.total),
            ).model_dump(exclude_none=True) | {"session_id": outcome.session_id}
        print(json.dumps(payload, ensure_ascii=False))
        return
    if samples > 1:
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
    from .store import SessionStore
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
    out.print(table if records else "[dim]no sessions yet: try zsl ask \"...\"[/]")
