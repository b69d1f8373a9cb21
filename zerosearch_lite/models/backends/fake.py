"""A scripted backend for tests and demos (after llm's `MockModel`): returns queued texts, records prompts.

Responses are consumed in order; a callable response computes the text from the prompt. Stop sequences
are applied as a real backend would, so the agent and simulator see realistic completions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

from .base import (
    CHATML_TEMPLATE,
    Completion,
    GenerationBackend,
    Message,
    SamplingParams,
    cut_at_stop,
    render_chat_template,
)

Response = str | Callable[[str], str]


class FakeBackend(GenerationBackend):
    supports_grammar = True  # accepted and recorded, not enforced

    def __init__(self, responses: Iterable[Response] = (), *, default: Response = "", model_id: str = "fake"):
        self.queue: deque[Response] = deque(responses)
        self.default = default
        self.model_id = model_id
        self.history: list[tuple[str, SamplingParams]] = []

    def enqueue(self, responses: Iterable[Response]) -> None:
        self.queue.extend(responses)

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return render_chat_template(CHATML_TEMPLATE, messages, add_generation_prompt=add_generation_prompt)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        out = []
        for index, prompt in enumerate(prompts):
            for _ in range(params.n):
                self.history.append((prompt, params.for_prompt(index)))  # each prompt's own seed
                response = self.queue.popleft() if self.queue else self.default
                raw = response(prompt) if callable(response) else response
                words = raw.split()
                truncated = len(words) > params.max_tokens
                if truncated:
                    raw = " ".join(words[: params.max_tokens])
                text, stopped = cut_at_stop(raw, params.stop)
                out.append(
                    Completion(
                        text=text,
                        finish_reason="length" if truncated and not stopped else "stop",
                        prompt_tokens=self.count_tokens(prompt),
                        completion_tokens=self.count_tokens(text),
                    )
                )
        return out
