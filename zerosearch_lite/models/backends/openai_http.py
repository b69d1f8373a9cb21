"""OpenAI-compatible HTTP backend: a llama.cpp or vLLM server behind `POST {base_url}/completions`.

A `generate` call sends one request per prompt, up to `concurrency` at a time, so a server with continuous
batching (vLLM, llama.cpp with several slots) or replicas behind a load balancer serve them in parallel.
Connection failures and overload answers (429, 502-504) are retried with exponential backoff; every other
failure, and the last retry's, becomes a one-line `ZslError` naming the URL and the cause. A slow server
fails after `timeout` seconds a request; nothing waits without a bound. Prompts are text (rendered here
with a given chat template, ChatML by default) or token ids; vLLM's sampled token ids come back in
`Completion.token_ids`. vLLM's runtime LoRA endpoints switch the adapter requests run under. It must not
know what the prompts are for.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel, Field, ValidationError

from ...errors import ZslError, first_problem
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

ONE_CHOICE_ERROR = "only one completion choice"  # llama.cpp server's refusal of `n` > 1
MODEL_PROBE_TIMEOUT = 10.0  # listing models is optional; a silent host must not stall construction for long
# Overload and gateway answers that a later attempt may not get. 500 is not among them: llama.cpp answers
# 500 to requests it refuses (`n` > 1, a bad grammar) and vLLM to errors that repeat for the same request.
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
# Failures before the server took the request, or a dropped connection: worth another attempt. A read
# timeout is not: the server is slow, and asking again only doubles the wait.
RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                httpx.WriteError)
MAX_RETRY_AFTER = 30.0  # a server's Retry-After beyond this is not waited for
ADDED_PROMPT_TOKENS = 8  # tokens a server may add to a text prompt (BOS and the like)

T = TypeVar("T")
R = TypeVar("R")


class ClientSettings(BaseModel):
    """How requests are sent; each field becomes a CLI option's help."""

    timeout: float = Field(120.0, gt=0, le=3600, description="Seconds one request may take before it fails.")
    concurrency: int = Field(
        8, ge=1, le=256, description="Requests in flight at once; match the server's parallel slots or batch."
    )
    retries: int = Field(
        2, ge=0, le=10, description="Extra attempts after a connection failure or a 429/502/503/504 answer."
    )
    retry_backoff: float = Field(
        0.5, ge=0, le=30, description="Seconds before the first retry; doubled for each later one (with jitter)."
    )
    token_ids: bool = Field(
        True, description="Ask for the sampled token ids (vLLM's `return_token_ids`); off for servers that "
        "reject fields they do not know.",
    )


class _Logprobs(BaseModel):
    token_logprobs: list[float | None] = []


class _Choice(BaseModel):
    text: str = ""
    index: int = 0
    finish_reason: str | None = None
    stop_reason: int | str | None = None  # vLLM: the stop string, the stop token id, or None for EOS
    token_ids: list[int] | None = None  # vLLM with `return_token_ids`
    logprobs: _Logprobs | None = None


class _Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _CompletionResponse(BaseModel):
    choices: list[_Choice]
    usage: _Usage | None = None


class _StreamEvent(BaseModel):
    choices: list[_Choice] = []
    usage: _Usage | None = None


class _ModelEntry(BaseModel):
    id: str
    max_model_len: int | None = None  # vLLM reports the served context window here


class _ModelList(BaseModel):
    data: list[_ModelEntry]


@dataclass
class _Answer:
    """One request's choices (in index order) and usage."""

    choices: list[_Choice]
    usage: _Usage | None


def _normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ZslError(f"not an http(s) server URL: {base_url}")
    # Servers mount the OpenAI routes under /v1; a bare host:port means that prefix.
    return url + "/v1" if not parsed.path else url


def _server_message(body: bytes) -> str:
    """The error text in a server's body (OpenAI, vLLM and llama.cpp shapes), shortened to fit a line."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        message = error.get("message") if isinstance(error, dict) else error
        text = str(message if message is not None else text)
    text = " ".join(text.split())
    return text[:200] + ("…" if len(text) > 200 else "")


def sampled_ids(token_ids: Sequence[int] | None, finish_reason: str | None, stop_reason: Any,
                stop_reason_known: bool = True) -> list[int] | None:
    """vLLM's token ids without the end token: a sequence that stopped on EOS or a stop token id
    (`stop_reason` None or an int) keeps that token in its ids, which `Completion.token_ids` excludes; one
    that stopped on a stop string (`stop_reason` a str) keeps the string's tokens, as the contract wants."""
    if token_ids is None:
        return None
    ids = list(token_ids)
    if ids and finish_reason == "stop" and stop_reason_known and not isinstance(stop_reason, str):
        ids.pop()
    return ids


def _token_logprobs(choice: _Choice, ids: list[int] | None) -> list[float] | None:
    """The sampled tokens' log-probs, aligned with `ids` (the end token's dropped with it)."""
    values = choice.logprobs.token_logprobs if choice.logprobs else []
    if ids is None or len(values) < len(ids):
        return None
    return [float(v) if v is not None else float("nan") for v in values[: len(ids)]]


def run_bounded(work: Callable[[T], R], items: Sequence[T], limit: int) -> list[R]:
    """`work` on every item, at most `limit` at once, results in item order. The first failure cancels the
    items not started yet and is raised once the running ones end (each is bounded by its own timeout)."""
    if len(items) <= 1 or limit <= 1:
        return [work(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=min(limit, len(items)), thread_name_prefix="zsl-http")
    try:
        futures: list[Future[R]] = [pool.submit(work, item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and f.exception() is not None), None)
        if failed is not None:
            raise failed.exception()  # type: ignore[misc]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # queued items never start; running ones end


class OpenAIBackend(GenerationBackend):
    batches_prompts = True  # a generate call's prompts go out concurrently

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        chat_template: str | None = None,
        send_grammar: bool = False,
        **client_settings: Any,
    ):
        self.base_url = _normalize_base_url(base_url)
        try:
            self.settings = ClientSettings(**client_settings)
        except ValidationError as exc:
            raise ZslError(f"bad option for the OpenAI-compatible backend: {first_problem(exc)}") from None
        self.timeout = self.settings.timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # The executor bounds concurrency; the pool must not add its own wait (it would surface as a
        # timeout of a request that never started).
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=self.settings.concurrency)
        self.client = httpx.Client(timeout=self.timeout, headers=headers, limits=limits)
        self.chat_template = chat_template or CHATML_TEMPLATE
        self.supports_grammar = send_grammar
        self._one_choice_per_request = False  # learnt on the first `n` > 1 request
        self._lock = threading.Lock()
        self.reported_context: int | None = None  # the server's context window, when it says (vLLM)
        self.base_model = model or self._first_model()
        self.adapter: str | None = None  # the runtime LoRA adapter requests run under (vLLM)
        self._loaded_adapters: list[str] = []
        self._use(None)

    def send_grammars(self) -> None:
        """Send each request's grammar from now on (llama.cpp's server and vLLM apply it; other servers may
        refuse the fields, which is why it is off until a caller decodes under a grammar)."""
        self.supports_grammar = True

    def _first_model(self) -> str:
        """The first model the server lists; "default" when it lists none or cannot be asked."""
        try:
            probe_timeout = min(self.timeout, MODEL_PROBE_TIMEOUT)
            response = self.client.get(f"{self.base_url}/models", timeout=probe_timeout)
            entry = _ModelList.model_validate_json(response.content).data[0] if response.is_success else None
        except (httpx.HTTPError, ValidationError, IndexError):
            entry = None
        if entry is None:
            return "default"
        if entry.max_model_len:
            self.context_size = self.reported_context = entry.max_model_len
        return entry.id

    def _use(self, adapter: str | None) -> None:
        self.adapter = adapter
        self.model = adapter or self.base_model
        self.model_id = f"{self.model}@{self.base_url}"  # a new adapter is a new model for caches

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return render_chat_template(self.chat_template, messages, add_generation_prompt=add_generation_prompt)

    # --- requests -------------------------------------------------------------------------------------

    def _body(self, prompt: str | list[int], params: SamplingParams, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,  # a token id list is the API's "array of tokens" prompt
            "max_tokens": self._fitted_max_tokens(prompt, params.max_tokens),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": params.n,
            "stream": stream,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.repeat_penalty != 1.0:
            body["repeat_penalty"] = params.repeat_penalty  # llama.cpp's name
            body["repetition_penalty"] = params.repeat_penalty  # vLLM's name
        if self.supports_grammar and params.grammar:
            # Each server reads its own field and ignores the other's: llama.cpp `grammar`, vLLM (0.12 and
            # later) `structured_outputs`.
            body["grammar"] = params.grammar
            body["structured_outputs"] = {"grammar": params.grammar}
        if self.settings.token_ids:
            body["return_token_ids"] = True
        if getattr(params, "logprobs", False):
            body["logprobs"] = 0  # the sampled token's log-prob only
        if stream:
            body["stream_options"] = {"include_usage": True}  # vLLM sends usage only when asked
        return body

    def _fitted_max_tokens(self, prompt: str | list[int], max_tokens: int) -> int:
        """`max_tokens` cut so that prompt and completion fit the server's reported context window: vLLM
        refuses a request that asks for more, where the local backends clamp. A text prompt holds at most
        as many tokens as UTF-8 bytes (a token of a byte-level or byte-fallback vocabulary spans at least
        one), plus what the server adds; only when that bound would cut the request is the prompt counted
        exactly, by the server's `/tokenize` (a byte is about a quarter of a token, so the bound alone would
        cut long transcripts' turns to a few tokens). Left as it is when the server reports no window, or when
        nothing would fit (the server then says what is wrong)."""
        if not self.reported_context:
            return max_tokens
        bound = len(prompt) if isinstance(prompt, list) else len(prompt.encode()) + ADDED_PROMPT_TOKENS
        if bound + max_tokens > self.reported_context and isinstance(prompt, str):
            bound = self._count_prompt_tokens(prompt) or bound
        room = self.reported_context - bound
        return min(max_tokens, room) if room > 0 else max_tokens

    def _count_prompt_tokens(self, prompt: str) -> int | None:
        """The prompt's token count by the server's `/tokenize` (vLLM reads `prompt`, llama.cpp `content`;
        both at the server's root), with what the server adds at a sequence start; None where it has none."""
        root = self.base_url.removesuffix("/v1")
        body = {"model": self.model, "prompt": prompt, "content": prompt, "add_special": True}
        try:
            response = self.client.post(f"{root}/tokenize", json=body, timeout=min(self.timeout, MODEL_PROBE_TIMEOUT))
            tokens = response.json().get("tokens") if response.is_success else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return len(tokens) + ADDED_PROMPT_TOKENS if isinstance(tokens, list) else None

    def _network_error(self, url: str, exc: httpx.HTTPError, attempts: int = 1) -> ZslError:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            cause = f"timed out after {self.timeout:g} s"
        elif isinstance(exc, httpx.ConnectTimeout):
            cause = f"connecting timed out after {self.timeout:g} s"
        elif isinstance(exc, httpx.ConnectError):
            detail = str(exc)
            refused = "refused" in detail.lower()
            cause = "connection refused" if refused else f"cannot connect ({detail or 'no reason'})"
        else:
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return ZslError(f"request to {url} failed{tries}: {cause}")

    def _backoff(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None:
            try:
                return min(MAX_RETRY_AFTER, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        delay = self.settings.retry_backoff * 2**attempt
        return delay * random.uniform(0.75, 1.25)  # jitter: replicas retried in step would collide again

    def _post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        """POST with retries on connection failures and overload answers; the last failure is raised."""
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            try:
                response = self.client.post(url, json=body)
            except RETRY_ERRORS as exc:
                if attempt + 1 >= attempts:
                    raise self._network_error(url, exc, attempt + 1) from None
                time.sleep(self._backoff(attempt, None))
                continue
            except httpx.HTTPError as exc:
                raise self._network_error(url, exc) from None
            if response.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                time.sleep(self._backoff(attempt, response))
                continue
            if not response.is_success:
                tries = f" (after {attempt + 1} attempts)" if attempt > 0 else ""
                raise ZslError(f"{url} answered {response.status_code}{tries}: {_server_message(response.content)}")
            return response
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def _complete(self, prompt: str | list[int], params: SamplingParams) -> _Answer:
        url = f"{self.base_url}/completions"
        response = self._post(url, self._body(prompt, params, stream=False))
        try:
            payload = json.loads(response.content)
        except ValueError:
            raise ZslError(f"{url} sent invalid JSON (status {response.status_code})") from None
        try:
            parsed = _CompletionResponse.model_validate(payload)
        except ValidationError as exc:
            raise ZslError(f"{url} sent an unexpected completion body ({first_problem(exc)})") from None
        # Servers number choices (index = sample) but need not send them in order.
        return _Answer(sorted(parsed.choices, key=lambda c: c.index), parsed.usage)

    # --- generate -------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        wire = [p if isinstance(p, str) else [int(t) for t in p] for p in prompts]
        if not wire:
            return []
        started = time.perf_counter()
        samples = self._sample(wire, params)
        seconds = (time.perf_counter() - started) / (len(wire) * params.n)
        completions = []
        for prompt, prompt_samples in zip(wire, samples, strict=True):
            for choice, usage, shared in prompt_samples:
                completions.append(self._completion(prompt, choice, usage, shared, params, seconds))
        return completions

    def _sample(self, prompts: list[str | list[int]], params: SamplingParams
                ) -> list[list[tuple[_Choice, _Usage | None, list[_Choice]]]]:
        """Each prompt's `n` samples as (choice, its request's usage, all choices of that request).

        First one request per prompt asking for all `n`; a server that refuses `n` > 1 (llama.cpp) or
        ignores it gets the missing samples as one request each, with seeds offset as the llama.cpp
        backend seeds its samples. All requests of a round run concurrently."""
        n = params.n
        url = f"{self.base_url}/completions"
        answers: list[_Answer | None] = [None] * len(prompts)
        if n == 1 or not self._one_choice_per_request:
            def ask_all(index: int) -> _Answer | None:
                try:
                    return self._complete(prompts[index], params.for_prompt(index))
                except ZslError as exc:
                    if n == 1 or ONE_CHOICE_ERROR not in str(exc).lower():
                        raise
                    with self._lock:
                        self._one_choice_per_request = True
                    return None

            answers = run_bounded(ask_all, range(len(prompts)), self.settings.concurrency)  # type: ignore[arg-type]
        samples: list[list[tuple[_Choice, _Usage | None, list[_Choice]]]] = []
        missing: list[tuple[int, int]] = []  # (prompt, sample) still to ask for one at a time
        for index, answer in enumerate(answers):
            got = answer.choices if answer is not None else []
            if n > 1 and answer is not None and len(got) == 1:
                with self._lock:
                    self._one_choice_per_request = True  # the server ignored `n`: one choice per request
            elif answer is not None and len(got) != n:
                raise ZslError(f"{url} returned {len(got)} choices, expected {n}")
            samples.append([(c, answer.usage if answer else None, got) for c in got])
            missing += [(index, s) for s in range(len(got), n)]
        if missing:
            single = replace(params, n=1)

            def ask_one(job: tuple[int, int]) -> _Answer:
                index, sample = job
                answer = self._complete(prompts[index], single.for_prompt(index).with_seed(sample))
                if len(answer.choices) != 1:
                    raise ZslError(f"{url} returned {len(answer.choices)} choices, expected 1")
                return answer

            for (index, _), answer in zip(missing, run_bounded(ask_one, missing, self.settings.concurrency),
                                          strict=True):
                samples[index].append((answer.choices[0], answer.usage, answer.choices))
        return samples

    def _completion(self, prompt: str | list[int], choice: _Choice, usage: _Usage | None,
                    shared: list[_Choice], params: SamplingParams, seconds: float) -> Completion:
        text, stopped = cut_at_stop(choice.text, params.stop)  # a no-op for servers that already cut
        finish = "stop" if stopped else (choice.finish_reason or "stop")
        ids = sampled_ids(choice.token_ids, choice.finish_reason, choice.stop_reason,
                          "stop_reason" in choice.model_fields_set)
        if usage and usage.prompt_tokens:
            prompt_tokens = usage.prompt_tokens  # one prompt per request: usage counts it once, whatever `n`
        else:
            prompt_tokens = len(prompt) if isinstance(prompt, list) else self.count_tokens(prompt)
        if ids is not None:
            completion_tokens = len(ids)
        else:
            completion_tokens = self._completion_tokens(choice.text, [c.text for c in shared], usage)
        completion = Completion(text, finish, prompt_tokens, completion_tokens, 0, seconds, token_ids=ids)
        if getattr(params, "logprobs", False):
            completion.token_logprobs = _token_logprobs(choice, ids)  # type: ignore[attr-defined]
        return completion

    def _completion_tokens(self, text: str, texts: list[str], usage: _Usage | None) -> int:
        """Usage gives one total per request: share it out by text length (exact for a single choice)."""
        if not usage or not usage.completion_tokens:
            return self.count_tokens(text) if text else 0
        total_chars = sum(len(t) for t in texts)
        if total_chars == 0:
            return usage.completion_tokens // len(texts)
        return round(usage.completion_tokens * len(text) / total_chars)

    # --- runtime LoRA (vLLM) --------------------------------------------------------------------------

    def load_adapter(self, path: str | Path, name: str | None = None) -> str:
        """Load a peft adapter folder into the server under `name` (vLLM's `/v1/load_lora_adapter`; the
        server needs `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, and must see `path` on
        its own file system). Returns the name requests use to run under it."""
        folder = Path(path)
        if not (folder / "adapter_config.json").is_file():
            raise ZslError(f"not a peft adapter folder (no adapter_config.json): {folder}")
        name = name or f"zsl-{folder.name}-{secrets.token_hex(4)}"
        self._lora_call("load_lora_adapter", {"lora_name": name, "lora_path": str(folder.resolve())})
        with self._lock:
            self._loaded_adapters.append(name)
        return name

    def unload_adapter(self, name: str) -> None:
        self._lora_call("unload_lora_adapter", {"lora_name": name})
        with self._lock:
            if name in self._loaded_adapters:
                self._loaded_adapters.remove(name)
        if self.adapter == name:
            self._use(None)

    def use_adapter(self, name: str | None) -> None:
        """Send later requests under a loaded adapter's name (None: the base model)."""
        self._use(name)

    def set_adapter(self, path: str | Path | None) -> str | None:
        """Hand over a new adapter (a GRPO step's): load it under a fresh name, run later requests under it,
        then unload the one this backend loaded before. None goes back to the base model."""
        previous = self.adapter if self.adapter in self._loaded_adapters else None
        name = self.load_adapter(path) if path is not None else None
        self._use(name)
        if previous is not None:
            self.unload_adapter(previous)
        return name

    def _lora_call(self, route: str, body: dict[str, Any]) -> None:
        url = f"{self.base_url}/{route}"
        try:
            self._post(url, body)
        except ZslError as exc:
            if " answered 404" in str(exc) or " answered 405" in str(exc):
                raise ZslError(
                    f"{url} does not exist: runtime LoRA needs a vLLM server started with --enable-lora and "
                    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
                ) from None
            raise

    # --- streaming ------------------------------------------------------------------------------------

    def stream(self, prompt: Prompt, params: SamplingParams) -> Generator[str, None, Completion]:
        url = f"{self.base_url}/completions"
        wire = prompt if isinstance(prompt, str) else [int(t) for t in prompt]
        started = time.perf_counter()
        parts: list[str] = []
        ids: list[int] | None = None
        finish, stop_reason, stop_reason_known = "stop", None, False
        usage: _Usage | None = None
        ended: list[str] = []  # "done" once the server says the stream is complete
        try:
            body = self._body(wire, replace(params, n=1), stream=True)
            with self.client.stream("POST", url, json=body) as response:
                if not response.is_success:
                    message = _server_message(response.read())
                    raise ZslError(f"{url} answered {response.status_code}: {message}")
                for event in self._events(url, response.iter_lines(), ended):
                    usage = event.usage or usage
                    if not event.choices:
                        continue
                    choice = event.choices[0]
                    if choice.token_ids is not None:
                        ids = (ids or []) + choice.token_ids
                    if choice.text:
                        parts.append(choice.text)
                        yield choice.text
                    finish = choice.finish_reason or finish
                    if choice.finish_reason:
                        ended.append("finish")
                    if "stop_reason" in choice.model_fields_set and choice.finish_reason:
                        stop_reason, stop_reason_known = choice.stop_reason, True
        except httpx.HTTPError as exc:
            raise self._network_error(url, exc) from None
        if not ended:  # cut off mid-answer: a complete-looking turn must not be taken from a broken stream
            raise ZslError(f"{url} closed its event stream before finishing the completion")
        text = "".join(parts)
        ids = sampled_ids(ids, finish, stop_reason, stop_reason_known)
        if usage and usage.prompt_tokens:
            prompt_tokens = usage.prompt_tokens
        else:
            prompt_tokens = len(wire) if isinstance(wire, list) else self.count_tokens(wire)
        completion_tokens = len(ids) if ids is not None else self._completion_tokens(text, [text], usage)
        return Completion(text, finish, prompt_tokens, completion_tokens, 0, time.perf_counter() - started,
                          token_ids=ids)

    @staticmethod
    def _events(url: str, lines: Iterator[str], ended: list[str]) -> Iterator[_StreamEvent]:
        """Server-sent events: `data: {json}` lines up to `data: [DONE]` (noted in `ended`); other lines are
        skipped."""
        for line in lines:
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                ended.append("done")
                return
            try:
                payload = json.loads(data)
            except ValueError:
                raise ZslError(f"{url} sent invalid JSON in its event stream") from None
            if isinstance(payload, dict) and "error" in payload:
                # vLLM reports failures after the 200 status line as an event.
                raise ZslError(f"{url} failed while streaming: {_server_message(data.encode())}")
            try:
                yield _StreamEvent.model_validate(payload)
            except ValidationError:
                raise ZslError(f"{url} sent an unexpected stream event: {data[:120]}") from None

    def close(self) -> None:
        self.client.close()
