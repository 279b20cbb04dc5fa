"""The validation boundary in front of llama.cpp: every request value is checked here first.

A C++ exception that crosses ctypes ends in ``std::terminate`` and takes every user of the
process down with it, and an out-of-range id read by llama.cpp is undefined behaviour. So each
value a request carries is checked in Python before it reaches a native call, and a bad one
becomes an ``InvalidRequestError`` that names the request field (the HTTP layer answers 400).

The native calls a request can reach, and the check in front of each:

=============================================  ===============================================
native call (where)                            guard
=============================================  ===============================================
``llama_tokenize`` (model.tokenize)            ``check_text``: no lone surrogates (they cannot
                                               be encoded as UTF-8); size bounded by the HTTP
                                               body limit
``llama_token_to_piece`` (model.token_to_piece,  ``check_token_ids`` / ``check_token_id``: ids in
detokenize: completions echo, token prompts)   0..n_vocab-1 (``std::out_of_range`` otherwise)
``llama_vocab_get_text`` (model.token_text)    range check in place (returns '' outside)
``llama_batch`` fill + ``llama_decode``        ``check_token_ids`` on the prompt in
(executor.py)                                  ``LlamaEngine.submit``; prompt + max_tokens <=
                                               n_ctx per slot; chunks <= n_batch
``llama_sampler_init_logit_bias``              ``check_logit_bias``: ids in range, bias finite
                                               and within +-100 (OpenAI's range)
``llama_sampler_init_top_k/top_p/min_p/temp/   ``check_sampling``: each parameter in its range,
penalties/dist``                               finite, and fitting the C int/float types
``llama_sampler_init_grammar``                 ``check_grammar``: bounded size and nesting
                                               depth (the GBNF parser recurses once per group:
                                               30,000 nested groups overflow the stack, a
                                               SIGSEGV); syntax errors, left recursion and
                                               repetitions over llama.cpp's own limit return
                                               NULL and become a 400
``llama_sampler_accept`` on a grammar          sampling.py never accepts a token the grammar
                                               rejected: a grammar that admits no token (e.g.
                                               ``[^\x00-\U0010ffff]``) made llama.cpp throw,
                                               SIGABRT; the generation now ends instead
``llama_memory_seq_rm/cp``,                    engine-internal values only (slot ids, batch
``llama_get_logits_ith``,                      indices), never taken from a request
``llama_sampler_sample``
n_probs / top_logprobs                         ``check_n_probs``: 0..20 and <= n_vocab
=============================================  ===============================================

Loading (``llama_model_load_from_file``, ``llama_init_from_model``, LoRA) takes operator
settings, not request values; ``check_gguf_file`` and ``EngineConfig.validate`` guard them, and
llama.cpp returns NULL on a bad file. ``convert/quantize.py`` calls ``llama_model_quantize`` on
files the operator names, after ``convert/inputs.py`` checked them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from server.engine.types import InvalidRequestError, SamplingParams

LOGIT_BIAS_LIMIT = 100.0  # OpenAI's documented range for logit_bias values
MAX_LOGIT_BIAS_ENTRIES = 1024
MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs
MAX_GRAMMAR_CHARS = 64 * 1024
MAX_GRAMMAR_NESTING = 64  # parentheses depth; the GBNF parser recurses once per level
MAX_STOP_CHARS = 512
INT32_MAX = 2**31 - 1
_PENALTY_LIMIT = 2.0
_MAX_REPEAT_PENALTY = 100.0


def field_path(parts: Iterable[object]) -> str:
    """A request field's path as OpenAI writes it: ``messages[0].content``, ``tools[1].type``."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def lone_surrogate_path(value: object) -> str | None:
    """Path (``messages[0].content``) of the first string or key with a lone surrogate, or None.

    JSON may spell ``"\\ud800"``; Python decodes it into a str that cannot be encoded as UTF-8,
    so it must be refused before any code (tokenizer, log, database) tries to encode it.
    """
    stack: list[tuple[tuple[object, ...], object]] = [((), value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if not encodes_as_utf8(item):
                return field_path(where) or "body"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if isinstance(key, str) and not encodes_as_utf8(key):
                    return field_path(where) or "body"
                stack.append(((*where, str(key)), child))
        elif isinstance(item, list | tuple):
            for index in reversed(range(len(item))):
                stack.append(((*where, index), item[index]))
    return None


def encodes_as_utf8(text: str) -> bool:
    """False for text with a lone surrogate (valid JSON, but no UTF-8 and no C string)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(text: str, field: str = "prompt") -> None:
    """Refuse text that is not valid Unicode (a lone surrogate cannot become UTF-8)."""
    if not isinstance(text, str):
        raise InvalidRequestError(f"{field} must be a string.", param=field)
    if not encodes_as_utf8(text):
        raise InvalidRequestError(
            f"{field} contains a lone UTF-16 surrogate (e.g. \\ud800), which is not valid "
            "Unicode text; send well-formed UTF-8.",
            param=field,
        )


def check_token_id(token: int, n_vocab: int, field: str = "prompt") -> None:
    """Refuse an id outside this model's vocabulary (llama.cpp would throw or read past it)."""
    if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < n_vocab:
        raise InvalidRequestError(
            f"{field} contains token id {token!r}; this model's ids are 0..{n_vocab - 1}.",
            param=field,
        )


def check_token_ids(tokens: Iterable[int], n_vocab: int, field: str = "prompt") -> None:
    """``check_token_id`` for every id."""
    for token in tokens:
        check_token_id(token, n_vocab, field)


def check_logit_bias(
    bias: Sequence[tuple[int, float]], n_vocab: int, field: str = "logit_bias"
) -> None:
    """Ids in the vocabulary; biases finite and within +-100, as OpenAI documents."""
    if len(bias) > MAX_LOGIT_BIAS_ENTRIES:
        raise InvalidRequestError(
            f"{field} has {len(bias)} entries; at most {MAX_LOGIT_BIAS_ENTRIES} are accepted.",
            param=field,
        )
    for token, value in bias:
        check_token_id(token, n_vocab, field)
        if not math.isfinite(value) or abs(value) > LOGIT_BIAS_LIMIT:
            raise InvalidRequestError(
                f"{field} for token {token} is {value}; it must be a number in "
                f"[-{LOGIT_BIAS_LIMIT:g}, {LOGIT_BIAS_LIMIT:g}].",
                param=field,
            )


def check_grammar(grammar: str, field: str = "grammar") -> None:
    """Bound what llama.cpp's recursive GBNF parser is given; it reports syntax errors itself."""
    check_text(grammar, field)
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise InvalidRequestError(
            f"{field} is {len(grammar)} characters; at most {MAX_GRAMMAR_CHARS} are accepted.",
            param=field,
        )
    if "\x00" in grammar:
        raise InvalidRequestError(f"{field} contains a NUL character.", param=field)
    depth = deepest = 0
    for char in _outside_literals(grammar):
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    if deepest > MAX_GRAMMAR_NESTING:
        raise InvalidRequestError(
            f"{field} nests groups {deepest} deep; at most {MAX_GRAMMAR_NESTING} levels.",
            param=field,
        )


def _outside_literals(grammar: str) -> Iterable[str]:
    """The characters of ``grammar`` outside "..." literals, [...] classes and # comments."""
    i, n = 0, len(grammar)
    while i < n:
        char = grammar[i]
        if char in '"[':
            close = '"' if char == '"' else "]"
            i += 1
            while i < n and grammar[i] != close:
                i += 2 if grammar[i] == "\\" else 1
        elif char == "#":
            while i < n and grammar[i] not in "\r\n":
                i += 1
        else:
            yield char
        i += 1


def check_n_probs(n_probs: int, n_vocab: int, field: str = "top_logprobs") -> None:
    """How many alternatives per token a request may ask for."""
    limit = min(MAX_TOP_LOGPROBS, n_vocab)
    if isinstance(n_probs, bool) or not isinstance(n_probs, int) or not 0 <= n_probs <= limit:
        raise InvalidRequestError(f"{field} must be in 0..{limit}, got {n_probs!r}.", param=field)


def check_sampling(params: SamplingParams, n_vocab: int) -> None:
    """Every sampling parameter in range, finite and fitting its C type, before any native call.

    Raises ``InvalidRequestError`` naming the first parameter out of range.
    """
    floats = (
        ("temperature", params.temperature, 0.0, math.inf),
        ("top_p", params.top_p, 0.0, 1.0),
        ("min_p", params.min_p, 0.0, 1.0),
        ("repeat_penalty", params.repeat_penalty, 0.0, _MAX_REPEAT_PENALTY),
        ("presence_penalty", params.presence_penalty, -_PENALTY_LIMIT, _PENALTY_LIMIT),
        ("frequency_penalty", params.frequency_penalty, -_PENALTY_LIMIT, _PENALTY_LIMIT),
    )
    for name, value, low, high in floats:
        if not math.isfinite(value) or not low <= value <= high:
            raise InvalidRequestError(
                f"{name} must be a finite number in [{low:g}, {high:g}], got {value}.", param=name
            )
    if params.top_p == 0.0:
        raise InvalidRequestError("top_p must be in (0, 1], got 0.", param="top_p")
    if params.repeat_penalty == 0.0:
        raise InvalidRequestError("repeat_penalty must be > 0, got 0.", param="repeat_penalty")
    least = 0 if params.prompt_logprobs is not None else 1  # scoring may generate nothing
    if not least <= params.max_tokens <= INT32_MAX:
        raise InvalidRequestError(
            f"max_tokens must be >= {least}, got {params.max_tokens}.", param="max_tokens"
        )
    for name, count in (("logprobs", params.logprobs), ("prompt_logprobs", params.prompt_logprobs)):
        if count is not None:
            check_n_probs(count, n_vocab, name)
    if not 0 <= params.top_k <= INT32_MAX:
        raise InvalidRequestError(
            f"top_k must be >= 0 (0 = off), got {params.top_k}.", param="top_k"
        )
    check_logit_bias(params.logit_bias, n_vocab)
    for stop in params.stop:
        check_text(stop, "stop")
        if len(stop) > MAX_STOP_CHARS:
            raise InvalidRequestError(
                f"A stop sequence is {len(stop)} characters; at most {MAX_STOP_CHARS}.",
                param="stop",
            )
    if params.grammar is not None:
        check_grammar(params.grammar)
