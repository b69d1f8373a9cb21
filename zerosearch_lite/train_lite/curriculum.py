"""ZeroSearch's noise curriculum: the probability that a search gets *noisy* documents at a training step.

    p(i) = p_s + (b^(i/m) - 1) / (b - 1) * (p_e - p_s)

for step i of m: it starts at `p_s`, ends at `p_e`, and with base b > 1 rises slowly at first and faster
towards the end (b → 1 is the linear limit). Public ZeroSearch setup: b = 4, p_s = 0, p_e = 0.5.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field, model_validator


class Curriculum(BaseModel):
    p_start: float = Field(0.0, ge=0.0, le=1.0, description="Noise probability at step 0.")
    p_end: float = Field(0.5, ge=0.0, le=1.0, description="Noise probability at the last step.")
    base: float = Field(4.0, gt=0.0, description="Exponential base b (1 = linear).")

    @model_validator(mode="after")
    def _finite(self) -> Curriculum:
        if not math.isfinite(self.base):
            raise ValueError("base must be finite")
        return self

    def noise_probability(self, step: int, total_steps: int) -> float:
        fraction = min(max(step / max(total_steps, 1), 0.0), 1.0)
        if abs(self.base - 1.0) < 1e-9:
            shape = fraction
        else:
            shape = (self.base**fraction - 1.0) / (self.base - 1.0)
        return self.p_start + shape * (self.p_end - self.p_start)
