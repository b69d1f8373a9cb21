"""GRPO learning check on a controlled task a 135M policy can learn on a CPU.

The task: "X: who founded this town?" about fictional towns, so the answer cannot be known, only read:
each town has one passage in a small corpus ("X is a small town ... It was founded by NAME in YEAR."), and
the BM25 corpus engine returns it for almost any query that names the town. The answer appears verbatim
in the documents; the policy must search and copy it into <answer>. The script writes the QA set and the
corpus, runs `zsl train grpo` on them (the embedded SmolLM2-135M as policy), then prints mean reward over
the first and last five steps from the run's metrics.

    python bench/grpo_learning.py --out runs/grpo-learning            # data + training + table
    python bench/grpo_learning.py --out runs/grpo-learning --resume   # continue an interrupted run
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

PREFIXES = ["Bel", "Cor", "Dun", "El", "Fen", "Gal", "Har", "Ist", "Jor", "Kel", "Lor", "Mar", "Nor", "Ost", "Pel"]
SUFFIXES = ["mora", "ridge", "wick", "vale", "stead", "haven", "ford", "mere", "holt", "by"]
FOUNDERS = ["Marta", "Anselm", "Tobias", "Greta", "Ivo", "Lena", "Oskar", "Rosa", "Emil", "Hedda", "Nils", "Vera"]


def make_task(folder: Path, n_towns: int = 60, seed: int = 0) -> tuple[Path, Path]:
    rng = random.Random(seed)
    names = rng.sample([p + s for p in PREFIXES for s in SUFFIXES], n_towns)
    qa, corpus = [], []
    for i, town in enumerate(names):
        founder, year = rng.choice(FOUNDERS), rng.randint(1700, 1900)
        qa.append({"id": f"town{i}", "question": f"{town}: who founded this town?", "golden_answers": [founder]})
        corpus.append({"id": str(i), "contents": f'"{town}"\n{town} is a small town by a river. '
                                                  f"It was founded by {founder} in {year}."})
    folder.mkdir(parents=True, exist_ok=True)
    qa_path, corpus_path = folder / "towns_qa.jsonl", folder / "towns_corpus.jsonl"
    qa_path.write_text("".join(json.dumps(r) + "\n" for r in qa))
    corpus_path.write_text("".join(json.dumps(r) + "\n" for r in corpus))
    return qa_path, corpus_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/grpo-learning"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--policy", default="embedded")
    parser.add_argument("--window", type=int, default=5)
    args = parser.parse_args()
    run = args.out / "run"
    if args.resume:
        command = ["zsl", "train", "grpo", "--resume", str(run)]
    else:
        qa_path, corpus_path = make_task(args.out / "data")
        command = [
            "zsl", "train", "grpo", "--data", str(qa_path), "--out", str(run), "--policy", args.policy,
            "--engine", "corpus", "--corpus", str(corpus_path), "--steps", str(args.steps),
            "--batch-questions", "4", "-G", "8", "--max-turns", "2", "--max-tokens-per-turn", "48",
            "--max-context", "1024", "-k", "2", "--lr", "2e-4", "--kl-beta", "0.001", "--lora-r", "16",
            "--save-every", "2",
        ]
    print("$", " ".join(command), flush=True)
    done = subprocess.run([sys.executable, "-m", "zerosearch_lite.cli", *command[1:]], check=False)
    if done.returncode != 0:
        sys.exit(done.returncode)

    from zerosearch_lite.train_lite.metrics import read_metrics

    rows = read_metrics(run)
    w = args.window
    first, last = rows[:w], rows[-w:]

    def mean(values):
        return sum(values) / len(values)

    print("\n| steps | mean reward | answered | searches/question |\n|---|---|---|---|")
    for label, part in ((f"first {w}", first), (f"last {w}", last)):
        print(f"| {label} | {mean([r.reward_mean for r in part]):.3f} | {mean([r.answered_share for r in part]):.2f} "
              f"| {mean([r.searches_per_question for r in part]):.2f} |")
    print(f"\n{len(rows)} steps; rollout {mean([r.rollout_seconds for r in rows]):.0f} s and update "
          f"{mean([r.update_seconds for r in rows]):.0f} s per step on average")


if __name__ == "__main__":
    main()
