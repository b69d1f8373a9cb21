"""Multi-turn prefix reuse on the embedded model: prompt tokens evaluated per turn, with and without reuse.

Runs the same agent (same seeds, same cached simulated documents) twice side by side: once on a
llama.cpp policy that keeps its KV cache between turns (the runtime's default), once on one whose KV
cache is cleared before every turn (re-reading the whole transcript, as a stateless server would).

    python bench/prefix_reuse.py [--questions 3] [--turns 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from rich.console import Console
from rich.table import Table

from zerosearch_lite.agent.config import AgentConfig
from zerosearch_lite.agent.loop import Agent
from zerosearch_lite.models.backends.llamacpp import LlamaCppBackend
from zerosearch_lite.models.loading import load_backend
from zerosearch_lite.models.spec import resolve_model
from zerosearch_lite.simulator.cache import DocumentCache
from zerosearch_lite.simulator.simulated import SimulatedSearchEngine

QUESTIONS = [
    "who wrote the novel frankenstein?",
    "when was the last time anyone was on the moon",
    "what is the capital city of australia",
    "who painted the mona lisa",
]


class RecordingBackend(LlamaCppBackend):
    """Records every completion; with `reuse=False` clears the KV cache first (full re-read)."""

    def __init__(self, *args, reuse: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.reuse = reuse
        self.records = []

    def stream(self, prompt, params):
        if not self.reuse:
            self.llm.reset()
        completion = yield from super().stream(prompt, params)
        self.records.append(completion)
        return completion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--turns", type=int, default=4)
    args = parser.parse_args()
    model = resolve_model("embedded")
    cache = DocumentCache(os.path.join(tempfile.mkdtemp(), "cache.db"))
    engine = SimulatedSearchEngine(load_backend(model, n_ctx=2048), cache=cache)
    config = AgentConfig(max_turns=args.turns, min_searches=args.turns - 1, seed=7, max_tokens_per_turn=128)
    rows: dict[int, dict[str, list]] = {}
    for reuse in (True, False):
        policy = RecordingBackend(model, n_ctx=4096, reuse=reuse)
        agent = Agent(policy, engine, config, protocol_grammar=True)
        for i, question in enumerate(QUESTIONS[: args.questions]):
            policy.records.clear()
            agent.run(question, seed=100 + i)
            for turn, c in enumerate(policy.records):
                row = rows.setdefault(turn, {"prompt": [], "eval_reuse": [], "s_reuse": [], "eval_full": [], "s_full": []})
                key = "reuse" if reuse else "full"
                if reuse:
                    row["prompt"].append(c.prompt_tokens)
                row[f"eval_{key}"].append(c.prompt_tokens - c.cached_prompt_tokens)
                row[f"s_{key}"].append(c.seconds)
        policy.close()

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    table = Table(title=f"prompt tokens evaluated per turn ({args.questions} questions, embedded SmolLM2-135M Q4_1)")
    for col in ("turn", "transcript tokens", "evaluated (reuse)", "turn s (reuse)", "evaluated (re-read)",
                "turn s (re-read)", "eval ratio"):
        table.add_column(col, justify="right")
    for turn, r in sorted(rows.items()):
        ratio = mean(r["eval_full"]) / max(1.0, mean(r["eval_reuse"]))
        table.add_row(str(turn + 1), f"{mean(r['prompt']):.0f}", f"{mean(r['eval_reuse']):.0f}", f"{mean(r['s_reuse']):.2f}",
                      f"{mean(r['eval_full']):.0f}", f"{mean(r['s_full']):.2f}", f"{ratio:.1f}x")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
