"""llama.cpp backend (llama-cpp-python): the default for inference, a thin layer over one `Llama` object.

Prompts are tokenized here (or arrive as token ids) and decoded by a short loop over the library's
`Llama.eval` and llama.cpp's sampler chain (`llamacpp_sampler`), which gives what `create_completion`
cannot: the sampled token ids, prompt-evaluation and decode times apart, and grammars checked after
sampling rather than over the whole vocabulary. The KV state of the longest common token prefix with the
previous call is kept (`cached_prompt_tokens`): callers get that reuse by building each turn's prompt as
an extension of the previous one and by giving each role (policy, simulator) its own backend object.
"""

from __future__ import annotations

import ctypes
import os
import random
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
    Prompt,
    SamplingParams,
    cut_at_stop,
    render_chat_template,
    stop_prefix_overlap,
)
from .grammar import TokenMatcher, VocabularyGrammars, llama_grammars
from .llamacpp_sampler import ChainSettings, TokenSampler


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
    accepts_token_ids = True

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
            import llama_cpp
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
        self._lc = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._piece_buffer = ctypes.create_string_buffer(256)
        metadata = self.llm.metadata
        self.chat_template = metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self._special = {
            "bos_token": self._token_text(metadata.get("tokenizer.ggml.bos_token_id")),
            "eos_token": self._token_text(metadata.get("tokenizer.ggml.eos_token_id")),
        }
        self._grammars: VocabularyGrammars | None = None  # built on the first grammar (~0.3 s)
        self._seeds = random.Random()  # a seed per call when the caller gives none

    def _token_text(self, token_id: str | None) -> str:
        if token_id is None:
            return ""
        return self.llm.detokenize([int(token_id)], special=True).decode("utf-8", errors="ignore")

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return render_chat_template(
            self.chat_template, messages, add_generation_prompt=add_generation_prompt, **self._special
        )

    def tokenize(self, text: str, *, starts_sequence: bool = True) -> list[int]:
        """Token ids of `text`; BOS (where the model uses one) only at a sequence start whose text does not
        already begin with it, the rule `models.hf.token_ids` applies for transformers."""
        bos = self._special["bos_token"]
        add_bos = starts_sequence and not (bos and text.startswith(bos))
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _matcher(self, grammar: str | None) -> TokenMatcher | None:
        if not grammar:
            return None
        if self._grammars is None:
            self._grammars = llama_grammars(self._vocab, self.llm.n_vocab())
        return self._grammars.matcher(grammar)

    def _keep_prefix(self, tokens: list[int]) -> int:
        """Keep the KV state of the longest common prefix with what the context holds, drop the rest, and
        return that prefix's length."""
        from llama_cpp import Llama

        current = self.llm.input_ids[: self.llm.n_tokens].tolist()
        # The last prompt token is always evaluated again: its logits are what the first sample needs.
        kept = min(Llama.longest_token_prefix(current, tokens), max(0, len(tokens) - 1))
        memory = self._lc.llama_get_memory(self.llm.ctx)
        if kept and not self._lc.llama_memory_seq_rm(memory, 0, kept, -1):  # recurrent state: all or nothing
            kept = 0
            self.llm.reset()
        self.llm.n_tokens = kept
        return kept

    def _check_fits(self, tokens: list[int]) -> None:
        if len(tokens) >= self.context_size:
            raise ZslError(f"prompt of {len(tokens)} tokens does not fit the context window of "
                           f"{self.context_size} tokens")

    def _piece(self, token: int) -> bytes:
        """The bytes of one token as text (control tokens print as nothing, as in `create_completion`)."""
        buffer = self._piece_buffer
        size = self._lc.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if size < 0:  # a longer piece than the buffer holds: grow it once
            self._piece_buffer = ctypes.create_string_buffer(-size)
            return self._piece(token)
        return buffer.raw[:size]

    def _completion(self, prompt: Prompt, params: SamplingParams) -> Generator[str, None, Completion]:
        """Decode one completion, yielding text as it becomes final (never part of a stop sequence). Time the
        caller spends between chunks is not the backend's and is left out of the timings."""
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        self._check_fits(tokens)
        started = time.perf_counter()
        matcher = self._matcher(params.grammar)  # the first grammar of a backend builds its token tables
        cached = self._keep_prefix(tokens)
        self.llm.eval(tokens[cached:])
        prefilled = time.perf_counter()
        seed = params.seed if params.seed is not None else self._seeds.getrandbits(32)
        settings = ChainSettings(params.temperature, params.top_p, params.repeat_penalty, seed)
        sampler = TokenSampler(self.llm.ctx, self.llm.n_vocab(), settings, matcher)
        limit = min(params.max_tokens, self.context_size - len(tokens))
        ids: list[int] = []
        raw, text, emitted, finish = b"", "", "", "length"
        paused = 0.0
        try:
            while len(ids) < limit:
                token = sampler.sample()
                if self._lc.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                ids.append(token)
                raw += self._piece(token)
                text, stopped = cut_at_stop(raw.decode("utf-8", errors="ignore"), params.stop)
                if stopped or (matcher is not None and matcher.finished):
                    finish = "stop"
                    break
                safe = text[: len(text) - stop_prefix_overlap(text, params.stop)]
                if len(safe) > len(emitted):
                    handed_over = time.perf_counter()
                    yield safe[len(emitted) :]
                    paused += time.perf_counter() - handed_over
                    emitted = safe
                if len(ids) < limit:
                    self.llm.eval([token])
        finally:
            sampler.close()
        ended = time.perf_counter() - paused
        if len(text) > len(emitted):
            yield text[len(emitted) :]
        return Completion(
            text=text,
            finish_reason=finish,
            prompt_tokens=len(tokens),
            completion_tokens=len(ids),
            cached_prompt_tokens=cached,
            seconds=ended - started,
            token_ids=ids,
            prompt_seconds=prefilled - started,
            decode_seconds=ended - prefilled,
        )

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        out = []
        for index, prompt in enumerate(prompts):
            for i in range(params.n):
                steps = self._completion(prompt, params.for_prompt(index).with_seed(i))
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        out.append(done.value)
                        break
        return out

    def stream(self, prompt: Prompt, params: SamplingParams) -> Generator[str, None, Completion]:
        return (yield from self._completion(prompt, params))

    def close(self) -> None:
        self._grammars = None  # its tables point into the model's vocabulary
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()
