"""Per-request llama.cpp sampler chains built from ``SamplingParams``.

Chain order (as in llama.cpp's common sampler): logit bias → penalties → top-k → top-p →
min-p → temperature → draw with the request's seed. ``temperature == 0`` ends in greedy instead,
so greedy output is deterministic and independent of the seed. Penalties see only the generated
tokens (the prompt is not fed in), matching OpenAI's presence/frequency semantics.

A grammar (GBNF) is kept outside the chain and used like llama.cpp's common sampler does: sample
without it, check only the chosen token against the grammar, and resample with the grammar
applied to the whole vocabulary only when that token is rejected. Checking all 49k tokens every
step cost 40 ms/token vs 25 ms without a grammar (docs/engine.md); greedy output is the same
either way (the unconstrained argmax, when allowed, is also the constrained argmax).
"""

from __future__ import annotations

import ctypes
import math
import random
import re
from typing import Any

import llama_cpp
import numpy as np

from server.engine import llama_log
from server.engine.boundary import check_sampling
from server.engine.types import GrammarTrigger, InvalidRequestError, SamplingParams

# Mirrors llama_token_data {int32 id; float logit; float p;} for a numpy view of the candidates.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
PENALTY_LAST_N = 64  # window for repeat/presence/frequency penalties (llama.cpp's default)


def validate_params(params: SamplingParams, n_vocab: int) -> None:
    """Raise ``InvalidRequestError`` naming the first out-of-range parameter (the boundary)."""
    check_sampling(params, n_vocab)


class SamplerChain:
    """Owns one llama.cpp sampler chain; ``free()`` it when the request ends."""

    def __init__(self, params: SamplingParams, vocab: Any, n_vocab: int) -> None:
        validate_params(params, n_vocab)
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self._chain: Any = llama_cpp.llama_sampler_chain_init(chain_params)
        self._grammar: Any = None
        self._lazy: LazyTriggerGuard | None = None
        self._vocab = vocab
        self._n_vocab = n_vocab
        self._eog = -1
        self.grammar_dead_end = False  # the grammar admitted no token; generation was ended
        try:
            self._build(params, vocab, n_vocab)
        except BaseException:
            self.free()
            raise
        self.seed = self._seed

    def _add(self, sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)

    def _build(self, params: SamplingParams, vocab: Any, n_vocab: int) -> None:
        if params.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(params.logit_bias))(
                *(llama_cpp.llama_logit_bias(token, bias) for token, bias in params.logit_bias)
            )
            self._add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
        if (
            params.repeat_penalty != 1.0
            or params.presence_penalty != 0.0
            or params.frequency_penalty != 0.0
        ):
            self._add(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab,
                    PENALTY_LAST_N,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if params.grammar:
            llama_log.clear_problems()
            grammar = self._init_grammar(vocab, params.grammar, params.grammar_trigger)
            if not grammar:
                problems = llama_log.recent_problems()
                detail = f": {problems[-1]}" if problems else ""
                raise InvalidRequestError(f"The grammar (GBNF) does not parse{detail}")
            self._grammar = grammar
            self._eog = int(llama_cpp.llama_vocab_eos(vocab))
            if self._eog < 0:
                self._eog = int(llama_cpp.llama_vocab_eot(vocab))
            self._candidates = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._seed = params.seed if params.seed is not None else random.getrandbits(32)
        if params.temperature == 0:
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            self._add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            self._add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        self._add(llama_cpp.llama_sampler_init_temp(params.temperature))
        self._add(llama_cpp.llama_sampler_init_dist(self._seed & 0xFFFFFFFF))

    def _init_grammar(self, vocab: Any, grammar: str, trigger: GrammarTrigger | None) -> Any:
        if trigger is None:
            return llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        self._lazy = LazyTriggerGuard(trigger)
        pattern = r"[\s\S]*?(" + re.escape(trigger.marker) + r")[\s\S]*"
        patterns = (ctypes.c_char_p * 1)(pattern.encode("utf-8"))
        return llama_cpp.llama_sampler_init_grammar_lazy_patterns(
            vocab, grammar.encode("utf-8"), b"root", patterns, 1, None, 0
        )

    def sample(self, ctx: int, batch_index: int) -> int:
        """Sample (and accept) the next token from the logits at ``batch_index``."""
        if self._grammar is None:
            return int(llama_cpp.llama_sampler_sample(self._chain, ctx, batch_index))
        candidates = self._fill_candidates(ctx, batch_index)
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(candidates))
        token = int(candidates.data[candidates.selected].id)
        if not self._grammar_allows(token):
            candidates = self._fill_candidates(ctx, batch_index)
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
            llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(candidates))
            chosen = candidates.data[candidates.selected]
            token = int(chosen.id)
            if not math.isfinite(chosen.logit):
                # The grammar allows no token here (e.g. an empty character class). llama.cpp
                # throws on accepting a rejected token, which would abort the process: end
                # this generation with end-of-generation instead.
                self.grammar_dead_end = True
                return self._eog
        if self._lazy is not None and not self._lazy.accepts(_piece(self._vocab, token)):
            # The marker came with text the grammar would reject: llama.cpp would abort on
            # it, so the rest of this output goes unconstrained (and parses as text).
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar, self._lazy = None, None
            llama_cpp.llama_sampler_accept(self._chain, token)
            return token
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def _fill_candidates(self, ctx: int, batch_index: int) -> Any:
        """All tokens with the logits at ``batch_index``, as a llama_token_data_array."""
        logits = llama_cpp.llama_get_logits_ith(ctx, batch_index)
        data = self._candidates
        data["id"] = np.arange(self._n_vocab, dtype=np.int32)
        data["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        data["p"] = 0.0
        return llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=self._n_vocab,
            selected=-1,
            sorted=False,
        )

    def _grammar_allows(self, token: int) -> bool:
        single = llama_cpp.llama_token_data(token, 1.0, 0.0)
        candidates = llama_cpp.llama_token_data_array(
            data=ctypes.pointer(single), size=1, selected=-1, sorted=False
        )
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
        return bool(math.isfinite(single.logit))

    def free(self) -> None:
        """Release the chain, every sampler in it and the grammar (idempotent)."""
        if self._chain:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None


def _piece(vocab: Any, token: int) -> bytes:
    """The token's text as llama.cpp's grammar sees it (control tokens spelled out)."""
    buffer = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
    if n < 0:
        buffer = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
    return buffer.raw[: max(n, 0)]


class LazyTriggerGuard:
    """Follows the output until a lazy grammar's marker appears, and vets the text after it.

    llama.cpp feeds the grammar the text from the marker on when it triggers, and aborts the
    process if the grammar rejects it; this checks that text against the grammar's fixed
    openings first. After the trigger it accepts everything (the grammar itself constrains).
    """

    def __init__(self, trigger: GrammarTrigger) -> None:
        self._marker = trigger.marker.encode("utf-8")
        self._heads = [head.encode("utf-8") for head in trigger.heads]
        self._seen = b""
        self.triggered = False

    def accepts(self, piece: bytes) -> bool:
        """Whether the grammar may be given the token whose bytes are ``piece``."""
        if self.triggered:
            return True
        # Only the tail can hold a marker that was not there before this piece.
        since = max(0, len(self._seen) - len(self._marker) + 1)
        self._seen += piece
        start = self._seen.find(self._marker, since)
        if start < 0:
            return True
        self.triggered = True
        constrained = self._seen[start:]
        return any(head.startswith(constrained) for head in self._heads)
