"""Loading a causal LM for training: full precision on CPU, 4-bit NF4 + gradient checkpointing on CUDA,
with a LoRA adapter from peft. Shared by simulator SFT and policy GRPO; imports torch lazily."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ZslError
from ..models import hf
from ..models.spec import ResolvedModel, resolve_model


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


def load_tokenizer(model: ResolvedModel):
    """The model's tokenizer, with a pad token (EOS when the model defines none) for batching."""
    tokenizer = hf.load_tokenizer(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(model: ResolvedModel | str, *, load_in_4bit: bool | None = None, gradient_checkpointing: bool | None = None):
    """The base model, ready for LoRA: 4-bit NF4 on CUDA by default, fp32 on CPU."""
    import torch

    model = resolve_model(model) if isinstance(model, str) else model
    on_cuda = torch.cuda.is_available()
    load_in_4bit = on_cuda if load_in_4bit is None else load_in_4bit
    if load_in_4bit and not on_cuda:
        raise ZslError("4-bit (NF4) training needs a CUDA GPU; on CPU leave --load-in-4bit off")
    if load_in_4bit and model.format == "gguf":
        raise ZslError("4-bit loading needs a Hugging Face model folder, not a GGUF file")
    base = hf.load_causal_lm(model, load_in_4bit=load_in_4bit)
    checkpointing = gradient_checkpointing if gradient_checkpointing is not None else on_cuda
    kwargs = {"use_reentrant": False}
    if load_in_4bit:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs=kwargs
        )
        # peft upcasts embeddings and norms to fp32, which makes the whole residual stream (activations,
        # KV cache) fp32; back to bf16 halves both (RMSNorm computes in fp32 internally anyway).
        for param in base.parameters():
            if param.dtype == torch.float32:
                param.data = param.data.to(torch.bfloat16)
    elif checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if checkpointing:
        base.config.use_cache = False
    return base


def add_lora(base, settings: LoraSettings, adapter_dir: str | Path | None = None):
    import warnings

    with warnings.catch_warnings():  # peft reads an attribute transformers renamed; nothing for users to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return _add_lora(base, settings, adapter_dir)


def _add_lora(base, settings: LoraSettings, adapter_dir: str | Path | None):
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter_dir is not None and Path(adapter_dir, "adapter_config.json").is_file():
        return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=settings.target_modules, task_type="CAUSAL_LM",
    )
    return get_peft_model(base, config)
