"""Quantizing a float GGUF with llama.cpp's own quantizer (`llama_model_quantize` through llama-cpp-python).

No quantization is re-implemented here: llama.cpp picks per-tensor types for the mixed K-quants (q4_k_m keeps
some tensors at higher precision, falls back where a row does not divide into 256-wide blocks) exactly as
its `llama-quantize` tool does. Knows nothing about models or adapters.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ...errors import ZslError

# Our names → llama.cpp's `llama_ftype` values (llama.h).
QUANT_TYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q8_0": 7,
    "q6_k": 18,
    "q5_k_m": 17,
    "q4_k_m": 15,
    "q4_0": 2,
}
FLOAT_QUANTS = ("f32", "f16")


def check_quant(quant: str) -> str:
    if quant not in QUANT_TYPES:
        raise ZslError(f"unknown quantization {quant!r}: choose one of {', '.join(QUANT_TYPES)}")
    return quant


def quantize_gguf(source: Path, target: Path, quant: str, *, threads: int | None = None) -> None:
    """Write `target` as `source` quantized to `quant`; llama.cpp's log lines are kept off the terminal."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[check_quant(quant)]
    params.nthread = threads or max(1, min(8, os.cpu_count() or 1))
    # llama-cpp-python prints llama.cpp's log through this logger's level; quantizing logs every tensor.
    logger = logging.getLogger("llama-cpp-python")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    finally:
        logger.setLevel(previous)
    if status != 0:
        raise ZslError(f"llama.cpp could not quantize {source.name} to {quant} (status {status})")
