"""Ask a question end to end: N sampled trajectories, the vote, and the stored session.

The one place the CLI and the TUI share for "ask"; it does no I/O of its own besides the store.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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


def engine_label(engine: str, simulator: str, corpus: str | None, url: str | None) -> str:
    """How a session names its search engine: `simulated:<model>`, `corpus:<file>` or `http:<url>`."""
    return {"simulated": f"simulated:{simulator}", "corpus": f"corpus:{corpus}", "http": f"http:{url}"}.get(engine, engine)


def policy_label(policy: str, adapter: str | None) -> str:
    """How a session names its policy: the model, plus `+<adapter>` when one is applied."""
    return f"{policy}+{adapter}" if adapter else policy
