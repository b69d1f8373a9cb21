"""transformers backend: a Hugging Face causal LM (model folder or GGUF file), optionally with a peft LoRA
adapter, or objects already in memory (`from_objects`, for rollouts of the policy being trained).

Batched sampling with `n` samples per prompt, stop strings and streaming. It must not know about training
(no optimizer, no loss) and imports torch, transformers and peft only inside its methods.

Streaming runs `generate` in a worker thread. A worker must never outlive its stream: one still inside
torch when the interpreter exits (after Ctrl-C, with the stream left unconsumed) aborts the process
("terminate called without an active exception"). So every worker has a cancel flag that `generate`
checks after each token; closing the stream sets it and joins the worker, and an `atexit` hook does the
same for any stream nobody closed.
"""

from __future__ import annotations

import atexit
import threading
import time
import warnings
import weakref
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import ZslError
from ..hf import first_line, load_causal_lm, load_tokenizer, token_ids
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

_LIVE_WORKERS: weakref.WeakKeyDictionary[threading.Thread, threading.Event] = weakref.WeakKeyDictionary()


@atexit.register
def _stop_live_workers() -> None:
    """Cancel and join stream workers still running at exit (see the module docstring)."""
    for worker, cancel in list(_LIVE_WORKERS.items()):
        cancel.set()
        worker.join(timeout=30)


def _cancel_criterion(cancel: threading.Event) -> Any:
    """A stopping criterion that ends generation of every row once `cancel` is set."""
    import torch
    from transformers import StoppingCriteria

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return Cancelled()


class TransformersBackend(GenerationBackend):
    supports_grammar = True  # GBNF through llguidance (`grammar.GrammarLogitsProcessor`), as on llama.cpp
    accepts_token_ids = True
    batches_prompts = True

    def __init__(
        self,
        model: ResolvedModel,
        *,
        adapter: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        load_in_4bit: bool = False,
    ):
        if adapter and not Path(adapter, "adapter_config.json").is_file():
            raise ZslError(f"not a peft adapter folder (no adapter_config.json): {adapter}")
        tokenizer = load_tokenizer(model)
        loaded = load_causal_lm(model, device=device, dtype=dtype, load_in_4bit=load_in_4bit)
        if adapter:
            from peft import PeftModel

            try:
                with warnings.catch_warnings():  # peft reads a renamed transformers attribute: not the user's concern
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                    loaded = PeftModel.from_pretrained(loaded, adapter)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ZslError(f"cannot load LoRA adapter {adapter}: {first_line(exc)}") from None
            if not load_in_4bit:  # inference only: fold the LoRA into the weights, no per-layer extra matmuls
                loaded = loaded.merge_and_unload()
        loaded.eval()
        model_id = model.model_id + (f"+{Path(adapter).name}" if adapter else "")
        self._setup(loaded, tokenizer, model_id)

    @classmethod
    def from_objects(cls, model: Any, tokenizer: Any, model_id: str = "in-memory") -> TransformersBackend:
        """Wrap an already-loaded model and tokenizer (the policy being trained) without copying either."""
        backend = cls.__new__(cls)
        backend._setup(model, tokenizer, model_id)
        return backend

    def _setup(self, model: Any, tokenizer: Any, model_id: str) -> None:
        self.model, self.tokenizer, self.model_id = model, tokenizer, model_id
        self.context_size = int(getattr(model.config, "max_position_embeddings", None) or 4096)
        # Padding only fills the left of shorter prompts (masked out); a tokenizer without a pad token is
        # not modified, because a trainer may share it.
        pad_id = tokenizer.pad_token_id
        self._pad_id = pad_id if pad_id is not None else tokenizer.eos_token_id
        self._end_ids = self._eos_ids() | ({self._pad_id} if self._pad_id is not None else set())

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        generation_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(generation_eos if isinstance(generation_eos, list) else [generation_eos])
        return {i for i in ids if i is not None}

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            tokenizer = self.tokenizer
            special = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}
            return render_chat_template(
                CHATML_TEMPLATE, messages, add_generation_prompt=add_generation_prompt, **special
            )
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def tokenize(self, text: str, *, starts_sequence: bool = True) -> list[int]:
        return token_ids(self.tokenizer, text, starts_sequence=starts_sequence)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _device(self) -> Any:
        return next(self.model.parameters()).device

    def _batch(self, prompts: Sequence[Prompt]) -> tuple[dict[str, Any], list[int]]:
        """Left-padded ids and attention mask (every row's new tokens start at one column), prompt lengths."""
        import torch

        encoded = [self.tokenize(p) if isinstance(p, str) else list(p) for p in prompts]
        width = max(len(ids) for ids in encoded)
        if width >= self.context_size:
            raise ZslError(
                f"prompt of {width} tokens does not fit the context window of {self.context_size} tokens"
            )
        pad = self._pad_id if self._pad_id is not None else 0
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], dtype=torch.long)
        device = self._device()
        batch = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
        return batch, [len(ids) for ids in encoded]

    def _generate_kwargs(self, params: SamplingParams, width: int) -> dict[str, Any]:
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(1, min(params.max_tokens, self.context_size - width)),
            "do_sample": sample,
            "pad_token_id": self._pad_id,
            # A training model may have use_cache off (gradient checkpointing); sampling without it is slow.
            "use_cache": True,
        }
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:
            # The model's generation config may carry sampling values that greedy decoding warns about.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.repeat_penalty != 1.0:
            kwargs["repetition_penalty"] = params.repeat_penalty
        if params.grammar:
            from transformers import LogitsProcessorList

            from .grammar import GrammarLogitsProcessor

            kwargs["logits_processor"] = LogitsProcessorList(
                [GrammarLogitsProcessor(params.grammar, self.tokenizer, width,
                                        getattr(self.model.config, "vocab_size", None))]
            )
        stops = tuple(s for s in params.stop if s)
        if stops:
            kwargs["stopping_criteria"] = self._stop_criteria(stops)
        return kwargs

    def _stop_criteria(self, stops: tuple[str, ...]) -> Any:
        """transformers' stop-string matcher, built once per stop set (building it scans the vocabulary)."""
        from transformers import StoppingCriteriaList, StopStringCriteria

        cache = self.__dict__.setdefault("_stop_cache", {})
        if stops not in cache:
            cache[stops] = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(stops))])
        return cache[stops]

    def _finish(self, new_tokens: list[int], params: SamplingParams, limit: int) -> tuple[str, str, list[int]]:
        """Text, finish reason and sampled ids of one row of generated ids (trailing EOS/padding removed;
        the ids keep the tokens of a stop string, which the text drops)."""
        length = next((i for i, t in enumerate(new_tokens) if t in self._end_ids), len(new_tokens))
        ended_by_eos = length < len(new_tokens) and new_tokens[length] in self._eos_ids()
        tokens = new_tokens[:length]
        text, stopped = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), params.stop)
        if not stopped and params.stop:
            # A stop string that is a special token is invisible in the text above but still ended the row.
            stopped = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=False), params.stop)[1]
        finish = "length" if length >= limit and not (stopped or ended_by_eos) else "stop"
        return text, finish, tokens

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        import torch

        if not prompts:
            return []
        batch, prompt_lengths = self._batch(prompts)
        width = batch["input_ids"].shape[1]
        kwargs = self._generate_kwargs(params, width)
        clock = _PrefillClock()
        kwargs["logits_processor"] = _with_clock(clock, kwargs.get("logits_processor"))
        # Greedy samples of one prompt are identical (and transformers refuses n > 1 without sampling):
        # decode each prompt once and repeat it.
        copies = params.n if kwargs["do_sample"] else 1
        clock.start()
        with _seeded(params.for_prompt(0).seed), _sampling_mode(self.model), torch.no_grad():
            output = self.model.generate(**batch, num_return_sequences=copies, **kwargs)
        # One batched call: each row is charged an equal share, so summing rows gives the call's time.
        prefill, decode = (t / len(output) for t in clock.split())
        completions = []
        # generate() repeats each prompt `copies` times in place, so rows are already prompt-major.
        for row, sequence in enumerate(output):
            text, finish, ids = self._finish(sequence[width:].tolist(), params, kwargs["max_new_tokens"])
            sample = Completion(text, finish, prompt_lengths[row // copies], len(ids), 0, prefill + decode,
                                token_ids=ids, prompt_seconds=prefill, decode_seconds=decode)
            completions.extend(replace(sample, token_ids=list(ids)) for _ in range(params.n // copies))
        return completions

    def stream(self, prompt: str, params: SamplingParams) -> Generator[str, None, Completion]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        batch, prompt_lengths = self._batch([prompt])
        width = batch["input_ids"].shape[1]
        kwargs = self._generate_kwargs(params, width)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        clock = _PrefillClock()
        kwargs["logits_processor"] = _with_clock(clock, kwargs.get("logits_processor"))
        cancel = threading.Event()
        kwargs["stopping_criteria"] = StoppingCriteriaList([*kwargs.get("stopping_criteria", []),
                                                            _cancel_criterion(cancel)])
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                with torch.no_grad():
                    result["output"] = self.model.generate(**batch, streamer=streamer, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
                result["error"] = exc
                streamer.end()  # unblocks the consuming loop, which would otherwise wait forever

        clock.start()
        raw, emitted = "", ""
        with _seeded(params.seed), _sampling_mode(self.model):
            worker = threading.Thread(target=run, name="zsl-transformers-stream", daemon=True)
            _LIVE_WORKERS[worker] = cancel
            worker.start()
            try:
                for chunk in streamer:
                    raw += chunk
                    visible, stopped = cut_at_stop(raw, params.stop)
                    # Hold back a tail that may be the start of a stop string: it must not reach the caller
                    # if the next chunk completes the stop string.
                    held = 0 if stopped else stop_prefix_overlap(visible, params.stop)
                    safe = visible[: len(visible) - held]
                    if len(safe) > len(emitted):
                        yield safe[len(emitted):]
                        emitted = safe
            finally:
                # Finished, or the caller stopped early (close(), an exception): stop generating, then wait.
                cancel.set()
                worker.join()
                _LIVE_WORKERS.pop(worker, None)
        if "error" in result:
            raise result["error"]
        text = cut_at_stop(raw, params.stop)[0]
        if len(text) > len(emitted):
            yield text[len(emitted):]
        new_tokens = result["output"][0][width:].tolist()
        _, finish, ids = self._finish(new_tokens, params, kwargs["max_new_tokens"])
        prefill, decode = clock.split()
        return Completion(text, finish, prompt_lengths[0], len(ids), 0, prefill + decode, token_ids=ids,
                          prompt_seconds=prefill, decode_seconds=decode)

    def close(self) -> None:
        model, self.model = getattr(self, "model", None), None
        if model is not None:
            del model
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


class _PrefillClock:
    """A pass-through logits processor that notes when the first logits arrive: before that moment the
    model read the prompt (prefill), after it the model sampled (decode)."""

    def __init__(self) -> None:
        self.started = self.first_logits = 0.0

    def start(self) -> None:
        self.started, self.first_logits = time.perf_counter(), 0.0

    def __call__(self, input_ids, scores):
        if not self.first_logits:
            self.first_logits = time.perf_counter()
        return scores

    def split(self) -> tuple[float, float]:
        """(prefill seconds, decode seconds) of the call that just ended."""
        end = time.perf_counter()
        first = self.first_logits or end
        return first - self.started, end - first


def _with_clock(clock: _PrefillClock, processors: Any) -> Any:
    from transformers import LogitsProcessorList

    return LogitsProcessorList([clock, *(processors or [])])


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Sample from `seed` without touching the caller's random streams: torch's global generators are saved
    and restored around the call (a seeded simulator call inside a GRPO step would otherwise reset the
    policy's sampling stream to the same point in every step). One generator serves a whole batch, so a
    batch is seeded once; its rows draw different numbers from it."""
    import torch

    if seed is None:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def _sampling_mode(model: Any) -> Iterator[None]:
    """Sample with dropout off (a trainer's model is in train mode), then restore the caller's mode."""
    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()
