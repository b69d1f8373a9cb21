"""The agent loop: think → search → read → answer, producing a `Trajectory` and streaming `AgentEvent`s.

Each turn's prompt is the previous prompt plus what was generated and the inserted documents (an
append-only transcript), so llama.cpp reuses the KV cache of everything before the new text. Limits
(turns, tokens per turn, context) end a run with `finished=False` and a `stop_reason`; malformed output
becomes an `Invalid` step followed by a retry hint, never an exception. The rules of a turn live in
`turns.py`, shared with the batched rollouts of GRPO and evaluation (`rollout.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from ..models.backends.base import GenerationBackend
from ..simulator.engine import SearchEngine
from ..simulator.types import SearchContext
from .config import AgentConfig, use_protocol_grammar
from .turns import (
    apply_search,
    apply_turn,
    close_trajectory,
    fits_context,
    pending_search,
    prompt_of,
    require_grammar,
    start_trajectory,
    turn_params,
)
from .types import AgentEvent, Answer, Invalid, Trajectory


class Agent:
    """One policy and one engine. `protocol_grammar`: decode under the protocol; callers that know the model
    pass `use_protocol_grammar(mode, model)`, and without it only `grammar="on"` turns it on."""

    def __init__(self, policy: GenerationBackend, engine: SearchEngine, config: AgentConfig | None = None, *,
                 protocol_grammar: bool | None = None):
        self.policy = policy
        self.engine = engine
        self.config = config or AgentConfig()
        self.constrained = (use_protocol_grammar(self.config.grammar, None) if protocol_grammar is None
                            else protocol_grammar)
        require_grammar(policy, self.constrained)

    def run(self, question: str, *, seed: int | None = None, context: SearchContext | None = None) -> Trajectory:
        for event in self.events(question, seed=seed, context=context):
            if event.kind == "done":
                assert event.trajectory is not None
                return event.trajectory
        raise RuntimeError("agent loop ended without a trajectory")  # pragma: no cover

    def events(
        self,
        question: str,
        *,
        seed: int | None = None,
        context: SearchContext | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[AgentEvent]:
        cfg = self.config
        started = time.perf_counter()
        traj = start_trajectory(self.policy, question)
        seed = cfg.seed if seed is None else seed
        for turn in range(cfg.max_turns):
            if cancelled():
                traj.stop_reason = "cancelled"
                break
            if not fits_context(self.policy, traj, cfg, constrained=self.constrained):
                traj.stop_reason = "context_limit"
                break
            params = turn_params(cfg, turn, len(traj.searches), constrained=self.constrained,
                                 seed=seed)
            stream = self.policy.stream(prompt_of(traj), params)
            try:
                while True:
                    try:
                        chunk = next(stream)
                    except StopIteration as done:
                        completion = done.value
                        break
                    yield AgentEvent("token", text=chunk)
                    if cancelled():
                        completion = None
                        break
            finally:  # also when the consumer abandons this generator (Ctrl-C, an error): stop generating now
                stream.close()
            if completion is None:
                traj.stop_reason = "cancelled"
                break
            steps = apply_turn(self.policy, traj, completion, config=cfg, turn=turn)
            for step in steps[:-1]:
                yield AgentEvent("think", text=step.text, step=step)
            action = steps[-1]
            if isinstance(action, Answer):
                yield AgentEvent("answer", text=action.text, step=action)
                break
            if isinstance(action, Invalid):
                yield AgentEvent("error", text=action.reason, step=action)
                continue
            search = pending_search(traj, steps)
            assert search is not None
            yield AgentEvent("search_started", text=search.query, step=search)
            result = self.engine.lookup([search.query], cfg.k, mode=cfg.search_mode, context=context)[0]
            apply_search(traj, search, result, policy=self.policy)
            yield AgentEvent("docs", step=search)
        close_trajectory(traj)
        traj.seconds = time.perf_counter() - started
        yield AgentEvent("done", trajectory=traj)
