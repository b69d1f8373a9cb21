"""GRPO end to end with an interruption: ≥ 20 steps of `zsl train grpo`, Ctrl-C (SIGINT) mid-run,
`--resume`, then the metrics table is checked for gaps and duplicates.

The policy is a tiny random-weight Llama with SmolLM2's tokenizer (built here, seconds on a CPU) or any
model given with --policy; the engine is BM25 over the bundled corpus, so the run needs no simulator
and finishes in minutes. Prints the steps seen before and after the interruption and the table.

    python bench/grpo_resume.py --out runs/grpo-resume
    python bench/grpo_resume.py --out runs/grpo-resume --policy embedded --steps 20   # the real 135M model
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def tiny_policy(folder: Path) -> Path:
    """A 2-layer random Llama with the embedded model's tokenizer, saved as a Hugging Face folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from zerosearch_lite.models.spec import embedded_model_path

    if (folder / "config.json").is_file():
        return folder
    gguf = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def zsl(*args: str) -> list[str]:
    return [sys.executable, "-m", "zerosearch_lite.cli", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/grpo-resume"))
    parser.add_argument("--policy", default=None, help="Policy model (default: a tiny random Llama).")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--interrupt-at", type=int, default=9, help="Send SIGINT once this many steps are stored.")
    args = parser.parse_args()

    from zerosearch_lite.train_lite.metrics import read_metrics

    policy = args.policy or str(tiny_policy(args.out / "tiny-policy"))
    run = args.out / "run"
    start = zsl("train", "grpo", "--data", str(DATA / "hotpot_small.jsonl"), "--out", str(run), "--policy", policy,
                "--engine", "corpus", "--corpus", str(DATA / "corpus_small.jsonl"), "--steps", str(args.steps),
                "--batch-questions", "2", "-G", "4", "--max-turns", "2", "--max-tokens-per-turn", "32", "-k", "2",
                "--save-every", "4", "--grammar", "on")
    print("$", " ".join(start[2:]), flush=True)
    began = time.perf_counter()
    proc = subprocess.Popen(start, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    while proc.poll() is None and len(read_metrics(run)) < args.interrupt_at:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    code = proc.wait()
    before = [r.step for r in read_metrics(run)]
    print(f"\ninterrupted (exit {code}) with steps {before[0]}..{before[-1]} stored", flush=True)
    resume = zsl("train", "grpo", "--resume", str(run))
    print("$", " ".join(resume[2:]), flush=True)
    subprocess.run(resume, check=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - began
    steps = [r.step for r in read_metrics(run)]
    subprocess.run(zsl("train", "show", str(run), "--last", "100"), check=True)
    ok = steps == list(range(1, args.steps + 1))
    print(f"\nsteps stored: {len(steps)} (expected {args.steps}); gaps or duplicates: {'none' if ok else steps}; "
          f"{seconds:.0f} s in all")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
