"""GRPO rollouts: G multi-turn trajectories per question, generated in batches against a search engine.

The turn logic is the agent's own (`agent.loop.apply_turn` / `apply_search`, the same prompt, tags, stop
sequences and <information> rendering), so what the policy learns is what the runtime runs. Here all
active trajectories of a batch advance one turn per `generate` call, and every search of that turn goes
to the engine in one `lookup_requests` call; each search independently gets *noisy* documents with the
curriculum's probability. Searches of a group hit the engine's shared document cache.

`tokenize_trajectory` turns a transcript back into token ids with a loss mask: 1 on policy-generated
segments, 0 on everything the environment wrote (the chat prompt, <information> blocks, retry hints).
Segments are tokenized one by one, so no token straddles a policy/environment boundary.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace

from ..agent.config import AgentConfig
from ..agent.loop import apply_search, apply_turn, turn_rules
from ..agent.protocol import STOP_SEQUENCES, ProtocolConstraint, user_message
from ..agent.types import Search, Segment, Trajectory
from ..models.backends.base import GenerationBackend, SamplingParams
from ..models.hf import token_ids
from ..simulator.engine import SearchEngine
from ..simulator.types import Mode, SearchContext
from .datasets import QAExample


@dataclass
class RolloutBatch:
    examples: list[QAExample]  # one per group
    groups: list[list[Trajectory]]  # groups[i] holds the G trajectories of examples[i]
    searches: int = 0
    noisy_searches: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    generate_seconds: float = 0.0
    search_seconds: float = 0.0

    @property
    def trajectories(self) -> list[Trajectory]:
        return [t for group in self.groups for t in group]

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cache_hits / self.searches if self.searches else None


@dataclass
class _Slot:
    traj: Trajectory
    context: SearchContext
    pending: list[Search] = field(default_factory=list)


def rollout(
    policy: GenerationBackend,
    engine: SearchEngine,
    examples: list[QAExample],
    group_size: int,
    agent: AgentConfig,
    *,
    noise_p: float,
    rng: random.Random,
    stopped=lambda: False,
    constrained: bool = False,
    max_rows: int | None = None,
) -> RolloutBatch:
    """Run `group_size` trajectories per example to an answer or the turn limit; `stopped()` aborts early.

    `constrained` decodes every turn under the protocol (`ProtocolConstraint`, the runtime's grammar as a
    token mask), so even an untrained policy writes well-formed turns whose answers can earn reward.
    `max_rows` caps the rows of one `generate` call (the KV cache of a long batch is the memory peak)."""
    started = time.perf_counter()
    batch = RolloutBatch(examples=list(examples), groups=[])
    slots: list[_Slot] = []
    for example in examples:
        group = []
        context = SearchContext(example.question, tuple(example.golden_answers))
        for _ in range(group_size):
            traj = Trajectory(question=example.question)
            traj.segments.append(Segment(policy.render_chat(user_message(example.question)), generated=False))
            group.append(traj)
            slots.append(_Slot(traj, context))
        batch.groups.append(group)
    params = SamplingParams(
        max_tokens=agent.max_tokens_per_turn, temperature=agent.temperature, top_p=agent.top_p,
        stop=list(STOP_SEQUENCES), seed=None,
    )
    for turn in range(agent.max_turns):
        active = [s for s in slots if not s.traj.finished and not s.traj.stop_reason]
        for slot in active:
            if policy.count_tokens(slot.traj.transcript) + agent.max_tokens_per_turn > agent.max_context:
                slot.traj.stop_reason = "context_limit"
        active = [s for s in active if not s.traj.stop_reason]
        if not active or stopped():
            break
        tick = time.perf_counter()
        completions = []
        step = max_rows or len(active)
        for start in range(0, len(active), step):
            completions += _generate(policy, active[start : start + step], params, agent, turn, constrained)
        batch.generate_seconds += time.perf_counter() - tick
        last_turn = turn == agent.max_turns - 1
        requests: list[tuple[str, Mode, SearchContext | None]] = []
        waiting: list[tuple[_Slot, Search]] = []
        for slot, completion in zip(active, completions, strict=True):
            slot.traj.usage.add(completion.prompt_tokens, completion.completion_tokens, 0)
            action = apply_turn(slot.traj, completion.text, completion.finish_reason)[-1]
            if isinstance(action, Search) and not last_turn:  # a search on the last turn would go unread
                mode: Mode = "noisy" if rng.random() < noise_p else "useful"
                requests.append((action.query, mode, slot.context))
                waiting.append((slot, action))
        if requests:
            tick = time.perf_counter()
            results = engine.lookup_requests(requests, agent.k)
            batch.search_seconds += time.perf_counter() - tick
            for (slot, action), result in zip(waiting, results, strict=True):
                apply_search(slot.traj, action, result)
                batch.searches += 1
                batch.noisy_searches += result.mode == "noisy"
                batch.cache_hits += result.cache_hit
    for slot in slots:
        if not slot.traj.finished and not slot.traj.stop_reason:
            slot.traj.stop_reason = "max_turns"
    batch.seconds = time.perf_counter() - started
    for traj in batch.trajectories:
        traj.seconds = batch.seconds
    return batch


def _generate(policy, active: list[_Slot], params: SamplingParams, agent: AgentConfig, turn: int, constrained: bool):
    """One turn for every active slot; with the protocol constraint, one call per (search, answer) rule."""
    if not constrained:
        return policy.generate([s.traj.transcript for s in active], params)
    by_rule: dict[tuple[bool, bool], list[int]] = {}
    for i, slot in enumerate(active):
        by_rule.setdefault(turn_rules(agent, turn, len(slot.traj.searches)), []).append(i)
    completions: list = [None] * len(active)
    for (allow_search, allow_answer), indices in by_rule.items():
        constraint = ProtocolConstraint.for_budget(agent.max_tokens_per_turn, allow_search, allow_answer)
        found = policy.generate([active[i].traj.transcript for i in indices], replace(params, constraint=constraint))
        for i, completion in zip(indices, found, strict=True):
            completions[i] = completion
    return completions


def tokenize_trajectory(tokenizer, segments: list[Segment], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of a transcript and its loss mask (1 = policy-generated), cut at `max_length` tokens."""
    ids: list[int] = []
    mask: list[int] = []
    for i, segment in enumerate(segments):
        piece = token_ids(tokenizer, segment.text, starts_sequence=i == 0)
        ids.extend(piece)
        mask.extend([int(segment.generated)] * len(piece))
    return ids[:max_length], mask[:max_length]
