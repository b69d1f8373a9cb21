"""Constrained decoding for backends without GBNF (transformers): a `TextConstraint` says, for the text
generated so far, which continuations are allowed, and `ConstraintLogitsProcessor` masks the vocabulary
to tokens that keep the text inside the constraint.

The constraint language is small on purpose: runs of *free* text (any characters except a few excluded
ones, such as '<' and newline) separated by *literals* (tags). That covers the agent protocol and the
simulator's document lines; llama.cpp gets the same structure as a GBNF grammar. The vocabulary is
scanned once per (tokenizer, literal suffix) and cached, so each decoding step costs one mask lookup and
one decode of the row's new tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Options:
    """What may follow the text: free text (if `free`), or the start of one of `literals`; `done` ends it."""

    free: bool = False
    literals: tuple[str, ...] = ()
    done: bool = False
    dead: bool = False  # the text already left the language (should not happen under the processor)


class TextConstraint(Protocol):
    excluded: str  # characters free text may not contain

    def options(self, text: str) -> Options: ...


class _Vocab:
    """Token strings of a tokenizer and cached masks over them."""

    def __init__(self, tokenizer: Any, size: int, excluded: str):
        import torch

        self.size = size
        known = min(size, len(tokenizer))
        self.strings = tokenizer.batch_decode([[i] for i in range(known)]) + [""] * (size - known)
        special = set(tokenizer.all_special_ids)
        self.free = torch.tensor(
            [bool(s) and i not in special and not any(c in s for c in excluded) for i, s in enumerate(self.strings)]
        )
        self._prefix: dict[str, Any] = {}
        self._masks: dict[Options, Any] = {}
        self.end_ids = [i for i in (tokenizer.eos_token_id,) if i is not None]

    def mask(self, options: Options):
        """Allowed tokens for `options` (cached: a turn visits few distinct option sets)."""
        import torch

        cached = self._masks.get(options)
        if cached is not None:
            return cached
        mask = torch.zeros(self.size, dtype=torch.bool)
        if options.done or options.dead:
            mask[self.end_ids] = True
        else:
            if options.free:
                mask |= self.free
            for literal in options.literals:
                mask |= self.prefixes_of(literal)
        self._masks[options] = mask
        return mask

    def prefixes_of(self, literal: str):
        """Tokens whose text is a non-empty prefix of `literal`."""
        import torch

        mask = self._prefix.get(literal)
        if mask is None:
            mask = torch.tensor([bool(s) and literal.startswith(s) for s in self.strings])
            self._prefix[literal] = mask
        return mask


_VOCABS: dict[tuple[int, int, str], _Vocab] = {}


class ConstraintLogitsProcessor:
    """A transformers `LogitsProcessor`: rows whose text is in `constraint` sample only allowed tokens."""

    def __init__(self, constraint: TextConstraint, tokenizer: Any, prompt_width: int):
        self.constraint = constraint
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.vocab: _Vocab | None = None

    def _vocab(self, size: int) -> _Vocab:
        key = (id(self.tokenizer), size, self.constraint.excluded)
        if key not in _VOCABS:
            _VOCABS[key] = _Vocab(self.tokenizer, size, self.constraint.excluded)
        return _VOCABS[key]

    def allowed(self, text: str):
        assert self.vocab is not None
        return self.vocab.mask(self.constraint.options(text))

    def __call__(self, input_ids, scores):
        if self.vocab is None:
            self.vocab = self._vocab(scores.shape[1])
        for row in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[row, self.prompt_width :], skip_special_tokens=True)
            mask = self.allowed(text).to(scores.device)
            scores[row] = scores[row].masked_fill(~mask, float("-inf"))
        return scores
