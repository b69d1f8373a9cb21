"""Pick and build the backend for a model name: GGUF → llama.cpp, HF folder → transformers, URL → HTTP.

An adapter decides too: a LoRA exported to GGUF runs beside a GGUF base on llama.cpp, while a peft
adapter folder (what `zsl sim sft` and `zsl train grpo` write) needs transformers, which also reads a
GGUF base, so a trained adapter can be tried before it is exported.

Heavy libraries are imported only here, inside the function, so `zsl --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ZslError
from .backends.base import GenerationBackend
from .spec import ResolvedModel, resolve_model

BackendKind = Literal["auto", "llama.cpp", "transformers", "openai", "vllm"]
BACKEND_KINDS: tuple[str, ...] = ("auto", "llama.cpp", "transformers", "openai", "vllm")


def backend_kind_for(model: ResolvedModel, kind: BackendKind = "auto", adapter: str | None = None) -> str:
    if kind != "auto":
        return kind
    if adapter and model.format == "gguf" and Path(adapter).is_dir():
        return "transformers"
    return {"gguf": "llama.cpp", "hf": "transformers", "http": "openai"}[model.format]


@dataclass
class LoadedModel:
    model: ResolvedModel
    backend: GenerationBackend


def load_model(name: str | None, kind: BackendKind = "auto", *, adapter: str | None = None, n_ctx: int = 4096,
               **options) -> LoadedModel:
    """Resolve a model name and load it: the one path from a user's `--policy`/`--simulator` to a backend,
    keeping the resolved model (callers decide defaults from it, e.g. protocol decoding for the embedded one)."""
    model = resolve_model(name)
    return LoadedModel(model, load_backend(model, kind, n_ctx=n_ctx, adapter=adapter, **options))


def load_backend(
    name: str | ResolvedModel | None,
    kind: BackendKind = "auto",
    *,
    n_ctx: int = 4096,
    adapter: str | None = None,
    **options,
) -> GenerationBackend:
    """Resolve `name` and build its backend. `adapter` is a LoRA (GGUF for llama.cpp, peft folder otherwise)."""
    model = name if isinstance(name, ResolvedModel) else resolve_model(name)
    chosen = backend_kind_for(model, kind, adapter)
    if chosen == "llama.cpp":
        if model.format != "gguf":
            raise ZslError(f"llama.cpp needs a .gguf file, and {model.name} is a {model.format} model")
        from .backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(model, n_ctx=n_ctx, lora_path=adapter, **options)
    if chosen == "transformers":
        if model.format == "http":
            raise ZslError(f"transformers cannot load a URL: {model.path}")
        from .backends.transformers_backend import TransformersBackend

        return TransformersBackend(model, adapter=adapter, **options)
    if chosen == "openai":
        from .backends.openai_http import OpenAIBackend

        if model.format != "http":
            raise ZslError(f"the openai backend needs a server URL, not {model.name}")
        return OpenAIBackend(model.path, **options)
    if chosen == "vllm":  # chosen by name only: it needs CUDA and the gpu extra
        from .backends.vllm_backend import VLLMBackend

        options.setdefault("max_model_len", n_ctx)
        return VLLMBackend(model, adapter=adapter, **options)
    raise ZslError(f"unknown backend {kind!r}: choose one of {', '.join(BACKEND_KINDS)}")
