"""GRPO with the exact document cache vs the semantic one: simulator calls per step and hit rates.

Two short runs with the same seed, questions and config, on the embedded SmolLM2-135M as policy and as
simulator (llama.cpp), differing only in the cache of the simulated engine. A backend wrapper counts the
prompts the simulator actually generates for; the trainer's metrics give the searches of each step.

    python bench/semantic_cache_grpo.py [--steps 3] [--questions 1] [--group-size 4] [--threshold 0.9]
    python bench/semantic_cache_grpo.py --data runs/grpo-learning/data/towns_qa.jsonl \
        --policy-adapter runs/grpo-learning/run/adapter      # a policy whose queries have converged

The same `--questions` questions come back every step (as epochs over a small set, or the recycle pool,
bring them back), so both in-step and cross-step reuse show. Turns and tokens are cut for a CPU. With
`--policy-adapter` (a peft folder a GRPO run saved) the adapter is merged into the policy before the run
starts, so the rollouts are those of a trained policy, whose queries for one question have converged: the
case a semantic cache exists for.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data"


class CountingBackend:
    """Delegates to a real backend and counts the prompts it generates for."""

    def __init__(self, inner):
        self.inner = inner
        self.prompts = 0

    def generate(self, prompts, params):
        self.prompts += len(prompts)
        return self.inner.generate(prompts, params)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def trained_policy(adapter: Path):
    """The embedded policy with a GRPO adapter merged in (the run then trains a fresh LoRA on top)."""
    from peft import PeftModel

    from zerosearch_lite.models.spec import resolve_model
    from zerosearch_lite.train_lite.modeling import load_base, load_tokenizer

    model = resolve_model("embedded")
    merged = PeftModel.from_pretrained(load_base(model), str(adapter)).merge_and_unload()
    return merged, load_tokenizer(model)


def run(kind: str, args, data: Path, work: Path) -> tuple[list[dict], dict]:
    from zerosearch_lite.models.loading import load_backend
    from zerosearch_lite.simulator.factory import open_document_cache
    from zerosearch_lite.simulator.simulated import SimulatedSearchEngine
    from zerosearch_lite.train_lite.grpo import build_trainer
    from zerosearch_lite.train_lite.grpo_config import GRPOConfig, rollout_defaults
    from zerosearch_lite.train_lite.metrics import read_metrics

    out = work / kind
    backend = CountingBackend(load_backend("embedded", n_ctx=2048))
    cache = open_document_cache(out / "doc_cache.db", kind=kind, semantic_threshold=args.threshold)
    engine = SimulatedSearchEngine(backend, cache=cache)
    agent = rollout_defaults().model_copy(update={"max_turns": args.max_turns,
                                                   "max_tokens_per_turn": args.max_tokens})
    cfg = GRPOConfig(data=str(data), out=str(out), steps=args.steps, batch_questions=args.questions,
                     group_size=args.group_size, agent=agent, seed=0)
    model, tokenizer = trained_policy(args.policy_adapter) if args.policy_adapter else (None, None)
    trainer = build_trainer(cfg, resume=False, engine=engine, model=model, tokenizer=tokenizer)
    calls: list[int] = []
    trainer.train(on_step=lambda row: calls.append(backend.prompts - sum(calls)))
    rows = []
    for metrics, generated in zip(read_metrics(out), calls, strict=False):
        rows.append({"step": metrics.step, "searches": metrics.searches or 0, "generated": generated,
                     "reward": metrics.reward_mean})
    return rows, cache.stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--questions", type=int, default=1, help="questions per step")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--max-turns", type=int, default=2, help="policy turns per rollout (1 search + answer)")
    parser.add_argument("--max-tokens", type=int, default=64, help="policy tokens per turn")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--data", type=Path, help="QA JSONL to draw the questions from (default: the "
                        "HotpotQA sample in --data-dir)")
    parser.add_argument("--policy-adapter", type=Path, help="peft folder of a GRPO run, merged into the policy")
    args = parser.parse_args()
    os.environ.setdefault("ZSL_HOME", tempfile.mkdtemp(prefix="zsl-bench-"))
    work = Path(tempfile.mkdtemp(prefix="zsl-semcache-"))
    data = work / "questions.jsonl"
    source = args.data or args.data_dir / "hotpot_dev_sample.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    data.write_text("".join(lines[:args.questions]), encoding="utf-8")

    results = {kind: run(kind, args, data, work) for kind in ("exact", "semantic")}
    policy = f"embedded + {args.policy_adapter}" if args.policy_adapter else "embedded"
    table = Table(title=f"GRPO, {policy} policy, embedded simulator, {args.questions} question(s) x G {args.group_size}, "
                        f"threshold {args.threshold}")
    for column in ("step", "searches", "sim calls exact", "sim calls semantic"):
        table.add_column(column, justify="right")
    exact_rows, semantic_rows = results["exact"][0], results["semantic"][0]
    for exact, semantic in zip(exact_rows, semantic_rows, strict=False):
        table.add_row(str(exact["step"]), f"{exact['searches']} / {semantic['searches']}",
                      str(exact["generated"]), str(semantic["generated"]))
    Console().print(table)
    summary = Table(title="whole run")
    for column in ("cache", "searches", "sim calls", "calls/search", "exact hits", "semantic hits", "hit rate"):
        summary.add_column(column, justify="left" if column == "cache" else "right")
    for kind, (rows, stats) in results.items():
        searches, generated = sum(r["searches"] for r in rows), sum(r["generated"] for r in rows)
        summary.add_row(kind, str(searches), str(generated), f"{generated / max(1, searches):.2f}",
                        str(stats.get("exact_hits", stats["hits"])), str(stats.get("semantic_hits", 0)),
                        f"{stats['hit_rate']:.2f}")
    Console().print(summary)
    Console().print(json.dumps({k: v[1] for k, v in results.items()}))


if __name__ == "__main__":
    main()
