"""GPU check: one run, at most 8 minutes on one GPU, nothing downloaded. Prints one Markdown table for
docs/GPU.md: the peak memory of a 4-bit simulator SFT step and of a GRPO step with the README's 24 GB
configuration (beside `train_lite.memory_plan`'s estimate, which `bench/memory_plan.py` prints), rollout
tokens/s on transformers vs vLLM, simulator documents/s on transformers vs vLLM vs llama.cpp (CUDA), and
whether the plan fits a 24 GB card.

    python bench/gpu_check.py                    # CUDA: the full check (Qwen2.5-3B shape)
    python bench/gpu_check.py --quick            # anywhere, under a minute: a tiny model proves the plumbing
    python bench/gpu_check.py --json gpu.json --checkpoint-dir /tmp/zsl-3b   # keep the random model

Models: random weights of Qwen2.5-3B's shape (written below; policy and simulator are the same checkpoint),
saved once as a Hugging Face folder, loaded through the project's loaders (`train_lite.modeling.load_base`
for the NF4 + LoRA policy, `models.loading.load_backend` for the simulator and vLLM), so the check measures
what `zsl sim sft` / `zsl train grpo` run. The memory steps are `train_lite.memory_measure`'s, the ones
`bench/memory_plan.py --measure` runs (random ids, forced lengths). Tokenizer: the embedded model's
(SmolLM2, 49,152 ids); the model keeps Qwen's 151,936-row vocabulary for memory truth, and the saved
tokenizer gets 102,784 placeholder tokens so that every id the random model samples decodes (prompts
tokenize exactly as with SmolLM2's own). The GGUF for llama.cpp is written by the project's exporter from
SmolLM2's tokenizer, whose missing ids become unused entries.

Throughput: rollouts are the GRPO step's longest turn (20 rows, 1,792-token prompts, 256 new tokens);
simulator documents/s is `SimulatedSearchEngine.lookup` of 20 distinct queries, k = 5, 320 new tokens each
(a random model almost never samples EOS), without and (vLLM) with the "Doc i:" grammar. llama.cpp serves
one sequence at a time, so it gets 4 of the queries. Each row that cannot run here (no CUDA, no vLLM, a
llama.cpp without GPU offload, no bitsandbytes) prints "skipped: reason"; the script always runs to the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path

from zerosearch_lite.train_lite import memory_measure as mm  # the measured steps of docs/GPU.md
from zerosearch_lite.train_lite import memory_plan as mp  # the estimate

GIB = 1024**3
MAX_POSITIONS = 32_768
# Qwen2.5-3B(-Instruct) config.json: hidden 2048, 36 layers, 16 heads / 2 KV heads (head size 128), MLP
# 11008, vocab 151,936, tied embeddings, q/k/v biases, rope theta 1e6, 32,768 positions. BOS/EOS are set
# from the tokenizer at run time.
QWEN25_3B = mp.Arch("qwen2.5-3b", "qwen2", hidden=2048, layers=36, heads=16, kv_heads=2, head_dim=128,
                    intermediate=11008, vocab=151_936, tied=True, qkv_bias=True, bos=0, eos=0,
                    rope_theta=1_000_000.0)
# --quick: head size 64 (vLLM's kernels take it), SmolLM2's vocabulary size (no placeholders needed).
TINY = mp.Arch("tiny-qwen2", "qwen2", hidden=128, layers=2, heads=2, kv_heads=1, head_dim=64, intermediate=256,
               vocab=49_152, tied=True, qkv_bias=True, bos=0, eos=0, rope_theta=1_000_000.0)

# The README's 24 GB configuration: `zsl sim sft --batch-size 4 --grad-accum 4 --max-length 1024 --lora-r 16`
# and `zsl train grpo --batch-questions 4 -G 5 --max-turns 4 --max-tokens-per-turn 256 --max-context 2048
# --rollout-batch 20 --simulator-4bit` (micro-batch 4 and log-prob chunk 256 are the trainer's defaults).
FULL_SFT = mp.SFTPlan(batch_size=4, grad_accum=4, max_length=1024, lora_r=16)
FULL_GRPO = mp.GRPOPlan(questions=4, group_size=5, max_tokens_per_turn=256, max_context=2048, rollout_chunk=20,
                        micro_batch=4, logprob_chunk=256, lora_r=16, sim_nf4=True)
QUICK_SFT = mp.SFTPlan(batch_size=2, grad_accum=2, max_length=64, lora_r=8, loss_chunk=32)
QUICK_GRPO = mp.GRPOPlan(questions=2, group_size=2, max_tokens_per_turn=8, max_context=96, rollout_chunk=4,
                         micro_batch=2, logprob_chunk=32, sim_prompt=16, sim_new=16, lora_r=8, sim_nf4=True)
PLAN_LIMIT_GIB = 22.0  # the acceptance bar: under 22 GiB leaves a 24 GB card its margin
CARD_GIB = 24.0

SFT_PEAK = "peak memory: sim SFT step (NF4 + LoRA)"
ROLLOUT_PEAK = "peak memory: GRPO rollout (policy + simulator)"
UPDATE_PEAK = "peak memory: GRPO update"
TRANSFORMERS_ROLLOUT = "rollout tokens/s: transformers"
FITS = "3B policy + 3B simulator fit 24 GB"
TRANSFORMERS_DOCS = "simulator docs/s: transformers"
VLLM_ROWS = ["rollout tokens/s: vLLM", "simulator docs/s: vLLM", "simulator docs/s: vLLM + Doc grammar",
             "vLLM memory: awake / asleep (level 1)"]
LLAMA_DOCS = "simulator docs/s: llama.cpp CUDA"
MEMORY_ROWS = [SFT_PEAK, ROLLOUT_PEAK, UPDATE_PEAK, TRANSFORMERS_ROLLOUT]


@dataclass
class Row:
    check: str
    value: str  # the measurement, or "skipped: reason"
    note: str = ""  # estimate, configuration, caveat
    number: float | None = None  # the value as a number, for --json


@dataclass
class Sizes:
    """How big each throughput workload is."""

    searches: int
    k: int
    llama_searches: int
    rollout_rows: int
    rollout_prompt: int
    rollout_new: int


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:140]


# ------------------------------------------------------------------------------------------ the models


def embedded_tokenizer():
    from transformers import AutoTokenizer

    from zerosearch_lite.models.spec import embedded_model_path

    path = embedded_model_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def build_checkpoint(arch: mp.Arch, folder: Path, device: str) -> tuple[mp.Arch, Path, int]:
    """The random-weight model folder (reused when present), the arch with the tokenizer's BOS/EOS, and
    how many ids SmolLM2's tokenizer has. `folder/gguf-tokenizer` keeps that tokenizer without
    placeholders, for the GGUF export."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = embedded_tokenizer()
    known_ids = len(tokenizer)
    arch = replace(arch, bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id)
    plain = folder / "gguf-tokenizer"
    if not (plain / "tokenizer.json").is_file():
        tokenizer.save_pretrained(str(plain))
    if not (folder / "tokenizer.json").is_file():
        placeholders = [f"<zsl_unused_{i}>" for i in range(len(tokenizer), arch.vocab)]
        if placeholders:
            tokenizer.add_tokens(placeholders)
        tokenizer.save_pretrained(str(folder))
    if not (folder / "config.json").is_file():
        config = mm.hf_config(arch)
        config.max_position_embeddings = MAX_POSITIONS
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.save_pretrained(str(folder))
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return arch, folder, known_ids


# ------------------------------------------------------------------------------------------ memory


@contextmanager
def phase(name: str, results: list[mm.Measured], cuda: bool) -> Iterator[None]:
    """CUDA: memory_plan's measured phase (peaks from the allocator); CPU: seconds only."""
    if cuda:
        with mm.measured_phase(name, results):
            yield
        return
    started = time.perf_counter()
    yield
    results.append(mm.Measured(name, "ok (CPU: no peak)", time.perf_counter() - started, 0.0, 0.0, 0.0))


def load_policy(folder: Path, arch: mp.Arch, r: int, dropout: float, cuda: bool):
    """CUDA: NF4 + LoRA + paged 8-bit AdamW (memory_plan's load, i.e. `load_base`); CPU: the fp32 load
    `load_base` gives without CUDA, same LoRA, plain AdamW."""
    if cuda:
        return mm.load_policy(folder, arch, r, dropout, stream=2)
    from zerosearch_lite.train_lite.modeling import LoraSettings, add_lora, load_base
    from zerosearch_lite.train_lite.sft import make_optimizer

    model = add_lora(load_base(str(folder), load_in_4bit=False), LoraSettings(r=r, alpha=2 * r, dropout=dropout))
    return model, make_optimizer([p for p in model.parameters() if p.requires_grad], 1e-5, paged=False)


def memory_steps(arch: mp.Arch, sft: mp.SFTPlan, grpo: mp.GRPOPlan, folder: Path, cuda: bool,
                 adapter_out: Path) -> tuple[list[mm.Measured], object]:
    """The SFT step, then the GRPO rollout turn, simulator call and update (memory_plan's steps); returns
    the phases and the simulator backend (kept for the throughput rows). The trained policy adapter is
    saved to `adapter_out` for vLLM's rollouts."""
    import torch

    from zerosearch_lite.models.loading import load_backend

    results: list[mm.Measured] = []
    with phase("sim SFT: load (NF4 + LoRA + optimizer)", results, cuda):
        model, optimizer = load_policy(folder, arch, sft.lora_r, sft.lora_dropout, cuda)
    with phase("sim SFT: optimizer step", results, cuda):
        mm.sft_step(model, optimizer, arch, sft)
    del model, optimizer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    with phase("GRPO: load policy and simulator", results, cuda):
        model, optimizer = load_policy(folder, arch, grpo.lora_r, grpo.lora_dropout, cuda)
        simulator = load_backend(str(folder), "transformers", **({"load_in_4bit": True} if cuda else {}))
    model.eval()
    with phase("GRPO rollout: policy last turn", results, cuda):
        rows, width = grpo.generate_rows, grpo.max_context - grpo.max_tokens_per_turn
        for start in range(0, grpo.rollouts, rows):
            mm.generate(model, arch, min(rows, grpo.rollouts - start), width, grpo.max_tokens_per_turn)
    with phase("GRPO rollout: simulator", results, cuda):
        mm.generate(simulator.model, arch, grpo.rollouts, grpo.sim_prompt, grpo.sim_new)
    with phase("GRPO update", results, cuda):
        mm.grpo_update(model, optimizer, arch, grpo)
    model.save_pretrained(str(adapter_out))
    del model, optimizer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return results, simulator


def memory_rows(results: list[mm.Measured] | None, arch: mp.Arch, sft: mp.SFTPlan, grpo: mp.GRPOPlan,
                cuda: bool, skipped: str = "") -> list[Row]:
    """The three peak rows beside their estimates; `results` None: nothing ran, every row says `skipped`."""
    estimates = {e.phase: e.total for e in mp.estimate_all(arch, sft, grpo, stream=2)}
    by_name = {m.phase: m for m in results or []}
    checks = [
        (SFT_PEAK, ("sim SFT: optimizer step",), "sim SFT",
         f"batch {sft.batch_size} × {sft.max_length}, accum {sft.grad_accum}, LoRA r {sft.lora_r}"),
        (ROLLOUT_PEAK, ("GRPO rollout: policy last turn", "GRPO rollout: simulator"), "GRPO rollout",
         f"{grpo.questions} q × G {grpo.group_size}, {grpo.generate_rows} rows/generate, ctx {grpo.max_context}"),
        (UPDATE_PEAK, ("GRPO update",), "GRPO update",
         f"micro-batch {grpo.micro_batch} × {grpo.max_context}, log-prob chunk {grpo.logprob_chunk}"),
    ]
    rows = []
    for check, names, estimate_phase, config in checks:
        note = f"{config}; estimate {estimates[estimate_phase] / GIB:.2f} GiB"
        measured = [by_name[n] for n in names if n in by_name]
        if results is None:
            rows.append(Row(check, skipped, note))
        elif not cuda:
            seconds = sum(m.seconds for m in measured)
            rows.append(Row(check, f"skipped: no CUDA (the step ran on CPU in {seconds:.1f} s)", note))
        else:
            failed = next((m.status for m in measured if not m.status.startswith("ok")), None)
            value = max(m.device_peak for m in measured) / GIB
            rows.append(Row(check, failed or f"{value:.2f} GiB", note, None if failed else value))
    return rows


def plan_row(rows: list[Row]) -> Row:
    peaks = [r.number for r in rows if r.check in (ROLLOUT_PEAK, UPDATE_PEAK) and r.number is not None]
    if len(peaks) < 2:
        return Row(FITS, "skipped: the GRPO peaks were not measured")
    worst = max(peaks)
    verdict = "yes" if worst < PLAN_LIMIT_GIB else "no"
    return Row(FITS, f"{verdict}: peak {worst:.2f} GiB",
               f"bar: under {PLAN_LIMIT_GIB:g} GiB on a {CARD_GIB:g} GB card (transformers rollouts)", worst)


# ------------------------------------------------------------------------------------------ throughput


def queries(count: int) -> list[str]:
    return [f"who founded the town of example {i} and when" for i in range(count)]


def simulator_docs_per_second(backend, sizes: Sizes, *, searches: int, structured: bool = False) -> tuple[float, str]:
    """Documents a second of `SimulatedSearchEngine.lookup` over `backend` (one batched call, no cache)."""
    from zerosearch_lite.simulator.simulated import SimulatedSearchEngine

    engine = SimulatedSearchEngine(backend, structured=structured, seed=0)
    # First-call costs (kernels, the stop-string matcher, grammar compilation) are paid once a run.
    engine.lookup(["warm up"], sizes.k)
    started = time.perf_counter()
    results = engine.lookup(queries(searches), sizes.k)
    seconds = time.perf_counter() - started
    parsed = sum(len(r.docs) for r in results)
    detail = f"{searches} searches × k {sizes.k} in {seconds:.1f} s"
    if structured:
        detail += f"; {parsed} of {searches * sizes.k} documents parsed"
    return searches * sizes.k / seconds, detail


def rollout_prompts(tokenizer_size: int, sizes: Sizes) -> list[list[int]]:
    import random

    rng = random.Random(0)
    return [[rng.randrange(3, tokenizer_size) for _ in range(sizes.rollout_prompt)] for _ in range(sizes.rollout_rows)]


def vllm_rows(folder: Path, adapter: Path | None, sizes: Sizes, args: argparse.Namespace, cuda: bool,
              tokenizer_size: int) -> list[Row]:
    names = VLLM_ROWS
    if not cuda:
        return [Row(n, "skipped: vLLM needs a CUDA GPU") for n in names]
    try:
        import vllm  # noqa: F401
    except ImportError:
        return [Row(n, "skipped: vLLM is not installed (pip install 'zerosearch-lite[gpu]')") for n in names]
    import torch

    from zerosearch_lite.models.backends.base import SamplingParams
    from zerosearch_lite.models.loading import load_backend

    free_before, total = torch.cuda.mem_get_info()
    fraction = min(0.9, args.vllm_gib * GIB / total)
    started = time.perf_counter()
    backend = load_backend(str(folder), "vllm", n_ctx=sizes.rollout_prompt + sizes.rollout_new + 64,
                           gpu_memory_utilization=fraction, enable_sleep_mode=True, max_lora_rank=64,
                           enforce_eager=args.vllm_eager)
    start_seconds = time.perf_counter() - started
    rows = []
    try:
        engine_note = f"cap {args.vllm_gib:g} GiB (gpu_memory_utilization {fraction:.3f}), start {start_seconds:.0f} s"
        if adapter is not None:
            backend.set_adapter(adapter)  # rollouts run under the current policy adapter, as in GRPO
        prompts = rollout_prompts(tokenizer_size, sizes)
        params = SamplingParams(max_tokens=sizes.rollout_new, temperature=1.0, top_p=1.0, seed=0)
        backend.generate(prompts[:1], replace(params, max_tokens=4))  # warm-up
        t0 = time.perf_counter()
        out = backend.generate(prompts, params)
        seconds = time.perf_counter() - t0
        tokens = sum(c.completion_tokens for c in out)
        lora = "under a LoRA adapter, " if adapter is not None else ""
        rows.append(Row(names[0], f"{tokens / seconds:,.0f} tok/s", f"{lora}{sizes.rollout_rows} rows × "
                        f"{sizes.rollout_prompt} prompt + {sizes.rollout_new} new, {seconds:.1f} s; {engine_note}",
                        tokens / seconds))
        backend.set_adapter(None)
        rate, detail = simulator_docs_per_second(backend, sizes, searches=sizes.searches)
        rows.append(Row(names[1], f"{rate:,.1f} docs/s", detail, rate))
        rate, detail = simulator_docs_per_second(backend, sizes, searches=sizes.searches, structured=True)
        rows.append(Row(names[2], f"{rate:,.1f} docs/s", detail + f"; grammar backend {backend.settings.grammar_backend}",
                        rate))
        torch.cuda.synchronize()
        awake = (free_before - torch.cuda.mem_get_info()[0]) / GIB
        backend.sleep()
        asleep = (free_before - torch.cuda.mem_get_info()[0]) / GIB
        rows.append(Row(names[3], f"{awake:.2f} / {asleep:.2f} GiB", "device memory held by the engine "
                        "(another process: not in torch's counters)", asleep))
    finally:
        backend.close()
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def llama_cpp_row(folder: Path, arch: mp.Arch, sizes: Sizes, cuda: bool, quick: bool, workdir: Path) -> Row:
    name = LLAMA_DOCS if cuda else "simulator docs/s: llama.cpp (CPU build)"
    try:
        import llama_cpp
    except ImportError:
        return Row(name, "skipped: llama-cpp-python is not installed")
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    if not offload and not quick:
        return Row(name, "skipped: this llama-cpp-python has no GPU offload "
                   "(reinstall with CMAKE_ARGS=\"-DGGML_CUDA=on\")")
    if cuda and not offload:
        name = "simulator docs/s: llama.cpp (CPU build)"
    import torch
    from transformers import AutoModelForCausalLM

    from zerosearch_lite.models.export import export_loaded
    from zerosearch_lite.models.loading import load_backend
    from zerosearch_lite.models.spec import ResolvedModel

    gguf = workdir / "random.q8_0.gguf"
    started = time.perf_counter()
    if not gguf.is_file():
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16 if cuda else torch.float32)
        # The tokenizer without placeholders: ids it lacks become unused GGUF entries.
        tokenizer_source = ResolvedModel("smollm2-tokenizer", "hf", str(folder / "gguf-tokenizer"), "local")
        export_loaded(model, tokenizer_source, gguf, quant="q8_0", verify=False, force=True)
        del model
        gc.collect()
    export_seconds = time.perf_counter() - started
    backend = load_backend(str(gguf), "llama.cpp", n_ctx=2048, n_gpu_layers=-1 if offload else 0)
    try:
        rate, detail = simulator_docs_per_second(backend, sizes, searches=sizes.llama_searches)
    finally:
        backend.close()
    where = "all layers on the GPU" if offload else "CPU"
    return Row(name, f"{rate:,.1f} docs/s", f"{detail}; q8_0 GGUF ({where}), export {export_seconds:.0f} s", rate)


# ------------------------------------------------------------------------------------------ the run


def guarded(rows: list[Row], names: list[str], work: Callable[[], list[Row]]) -> None:
    """Run a group of rows; an unexpected failure becomes "skipped: error ..." rows, never the end of the run."""
    try:
        rows.extend(work())
    except Exception as exc:  # noqa: BLE001 - the check reports and goes on
        traceback.print_exc(file=sys.stderr)
        rows.extend(Row(n, f"skipped: error: {reason(exc)}") for n in names)


def describe_device(cuda: bool) -> str:
    import torch

    parts = []
    if cuda:
        props = torch.cuda.get_device_properties(0)
        parts.append(f"{props.name} ({props.total_memory / GIB:.1f} GiB)")
    else:
        parts.append("no CUDA GPU (CPU)")
    parts.append(f"torch {torch.__version__}")
    for package in ("transformers", "peft", "bitsandbytes", "vllm", "llama_cpp"):
        try:
            module = __import__(package)
            parts.append(f"{package} {getattr(module, '__version__', '?')}")
        except ImportError:
            pass
    return ", ".join(parts)


def table(rows: list[Row]) -> str:
    lines = ["| check | measured | configuration, estimate, note |", "| --- | ---: | --- |"]
    lines += [f"| {r.check} | {r.value} | {r.note} |" for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="A tiny model: proves the plumbing anywhere.")
    parser.add_argument("--checkpoint-dir", type=Path, help="Keep (and reuse) the random model here.")
    parser.add_argument("--skip", default="", help="Comma-separated groups to skip: memory, vllm, llamacpp.")
    parser.add_argument("--vllm-gib", type=float, default=12.0, help="GiB of the card vLLM may take.")
    parser.add_argument("--vllm-eager", action="store_true", help="vLLM without CUDA graphs (faster start).")
    parser.add_argument("--json", type=Path, help="Also write the rows to this file.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    cuda = torch.cuda.is_available()
    arch, sft, grpo = (TINY, QUICK_SFT, QUICK_GRPO) if args.quick else (QWEN25_3B, FULL_SFT, FULL_GRPO)
    sizes = (Sizes(searches=2, k=1, llama_searches=1, rollout_rows=4, rollout_prompt=88, rollout_new=8)
             if args.quick else
             Sizes(searches=20, k=5, llama_searches=4, rollout_rows=grpo.generate_rows,
                   rollout_prompt=grpo.max_context - grpo.max_tokens_per_turn, rollout_new=grpo.max_tokens_per_turn))
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    rows: list[Row] = []
    header = (f"GPU check, {date.today().isoformat()}: {describe_device(cuda)}\n"
              f"model: {arch.name} shape, random weights; {'--quick' if args.quick else 'full'} run")
    if not cuda and not args.quick:
        text = "skipped: no CUDA GPU (python bench/gpu_check.py --quick checks the plumbing on CPU)"
        rows += memory_rows(None, arch, sft, grpo, cuda, skipped=text)
        rows += [Row(name, text) for name in (TRANSFORMERS_ROLLOUT, FITS, TRANSFORMERS_DOCS, *VLLM_ROWS, LLAMA_DOCS)]
        return finish(header, rows, args, started)

    workdir_holder = None if args.checkpoint_dir else tempfile.TemporaryDirectory(prefix="zsl-gpu-check-")
    workdir = args.checkpoint_dir or Path(workdir_holder.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        log(f"random {arch.name} checkpoint in {workdir}")
        arch, folder, known_ids = build_checkpoint(arch, workdir / arch.name, "cuda" if cuda else "cpu")
        adapter = workdir / "policy-adapter"
        simulator = None
        if "memory" in skip:
            rows += [Row(n, "skipped: --skip memory") for n in MEMORY_ROWS]
        elif cuda and not _has("bitsandbytes"):
            rows += [Row(n, "skipped: bitsandbytes is not installed (pip install bitsandbytes)") for n in MEMORY_ROWS]
        else:
            def memory() -> list[Row]:
                nonlocal simulator
                log("memory: SFT step, GRPO rollout turn, simulator call, update")
                results, simulator = memory_steps(arch, sft, grpo, folder, cuda, adapter)
                out = memory_rows(results, arch, sft, grpo, cuda)
                turn = next(m for m in results if m.phase == "GRPO rollout: policy last turn")
                tokens = grpo.rollouts * grpo.max_tokens_per_turn
                where = "NF4 + LoRA" if cuda else "fp32 + LoRA, CPU"
                out.append(Row(TRANSFORMERS_ROLLOUT, f"{tokens / turn.seconds:,.0f} tok/s",
                               f"{where}, {grpo.rollouts} rows in calls of {grpo.generate_rows}, "
                               f"{grpo.max_context - grpo.max_tokens_per_turn} prompt + {grpo.max_tokens_per_turn} "
                               f"new, {turn.seconds:.1f} s", tokens / turn.seconds))
                return out

            guarded(rows, MEMORY_ROWS, memory)
        rows.append(plan_row(rows))

        name = TRANSFORMERS_DOCS
        if "memory" in skip or simulator is None:
            rows.append(Row(name, "skipped: the simulator was not loaded (memory steps skipped or failed)"))
        else:
            def transformers_docs() -> list[Row]:
                log("simulator documents/s on transformers")
                rate, detail = simulator_docs_per_second(simulator, sizes, searches=sizes.searches)
                where = "NF4" if cuda else "fp32, CPU"
                return [Row(name, f"{rate:,.1f} docs/s", f"{detail}; {where}", rate)]

            guarded(rows, [name], transformers_docs)
            simulator.close()
            simulator = None
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()

        if "vllm" in skip:
            rows += [Row(n, "skipped: --skip vllm") for n in VLLM_ROWS]
        else:
            log("vLLM: rollouts, simulator, sleep")
            guarded(rows, VLLM_ROWS, lambda: vllm_rows(folder, adapter if adapter.is_dir() else None, sizes, args,
                                                        cuda, known_ids))
        if "llamacpp" in skip:
            rows.append(Row(LLAMA_DOCS, "skipped: --skip llamacpp"))
        else:
            log("llama.cpp: GGUF export and simulator")
            guarded(rows, [LLAMA_DOCS], lambda: [llama_cpp_row(folder, arch, sizes, cuda, args.quick, workdir)])
    finally:
        if workdir_holder is not None:
            workdir_holder.cleanup()
    return finish(header, rows, args, started)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def finish(header: str, rows: list[Row], args: argparse.Namespace, started: float) -> list[Row]:
    seconds = time.perf_counter() - started
    print(f"{header}; {seconds:.0f} s in all\n")
    print(table(rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "seconds": seconds, "rows": [asdict(r) for r in rows]},
                                        indent=2))
    return rows


if __name__ == "__main__":
    main()
