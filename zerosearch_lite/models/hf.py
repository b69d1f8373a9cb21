"""Loading a Hugging Face causal LM and its tokenizer from a resolved model (folder or GGUF file).

The one place that turns a `ResolvedModel` into transformers objects: dtype and device defaults, the
4-bit NF4 configuration (bitsandbytes, CUDA only) and one-line errors naming the path. Used by the
transformers backend and by the trainer; knows nothing about generation or training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ZslError
from .spec import ResolvedModel

DTYPES = ("auto", "float32", "float16", "bfloat16")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def locate(model: ResolvedModel) -> tuple[Path, str | None]:
    """The folder to load from and, for GGUF, the file name inside it; missing paths fail here, by name."""
    if model.format == "gguf":
        file = Path(model.path)
        if not file.is_file():
            raise ZslError(f"model file not found: {file}")
        return file.parent, file.name
    if model.format != "hf":
        raise ZslError(f"transformers cannot load a {model.format} model: {model.path}")
    folder = Path(model.path)
    if not folder.is_dir():
        raise ZslError(f"model folder not found: {folder}")
    if model.gguf_file:
        if not (folder / model.gguf_file).is_file():
            raise ZslError(f"model file not found: {folder / model.gguf_file}")
        return folder, model.gguf_file
    if not (folder / "config.json").is_file():
        raise ZslError(f"not a Hugging Face model folder (no config.json): {folder}")
    return folder, None


def token_ids(tokenizer: Any, text: str, *, starts_sequence: bool = True) -> list[int]:
    """Token ids of `text`. Like llama.cpp, a sequence start gets the tokenizer's special tokens (BOS)
    unless the rendered chat template already wrote BOS; a continuation gets none. The one rule for
    inference prompts and training sequences, so both see the same tokens."""
    bos = tokenizer.bos_token
    add_special = starts_sequence and not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


def load_tokenizer(model: ResolvedModel) -> Any:
    from transformers import AutoTokenizer

    folder, gguf_file = locate(model)
    try:
        return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        source = folder / gguf_file if gguf_file else folder
        raise ZslError(f"transformers cannot load {source}: {first_line(exc)}") from None


def load_causal_lm(
    model: ResolvedModel, *, device: str | None = None, dtype: str | None = None, load_in_4bit: bool = False
) -> Any:
    """The model on `device` (default: CUDA when available), fp32 on CPU and bf16 on a GPU by default."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress display owns the terminal

    folder, gguf_file = locate(model)
    if dtype is not None and dtype not in DTYPES:
        raise ZslError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    on_cuda = torch.cuda.is_available()
    device = device or ("cuda" if on_cuda else "cpu")
    # fp32 on CPU: bf16/fp16 matmuls there are slow or unsupported; bf16 halves memory on a GPU.
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if load_in_4bit:
        if not on_cuda:
            raise ZslError("4-bit (NF4) loading needs a CUDA GPU (bitsandbytes); leave it off on CPU")
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if dtype in ("auto", "float32") else getattr(torch, dtype)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
        # bitsandbytes places the weights itself; a later `.to(device)` is refused for 4-bit models.
        kwargs["device_map"] = {"": torch.device(device).index or 0}
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        source = folder / gguf_file if gguf_file else folder
        raise ZslError(f"transformers cannot load {source}: {first_line(exc)}") from None
    if gguf_file:
        # transformers dequantizes GGUF tensors while loading but keeps a "gguf" quantizer on the model,
        # which makes `save_pretrained` refuse it; the weights are plain floats, so drop the marker.
        loaded.hf_quantizer = None
        if hasattr(loaded.config, "quantization_config"):
            del loaded.config.quantization_config
    return loaded if load_in_4bit else loaded.to(device)
