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
from ..simulator.types import SearchContext, SearchResult
from .config import AgentConfig
from .protocol import (
    RETRY_MESSAGE,
    STOP_SEQUENCES,
    ProtocolConstraint,
    closing_tag,
    parse_turn,
    protocol_grammar,
    render_information,
    user_message,
)
from .types import AgentEvent, Answer, Invalid, Search, Segment, Step, Trajectory


def turn_rules(config: AgentConfig, turn: int, searches: int) -> tuple[bool, bool]:
    """(search allowed, answer allowed) this turn: the last turn must answer; answers need min_searches.
    The rules of constrained decoding, shared by the agent and the trainer's rollouts."""
    last_turn = turn == config.max_turns - 1
    return not last_turn, last_turn or searches >= config.min_searches


def apply_turn(traj: Trajectory, text: str, finish_reason: str) -> list[Step]:
    """Record one generated turn: its segment, think steps and the final action (Search, Answer or Invalid).

    An answer finishes the trajectory; an invalid turn appends the retry hint. A search is recorded here
    and gets its documents from `apply_search`. Shared by the agent loop and the trainer's batched rollouts,
    so training and inference build the same transcript.
    """
    traj.turns += 1
    steps = parse_turn(text, finish_reason)
    action = steps[-1]
    traj.segments.append(Segment(text + closing_tag(action), generated=True))
    traj.steps.extend(steps)
    if isinstance(action, Answer):
        traj.answer, traj.finished, traj.stop_reason = action.text, True, "answer"
    elif isinstance(action, Invalid):
        traj.segments.append(Segment(RETRY_MESSAGE, generated=False))
    return steps


def apply_search(traj: Trajectory, action: Search, result: SearchResult) -> None:
    """Attach a search's documents and append the <information> block the policy reads next."""
    action.docs, action.mode, action.cache_hit = result.docs, result.mode, result.cache_hit
    action.seconds, action.warnings = result.seconds, result.warnings
    traj.segments.append(Segment(render_information(result.docs), generated=False))


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
        wanted = mode == "on" or (mode == "auto" and grammar_default)
        # llama.cpp takes the protocol as a GBNF grammar; other backends as a token-mask constraint.
        self.use_grammar = wanted and policy.supports_grammar
        self.use_constraint = wanted and not policy.supports_grammar

    def _grammar(self, turn: int, searches: int) -> str | None:
        if not self.use_grammar:
            return None
        allow_search, allow_answer = turn_rules(self.config, turn, searches)
        limits = ProtocolConstraint.for_budget(self.config.max_tokens_per_turn)  # a turn that can close in budget
        return protocol_grammar(allow_search=allow_search, allow_answer=allow_answer,
                                think_chars=limits.think_chars, query_chars=limits.query_chars)

    def _constraint(self, turn: int, searches: int) -> ProtocolConstraint | None:
        if not self.use_constraint:
            return None
        allow_search, allow_answer = turn_rules(self.config, turn, searches)
        return ProtocolConstraint.for_budget(self.config.max_tokens_per_turn, allow_search, allow_answer)

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
                constraint=self._constraint(turn, len(traj.searches)),
            )
            stream = self.policy.stream(transcript, params)
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
            traj.usage.add(completion.prompt_tokens, completion.completion_tokens, completion.cached_prompt_tokens)
            steps = apply_turn(traj, completion.text, completion.finish_reason)
            action = steps[-1]
            for step in steps[:-1]:
                yield AgentEvent("think", text=step.text, step=step)
            if isinstance(action, Answer):
                yield AgentEvent("answer", text=action.text, step=action)
                break
            if isinstance(action, Invalid):
                yield AgentEvent("error", text=action.reason, step=action)
                continue
            assert isinstance(action, Search)
            yield AgentEvent("search_started", text=action.query, step=action)
            result = self.engine.lookup([action.query], cfg.k, mode=cfg.search_mode, context=context)[0]
            apply_search(traj, action, result)
            yield AgentEvent("docs", step=action)
        else:
            traj.stop_reason = "max_turns"
        traj.seconds = time.perf_counter() - started
        yield AgentEvent("done", trajectory=traj)
