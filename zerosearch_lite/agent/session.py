"""Ask a question end to end: N sampled trajectories, the vote, and the stored session.

The one place the CLI and the TUI share for "ask"; it does no I/O of its own besides the store.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .config import AskConfig, use_protocol_grammar
from .loop import Agent
from .store import SessionStore
from .types import AgentEvent, Trajectory
from .voting import Vote, vote_trajectories


@dataclass
class AskOutcome:
    question: str
    trajectories: list[Trajectory]
    vote: Vote
    seconds: float
    session_id: int | None = None

    @property
    def answer(self) -> str | None:
        return self.vote.answer


@dataclass
class SampleEvent:
    sample: int
    event: AgentEvent


def ask_events(
    agent: Agent,
    question: str,
    *,
    samples: int = 1,
    store: SessionStore | None = None,
    policy_name: str = "",
    engine_name: str = "",
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[SampleEvent | AskOutcome]:
    """Yield every agent event tagged with its sample index, then the `AskOutcome` (already stored)."""
    started = time.perf_counter()
    base_seed = agent.config.seed if agent.config.seed is not None else random.randrange(1 << 30)
    trajectories: list[Trajectory] = []
    for i in range(samples):
        if cancelled():
            break
        for event in agent.events(question, seed=base_seed + 1000 * i, cancelled=cancelled):
            if event.kind == "done":
                assert event.trajectory is not None
                trajectories.append(event.trajectory)
            yield SampleEvent(i, event)
    seconds = time.perf_counter() - started
    outcome = AskOutcome(question, trajectories, vote_trajectories(trajectories), seconds)
    if store is not None and trajectories:
        outcome.session_id = store.save(
            trajectories, outcome.vote, policy=policy_name, engine=engine_name, seconds=seconds
        )
    yield outcome


def ask(agent: Agent, question: str, **kwargs) -> AskOutcome:
    for item in ask_events(agent, question, **kwargs):
        if isinstance(item, AskOutcome):
            return item
    raise RuntimeError("ask ended without an outcome")  # pragma: no cover


@contextmanager
def open_agent(config: AskConfig) -> Iterator[Agent]:
    """Load the policy and the engine `config` names into an `Agent`; both are closed when the block ends,
    however it ends (an error, Ctrl-C)."""
    from ..models.loading import load_model
    from ..simulator.config import open_engine

    loaded = load_model(config.policy.name, config.policy.backend, adapter=config.policy.adapter,
                        n_ctx=max(config.agent.max_context, 2048))
    try:
        engine = open_engine(config.engine, policy=loaded.backend)
        try:
            yield Agent(loaded.backend, engine, config.agent,
                        protocol_grammar=use_protocol_grammar(config.agent.grammar, loaded.model))
        finally:
            engine.close()
    finally:
        loaded.backend.close()
