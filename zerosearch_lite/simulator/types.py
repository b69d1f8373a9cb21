"""Plain data passed between engines and their callers: documents, search context, per-query results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Mode = Literal["useful", "noisy"]
MODES: tuple[Mode, ...] = ("useful", "noisy")


@dataclass(frozen=True)
class Doc:
    title: str
    text: str
    source: str  # "simulated:useful", "simulated:noisy", "corpus", "http"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def render(self) -> str:
        """The document as the policy reads it inside <information>."""
        return f"({self.title}) {self.text}" if self.title else self.text


@dataclass(frozen=True)
class SearchContext:
    """Training-only hints for the simulator: the question and its gold answers."""

    question: str | None = None
    golden_answers: tuple[str, ...] = ()


@dataclass
class SearchResult:
    query: str
    docs: list[Doc]
    mode: Mode | None = None
    cache_hit: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    generated_tokens: int = 0  # simulator tokens written for this result (0 for a cache hit or a real engine)
    # The simulated engine's noise guard (training only). Like `generated_tokens`, counted on the first
    # result of a generation that duplicate queries share and 0 on the others, so sums over results are
    # right. For a noisy result: guard_leaked = guard_regenerated + guard_replaced + guard_dropped.
    guard_retries: int = 0  # extra generations the guard asked for (noisy leaks, or a useful result without answer)
    guard_leaked: int = 0  # noisy documents of the first generation that held a gold answer
    guard_regenerated: int = 0  # leaked documents replaced by a clean one from a regeneration of this query
    guard_replaced: int = 0  # leaked documents replaced by a clean noisy document of another query ("retry")
    guard_dropped: int = 0  # leaked documents removed after the last regeneration
    guard_seconds: float = 0.0  # time of the guard's regenerations (also part of `seconds`)
