"""Writing GGUF files for llama.cpp: a Hugging Face Llama or Qwen2 model held in memory (any LoRA already
merged) as a full model, or a peft LoRA adapter as a llama.cpp LoRA file that loads beside its base.

gguf supplies the writer and the HF → GGUF tensor names (`TensorNameMap`). Hand-written here is what
llama.cpp's own converter scripts do for these two architectures and the gguf package does not: the
hyperparameter keys, Llama's q/k row permutation (llama.cpp's rope pairs dimensions i and i+1 where
transformers pairs i and i+d/2), the llama3 rope-frequency tensor, and which tensors stay F32. Float types
only (F32/F16): quantization is llama.cpp's job (`quantize.py`). Knows nothing about adapters on disk
beyond the one it converts, nor about verification.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ZslError

SUPPORTED = ("llama", "qwen2")  # HF model_type == GGUF general.architecture for both
FLOAT_TYPES = ("f32", "f16")

Progress = Callable[[str, int, int], None]


def check_architecture(arch: str | None, source: str) -> str:
    if arch not in SUPPORTED:
        raise ZslError(
            f"cannot export {source}: architecture {arch or 'unknown'!r} is not supported "
            f"(supported: {', '.join(SUPPORTED)})"
        )
    return arch


@dataclass(frozen=True)
class Hyperparameters:
    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_embd: int = 0
    n_ff: int = 0
    n_ctx: int = 0
    head_dim: int = 0
    vocab_size: int = 0
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope: tuple[tuple[str, Any], ...] = ()  # the remaining rope parameters (factor, ...)
    tied_embeddings: bool = False

    @classmethod
    def from_hf_config(cls, config: dict) -> Hyperparameters:
        arch = check_architecture(config.get("model_type"), "this model")
        # transformers 5 keeps rope settings in `rope_parameters`; older configs in rope_theta/rope_scaling.
        rope = {**(config.get("rope_scaling") or {}), **(config.get("rope_parameters") or {})}
        rope_type = rope.pop("rope_type", None) or rope.pop("type", None) or "default"
        theta = rope.pop("rope_theta", None) or config.get("rope_theta") or 10000.0
        n_head = config["num_attention_heads"]
        n_embd = config["hidden_size"]
        return cls(
            arch=arch, n_layer=config["num_hidden_layers"], n_head=n_head,
            n_head_kv=config.get("num_key_value_heads") or n_head, n_embd=n_embd,
            n_ff=config["intermediate_size"], n_ctx=config.get("max_position_embeddings") or 4096,
            head_dim=config.get("head_dim") or n_embd // n_head, vocab_size=config["vocab_size"],
            rms_eps=config.get("rms_norm_eps") or 1e-6, rope_theta=float(theta), rope_type=rope_type,
            rope=tuple(sorted(rope.items())), tied_embeddings=bool(config.get("tie_word_embeddings")),
        )

    @classmethod
    def from_gguf(cls, reader: Any, source: str) -> Hyperparameters:
        """What the adapter route needs of a base GGUF: architecture, layers and heads."""

        def value(key: str) -> Any:
            field = reader.fields.get(key)
            return None if field is None else field.contents()

        arch = check_architecture(value("general.architecture"), source)
        n_head = value(f"{arch}.attention.head_count")
        return cls(arch=arch, n_layer=value(f"{arch}.block_count"), n_head=n_head,
                   n_head_kv=value(f"{arch}.attention.head_count_kv") or n_head)


def rope_pairs_interleaved(weight: Any, n_head: int) -> Any:
    """Reorder q/k output rows from transformers' rotate-half layout to llama.cpp's interleaved pairs."""
    pairs = weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
    return pairs.swapaxes(1, 2).reshape(weight.shape)


def _rope_heads(hf_name: str, hp: Hyperparameters) -> int | None:
    """Heads to permute by for a Llama q/k projection (weight, bias or LoRA B); None for anything else."""
    if hp.arch != "llama":
        return None
    if ".q_proj." in hf_name:
        return hp.n_head
    if ".k_proj." in hf_name:
        return hp.n_head_kv
    return None


def llama3_rope_factors(hp: Hyperparameters) -> Any:
    """llama.cpp's `rope_freqs` tensor for llama3 rope scaling: the divisor of each rotary frequency."""
    import torch

    rope = dict(hp.rope)
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_context / low, old_context / high
    freqs = 1.0 / (hp.rope_theta ** (torch.arange(0, hp.head_dim, 2, dtype=torch.float32) / hp.head_dim))
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def model_tensors(state_dict: dict[str, Any], hp: Hyperparameters) -> Iterator[tuple[str, Any]]:
    """(GGUF name, tensor) pairs in llama.cpp's layout; fails on any tensor it cannot name."""
    import gguf

    if hp.rope_type not in ("default", "linear", "llama3"):
        raise ZslError(f"rope scaling {hp.rope_type!r} cannot be exported (only default, linear, llama3)")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[hp.arch.upper()], hp.n_layer)
    if hp.rope_type == "llama3":
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", llama3_rope_factors(hp)
    for hf_name, tensor in state_dict.items():
        if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and hp.tied_embeddings):
            continue
        target = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ZslError(f"cannot map tensor {hf_name} to a {hp.arch} GGUF tensor")
        if not tensor.is_floating_point():
            raise ZslError(f"tensor {hf_name} is quantized ({tensor.dtype}): export a full-precision model")
        heads = _rope_heads(hf_name, hp)
        yield target, rope_pairs_interleaved(tensor, heads) if heads else tensor


def _stored_dtype(target: str, ndim: int, float_type: str) -> Any:
    import numpy as np

    # llama.cpp reads norms, biases and other 1-D tensors as F32 whatever the file type.
    keeps_f32 = float_type == "f32" or ndim <= 1 or target.endswith("_norm.weight")
    return np.dtype(np.float32 if keeps_f32 else np.float16)


def _numpy(tensor: Any, dtype: Any) -> Any:
    import torch

    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy().astype(dtype, copy=False)


def _add_hyperparameters(writer: Any, hp: Hyperparameters, float_type: str) -> None:
    import gguf

    writer.add_type("model")
    writer.add_context_length(hp.n_ctx)
    writer.add_embedding_length(hp.n_embd)
    writer.add_block_count(hp.n_layer)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    writer.add_layer_norm_rms_eps(hp.rms_eps)
    writer.add_rope_freq_base(hp.rope_theta)
    if hp.arch == "llama":
        writer.add_vocab_size(hp.vocab_size)
        writer.add_rope_dimension_count(hp.head_dim)
    if hp.head_dim != hp.n_embd // hp.n_head:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    if hp.rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(dict(hp.rope)["factor"]))
    file_type = gguf.LlamaFileType.ALL_F32 if float_type == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write(writer: Any, path: Path, tensors: list[tuple[str, Any]], float_type: str, progress: Progress,
           stage: str) -> None:
    """Header, metadata and tensor table first, then one tensor at a time (never the whole model twice)."""
    dtypes = [_stored_dtype(target, tensor.dim(), float_type) for target, tensor in tensors]
    for (target, tensor), dtype in zip(tensors, dtypes, strict=True):
        writer.add_tensor_info(target, tuple(tensor.shape), dtype, tensor.numel() * dtype.itemsize)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    progress(stage, 0, len(tensors))
    for done, ((_, tensor), dtype) in enumerate(zip(tensors, dtypes, strict=True), 1):
        writer.write_tensor_data(_numpy(tensor, dtype))
        progress(stage, done, len(tensors))
    writer.close()


def write_model(path: Path, model: Any, metadata: Callable[[Any], None], *, float_type: str = "f16",
                name: str = "", progress: Progress = lambda *_: None) -> Hyperparameters:
    """Write `model` (a transformers causal LM) as a full GGUF; `metadata(writer)` adds the tokenizer."""
    import gguf

    if float_type not in FLOAT_TYPES:
        raise ZslError(f"a GGUF is written as f32 or f16 (then quantized), not {float_type!r}")
    hp = Hyperparameters.from_hf_config(model.config.to_dict())
    tensors = list(model_tensors(model.state_dict(), hp))
    writer = gguf.GGUFWriter(path=None, arch=hp.arch)
    metadata(writer)
    if name:
        writer.add_name(name)
    _add_hyperparameters(writer, hp, float_type)
    try:
        _write(writer, path, tensors, float_type, progress, f"write {float_type}")
    finally:
        writer.close()
    return hp


# --- LoRA adapters -------------------------------------------------------------------------------------

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_weights_file(adapter_dir: Path) -> Path:
    for name in ADAPTER_WEIGHTS:
        if (adapter_dir / name).is_file():
            return adapter_dir / name
    raise ZslError(f"no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}) in {adapter_dir}")


def read_adapter(adapter_dir: Path) -> tuple[dict, dict[str, Any]]:
    """The adapter's config and tensors; a truncated or corrupt file fails here, before any model loads."""
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ZslError(f"not a peft adapter folder (no adapter_config.json): {adapter_dir}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZslError(f"unreadable adapter config {config_file}: {exc}") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise ZslError(f"only LoRA adapters can be exported: {config_file}")
    weights = adapter_weights_file(adapter_dir)
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(weights))
        else:
            import torch

            tensors = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure means the same thing to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZslError(f"adapter weights are truncated or corrupt ({weights}): {reason}") from None
    if not tensors:
        raise ZslError(f"adapter weights hold no tensors: {weights}")
    return config, tensors


def _lora_modules(tensors: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """peft tensors grouped by module ({"lora_A": .., "lora_B": ..}), and the keys that are no LoRA pair."""
    pairs: dict[str, dict[str, Any]] = {}
    others = []
    for key, tensor in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key and key.endswith(".weight"):
                module = key.split(marker)[0].removeprefix("base_model.model.")
                pairs.setdefault(module, {})[part] = tensor
                break
        else:
            others.append(key)
    for module, pair in pairs.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise ZslError(f"adapter module {module} lacks its lora_A or lora_B tensor")
    return pairs, others


def _gguf_target(module: str, hp: Hyperparameters, names: Any) -> str:
    target = names.get_name(module + ".weight", try_suffixes=(".weight",))
    if target is None:
        raise ZslError(f"cannot map adapter module {module} to a {hp.arch} GGUF tensor")
    return target


def check_adapter_fits(tensors: dict[str, Any], hp: Hyperparameters,
                       base_shapes: dict[str, tuple[int, ...]]) -> None:
    """Every LoRA module matches a base tensor of its shape (GGUF name → (out, in)); fails in a second,
    before a base is loaded for nothing."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[hp.arch.upper()], hp.n_layer)
    pairs, _ = _lora_modules(tensors)
    for module, pair in sorted(pairs.items()):
        target = _gguf_target(module, hp, names)
        fitted = (pair["lora_B"].shape[0], pair["lora_A"].shape[1])
        if base_shapes.get(target) != fitted:
            found = "x".join(map(str, base_shapes.get(target, ()))) or "absent"
            raise ZslError(
                f"the adapter does not fit this base: {module} is {fitted[0]}x{fitted[1]} in the adapter "
                f"and {found} in the base"
            )


def lora_tensors(config: dict, tensors: dict[str, Any], hp: Hyperparameters) -> list[tuple[str, Any]]:
    """(GGUF name, tensor) pairs `blk.N.attn_q.weight.lora_a`/`.lora_b`, B rows permuted like the base."""
    import gguf

    if config.get("use_dora"):
        raise ZslError("DoRA adapters cannot load in llama.cpp: use the merged route")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ZslError("adapters with per-module ranks cannot load in llama.cpp: use the merged route")
    pairs, others = _lora_modules(tensors)
    if others:
        raise ZslError(f"adapter tensor {others[0]} has no place in a llama.cpp LoRA: use the merged route")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[hp.arch.upper()], hp.n_layer)
    out: list[tuple[str, Any]] = []
    for module, pair in sorted(pairs.items()):
        target = _gguf_target(module, hp, names)
        heads = _rope_heads(module + ".", hp)
        lora_b = pair["lora_B"]
        out.append((f"{target}.lora_a", pair["lora_A"]))
        out.append((f"{target}.lora_b", rope_pairs_interleaved(lora_b, heads) if heads else lora_b))
    return out


def lora_alpha(config: dict, tensors: list[tuple[str, Any]]) -> float:
    """The alpha llama.cpp expects: it scales by alpha / rank, and rsLoRA scales by alpha / sqrt(rank)."""
    alpha = float(config.get("lora_alpha") or config.get("r") or 8)
    if config.get("use_rslora"):
        rank = tensors[0][1].shape[0]
        alpha *= math.sqrt(rank)
    return alpha


def gguf_tensor_shapes(reader: Any) -> dict[str, tuple[int, ...]]:
    """GGUF tensor name → shape in PyTorch order (GGUF stores dimensions innermost first)."""
    return {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}


def write_lora(path: Path, adapter_dir: Path, hp: Hyperparameters, *, float_type: str = "f16",
               progress: Progress = lambda *_: None) -> dict:
    """Write a peft LoRA adapter as a llama.cpp LoRA GGUF for a base like `hp`; returns its config."""
    import gguf

    if float_type not in FLOAT_TYPES:
        raise ZslError(f"a LoRA GGUF holds f32 or f16 tensors, not {float_type!r}")
    config, raw = read_adapter(adapter_dir)
    tensors = lora_tensors(config, raw, hp)
    writer = gguf.GGUFWriter(path=None, arch=hp.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, lora_alpha(config, tensors))
    writer.add_name(adapter_dir.name)
    try:
        _write(writer, path, tensors, float_type, progress, f"write LoRA {float_type}")
    finally:
        writer.close()
    return config
