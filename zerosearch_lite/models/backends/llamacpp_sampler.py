"""Token sampling for the llama.cpp backend: llama.cpp's own sampler chain, driven through its C API, with
an optional grammar checked *after* sampling.

llama-cpp-python's high-level API puts the grammar before top-k, so every token pays a grammar check of
the whole vocabulary. Here, as in llama.cpp's `common_sampler`, the chain samples first and only the
sampled token is checked; the vocabulary is masked and the chain re-run only when that token is refused.
Both give the grammar-restricted distribution (accepting p(t) plus resampling on the refused mass is
p(t)/p(allowed)), up to where top-k/top-p/min-p truncate. This module must not evaluate the model.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from .grammar import TokenMatcher

# llama-cpp-python's defaults for create_completion, kept so that sampling did not change with this module.
TOP_K = 40
MIN_P = 0.05
PENALTY_LAST_N = 64
# llama_token_data {id, logit, p}: the candidate array is a numpy view the C chain reads and reorders.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


@dataclass
class ChainSettings:
    temperature: float
    top_p: float
    repeat_penalty: float
    seed: int


class TokenSampler:
    """Samples one token at a time from the last logits of a llama.cpp context; frees its chain on close."""

    def __init__(self, ctx: Any, vocab_size: int, settings: ChainSettings, matcher: TokenMatcher | None):
        import llama_cpp as lc

        if _TOKEN_DATA.itemsize != ctypes.sizeof(lc.llama_token_data):  # pragma: no cover - a library change
            raise RuntimeError("llama_token_data layout changed: update llamacpp_sampler._TOKEN_DATA")
        self._lc, self._ctx, self.vocab_size = lc, ctx, vocab_size
        self.matcher = matcher
        self.refusals = 0  # sampled tokens the grammar refused (each cost one masked resample)
        self._ids = np.arange(vocab_size, dtype=np.int32)
        self._candidates = np.zeros(vocab_size, dtype=_TOKEN_DATA)
        self._array = lc.llama_token_data_array(
            data=ctypes.cast(self._candidates.ctypes.data, lc.llama_token_data_p),
            size=vocab_size, selected=-1, sorted=False,
        )
        self._chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        for stage in self._stages(settings):
            lc.llama_sampler_chain_add(self._chain, stage)

    def _stages(self, s: ChainSettings) -> list[Any]:
        lc, n_vocab = self._lc, self.vocab_size
        stages = []
        if s.repeat_penalty != 1.0:
            # the repeat penalty alone (frequency and presence penalties 0), over the last 64 sampled tokens
            stages.append(lc.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, s.repeat_penalty, 0, 0))
        if s.temperature <= 0:
            return [*stages, lc.llama_sampler_init_greedy()]
        return [
            *stages,
            lc.llama_sampler_init_top_k(TOP_K),
            lc.llama_sampler_init_top_p(s.top_p, 1),
            lc.llama_sampler_init_min_p(MIN_P, 1),
            lc.llama_sampler_init_temp(s.temperature),
            lc.llama_sampler_init_dist(s.seed & 0xFFFFFFFF),
        ]

    def _load_logits(self) -> None:
        """Fill the candidate array with the last logits (the chain sorts and truncates it in place)."""
        logits = np.ctypeslib.as_array(self._lc.llama_get_logits_ith(self._ctx, -1), shape=(self.vocab_size,))
        self._candidates["id"] = self._ids
        self._candidates["logit"] = logits
        self._array.size, self._array.selected, self._array.sorted = self.vocab_size, -1, False

    def _run_chain(self) -> int:
        self._lc.llama_sampler_apply(self._chain, ctypes.byref(self._array))
        return int(self._candidates["id"][self._array.selected])

    def sample(self) -> int:
        self._load_logits()
        token = self._run_chain()
        if self.matcher is not None and not self.matcher.allows(token):
            self.refusals += 1
            self._load_logits()
            self._candidates["logit"][~self.matcher.allowed()] = -np.inf
            token = self._run_chain()
        self._lc.llama_sampler_accept(self._chain, token)
        if self.matcher is not None:
            self.matcher.consume(token)
        return token

    def close(self) -> None:
        chain, self._chain = getattr(self, "_chain", None), None
        if chain is not None:
            self._lc.llama_sampler_free(chain)

    def __del__(self) -> None:
        self.close()
