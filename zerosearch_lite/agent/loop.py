"""The agent loop: think → search → read → answer, producing a `Trajectory` and streaming `AgentEvent`s.

Each turn's prompt is the previous prompt plus what was generated and the inserted documents (an
append-only transcript), so llama.cpp reuses the KV cache of everything before the new text. Limits
(turns, tokens per turn, context) end a run with `finished=False` and a `stop_reason`; malformed output
becomes an `Invalid` step followed by a retry hint, never an exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from ..models.backends.base import GenerationBackend, SamplingParams
from ..simulator.engine import SearchEngine
from ..simulator.types import SearchContext
from .config import AgentConfig
from .protocol import (
    RETRY_MESSAGE,
    STOP_SEQUENCES,
    closing_tag,
    parse_turn,
    protocol_grammar,
    render_information,
    user_message,
)
from .types import AgentEvent, Answer, Invalid, Search, Segment, Think, Trajectory


class Agent:
    def __init__(
        self,
        policy: GenerationBackend,
        engine: SearchEngine,
        config: AgentConfig | None = None,
        *,
        grammar_default: bool = False,
    ):
        self.policy = policy
        self.engine = engine
        self.config = config or AgentConfig()
        mode = self.config.grammar
        self.use_grammar = policy.supports_grammar and (mode == "on" or (mode == "auto" and grammar_default))

    def _grammar(self, turn: int, searches: int) -> str | None:
        if not self.use_grammar:
            return None
        last_turn = turn == self.config.max_turns - 1
        return protocol_grammar(
            allow_search=not last_turn, allow_answer=last_turn or searches >= self.config.min_searches
        )

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
        traj = Trajectory(question=question)
        prompt = self.policy.render_chat(user_message(question))
        traj.segments.append(Segment(prompt, generated=False))
        seed = cfg.seed if seed is None else seed
        for turn in range(cfg.max_turns):
            if cancelled():
                traj.stop_reason = "cancelled"
                break
            transcript = traj.transcript
            if self.policy.count_tokens(transcript) + cfg.max_tokens_per_turn > cfg.max_context:
                traj.stop_reason = "context_limit"
                break
            params = SamplingParams(
                max_tokens=cfg.max_tokens_per_turn,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                stop=STOP_SEQUENCES,
                seed=None if seed is None else seed + turn,
                grammar=self._grammar(turn, len(traj.searches)),
            )
            stream = self.policy.stream(transcript, params)
            while True:
                try:
                    chunk = next(stream)
                except StopIteration as done:
                    completion = done.value
                    break
                yield AgentEvent("token", text=chunk)
                if cancelled():
                    stream.close()
                    completion = None
                    break
            if completion is None:
                traj.stop_reason = "cancelled"
                break
            traj.turns += 1
            traj.usage.add(completion.prompt_tokens, completion.completion_tokens, completion.cached_prompt_tokens)
            steps = parse_turn(completion.text, completion.finish_reason)
            action = steps[-1]
            traj.segments.append(Segment(completion.text + closing_tag(action), generated=True))
            for step in steps:
                if isinstance(step, Think):
                    traj.steps.append(step)
                    yield AgentEvent("think", text=step.text, step=step)
            if isinstance(action, Answer):
                traj.steps.append(action)
                traj.answer, traj.finished, traj.stop_reason = action.text, True, "answer"
                yield AgentEvent("answer", text=action.text, step=action)
                break
            if isinstance(action, Invalid):
                traj.steps.append(action)
                yield AgentEvent("error", text=action.reason, step=action)
                traj.segments.append(Segment(RETRY_MESSAGE, generated=False))
                continue
            assert isinstance(action, Search)
            yield AgentEvent("search_started", text=action.query, step=action)
            result = self.engine.lookup([action.query], cfg.k, mode=cfg.search_mode, context=context)[0]
            action.docs, action.mode, action.cache_hit = result.docs, result.mode, result.cache_hit
            action.seconds, action.warnings = result.seconds, result.warnings
            traj.steps.append(action)
            traj.segments.append(Segment(render_information(result.docs), generated=False))
            yield AgentEvent("docs", step=action)
        else:
            traj.stop_reason = "max_turns"
        traj.seconds = time.perf_counter() - started
        yield AgentEvent("done", trajectory=traj)
