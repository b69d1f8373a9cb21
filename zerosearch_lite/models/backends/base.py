"""The `GenerationBackend` interface every backend implements, and the sampling/completion types.

The agent and the simulator pass raw prompt text rendered with the model's own chat template
(`render_chat`), so every backend sees the same tokens. Backends stay thin over their library.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace

Message = dict[str, str]
# A prompt is text rendered with the model's chat template, or the token ids of such text (token-in: a
# trainer's rollouts pass the ids it will train on, so nothing is re-tokenized between turns).
Prompt = str | Sequence[int]

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1
    grammar: str | None = None  # GBNF text; applied by backends whose `supports_grammar` is true
    repeat_penalty: float = 1.0  # >1 discourages repeating recent tokens (llama.cpp, transformers)
    logprobs: bool = False  # also return each sampled token's log-probability, where the backend can
    # One seed per prompt of a `generate` call (overrides `seed`): rows of one batch that are samples of the
    # same prompt (a question's G rollouts, its N evaluation samples) must not share a seed, or a backend
    # that seeds each request (vLLM, a server, llama.cpp) returns N copies of one sample.
    seeds: tuple[int, ...] | None = None

    def with_seed(self, offset: int) -> SamplingParams:
        return replace(self, seed=None if self.seed is None else self.seed + offset)

    def for_prompt(self, index: int) -> SamplingParams:
        """The settings of prompt `index` of the call: its own seed where `seeds` gives one."""
        return self if self.seeds is None else replace(self, seed=self.seeds[index], seeds=None)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (a stop sequence, EOS or the grammar ended it) or "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens whose KV state was reused rather than evaluated
    seconds: float = 0.0
    # Token-in/token-out: the sampled ids behind `text`, including the tokens of the stop sequence that
    # ended it (the text has that sequence cut off) and excluding EOS/padding; None where unknown.
    token_ids: list[int] | None = None
    token_logprobs: list[float] | None = None  # with `SamplingParams.logprobs`, one per id in `token_ids`
    prompt_seconds: float | None = None  # prompt evaluation (prefill), where the backend can tell it apart
    decode_seconds: float | None = None  # sampling the new tokens, likewise


def render_chat_template(
    template: str, messages: Sequence[Message], *, add_generation_prompt: bool = True, **special: str
) -> str:
    """Render a Hugging Face style Jinja chat template in a sandbox (as transformers does)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_template_error
    return env.from_string(template).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt, **special
    )


def _raise_template_error(message: str) -> None:
    from ...errors import ZslError

    raise ZslError(f"chat template error: {message}")


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut text at the earliest stop sequence; the stop sequence itself is removed (as llama.cpp does)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def stop_prefix_overlap(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper start of some stop string."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best


class GenerationBackend(abc.ABC):
    """Turns prompt text into completions. Subclasses implement `generate` and `render_chat`."""

    model_id: str = "unknown"
    supports_grammar: bool = False
    context_size: int = 4096
    # Prompts may be token ids and completions carry the sampled ids (token-in/token-out).
    accepts_token_ids: bool = False
    # One `generate` call over many prompts is faster than one call each (batching, concurrent requests);
    # backends without it (llama.cpp) run trajectories one after another and reuse their KV prefix instead.
    batches_prompts: bool = False

    @abc.abstractmethod
    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """Prompt text for a conversation, with the model's own chat template."""

    @abc.abstractmethod
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        """`params.n` completions per prompt, prompt-major: [p0s0, p0s1, ..., p1s0, ...]. Prompt p samples with
        `params.for_prompt(p)`'s seed, sample i of it with that seed + i."""

    def count_tokens(self, text: str) -> int:
        """Token count of a text; backends without a tokenizer estimate it."""
        return max(1, len(text) // 4)

    def tokenize(self, text: str, *, starts_sequence: bool = True) -> list[int] | None:
        """Token ids of `text` (with BOS where the model wants one at a sequence start); None for backends
        without a local tokenizer (HTTP), which then get text prompts."""
        return None

    def stream(self, prompt: str, params: SamplingParams) -> Generator[str, None, Completion]:
        """Yield text chunks as they are generated and return the finished `Completion`."""
        started = time.perf_counter()
        completion = self.generate([prompt], replace(params, n=1))[0]
        if completion.text:
            yield completion.text
        completion.seconds = completion.seconds or time.perf_counter() - started
        return completion

    def close(self) -> None:
        """Free the model's memory; the backend is unusable afterwards."""
