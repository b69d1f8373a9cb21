"""Export per quantization on the embedded model: export time, file size, llama.cpp decode speed, accuracy.

The adapter is a LoRA made here (r 16 on every linear layer, B ~ N(0, 0.02), as a trained one would be
shaped). Each merged row is one full export (load the base with transformers, merge, write f16, quantize,
verify against transformers + LoRA); the adapter row converts the LoRA alone and decodes with it beside the
Q4_1 base; the first row is the embedded Q4_1 file as shipped (without the LoRA).

Decode speed: greedy tokens after a chat prompt, best and median of `--repeats` runs taken round-robin over
the files, with `--threads`. On a shared machine the wall-clock figures follow the load of other processes,
so tokens per CPU-second of this process are shown too (with `--threads 1`: the single-core decode speed).
Accuracy, against transformers' fp32 base + LoRA at every position of that prompt (~25 tokens): the largest
logit difference and the share of positions whose top-1 token is the same.

    python bench/export.py [--quants f16,q8_0,q4_k_m] [--tokens 128] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from zerosearch_lite.models.export import ExportConfig, export_model
from zerosearch_lite.models.hf import load_causal_lm
from zerosearch_lite.models.spec import resolve_model

PROMPT = "<|im_start|>user\nWrite a short story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"


def make_adapter(folder: Path, rank: int, probe: list[int]) -> np.ndarray:
    """Save the LoRA; return transformers' logits (fp32 base + LoRA) at every position of `probe`."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_causal_lm(resolve_model("embedded"), device="cpu", dtype="float32"),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
        model.save_pretrained(str(folder))
        return model.eval()(torch.tensor([probe])).logits[0].numpy()


def probe_tokens(path: str) -> list[int]:
    from llama_cpp import Llama

    llm = Llama(path, n_ctx=256, n_gpu_layers=0, verbose=False)
    tokens = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    llm.close()
    return tokens


class Decoder:
    """One llama.cpp model (optionally with a LoRA beside it) and its accuracy on the prompt."""

    def __init__(self, path: str, reference: np.ndarray, *, threads: int, lora: str | None = None):
        from llama_cpp import Llama

        self.llm = Llama(path, n_ctx=1024, n_threads=threads, n_gpu_layers=0, lora_path=lora, logits_all=True,
                         verbose=False)
        self.prompt = self.llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
        self.llm.eval(self.prompt)
        logits = np.array(self.llm.scores[: len(self.prompt)])
        self.max_diff = float(np.abs(logits - reference).max())
        self.top1_agrees = float((logits.argmax(-1) == reference.argmax(-1)).mean())
        self.speeds: list[float] = []  # tokens per wall-clock second
        self.cpu_speeds: list[float] = []  # tokens per CPU second of this process (all its threads)

    def decode(self, tokens: int) -> None:
        """One greedy run of `tokens` new tokens (prompt evaluation excluded)."""
        self.llm.reset()
        self.llm.eval(self.prompt)
        started, cpu_started, count = time.perf_counter(), time.process_time(), 0
        for _token in self.llm.generate(self.prompt, temp=0.0, reset=False):  # no EOS stop: always `tokens`
            count += 1
            if count == tokens:
                break
        self.speeds.append(count / (time.perf_counter() - started))
        self.cpu_speeds.append(count / (time.process_time() - cpu_started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quants", default="f16,q8_0,q4_k_m")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zsl-export-bench-") as work:
        table = run(args, Path(work))
    Console(width=190).print(table)


def run(args: argparse.Namespace, work: Path) -> Table:
    base = resolve_model("embedded")
    adapter = work / "adapter"
    reference = make_adapter(adapter, args.rank, probe_tokens(base.path))
    threads = args.threads

    shipped = Decoder(base.path, reference, threads=threads)
    rows = [("embedded, no LoRA", "Q4_1", None, base.size_bytes, shipped)]
    for quant in args.quants.split(","):
        out = work / f"merged.{quant}.gguf"
        result = export_model(ExportConfig(model="embedded", adapter=str(adapter), out=str(out), quant=quant,
                                           threads=threads))
        rows.append((f"merged LoRA r{args.rank}", quant, result.card["seconds"], out.stat().st_size,
                     Decoder(str(out), reference, threads=threads)))
    out = work / "adapter.f16.gguf"
    result = export_model(ExportConfig(model="embedded", adapter=str(adapter), out=str(out), quant="f16",
                                       route="adapter", threads=threads))
    rows.append((f"LoRA r{args.rank} GGUF + Q4_1 base", "f16", result.card["seconds"], out.stat().st_size,
                 Decoder(base.path, reference, threads=threads, lora=str(out))))
    # Round-robin over the files, best run of each: on a shared CPU, load from other processes only ever
    # slows a run down, and interleaving spreads it evenly over the rows.
    for _ in range(args.repeats):
        for *_, decoder in rows:
            decoder.decode(args.tokens)

    table = Table(title=f"export of the embedded SmolLM2-135M ({args.threads} threads, {args.tokens} tokens)")
    columns = ("file", "type", "export s", "load+merge s", "write s", "quantize s", "verify s", "size MiB",
               "decode tok/s (best)", "decode tok/s (median)", "tok per CPU-s", "max |Δlogit|",
               "top-1 agrees")
    for column in columns:
        table.add_column(column, justify="left" if column == "file" else "right")
    for name, quant, seconds, size, decoder in rows:
        s = seconds or {}

        def cell(*keys: str, s: dict = s) -> str:
            return f"{sum(s.get(k, 0.0) for k in keys):.1f}" if any(k in s for k in keys) else "-"

        table.add_row(name, quant, cell("total"), cell("load", "merge"), cell("write"), cell("quantize"),
                      cell("verify"), f"{size / 2**20:.1f}", f"{max(decoder.speeds):.0f}",
                      f"{statistics.median(decoder.speeds):.0f}", f"{max(decoder.cpu_speeds):.0f}",
                      f"{decoder.max_diff:.3f}",
                      f"{decoder.top1_agrees:.0%}")
        decoder.llm.close()
    return table


if __name__ == "__main__":
    main()
