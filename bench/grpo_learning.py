"""GRPO learning check on a controlled task a 135M policy can learn on a CPU.

The task: "X: who founded this town?" about fictional towns, so the answer cannot be known, only read.
With `--engine template` (the default) every useful search result states the founder verbatim (the
ideal simulator, no model), so what the policy must learn is to search, read, and copy the name into a
short <answer>. `--engine corpus` is the harder variant: BM25 over one passage per town, where the policy
must also name the town in its query to retrieve the right passage. The noise curriculum is off by
default (`--noise-end 0`): noisy documents would lower the reward's ceiling as training goes on and blur
the comparison. The script writes the QA set and corpus, runs `zsl train grpo` on them (the embedded
SmolLM2-135M as policy), then prints mean reward over the first and last five steps from the metrics.

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


def towns(n_towns: int, seed: int, exclude: set[str] = frozenset()) -> tuple[list[dict], list[dict]]:
    """QA rows and corpus rows for `n_towns` fictional towns (names not in `exclude`)."""
    rng = random.Random(seed)
    names = rng.sample(sorted({p + s for p in PREFIXES for s in SUFFIXES} - set(exclude)), n_towns)
    qa, corpus = [], []
    for i, town in enumerate(names):
        founder, year = rng.choice(FOUNDERS), rng.randint(1700, 1900)
        qa.append({"id": f"town{i}", "question": f"{town}: who founded this town?", "golden_answers": [founder]})
        corpus.append({"id": str(i), "contents": f'"{town}"\n{town} is a small town by a river. '
                                                  f"It was founded by {founder} in {year}."})
    return qa, corpus


def make_task(folder: Path, n_towns: int = 60, seed: int = 0) -> tuple[Path, Path]:
    qa, corpus = towns(n_towns, seed)
    folder.mkdir(parents=True, exist_ok=True)
    qa_path, corpus_path = folder / "towns_qa.jsonl", folder / "towns_corpus.jsonl"
    qa_path.write_text("".join(json.dumps(r) + "\n" for r in qa))
    corpus_path.write_text("".join(json.dumps(r) + "\n" for r in corpus))
    return qa_path, corpus_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/grpo-learning"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--engine", choices=["template", "corpus"], default="template")
    parser.add_argument("--noise-end", type=float, default=0.0)
    parser.add_argument("--lr", default="5e-4")
    parser.add_argument("--policy", default="embedded")
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--held-out", type=int, default=20, help="Towns not trained on, to compare base and adapter (0: skip).")
    args = parser.parse_args()
    run = args.out / "run"
    if args.resume:
        command = ["zsl", "train", "grpo", "--resume", str(run)]
    else:
        qa_path, corpus_path = make_task(args.out / "data")
        heldout_path = args.out / "data" / "held_out_towns.jsonl"
        heldout_path.write_text("".join(json.dumps(r) + "\n" for r in held_out_towns(qa_path, 20)[0]))
        command = [
            "zsl", "train", "grpo", "--data", str(qa_path), "--out", str(run), "--policy", args.policy,
            "--engine", args.engine, *(["--corpus", str(corpus_path)] if args.engine == "corpus" else []),
            "--steps", str(args.steps), "--p-end", str(args.noise_end),
            "--batch-questions", "4", "-G", "8", "--max-turns", "2", "--max-tokens-per-turn", "48",
            "--max-context", "1024", "-k", "2", "--lr", args.lr, "--kl-beta", "0.001", "--lora-r", "16",
            "--save-every", "2", "--eval-data", str(heldout_path), "--eval-every", "5", "--eval-limit", "20",
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

    print("\n| step | held-out F1 (greedy) | held-out searches/q |\n|---|---:|---:|")
    for r in rows:
        if r.heldout_f1 is not None:
            print(f"| {r.step} | {r.heldout_f1:.3f} | {r.heldout_searches:.2f} |")
    print("\n| steps | mean reward | answered | searches/question |\n|---|---|---|---|")
    for label, part in ((f"first {w}", first), (f"last {w}", last)):
        print(f"| {label} | {mean([r.reward_mean for r in part]):.3f} | {mean([r.answered_share for r in part]):.2f} "
              f"| {mean([r.searches_per_question for r in part]):.2f} |")
    if args.held_out:
        held_out(run, args)
    print(f"\n{len(rows)} steps; rollout {mean([r.rollout_seconds for r in rows]):.0f} s and update "
          f"{mean([r.update_seconds for r in rows]):.0f} s per step on average")


def held_out_towns(trained_qa: Path, n_towns: int) -> tuple[list[dict], list[dict]]:
    """Towns the run never trains on (their QA rows and passages)."""
    trained = {json.loads(line)["question"].split(":")[0] for line in trained_qa.read_text().splitlines() if line.strip()}
    return towns(n_towns, seed=1, exclude=trained)


def held_out(run: Path, args) -> None:
    """Mean F1 of the base policy and of the trained adapter on towns the run never saw, same settings."""
    import random

    from zerosearch_lite.agent.rollout import Rollout, RolloutRequest
    from zerosearch_lite.models.loading import load_backend
    from zerosearch_lite.simulator.config import open_engine
    from zerosearch_lite.simulator.types import SearchContext
    from zerosearch_lite.train_lite.grpo import load_run_config
    from zerosearch_lite.train_lite.rewards import reward

    cfg = load_run_config(run)
    rows, corpus = held_out_towns(Path(cfg.data), args.held_out)
    engine_config = cfg.engine
    if cfg.engine.kind == "corpus":  # the held-out towns' passages, indexed on their own
        held_corpus = run / "held_out_corpus.jsonl"
        held_corpus.write_text("".join(json.dumps(r) + "\n" for r in corpus))
        engine_config = cfg.engine.model_copy(update={"corpus": str(held_corpus)})
    engine = open_engine(engine_config)
    requests = [RolloutRequest(r["question"], SearchContext(r["question"], tuple(r["golden_answers"])))
                for r in rows for _ in range(4)]
    print("\n| policy | held-out towns | samples | mean F1 | answered |\n|---|---:|---:|---:|---:|")
    for label, adapter in (("base", None), ("after GRPO", str(run / "adapter"))):
        policy = load_backend(cfg.policy.name, "transformers", adapter=adapter)
        trajectories, _ = Rollout(policy, engine, cfg.agent, constrained=True).run(
            requests, noise_p=0.0, rng=random.Random(0))
        answers = [t.answer for t in trajectories]
        scores = reward(answers, [r["golden_answers"] for r in rows for _ in range(4)], cfg.reward)
        print(f"| {label} | {len(rows)} | {len(scores)} | {sum(scores) / len(scores):.3f} "
              f"| {sum(a is not None for a in answers) / len(answers):.2f} |", flush=True)
        policy.close()


if __name__ == "__main__":
    main()
