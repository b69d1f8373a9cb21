"""Checking an exported GGUF in llama.cpp against what it was made from, before it is published.

Two checks for a full model: llama.cpp must split probe texts into exactly the tokens the base's own
tokenizer gives (a wrong pre-tokenizer or vocabulary fails here), and its next-token logits on one prompt
must match the merged transformers model's (a float export that strays beyond rounding fails; for quantized
types the difference is recorded, not judged). A LoRA GGUF must load beside its base and give finite
logits. Knows nothing about how the files were written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ZslError

TOKENIZER_PROBES = (
    "Hello world! It's 2024: don't panic, we'll see.",
    "  two  spaces\n\n\ttab 1234567 3.14159",
    "café naïve Zürich 東京 🚀 —",
    "<|im_start|>user\nWho wrote Frankenstein?<|im_end|>\n<|im_start|>assistant\n",
)
LOGIT_PROBE = "The capital of France is"
# A float export whose logits stray this far (max |diff| / std of the reference logits) is broken, not
# rounded: f16 rounding stays around 1% on the embedded model, a scrambled tensor layout reaches ~100%.
FLOAT_LOGIT_LIMIT = 0.25


def open_llama(path: Path, *, threads: int | None = None, lora_path: Path | None = None) -> Any:
    from llama_cpp import Llama

    from ..backends.llamacpp import default_threads

    # A full load even where only the vocabulary is needed: a vocab-only context prints a warning.
    try:
        return Llama(model_path=str(path), n_ctx=64, n_threads=threads or default_threads(), n_gpu_layers=0,
                     logits_all=True, lora_path=str(lora_path) if lora_path else None, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ZslError(f"verification failed: llama.cpp cannot load {path.name}: {reason}") from None


def llama_tokens(llm: Any, text: str) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def last_logits(llm: Any, tokens: list[int]) -> Any:
    import numpy as np

    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[len(tokens) - 1], dtype=np.float32)


@dataclass
class Reference:
    probes: list[list[int]]  # the base tokenizer's split of TOKENIZER_PROBES
    prompt: list[int]  # LOGIT_PROBE's tokens
    logits: Any  # the source model's next-token logits after `prompt` (numpy float32)


def reference(model: Any, *, gguf_file: Path | None, folder: Path | None) -> Reference:
    """Probe tokenizations from the base's own tokenizer (llama.cpp on a GGUF base, transformers on a
    folder) and `model`'s logits after the probe prompt. Taken before the model is written or freed."""
    import torch

    if gguf_file is not None:
        llm = open_llama(gguf_file)
        probes = [llama_tokens(llm, text) for text in TOKENIZER_PROBES]
        prompt = llama_tokens(llm, LOGIT_PROBE)
        llm.close()
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        probes = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TOKENIZER_PROBES]
        prompt = tokenizer(LOGIT_PROBE, add_special_tokens=False)["input_ids"]
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(torch.tensor([prompt], device=device)).logits[0, -1].float().cpu().numpy()
    return Reference(probes, prompt, logits)


def verify_model(path: Path, ref: Reference, quant: str, *, threads: int | None = None) -> dict:
    """Tokenization must be identical; logits are compared (and must agree closely for f32/f16)."""
    import numpy as np

    llm = open_llama(path, threads=threads)
    try:
        for text, expected in zip(TOKENIZER_PROBES, ref.probes, strict=True):
            if llama_tokens(llm, text) != list(expected):
                raise ZslError(f"verification failed: the exported tokenizer splits {text!r} unlike the base")
        logits = last_logits(llm, ref.prompt)
    finally:
        llm.close()
    if not np.isfinite(logits).all():
        raise ZslError("verification failed: llama.cpp computes non-finite logits from the exported file")
    diff = float(np.abs(logits - ref.logits).max())
    relative = diff / max(float(ref.logits.std()), 1e-6)
    if quant in ("f32", "f16") and relative > FLOAT_LOGIT_LIMIT:
        raise ZslError(
            f"verification failed: {quant} logits differ from the source model by up to {diff:.3f} "
            f"({relative:.0%} of their spread)"
        )
    return {
        "tokenizer_probes": len(TOKENIZER_PROBES),
        "tokenizer_identical": True,
        "prompt": LOGIT_PROBE,
        "top1_agrees": int(logits.argmax()) == int(ref.logits.argmax()),
        "max_abs_logit_diff": round(diff, 5),
        "relative_logit_diff": round(relative, 5),
    }


def verify_lora(base_gguf: Path, lora: Path, *, threads: int | None = None) -> dict:
    """The LoRA loads beside its base in llama.cpp and the pair computes finite logits."""
    import numpy as np

    llm = open_llama(base_gguf, threads=threads, lora_path=lora)
    try:
        finite = bool(np.isfinite(last_logits(llm, llama_tokens(llm, LOGIT_PROBE))).all())
    finally:
        llm.close()
    if not finite:
        raise ZslError("verification failed: the base with this LoRA computes non-finite logits")
    return {"loads_beside_base": True, "prompt": LOGIT_PROBE, "finite_logits": True}
