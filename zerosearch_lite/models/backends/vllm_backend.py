"""vLLM backend: batched sampling on vLLM's offline `LLM` (the `gpu` extra, vllm==0.32.0), for policy
rollouts, the simulator and evaluation on a CUDA GPU.

Prompts go in as token ids (text is tokenized here with the model's tokenizer, by the same BOS rule as the
other backends) and the sampled ids come back in `Completion.token_ids`. GBNF grammars run through vLLM's
structured outputs. A LoRA adapter folder can be handed over at any time (`set_adapter`: a new
`LoRARequest` id, so vLLM reads the new weights without a restart). With `enable_sleep_mode`, `sleep()`
frees the card for a trainer's update in the same process and the next `generate` wakes the engine. vLLM
is imported only here, inside the methods; this module must not know about training or search.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ...errors import ZslError, first_problem
from ..hf import first_line, locate, token_ids
from ..spec import ResolvedModel
from .base import (
    CHATML_TEMPLATE,
    Completion,
    GenerationBackend,
    Message,
    Prompt,
    SamplingParams,
    cut_at_stop,
    render_chat_template,
)
from .openai_http import sampled_ids

PINNED_VERSION = "0.32"  # the gpu extra's vllm==0.32.0: the last release built on torch 2.13, which we pin


class VLLMSettings(BaseModel):
    """vLLM engine options; each field becomes a CLI option's help."""

    gpu_memory_utilization: float = Field(
        0.35, gt=0, le=0.95,
        description="Share of the GPU's memory vLLM takes (weights, activations, KV cache); the rest stays "
        "free for a trainer or a second engine in the same process.",
    )
    max_model_len: int | None = Field(
        None, ge=64, le=1_048_576,
        description="Context window in tokens (default: the model's); a smaller one leaves more KV cache "
        "for parallel rows.",
    )
    enable_lora: bool = Field(True, description="Serve LoRA adapters, so a new one can be handed over each step.")
    max_lora_rank: int = Field(64, ge=1, le=512, description="Largest LoRA rank an adapter may have.")
    enable_sleep_mode: bool = Field(
        False, description="Allow sleep(): weights to CPU memory and KV cache freed while a trainer updates."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weight and activation dtype; auto follows the checkpoint."
    )
    quantization: str | None = Field(
        None, description="vLLM quantization method, e.g. bitsandbytes (NF4 when loading) or fp8; none: "
        "the checkpoint's own.",
    )
    grammar_backend: Literal["auto", "guidance", "xgrammar"] = Field(
        "guidance",
        description="Structured-output engine for GBNF grammars: guidance (llguidance) compiles bounded "
        "repetitions such as the simulator's [^\\n]{40,280} at once, where xgrammar takes seconds.",
    )
    enforce_eager: bool = Field(False, description="Skip CUDA graph capture: faster start, slower decoding.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one model is split over.")
    tokenizer: str | None = Field(
        None, description="Hugging Face tokenizer folder for a GGUF model (vLLM converts the GGUF's own "
        "tokenizer slowly); default: the model's.",
    )
    seed: int = Field(0, description="Engine seed; requests with their own seed use that.")


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ZslError(
            "vLLM is not installed: pip install 'zerosearch-lite[gpu]' (Linux with a CUDA GPU)"
        ) from None
    version = str(getattr(vllm, "__version__", ""))
    if version and not version.startswith(PINNED_VERSION + "."):
        # vLLM's offline API changes between releases (it broke several trainers): say which one is tested.
        warnings.warn(f"vLLM {version} is installed; zerosearch-lite is tested with {PINNED_VERSION}.x",
                      stacklevel=2)
    return vllm


def sampling_kwargs(params: SamplingParams, max_tokens: int, *, logprobs: bool) -> dict[str, Any]:
    """vLLM `SamplingParams` arguments for our sampling settings (the grammar is added by the caller)."""
    greedy = params.temperature <= 0
    kwargs: dict[str, Any] = {
        "n": params.n,
        "temperature": max(0.0, params.temperature),
        "top_p": 1.0 if greedy else params.top_p,
        "max_tokens": max_tokens,
        "seed": params.seed,
        "repetition_penalty": params.repeat_penalty,
        "skip_special_tokens": True,
    }
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if logprobs:
        kwargs["logprobs"] = 0  # the sampled token's log-prob only
    return kwargs


def _settings(options: dict[str, Any]) -> VLLMSettings:
    try:
        return VLLMSettings(**options)
    except ValidationError as exc:
        raise ZslError(f"bad vLLM option {first_problem(exc)}") from None


def _model_config(llm: Any) -> Any:
    return getattr(llm, "model_config", None) or getattr(getattr(llm, "llm_engine", None), "model_config", None)


class VLLMBackend(GenerationBackend):
    supports_grammar = True
    accepts_token_ids = True
    batches_prompts = True

    def __init__(self, model: ResolvedModel, *, adapter: str | None = None, **options: Any):
        if model.format == "http":
            raise ZslError(f"vLLM runs a local model; for a vLLM server use its URL (openai backend): {model.path}")
        self.settings = _settings(options)
        vllm = import_vllm()
        folder, gguf_file = locate(model)
        source = str(folder / gguf_file) if gguf_file else str(folder)
        settings = self.settings
        engine_args: dict[str, Any] = {
            "model": source,
            "tokenizer": settings.tokenizer,
            "gpu_memory_utilization": settings.gpu_memory_utilization,
            "max_model_len": settings.max_model_len,
            "enable_lora": settings.enable_lora,
            "enable_sleep_mode": settings.enable_sleep_mode,
            "dtype": settings.dtype,
            "quantization": settings.quantization,
            "enforce_eager": settings.enforce_eager,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "seed": settings.seed,
            "structured_outputs_config": {"backend": settings.grammar_backend},
        }
        if settings.enable_lora:
            # One adapter is active at a time (the current step's), so one GPU slot is enough.
            engine_args.update(max_lora_rank=settings.max_lora_rank, max_loras=1)
        try:
            self.llm = vllm.LLM(**{k: v for k, v in engine_args.items() if v is not None})
        except (ValueError, RuntimeError, OSError, TypeError) as exc:
            raise ZslError(f"vLLM cannot load {source}: {first_line(exc)}") from None
        self.tokenizer = self.llm.get_tokenizer()
        config = _model_config(self.llm)
        self.context_size = int(getattr(config, "max_model_len", 0) or settings.max_model_len or 4096)
        self.base_model_id = model.model_id
        self.model_id = model.model_id
        self.asleep = False
        self._lora: Any = None  # the LoRARequest requests run under
        self._lora_serial = 0
        if adapter:
            self.set_adapter(adapter)

    # --- text ---------------------------------------------------------------------------------------------

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        tokenizer = self.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            special = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}
            return render_chat_template(CHATML_TEMPLATE, messages, add_generation_prompt=add_generation_prompt,
                                        **special)
        return tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                             add_generation_prompt=add_generation_prompt)

    def tokenize(self, text: str, *, starts_sequence: bool = True) -> list[int]:
        return token_ids(self.tokenizer, text, starts_sequence=starts_sequence)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    # --- generation ---------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        import time

        if not prompts:
            return []
        vllm = import_vllm()
        encoded = [self.tokenize(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
        longest = max(len(ids) for ids in encoded)
        if longest >= self.context_size:
            raise ZslError(f"prompt of {longest} tokens does not fit the context window of "
                           f"{self.context_size} tokens")
        logprobs = bool(getattr(params, "logprobs", False))
        sampling = [self._sampling_params(vllm, params.for_prompt(i), len(ids), logprobs)
                    for i, ids in enumerate(encoded)]
        if self.asleep:
            self.wake_up()  # a forgotten wake_up() would otherwise fail deep inside vLLM
        started = time.perf_counter()
        try:
            outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], sampling,
                                        lora_request=self._lora, use_tqdm=False)
        except ValueError as exc:  # vLLM's request validation: a bad grammar, a too-large adapter rank
            raise ZslError(f"vLLM refused the request: {first_line(exc)}") from None
        seconds = (time.perf_counter() - started) / (len(encoded) * params.n)
        completions = []
        for ids, output in zip(encoded, outputs, strict=True):
            samples = sorted(output.outputs, key=lambda s: s.index)
            if len(samples) != params.n:
                raise ZslError(f"vLLM returned {len(samples)} samples, expected {params.n}")
            cached = int(getattr(output, "num_cached_tokens", 0) or 0)
            for sample in samples:
                completions.append(self._completion(sample, len(ids), cached, seconds, params, logprobs))
        return completions

    def _sampling_params(self, vllm: Any, params: SamplingParams, prompt_tokens: int, logprobs: bool) -> Any:
        kwargs = sampling_kwargs(params, max(1, min(params.max_tokens, self.context_size - prompt_tokens)),
                                 logprobs=logprobs)
        if params.grammar:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(grammar=params.grammar)
        return vllm.SamplingParams(**kwargs)

    @staticmethod
    def _completion(sample: Any, prompt_tokens: int, cached: int, seconds: float, params: SamplingParams,
                    logprobs: bool) -> Completion:
        ids = sampled_ids(sample.token_ids, sample.finish_reason, sample.stop_reason) or []
        text = cut_at_stop(sample.text, params.stop)[0]  # vLLM cuts stop strings already; this is a no-op
        finish = "length" if sample.finish_reason == "length" else "stop"
        completion = Completion(text, finish, prompt_tokens, len(ids), min(cached, prompt_tokens), seconds,
                                token_ids=ids)
        if logprobs:
            entries = sample.logprobs or []
            completion.token_logprobs = [  # type: ignore[attr-defined]
                float(entry[token].logprob) for entry, token in zip(entries, ids, strict=False)
            ]
        return completion

    # --- LoRA hand-over -----------------------------------------------------------------------------------

    def set_adapter(self, path: str | Path | None) -> str | None:
        """Run later requests under the peft adapter in `path` (None: the base model). Each call is a new
        `LoRARequest` id, so vLLM loads the folder's current weights even when the path is reused; the
        previous adapter is dropped from vLLM's adapter cache."""
        previous = self._lora
        if path is None:
            self._lora = None
            self.model_id = self.base_model_id
        else:
            if not self.settings.enable_lora:
                raise ZslError("this vLLM engine was started without LoRA (enable_lora=False)")
            folder = Path(path)
            if not (folder / "adapter_config.json").is_file():
                raise ZslError(f"not a peft adapter folder (no adapter_config.json): {folder}")
            from vllm.lora.request import LoRARequest

            self._lora_serial += 1
            name = f"{folder.name}-{self._lora_serial}"
            self._lora = LoRARequest(name, self._lora_serial, str(folder.resolve()))
            self.model_id = f"{self.base_model_id}+{name}"  # a new adapter is a new model for caches
        remove = getattr(getattr(self.llm, "llm_engine", None), "remove_lora", None)
        if previous is not None and remove is not None:
            remove(previous.lora_int_id)
        return self._lora.lora_name if self._lora is not None else None

    # --- sharing the card with a trainer ------------------------------------------------------------------

    def sleep(self, level: int = 1) -> None:
        """Free the GPU for a trainer: level 1 moves the weights to CPU memory and drops the KV cache."""
        if not self.settings.enable_sleep_mode:
            raise ZslError("this vLLM engine was started without sleep mode (enable_sleep_mode=True)")
        if not self.asleep:
            self.llm.sleep(level=level)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        del llm
        import gc

        gc.collect()
        try:
            import torch
        except ImportError:  # pragma: no cover - vLLM depends on torch
            return
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
