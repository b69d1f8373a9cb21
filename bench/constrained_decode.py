"""Decode speed under a grammar vs without one, llama.cpp and transformers side by side, and the share of
constrained outputs that parse.

Cases: a policy turn under each `turn_rules` case (search or answer, search only, answer only; the agent's
own grammar, `turn_grammar` at its default budget) and the simulator's structured documents
(`documents_grammar`, the engine's sampling settings). Each sample is decoded twice from the same prompt
and seed: under the grammar, then without it for exactly as many tokens (no stop sequence), so both runs
decode the same positions and the ratio is the grammar's cost alone. Decode only: tokens over
`Completion.decode_seconds` (prompt evaluation is timed apart, and llama.cpp has the prompt cached).
"Parse" is `agent.protocol.parse_turn` giving an allowed action, or k `Doc i:` lines that each parse as a
document (`simulator.parsing.parse_documents`); "k distinct docs" also needs the k to differ (the
grammar fixes the form, not the content: a small model sometimes repeats a line).

    ZSL_THREADS=1 python bench/constrained_decode.py                       # 100 turns a rule, 60 x 5 docs
    ZSL_THREADS=1 python bench/constrained_decode.py --turns 4 --documents 2 --hf-samples 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from zerosearch_lite.agent.config import AgentConfig
from zerosearch_lite.agent.protocol import STOP_SEQUENCES, parse_turn, turn_grammar, user_message
from zerosearch_lite.agent.turns import turn_max_tokens
from zerosearch_lite.agent.types import Answer, Search
from zerosearch_lite.models.backends.base import Completion, GenerationBackend, SamplingParams
from zerosearch_lite.models.loading import load_backend
from zerosearch_lite.simulator.parsing import parse_documents
from zerosearch_lite.simulator.prompts import documents_grammar, documents_token_budget, get_preset

QUESTION_FILE = Path(__file__).resolve().parents[1] / "tests" / "data" / "hotpot_small.jsonl"
QUESTIONS = [json.loads(line)["question"] for line in QUESTION_FILE.read_text().splitlines()]
RULES = {"search or answer": (True, True), "search only": (True, False), "answer only": (False, True)}
K = 5


@dataclass
class CaseResult:
    samples: int = 0
    parsed: int = 0
    constrained_tokens: int = 0
    constrained_seconds: float = 0.0
    free_tokens: int = 0
    free_seconds: float = 0.0
    distinct: int | None = None  # documents only: outputs whose k documents all differ
    failures: list[str] = field(default_factory=list)

    def rate(self, constrained: bool) -> float:
        tokens, seconds = ((self.constrained_tokens, self.constrained_seconds) if constrained
                           else (self.free_tokens, self.free_seconds))
        return tokens / seconds if seconds else float("nan")


def paired(backend: GenerationBackend, prompt: str, params: SamplingParams, result: CaseResult) -> Completion:
    """Decode under the grammar, then without it for as many tokens; returns the constrained completion."""
    constrained = backend.generate([prompt], params)[0]
    free_params = replace(params, max_tokens=max(1, constrained.completion_tokens), stop=[], grammar=None)
    free = backend.generate([prompt], free_params)[0]
    result.samples += 1
    result.constrained_tokens += constrained.completion_tokens
    result.constrained_seconds += constrained.decode_seconds or 0.0
    result.free_tokens += free.completion_tokens
    result.free_seconds += free.decode_seconds or 0.0
    return constrained


def policy_case(backend, allow: tuple[bool, bool], samples: int, seed: int) -> CaseResult:
    config = AgentConfig()
    result = CaseResult()
    allowed = tuple(kind for kind, ok in zip((Search, Answer), allow, strict=True) if ok)
    for i in range(samples):
        prompt = backend.render_chat(user_message(QUESTIONS[i % len(QUESTIONS)]))
        # The agent's own budget of a constrained turn (`agent.turns.turn_max_tokens`): it outlasts the grammar.
        params = SamplingParams(max_tokens=turn_max_tokens(config, constrained=True), temperature=config.temperature,
                                top_p=config.top_p, stop=list(STOP_SEQUENCES), seed=seed + i,
                                grammar=turn_grammar(config.max_tokens_per_turn, *allow))
        turn = paired(backend, prompt, params, result)
        if isinstance(parse_turn(turn.text, turn.finish_reason)[-1], allowed):
            result.parsed += 1
        else:
            result.failures.append(turn.text)
    return result


def documents_case(backend, samples: int, seed: int) -> CaseResult:
    preset = get_preset("zsl")
    result = CaseResult(distinct=0)
    for i in range(samples):
        mode = "useful" if i % 2 == 0 else "noisy"
        prompt = backend.render_chat(preset.messages(QUESTIONS[i % len(QUESTIONS)], K, mode))
        # The simulated engine's settings (simulator/simulated.py).
        params = SamplingParams(max_tokens=documents_token_budget(K, structured=True), temperature=0.7,
                                repeat_penalty=1.1, seed=seed + i, stop=[f"Doc {K + 1}:"], grammar=documents_grammar(K))
        text = paired(backend, prompt, params, result).text
        lines = text.splitlines()
        # Well formed: k "Doc i:" lines, each a document on its own; distinct: the k survive de-duplication.
        if len(lines) == K and all(len(parse_documents(line, K).docs) == 1 for line in lines):
            result.parsed += 1
        else:
            result.failures.append(text)
        result.distinct += len(parse_documents(text, K).docs) == K
    return result


def run_backend(backend, turns: int, documents: int, seed: int) -> dict[str, CaseResult]:
    # Warm-up: the first call of a process allocates buffers, and the first grammar builds token tables.
    warm_up = SamplingParams(max_tokens=2, grammar=turn_grammar(256))
    backend.generate([backend.render_chat(user_message(QUESTIONS[0]))], warm_up)
    results = {f"turn: {rule}": policy_case(backend, allow, turns, seed) for rule, allow in RULES.items()}
    results[f"documents (k={K})"] = documents_case(backend, documents, seed)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100, help="llama.cpp samples per turn rule")
    parser.add_argument("--documents", type=int, default=60, help=f"llama.cpp calls of {K} docs")
    parser.add_argument("--hf-samples", type=int, default=3, help="transformers samples per case (0: skip)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--show-failures", action="store_true", help="print outputs that did not parse")
    args = parser.parse_args()
    table = Table(title=f"decode tokens/s, grammar vs none (embedded SmolLM2-135M, "
                        f"ZSL_THREADS={os.environ.get('ZSL_THREADS', 'unset')})")
    columns = ("backend", "case", "samples", "tokens", "constrained tok/s", "unconstrained tok/s", "ratio",
               "parse", "k distinct docs")
    for column in columns:
        table.add_column(column, justify="right")
    runs = [("llama.cpp", lambda: load_backend("embedded", n_ctx=4096), args.turns, args.documents)]
    if args.hf_samples:
        runs.append(("transformers", lambda: _transformers(), args.hf_samples, args.hf_samples))
    failures = []
    for name, load, turns, documents in runs:
        backend = load()
        for case, r in run_backend(backend, turns, documents, args.seed).items():
            distinct = "" if r.distinct is None else _share(r.distinct, r.samples)
            table.add_row(name, case, str(r.samples), str(r.constrained_tokens), f"{r.rate(True):.1f}",
                          f"{r.rate(False):.1f}", f"{r.rate(True) / r.rate(False):.2f}x",
                          _share(r.parsed, r.samples), distinct)
            failures += [(name, case, text) for text in r.failures]
        backend.close()
    Console(width=150).print(table)
    if args.show_failures:
        for name, case, text in failures:
            print(f"--- {name} / {case}:\n{text}")


def _share(count: int, total: int) -> str:
    return f"{count}/{total} ({100 * count / max(1, total):.0f}%)"


def _transformers() -> GenerationBackend:
    import torch

    from zerosearch_lite.models.backends.llamacpp import default_threads

    torch.set_num_threads(default_threads())  # the same cores as llama.cpp
    return load_backend("embedded", kind="transformers")


if __name__ == "__main__":
    main()
