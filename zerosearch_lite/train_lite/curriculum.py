"""ZeroSearch's noise curriculum: the probability that a search gets *noisy* documents at a training step.

    p(i) = p_s + (b^(i/m) - 1) / (b - 1) * (p_e - p_s)

for step i = 1..m of m (the paper's counting: training step 0 of the loop is i = 1, so the last step trains
at `p_e`): from `p_s` it rises slowly at first and faster towards the end with base b > 1 (b → 1 is the
linear limit). Public ZeroSearch setup: b = 4, p_s = 0, p_e = 0.5.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field, model_validator


class Curriculum(BaseModel):
    p_start: float = Field(0.0, ge=0.0, le=1.0, description="Noise probability where the schedule starts (i = 0).")
    p_end: float = Field(0.5, ge=0.0, le=1.0, description="Noise probability at the last step.")
    base: float = Field(4.0, gt=0.0, description="Exponential base b (1 = linear).")

    @model_validator(mode="after")
    def _finite(self) -> Curriculum:
        if not math.isfinite(self.base):
            raise ValueError("base must be finite")
        return self

    def at_step(self, step: int, total_steps: int) -> float:
        """The probability training step `step` (0-based, of `total_steps`) draws noisy documents: p(step + 1)."""
        return self.noise_probability(step + 1, total_steps)

    def noise_probability(self, step: int, total_steps: int) -> float:
        """p(i) for i = `step` of m = `total_steps`, clamped to [0, m]."""
        fraction = min(max(step / max(total_steps, 1), 0.0), 1.0)
        if abs(self.base - 1.0) < 1e-9:
            shape = fraction
        else:
            shape = (self.base**fraction - 1.0) / (self.base - 1.0)
        return self.p_start + shape * (self.p_end - self.p_start)
