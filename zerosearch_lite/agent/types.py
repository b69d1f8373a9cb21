"""Plain data of one agent run: steps, the trajectory, text segments (policy vs. environment), events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..simulator.types import Doc


@dataclass
class Think:
    text: str
    type: Literal["think"] = "think"


@dataclass
class Search:
    query: str
    docs: list[Doc] = field(default_factory=list)
    mode: str | None = None
    cache_hit: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    type: Literal["search"] = "search"


@dataclass
class Answer:
    text: str
    type: Literal["answer"] = "answer"


@dataclass
class Invalid:
    raw: str
    reason: str
    type: Literal["invalid"] = "invalid"


Step = Think | Search | Answer | Invalid


@dataclass
class Segment:
    """A piece of the transcript; `generated` marks policy tokens (trained on), the rest is masked.
    `token_ids`: the ids the policy sampled (generated) or read (environment), where the backend has them."""

    text: str
    generated: bool
    token_ids: list[int] | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens reused from the KV cache instead of evaluated
    prompt_seconds: float = 0.0  # prefill time, where the backend tells it apart from decoding
    decode_seconds: float = 0.0

    def add(self, completion) -> None:
        """Add one turn's `Completion` (prompt tokens count every turn's whole prompt, as servers bill)."""
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.cached_prompt_tokens += completion.cached_prompt_tokens
        self.prompt_seconds += completion.prompt_seconds or 0.0
        self.decode_seconds += completion.decode_seconds or 0.0

    @property
    def decode_tokens_per_second(self) -> float | None:
        return self.completion_tokens / self.decode_seconds if self.decode_seconds > 0 else None


@dataclass
class Trajectory:
    question: str
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    finished: bool = False
    stop_reason: str = ""
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0
    segments: list[Segment] = field(default_factory=list)
    turns: int = 0
    turn_usage: list[Usage] = field(default_factory=list)  # one per generated turn: tokens and timings

    @property
    def searches(self) -> list[Search]:
        return [s for s in self.steps if isinstance(s, Search)]

    @property
    def transcript(self) -> str:
        return "".join(s.text for s in self.segments)


EventKind = Literal["token", "think", "search_started", "docs", "answer", "error", "done"]


@dataclass
class AgentEvent:
    kind: EventKind
    text: str = ""
    step: Step | None = None
    trajectory: Trajectory | None = None
