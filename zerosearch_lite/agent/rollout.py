"""Batched rollouts: many trajectories advanced together, the one code path of GRPO and evaluation.

Each request is one trajectory (a question, the training context the engine may use, a seed). On a backend
that batches (transformers, an OpenAI-compatible server) all active trajectories advance one turn per
`generate` call; on one that does not (llama.cpp) trajectories run one after another, so each turn's prompt
extends the previous one and the KV prefix is reused. Either way every search of a turn goes to the engine
in one `lookup_requests` call, and with `noise_p` each search independently gets *noisy* documents with that
probability (the curriculum). The turn rules are `turns.py`'s, the same as `zsl ask`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ..models.backends.base import GenerationBackend
from ..simulator.engine import SearchEngine
from ..simulator.types import Mode, SearchContext, SearchResult
from .config import AgentConfig, Method
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
    turn_rules,
)
from .types import Search, Trajectory


@dataclass(frozen=True)
class RolloutRequest:
    question: str
    context: SearchContext | None = None  # training hints for the engine; None at evaluation
    seed: int | None = None  # sampling seed of this trajectory (turn t uses seed + t)


@dataclass
class RolloutStats:
    searches: int = 0
    noisy_searches: int = 0
    cache_hits: int = 0
    simulator_tokens: int = 0
    seconds: float = 0.0
    generate_seconds: float = 0.0
    search_seconds: float = 0.0
    guarded_documents: int = 0  # noisy documents the guard caught holding a gold answer
    guard_retries: int = 0  # regenerations the guard asked of the simulator
    guard_dropped: int = 0  # caught documents no regeneration or other query could replace (the search got fewer)
    guard_seconds: float = 0.0  # simulator time spent on the guard's regenerations (part of search_seconds)

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cache_hits / self.searches if self.searches else None

    @property
    def noisy_share(self) -> float | None:
        return self.noisy_searches / self.searches if self.searches else None

    def count(self, result: SearchResult) -> None:
        self.searches += 1
        self.noisy_searches += result.mode == "noisy"
        self.cache_hits += result.cache_hit
        self.simulator_tokens += result.generated_tokens
        self.guarded_documents += result.guard_leaked
        self.guard_retries += result.guard_retries
        self.guard_dropped += result.guard_dropped
        self.guard_seconds += result.guard_seconds


@dataclass
class _Slot:
    traj: Trajectory
    request: RolloutRequest
    row: int = 0  # position in the run's requests
    turn: int = 0
    done: bool = False

    def seed(self, batch_seed: int | None) -> int | None:
        """This trajectory's seed: its request's own, else one the batch seed gives its row, else none."""
        if self.request.seed is not None:
            return self.request.seed
        return None if batch_seed is None else batch_seed + 7919 * self.row


@dataclass
class Rollout:
    """What `rollout` needs besides the requests; shared by every call of a run."""

    policy: GenerationBackend
    engine: SearchEngine
    config: AgentConfig
    method: Method = "agent"
    constrained: bool = False  # decode under the protocol (see `config.use_protocol_grammar`)
    max_rows: int | None = None  # largest number of rows per generate call (the KV cache is the memory peak)
    stopped: Callable[[], bool] = field(default=lambda: False)

    def __post_init__(self) -> None:
        require_grammar(self.policy, self.constrained)

    def mode(self, noise_p: float | None, rng: random.Random | None) -> Mode | None:
        """The documents a search asks for: the curriculum's draw in training, the agent's setting otherwise."""
        if noise_p is None:
            return self.config.search_mode
        assert rng is not None
        return "noisy" if rng.random() < noise_p else "useful"

    def run(self, requests: Sequence[RolloutRequest], *, noise_p: float | None = None,
            rng: random.Random | None = None, batch_seed: int | None = None) -> tuple[list[Trajectory], RolloutStats]:
        """Every request to an answer or a limit, in order; `stopped()` aborts between turns. A trajectory
        samples turn t with its request's seed + t, in a batch as one at a time; requests without a seed get
        one from `batch_seed` and their row (none without it)."""
        started = time.perf_counter()
        stats = RolloutStats()
        slots = self._start(requests, stats, noise_p, rng)
        if self.policy.batches_prompts:
            self._advance(slots, stats, noise_p, rng, batch_seed)
        else:
            for slot in slots:
                self._advance([slot], stats, noise_p, rng, slot.request.seed)
        stats.seconds = time.perf_counter() - started
        for slot in slots:
            close_trajectory(slot.traj)
        share = stats.seconds / max(1, len(slots))
        for slot in slots:  # batched: a share of the batch's time; sequential: the trajectory's own
            slot.traj.seconds = slot.traj.seconds or share
        return [s.traj for s in slots], stats

    def _start(self, requests, stats, noise_p, rng) -> list[_Slot]:
        retrieved: list[SearchResult | None] = [None] * len(requests)
        if self.method == "rag":  # one retrieval with the question, all of them in one engine call
            tick = time.perf_counter()
            asks = [(r.question, self.mode(noise_p, rng), r.context) for r in requests]
            retrieved = list(self.engine.lookup_requests(asks, self.config.k))  # type: ignore[arg-type]
            stats.search_seconds += time.perf_counter() - tick
            for result in retrieved:
                stats.count(result)  # type: ignore[arg-type]
        return [_Slot(start_trajectory(self.policy, r.question, self.method, found), r, row)
                for row, (r, found) in enumerate(zip(requests, retrieved, strict=True))]

    def _advance(self, slots: list[_Slot], stats: RolloutStats, noise_p, rng, seed: int | None) -> None:
        started = time.perf_counter()
        for turn in range(self.config.max_turns):
            active = [s for s in slots if not s.done]
            for slot in active:
                if not fits_context(self.policy, slot.traj, self.config, constrained=self.constrained):
                    slot.traj.stop_reason, slot.done = "context_limit", True
            active = [s for s in active if not s.done]
            if not active or self.stopped():
                break
            tick = time.perf_counter()
            completions = self._generate(active, turn, seed)
            stats.generate_seconds += time.perf_counter() - tick
            searches: list[tuple[_Slot, Search]] = []
            for slot, completion in zip(active, completions, strict=True):
                steps = apply_turn(self.policy, slot.traj, completion, config=self.config, turn=turn,
                                   method=self.method)
                slot.done = slot.traj.finished
                search = pending_search(slot.traj, steps)
                if search is not None:
                    searches.append((slot, search))
            if searches:
                tick = time.perf_counter()
                asks = [(search.query, self.mode(noise_p, rng), slot.request.context) for slot, search in searches]
                results = self.engine.lookup_requests(asks, self.config.k)  # type: ignore[arg-type]
                stats.search_seconds += time.perf_counter() - tick
                for (slot, search), result in zip(searches, results, strict=True):
                    apply_search(slot.traj, search, result, policy=self.policy)
                    stats.count(result)
        if len(slots) == 1:
            slots[0].traj.seconds = time.perf_counter() - started

    def _generate(self, active: list[_Slot], turn: int, seed: int | None) -> list:
        """One turn for every active slot: one call per group of rows under the same turn rules (hence the
        same grammar), at most `max_rows` rows a call. Each row samples with its trajectory's own seed
        (+ turn), so samples of one question never share one (`SamplingParams.seeds`)."""
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, slot in enumerate(active):
            groups.setdefault(turn_rules(self.config, turn, len(slot.traj.searches), self.method), []).append(i)
        completions: list = [None] * len(active)
        for indices in groups.values():
            searches = len(active[indices[0]].traj.searches)
            params = turn_params(self.config, turn, searches, method=self.method, constrained=self.constrained,
                                 seed=seed)
            step = self.max_rows or len(indices)
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                seeds = [active[i].seed(seed) for i in chunk]
                call = params if None in seeds else replace(params, seeds=tuple(s + turn for s in seeds))
                found = self.policy.generate([prompt_of(active[i].traj) for i in chunk], call)
                for i, completion in zip(chunk, found, strict=True):
                    completions[i] = completion
        return completions
