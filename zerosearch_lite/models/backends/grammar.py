"""GBNF grammars enforced token by token with llguidance, the same way for llama.cpp and transformers.

GBNF text is the single definition of a constrained format (the policy protocol, the simulator's `Doc i:`
lines); this module compiles it once, builds the token tables of a vocabulary once, and hands each
generation a `TokenMatcher`. It must not sample tokens (the backends do) nor know what a grammar means.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from typing import Any

import numpy as np

from ...errors import ZslError


@functools.lru_cache(maxsize=64)
def compile_gbnf(text: str) -> str:
    """llguidance's form of a GBNF grammar (independent of any tokenizer); ZslError when it is invalid."""
    import llguidance

    try:
        compiled = llguidance.grammar_from("gbnf", text)
    except ValueError as exc:
        raise ZslError(f"invalid GBNF grammar: {_first_line(exc)}") from None
    error = llguidance.LLMatcher.validate_grammar(compiled)
    if error:
        raise ZslError(f"invalid GBNF grammar: {error.splitlines()[0]}")
    return compiled


class TokenMatcher:
    """One generation's position in a grammar: which tokens may come next; `consume` moves it on."""

    def __init__(self, matcher: Any, vocab_size: int):
        self._matcher = matcher
        self.vocab_size = vocab_size
        self._bits = np.zeros((vocab_size + 31) // 32, dtype=np.int32)

    def allows(self, token: int) -> bool:
        """Whether `token` may come next (the state does not change)."""
        return self._matcher.validate_tokens([token]) == 1

    def consume(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            reason = self._matcher.get_error() or "not allowed here"
            raise ZslError(f"grammar refused token {token}: {reason}")

    def allowed(self) -> np.ndarray:
        """Boolean mask over the vocabulary of the tokens that may come next."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        if self._matcher.is_error():
            raise ZslError(f"grammar matcher failed: {self._matcher.get_error()}")
        return np.unpackbits(self._bits.view(np.uint8), count=self.vocab_size, bitorder="little").astype(bool)

    @property
    def finished(self) -> bool:
        """The grammar is complete and admits nothing more (only end of sequence)."""
        return self._matcher.is_stopped()


class VocabularyGrammars:
    """Grammars bound to one vocabulary: built once per tokenizer (~0.3 s), then a matcher per generation
    is a copy of a cached prototype (llguidance binds a grammar to a vocabulary in ~1 ms)."""

    def __init__(self, tokenizer: Any, vocab_size: int):
        self.tokenizer = tokenizer  # an llguidance.LLTokenizer
        self.vocab_size = vocab_size
        self._prototypes: dict[str, Any] = {}

    def matcher(self, gbnf: str) -> TokenMatcher:
        prototype = self._prototypes.get(gbnf)
        if prototype is None:
            import llguidance

            prototype = llguidance.LLMatcher(self.tokenizer, compile_gbnf(gbnf), log_level=0)
            if prototype.is_error():
                raise ZslError(f"invalid GBNF grammar: {prototype.get_error()}")
            self._prototypes[gbnf] = prototype
        return TokenMatcher(prototype.deep_copy(), self.vocab_size)


def llama_grammars(vocab: Any, vocab_size: int) -> VocabularyGrammars:
    """Grammars over a llama.cpp vocabulary (`llama_model_get_vocab`). The tables point into the model:
    the caller keeps them with its `Llama` object and drops them before closing it."""
    from llguidance.llamacpp import lltokenizer_from_vocab

    with warnings.catch_warnings():  # it reads token attributes through a deprecated alias, once per token
        warnings.simplefilter("ignore", DeprecationWarning)
        return VocabularyGrammars(lltokenizer_from_vocab(vocab, n_vocab=vocab_size), vocab_size)


# Keyed by the tokenizer object itself (weakly), never by id(): a freed tokenizer's id can be reused.
_HF_GRAMMARS: weakref.WeakKeyDictionary[Any, dict[int, VocabularyGrammars]] = weakref.WeakKeyDictionary()


def hf_grammars(tokenizer: Any, vocab_size: int) -> VocabularyGrammars:
    """Grammars over a Hugging Face fast tokenizer, for a model whose logits have `vocab_size` columns."""
    by_size = _HF_GRAMMARS.setdefault(tokenizer, {})
    if vocab_size not in by_size:
        from llguidance.hf import from_tokenizer

        by_size[vocab_size] = VocabularyGrammars(from_tokenizer(tokenizer, n_vocab=vocab_size), vocab_size)
    return by_size[vocab_size]


class GrammarLogitsProcessor:
    """A transformers `LogitsProcessor` holding every row of a batch to a GBNF grammar: disallowed tokens
    get -inf before temperature and top-p (transformers runs user processors before its warpers).

    A row leaves the grammar's control once it ended (end of sequence, or padding after a stop string)."""

    def __init__(self, gbnf: str, tokenizer: Any, prompt_width: int, vocab_size: int | None = None):
        self.gbnf, self.tokenizer, self.prompt_width = gbnf, tokenizer, prompt_width
        if vocab_size:  # build the tables now, so that the first decoding step does not pay for them
            hf_grammars(tokenizer, vocab_size).matcher(gbnf)
        else:
            compile_gbnf(gbnf)  # a bad grammar fails before generation starts
        self.matchers: list[TokenMatcher | None] | None = None

    def __call__(self, input_ids, scores):
        import torch

        if self.matchers is None:
            grammars = hf_grammars(self.tokenizer, scores.shape[1])
            self.matchers = [grammars.matcher(self.gbnf) for _ in range(scores.shape[0])]
        elif input_ids.shape[1] > self.prompt_width:
            for row, matcher in enumerate(self.matchers):
                token = int(input_ids[row, -1])
                if matcher is not None and (matcher.finished or not matcher.allows(token)):
                    self.matchers[row] = None  # ended: what follows is end-of-sequence padding
                elif matcher is not None:
                    matcher.consume(token)
        refused = np.zeros(tuple(scores.shape), dtype=bool)
        for row, matcher in enumerate(self.matchers):
            if matcher is not None:
                refused[row] = ~matcher.allowed()
        # One masking op for the batch: each torch op has a fixed cost that per-row ops would multiply.
        return scores.masked_fill_(torch.from_numpy(refused).to(scores.device), float("-inf"))


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
