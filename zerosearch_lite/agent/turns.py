"""The rules of one turn, written once and shared by the agent loop (one streamed trajectory: `zsl ask`, the
TUI) and the batched rollouts (GRPO and evaluation): how a trajectory starts for each method, what a turn
may do, its sampling parameters and grammar, the context check, and how a generated turn and a search
result are recorded.

Token-in/token-out: when the policy backend tokenizes locally, every segment keeps its token ids (generated
turns: the ids the backend sampled; environment text: tokenized once, when appended), and the next prompt is
those ids, so the policy reads exactly what it wrote and GRPO trains on the same ids. Must not run models.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ZslError
from ..models.backends.base import Completion, GenerationBackend, Prompt, SamplingParams
from ..simulator.types import Doc, SearchResult
from .config import AgentConfig, Method
from .protocol import (
    RETRY_MESSAGE,
    STOP_SEQUENCES,
    closing_tag,
    method_message,
    parse_turn,
    render_information,
    turn_grammar,
    turn_token_bound,
)
from .types import Answer, Invalid, Search, Segment, Step, Trajectory, Usage

LAST_TURN_SEARCH = "a search on the last turn: no turn is left to read its results"
METHOD_SEARCH = "this method does not search"


def start_trajectory(policy: GenerationBackend, question: str, method: Method = "agent",
                     retrieved: SearchResult | None = None) -> Trajectory:
    """A trajectory holding the method's prompt; `rag` puts its one retrieval (`retrieved`) into the prompt
    and records it as the trajectory's search."""
    traj = Trajectory(question=question)
    docs: list[Doc] | None = None
    if method == "rag":
        if retrieved is None:
            raise ValueError("the rag method needs the retrieval of the question")
        action = Search(retrieved.query)
        apply_search(traj, action, retrieved, record=False)
        traj.steps.append(action)
        docs = action.docs
    append_environment(policy, traj, policy.render_chat(method_message(question, method, docs)), first=True)
    return traj


def append_environment(policy: GenerationBackend, traj: Trajectory, text: str, *, first: bool = False) -> None:
    """Environment text (prompt, documents, retry hint): masked from training, tokenized once if the policy
    tokenizes locally (BOS only at the start of the sequence)."""
    ids = policy.tokenize(text, starts_sequence=first) if policy.accepts_token_ids else None
    traj.segments.append(Segment(text, generated=False, token_ids=ids))


def prompt_of(traj: Trajectory) -> Prompt:
    """The next prompt: the transcript's token ids when every segment has them (token-in), else its text."""
    if traj.segments and all(s.token_ids is not None for s in traj.segments):
        return [i for s in traj.segments for i in s.token_ids]  # type: ignore[union-attr]
    return traj.transcript


def transcript_tokens(policy: GenerationBackend, traj: Trajectory) -> int:
    prompt = prompt_of(traj)
    return len(prompt) if not isinstance(prompt, str) else policy.count_tokens(prompt)


def turn_rules(config: AgentConfig, turn: int, searches: int, method: Method = "agent") -> tuple[bool, bool]:
    """(search allowed, answer allowed) this turn: the last turn must answer, an answer needs `min_searches`
    searches first, and only the agent method searches (rag retrieved once, up front)."""
    if method != "agent":
        return False, True
    last_turn = turn == config.max_turns - 1
    return not last_turn, last_turn or searches >= config.min_searches


def require_grammar(policy: GenerationBackend, constrained: bool) -> None:
    """Decoding under the protocol (`constrained`) needs a backend that applies the grammar: it is what
    enforces `min_searches` and a well-formed turn. A server backend is told to send it (llama.cpp's server
    and vLLM apply it); a backend that cannot is refused in one line, never silently decoded free."""
    if not constrained or policy.supports_grammar:
        return
    if hasattr(policy, "send_grammars"):
        policy.send_grammars()
        return
    raise ZslError(f"{policy.model_id} cannot decode under the protocol grammar: use --grammar off")


def turn_max_tokens(config: AgentConfig, constrained: bool) -> int:
    """New tokens one turn may take: `max_tokens_per_turn`, or under the grammar what lets its longest turn
    close (`protocol.turn_token_bound`): a grammar bounds characters, so the budget outlasts it and a
    degenerate turn of one-character tokens is never cut before its closing tag. Prose ends far sooner."""
    return turn_token_bound(config.max_tokens_per_turn) if constrained else config.max_tokens_per_turn


def turn_params(config: AgentConfig, turn: int, searches: int, *, method: Method = "agent",
                constrained: bool = False, seed: int | None = None) -> SamplingParams:
    """Sampling parameters of one turn. `constrained`: decode under the protocol grammar of this turn's rules,
    its caps sized from `max_tokens_per_turn` (every local backend enforces it; servers that take grammars
    are sent it)."""
    params = SamplingParams(
        max_tokens=turn_max_tokens(config, constrained), temperature=config.temperature, top_p=config.top_p,
        stop=list(STOP_SEQUENCES), seed=None if seed is None else seed + turn,
    )
    if constrained:
        allow_search, allow_answer = turn_rules(config, turn, searches, method)
        params.grammar = turn_grammar(config.max_tokens_per_turn, allow_search, allow_answer)
    return params


def fits_context(policy: GenerationBackend, traj: Trajectory, config: AgentConfig, *, constrained: bool) -> bool:
    """Whether one more turn fits the context (else the run ends with `context_limit`)."""
    limit = min(config.max_context, policy.context_size)
    return transcript_tokens(policy, traj) + turn_max_tokens(config, constrained) <= limit


def apply_turn(policy: GenerationBackend, traj: Trajectory, completion: Completion, *, config: AgentConfig,
               turn: int, method: Method = "agent") -> list[Step]:
    """Record one generated turn: its segment (with the sampled ids), think steps and the final action. An
    answer finishes the trajectory; an invalid turn, or a search this turn may not make, appends the retry
    hint. A search is recorded here and gets its documents from `apply_search`."""
    traj.turns += 1
    traj.usage.add(completion)
    traj.turn_usage.append(Usage())
    traj.turn_usage[-1].add(completion)
    steps = parse_turn(completion.text, completion.finish_reason)
    action = steps[-1]
    closing = closing_tag(action)  # the stop string that ended the turn (its ids are in the sampled ids)
    if isinstance(action, Search) and not turn_rules(config, turn, len(traj.searches), method)[0]:
        reason = LAST_TURN_SEARCH if method == "agent" else METHOD_SEARCH
        action = steps[-1] = Invalid(completion.text, reason)
    traj.segments.append(Segment(completion.text + closing, generated=True,
                                 token_ids=completion.token_ids if policy.accepts_token_ids else None))
    traj.steps.extend(steps)
    if isinstance(action, Answer):
        traj.answer, traj.finished, traj.stop_reason = action.text, True, "answer"
    elif isinstance(action, Invalid):
        append_environment(policy, traj, RETRY_MESSAGE)
    return steps


def apply_search(traj: Trajectory, action: Search, result: SearchResult, *, policy: GenerationBackend | None = None,
                 record: bool = True) -> None:
    """Attach a search's documents and (with `record`) append the <information> block the policy reads next."""
    action.docs, action.mode, action.cache_hit = result.docs, result.mode, result.cache_hit
    action.seconds, action.warnings = result.seconds, result.warnings
    if record:
        assert policy is not None
        append_environment(policy, traj, render_information(result.docs))


def close_trajectory(traj: Trajectory) -> None:
    """A trajectory that ran out of turns without an answer or another stop reason."""
    if not traj.finished and not traj.stop_reason:
        traj.stop_reason = "max_turns"


def pending_search(traj: Trajectory, steps: Sequence[Step]) -> Search | None:
    """The search the turn just recorded asks for, if any."""
    action = steps[-1] if steps else None
    return action if isinstance(action, Search) and not traj.finished else None
