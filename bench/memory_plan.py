"""GPU memory plan for one 24 GB card: the estimated peak memory of simulator SFT and of a GRPO step
(policy and simulator in one process), and, with `--measure` (CUDA only), the peak measured with
random-weight models of the same shapes, side by side. A command line over
`zerosearch_lite.train_lite.memory_plan` (the estimate, pure arithmetic) and `memory_measure` (the
measurement, and `--profile-cpu`: PyTorch's CPU memory timeline of the same steps on the model cut to a
few blocks, a check of the activation and logits accounting without a GPU). Downloads nothing.

    python bench/memory_plan.py                               # estimate table (CPU is enough)
    python bench/memory_plan.py --arch llama-3.2-3b --max-context 3072 --micro-batch 2
    python bench/memory_plan.py --loss-chunk 0                # SFT with the full-logit loss, as before
    python bench/memory_plan.py --profile-cpu                 # ~2 min on 2 cores, ~4 GB of RAM
    python bench/memory_plan.py --measure --json peaks.json   # CUDA + bitsandbytes + peft
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from zerosearch_lite.errors import ZslError
from zerosearch_lite.train_lite.memory_plan import ARCHS, GIB, GRPOPlan, SFTPlan, estimate_all, estimate_table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="qwen2.5-3b")
    parser.add_argument("--stream", choices=("bf16", "fp32"), default="bf16",
                        help="Residual stream dtype: bf16 is what load_base gives (it casts the weights peft's "
                             "prepare_model_for_kbit_training upcast back to bf16); fp32 is the stream that "
                             "peft call alone leaves, for comparison.")
    sft, grpo = SFTPlan(), GRPOPlan()
    for name in ("batch-size", "grad-accum", "max-length", "loss-chunk"):
        default = getattr(sft, name.replace("-", "_"))
        extra = " Response tokens projected to the vocabulary at once; 0: full logits." if name == "loss-chunk" else ""
        parser.add_argument(f"--{name}", type=int, default=default, help=f"SFT (default {default}).{extra}")
    for name in ("questions", "group-size", "max-tokens-per-turn", "max-context", "rollout-chunk", "micro-batch",
                 "logprob-chunk", "sim-prompt", "sim-new", "lora-r"):
        default = getattr(grpo, name.replace("-", "_"))
        extra = " Rows per generate call, the trainer's --rollout-batch; 0: all at once." if name == "rollout-chunk" else ""
        parser.add_argument(f"--{name}", type=int, default=default, help=f"GRPO (default {default}).{extra}")
    parser.add_argument("--sim-bf16", action="store_true",
                        help="GRPO: simulator weights in bf16 (the trainer without --simulator-4bit), not NF4.")
    parser.add_argument("--measure", action="store_true", help="Also measure on CUDA with random weights.")
    parser.add_argument("--phases", default="sft,grpo", help="What --measure runs: sft, grpo or both.")
    parser.add_argument("--checkpoint-dir", type=Path, help="Keep (or reuse) the random-weight model here.")
    parser.add_argument("--profile-cpu", action="store_true",
                        help="Also profile prefill/SFT/update steps on the CPU with the model cut to a few blocks.")
    parser.add_argument("--profile-layers", type=int, default=2)
    parser.add_argument("--profile-tokens", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="Also write estimates and measurements to this file.")
    return parser.parse_args(argv)


def plans(args: argparse.Namespace) -> tuple[SFTPlan, GRPOPlan]:
    sft = SFTPlan(batch_size=args.batch_size, grad_accum=args.grad_accum, max_length=args.max_length,
                  lora_r=args.lora_r, loss_chunk=args.loss_chunk)
    grpo = replace(GRPOPlan(), sim_nf4=not args.sim_bf16,
                   **{k: getattr(args, k) for k in asdict(GRPOPlan()) if hasattr(args, k)})
    return sft, grpo


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    arch = ARCHS[args.arch]
    stream = 4 if args.stream == "fp32" else 2
    sft, grpo = plans(args)
    estimates = estimate_all(arch, sft, grpo, stream)
    print(estimate_table(arch, estimates, stream), flush=True)
    record: dict = {"arch": asdict(arch), "stream": args.stream, "sft": asdict(sft), "grpo": asdict(grpo),
                    "estimates": [{"phase": e.phase, "config": e.config, "total_gib": e.total / GIB,
                                   "working_kind": e.working_kind, **{k: v / GIB for k, v in e.parts.items()}}
                                  for e in estimates]}
    if args.profile_cpu or args.measure:
        from zerosearch_lite.train_lite import memory_measure
    if args.profile_cpu:
        rows = memory_measure.profile_cpu(arch, args.profile_layers, args.profile_tokens, grpo.logprob_chunk, stream,
                                          sft_chunk=sft.loss_chunk or 512)
        print("\n" + memory_measure.profile_table(arch, rows, args.profile_layers, args.profile_tokens, stream),
              flush=True)
        record["cpu_profile"] = [{"step": n, "profiled_mib": p / 2**20, "estimate_mib": e / 2**20} for n, p, e in rows]
    if args.measure:
        try:
            results, device = memory_measure.measure_on_cuda(arch, sft, grpo, stream, args.phases.split(","),
                                                             args.checkpoint_dir)
        except ZslError as exc:
            raise SystemExit(str(exc)) from None
        print("\n" + memory_measure.measured_table(results, device), flush=True)
        record["device"] = device
        record["measured"] = [{**asdict(m), "device_peak": m.device_peak} for m in results]
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
