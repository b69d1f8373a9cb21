"""The held-out score during GRPO: every `eval_every` steps the current adapter answers fixed held-out questions
(useful documents, p = 0, through the same rollouts as training), the adapter with the best held-out F1 is
kept as `best/`, and a warning is raised when the run looks like the late collapse peers report (searches per
question falling toward 0, or the score falling far below its best).

`best/` is written beside and renamed into place (the previous one moved aside until then), with `best.json`
(its step and scores) inside, so a crash never leaves half an adapter or none; a resumed run reads it back
and keeps comparing against it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..agent.rollout import Rollout, RolloutRequest
from ..evaluation.datasets import QAExample
from ..evaluation.metrics import SCORERS
from ..simulator.types import SearchContext
from .checkpoint import swap_in

BEST_DIR = "best"
BEST_FILE = "best.json"
SEARCH_FLOOR = 0.1  # searches per question at or below this, after having been well above it, is a collapse sign
SEARCH_HEALTHY = 0.5
SCORE_DROP = 0.5  # a held-out F1 below this share of the best one is a collapse sign


@dataclass
class HeldOutScore:
    step: int
    strict_em: float
    cover_em: float
    f1: float
    searches: float
    answered: float


def score_heldout(rollout: Rollout, examples: list[QAExample], step: int) -> HeldOutScore:
    """One trajectory per held-out question with useful documents; mean scores over the questions."""
    import random

    requests = [RolloutRequest(e.question, SearchContext(e.question, e.golden_answers)) for e in examples]
    trajectories, _ = rollout.run(requests, noise_p=0.0, rng=random.Random(0))
    n = max(1, len(examples))
    scores = {name: sum(score(t.answer if t.finished else None, e.golden_answers)
                        for t, e in zip(trajectories, examples, strict=True)) / n
              for name, score in SCORERS.items()}
    return HeldOutScore(step, scores["strict_em"], scores["cover_em"], scores["f1"],
                        sum(len(t.searches) for t in trajectories) / n,
                        sum(t.finished for t in trajectories) / n)


class BestAdapter:
    """`RUN/best/`: the adapter of the best held-out F1 so far, and the warnings a new score deserves."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / BEST_DIR
        self.previous = run_dir / f".{BEST_DIR}.old"
        if not self.dir.exists() and self.previous.exists():  # a kill between the two renames of `offer`
            self.previous.rename(self.dir)
        self.best: HeldOutScore | None = None
        try:
            self.best = HeldOutScore(**json.loads((self.dir / BEST_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            self.best = None
        self.peak_searches = 0.0

    def remember(self, history: list[HeldOutScore]) -> None:
        """Earlier scores of a resumed run (from its metrics rows)."""
        self.peak_searches = max([self.peak_searches, *(h.searches for h in history)])

    def offer(self, model, score: HeldOutScore) -> bool:
        """Save `model`'s adapter as best/ when `score` beats the best F1; returns whether it did."""
        if self.best is not None and score.f1 <= self.best.f1 and score.step != self.best.step:
            return False
        staging = self.dir.parent / f".{BEST_DIR}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging))
        (staging / BEST_FILE).write_text(json.dumps(asdict(score)))
        swap_in(staging, self.dir, self.previous)
        self.best = score
        return True

    def warnings(self, score: HeldOutScore) -> list[str]:
        found = []
        if score.searches <= SEARCH_FLOOR and self.peak_searches >= SEARCH_HEALTHY:
            found.append(f"held-out searches per question fell to {score.searches:.2f} (from up to "
                         f"{self.peak_searches:.2f}): the policy stops searching")
        best = self.best
        if best is not None and best.f1 > 0.05 and score.f1 < SCORE_DROP * best.f1:
            found.append(f"held-out F1 {score.f1:.3f} is far below its best {best.f1:.3f} (step {best.step}); "
                         f"{BEST_DIR}/ keeps that adapter")
        self.peak_searches = max(self.peak_searches, score.searches)
        return found
