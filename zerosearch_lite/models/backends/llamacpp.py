"""llama.cpp backend (llama-cpp-python): the default for inference, a thin layer over one `Llama` object.

Prompts are tokenized here and passed as token ids, so the number of prompt tokens whose KV state is
reused from the previous call (llama.cpp keeps the longest common token prefix) can be reported per
call. Callers get prefix reuse by building each turn's prompt as an extension of the previous one and by
giving each role (policy, simulator) its own backend object.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Sequence
from pathlib import Path

from ...errors import ZslError
from ..spec import ResolvedModel
from .base import (
    CHATML_TEMPLATE,
    Completion,
    GenerationBackend,
    Message,
    SamplingParams,
    render_chat_template,
)


def default_threads() -> int:
    """`ZSL_THREADS` when set (for machines shared with other jobs), else the cores, at most 8."""
    configured = os.environ.get("ZSL_THREADS", "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ZslError(f"ZSL_THREADS must be a positive whole number, not {configured!r}")
        return int(configured)
    return max(1, min(8, os.cpu_count() or 1))


class LlamaCppBackend(GenerationBackend):
    supports_grammar = True

    def __init__(
        self,
        model: ResolvedModel,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = -1,
        lora_path: str | None = None,
        logits_all: bool = False,
    ):
        try:
            from llama_cpp import Llama
        except ImportError:  # pragma: no cover - a core dependency
            raise ZslError("llama-cpp-python is not installed: pip install llama-cpp-python") from None
        if lora_path and not Path(lora_path).is_file():
            raise ZslError(f"LoRA adapter not found: {lora_path}")
        try:
            self.llm = Llama(
                model_path=model.path,
                n_ctx=n_ctx,
                n_threads=n_threads or default_threads(),
                n_gpu_layers=n_gpu_layers,
                lora_path=lora_path,
                logits_all=logits_all,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ZslError(f"llama.cpp cannot load model file {model.path}: {reason}") from None
        self.model = model
        self.model_id = model.model_id + (f"+{Path(lora_path).name}" if lora_path else "")
        self.context_size = self.llm.n_ctx()
        metadata = self.llm.metadata
        self.chat_template = metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self._special = {
            "bos_token": self._token_text(metadata.get("tokenizer.ggml.bos_token_id")),
            "eos_token": self._token_text(metadata.get("tokenizer.ggml.eos_token_id")),
        }
        self._grammars: dict[str, object] = {}

    def _token_text(self, token_id: str | None) -> str:
        if token_id is None:
            return ""
        return self.llm.detokenize([int(token_id)], special=True).decode("utf-8", errors="ignore")

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return render_chat_template(
            self.chat_template, messages, add_generation_prompt=add_generation_prompt, **self._special
        )

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _grammar(self, text: str | None):
        if not text:
            return None
        if text not in self._grammars:
            from llama_cpp import LlamaGrammar

            try:
                self._grammars[text] = LlamaGrammar.from_string(text, verbose=False)
            except (ValueError, RuntimeError) as exc:
                raise ZslError(f"invalid GBNF grammar: {exc}") from None
        return self._grammars[text]

    def _cached_prefix(self, tokens: list[int]) -> int:
        from llama_cpp import Llama

        current = self.llm.input_ids[: self.llm.n_tokens].tolist()
        # llama.cpp re-evaluates the last prompt token even on a full match.
        return min(Llama.longest_token_prefix(current, tokens), max(0, len(tokens) - 1))

    def _check_fits(self, tokens: list[int], max_tokens: int) -> None:
        if len(tokens) >= self.context_size:
            raise ZslError(
                f"prompt of {len(tokens)} tokens does not fit the context window of {self.context_size} tokens"
            )

    def _kwargs(self, params: SamplingParams, tokens: list[int]) -> dict:
        return {
            "max_tokens": min(params.max_tokens, self.context_size - len(tokens)),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": list(params.stop),
            "seed": params.seed,
            "repeat_penalty": params.repeat_penalty,
            "grammar": self._grammar(params.grammar),
        }

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        out = []
        for prompt in prompts:
            tokens = self.tokenize(prompt)
            self._check_fits(tokens, params.max_tokens)
            for i in range(params.n):
                cached = self._cached_prefix(tokens)
                started = time.perf_counter()
                result = self.llm.create_completion(tokens, **self._kwargs(params.with_seed(i), tokens))
                choice, usage = result["choices"][0], result["usage"]
                out.append(
                    Completion(
                        text=choice["text"],
                        finish_reason=choice["finish_reason"] or "stop",
                        prompt_tokens=usage["prompt_tokens"],
                        completion_tokens=usage["completion_tokens"],
                        cached_prompt_tokens=cached,
                        seconds=time.perf_counter() - started,
                    )
                )
        return out

    def stream(self, prompt: str, params: SamplingParams) -> Generator[str, None, Completion]:
        tokens = self.tokenize(prompt)
        self._check_fits(tokens, params.max_tokens)
        cached = self._cached_prefix(tokens)
        started = time.perf_counter()
        parts: list[str] = []
        finish_reason = "stop"
        for chunk in self.llm.create_completion(tokens, stream=True, **self._kwargs(params, tokens)):
            choice = chunk["choices"][0]
            if choice["text"]:
                parts.append(choice["text"])
                yield choice["text"]
            finish_reason = choice.get("finish_reason") or finish_reason
        text = "".join(parts)
        return Completion(
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=len(tokens),
            completion_tokens=len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)),
            cached_prompt_tokens=cached,
            seconds=time.perf_counter() - started,
        )

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()
