"""Query recycling: questions whose G rollouts all scored the same (zero reward variance, so zero GRPO
advantage) go to a pool and are tried again later, when the policy has drifted, instead of being lost.

`--zero-variance` picks the policy:
- `recycle` (default): such groups leave the loss and enter the pool; each batch is filled with fresh
  questions plus up to `share` of the batch from the pool, least-tried and oldest first, each after a
  cooldown of a few steps. A pool question that shows variance again counts as *recovered*; one that stays
  flat for `max_tries` returns is dropped.
- `filter`: such groups leave the loss and are forgotten (DAPO-style dynamic sampling without refill).
- `keep`: they stay in the batch (their advantages are zero; only the KL term acts on them).

The pool is plain data (`PoolState`) saved in every checkpoint, so a resumed run continues with it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ZeroVariancePolicy = Literal["recycle", "filter", "keep"]


class PoolEntry(BaseModel):
    id: str
    added_step: int
    last_step: int
    tries: int = 0  # times it came back from the pool and was still flat


class PoolState(BaseModel):
    entries: list[PoolEntry] = Field(default_factory=list)
    recovered: int = 0  # pool questions that showed variance again
    dropped: int = 0  # pool questions given up after max_tries
    returned: int = 0  # pool questions put back into a batch, in total


class RecyclePool:
    def __init__(self, *, max_tries: int = 3, cooldown: int = 2, state: PoolState | None = None):
        self.max_tries = max_tries
        self.cooldown = cooldown
        self.state = state or PoolState()
        self._in_flight: dict[str, PoolEntry] = {}

    def __len__(self) -> int:
        return len(self.state.entries)

    def __contains__(self, question_id: str) -> bool:
        return any(e.id == question_id for e in self.state.entries)

    def take(self, n: int, step: int) -> list[str]:
        """Up to n question ids for this step's batch (least tried, then oldest), removed from the pool."""
        ready = [e for e in self.state.entries if step - e.last_step >= self.cooldown]
        chosen = sorted(ready, key=lambda e: (e.tries, e.added_step, e.id))[: max(n, 0)]
        taken = {e.id for e in chosen}
        self._in_flight = {e.id: e for e in chosen}
        self.state.entries = [e for e in self.state.entries if e.id not in taken]
        self.state.returned += len(chosen)
        return [e.id for e in chosen]

    def report(self, question_id: str, zero_variance: bool, step: int, *, from_pool: bool) -> str:
        """Record a group's outcome; returns what happened: recovered, returned, dropped, added or ignored."""
        if from_pool:
            entry = self._in_flight.pop(question_id, None) or PoolEntry(id=question_id, added_step=step, last_step=step)
            if not zero_variance:
                self.state.recovered += 1
                return "recovered"
            entry.tries += 1
            entry.last_step = step
            if entry.tries >= self.max_tries:
                self.state.dropped += 1
                return "dropped"
            self.state.entries.append(entry)
            return "returned"
        if zero_variance and question_id not in self:
            self.state.entries.append(PoolEntry(id=question_id, added_step=step, last_step=step))
            return "added"
        return "ignored"


def pool_slots(share: float, batch_questions: int, draw: float) -> int:
    """How many of a batch's questions come from the pool: `share` of the batch, the fractional part taken with
    that probability (`draw` uniform in [0, 1)), so a small batch recycles at the asked rate on average
    instead of never (0.5 × 1 question would round down to 0 every step)."""
    whole, fraction = divmod(share * batch_questions, 1.0)
    return int(whole) + (draw < fraction)
