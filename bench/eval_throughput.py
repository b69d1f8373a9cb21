"""Evaluation throughput with repeated sampling: questions per minute for `zsl eval --samples N` on llama.cpp
(trajectories one after another, KV prefix reused) against transformers (all samples of a batch of questions
advanced together), the same embedded model, questions, engine and seed, side by side in one run.

    python bench/eval_throughput.py --questions 4 --samples 8

Both runs go through `evaluation.runner.run_eval`, the code `zsl eval` runs; each writes a fresh run directory.
Time it alone: other jobs on a 2-core machine distort it badly.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from zerosearch_lite.evaluation.runner import EvalConfig, read_predictions, run_eval

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def measure(backend: str, args, root: Path) -> dict:
    cfg = EvalConfig(
        data=[str(args.data)], out=str(root / backend), limit=args.questions, samples=args.samples,
        policy={"name": "embedded", "backend": backend},
        engine={"kind": "corpus", "corpus": str(args.corpus)},
        agent={"max_turns": args.max_turns, "max_tokens_per_turn": args.max_tokens, "k": 3, "seed": 0,
               "temperature": 0.7},
        batch_questions=args.batch_questions,
    )
    started = time.perf_counter()
    result = run_eval(cfg)
    wall = time.perf_counter() - started
    rows = read_predictions(result.run_dir)
    generated = sum(r["completion_tokens"] for r in rows)
    decode = sum(r["decode_seconds"] for r in rows)
    entry = result.report["datasets"][0]
    return {
        "backend": backend, "questions": entry["questions"], "trajectories": len(rows), "wall_s": wall,
        "questions_per_min": 60 * entry["questions"] / wall, "trajectories_per_min": 60 * len(rows) / wall,
        "generated_tokens": generated, "decode_tok_s": generated / decode if decode else None,
        "strict_em": entry["scores"]["strict_em"]["mean"], "cover_em": entry["scores"]["cover_em"]["mean"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-questions", type=int, default=4, help="Questions per transformers batch.")
    parser.add_argument("--data", type=Path, default=DATA / "hotpot_small.jsonl")
    parser.add_argument("--corpus", type=Path, default=DATA / "corpus_small.jsonl")
    parser.add_argument("--backends", default="llama.cpp,transformers")
    parser.add_argument("--json", type=Path, help="Also write the rows here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(backend, args, Path(tmp)) for backend in args.backends.split(",")]
    print(f"\nzsl eval --samples {args.samples}: {args.questions} questions, {args.max_turns} turns of at most "
          f"{args.max_tokens} tokens, BM25 over {args.corpus.name}, embedded SmolLM2-135M")
    print(f"{'backend':<13}{'questions':>10}{'traj':>6}{'wall s':>9}{'q/min':>8}{'traj/min':>10}"
          f"{'decode tok/s':>14}{'strict EM':>11}{'cover-EM':>10}")
    for r in rows:
        decode = f"{r['decode_tok_s']:.1f}" if r["decode_tok_s"] else "-"
        print(f"{r['backend']:<13}{r['questions']:>10}{r['trajectories']:>6}{r['wall_s']:>9.1f}"
              f"{r['questions_per_min']:>8.2f}{r['trajectories_per_min']:>10.1f}{decode:>14}"
              f"{r['strict_em']:>11.3f}{r['cover_em']:>10.3f}")
    if len(rows) == 2:
        print(f"ratio {rows[1]['backend']} / {rows[0]['backend']} (questions per minute): "
              f"{rows[1]['questions_per_min'] / rows[0]['questions_per_min']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
