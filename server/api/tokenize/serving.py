"""Tokenizing for clients with the served model's own vocabulary.

The work runs in a worker thread: a ~1 MB ``content`` with pieces is hundreds of thousands of
native calls and Python objects, seconds on the event loop that every other request (and
``/health``) waits on. The tokenizer is thread-safe (``LlamaEngine.tokenize``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

from server.api.generation import GenerationService
from server.api.tokenize.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenPiece,
)


def _piece(raw: bytes) -> str | list[int]:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


T = TypeVar("T")


async def off_the_loop(work: Callable[[], T]) -> T:
    """``work()`` in a worker thread; waits for it to end even when the request is cancelled
    (a client gone), so the leased model outlives every native call made on it."""
    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait({task})  # the lease is returned only after the thread is done
        raise


async def tokenize(request: TokenizeRequest, generation: GenerationService) -> TokenizeResponse:
    """Text → token ids (with their pieces when asked), off the event loop."""
    return await off_the_loop(lambda: _tokenize(request, generation))


async def detokenize(
    request: DetokenizeRequest, generation: GenerationService
) -> DetokenizeResponse:
    """Token ids → text, off the event loop (up to a million ids)."""
    return await off_the_loop(lambda: _detokenize(request, generation))


def _tokenize(request: TokenizeRequest, generation: GenerationService) -> TokenizeResponse:
    tokens = generation.tokenize(
        request.content, add_special=request.add_special, parse_special=request.parse_special
    )
    if not request.with_pieces:
        return TokenizeResponse(tokens=tokens)
    pieces = [TokenPiece(id=t, piece=_piece(generation.token_piece(t))) for t in tokens]
    return TokenizeResponse(tokens=pieces)


def _detokenize(request: DetokenizeRequest, generation: GenerationService) -> DetokenizeResponse:
    """Token ids → text; every id is range-checked before the tokenizer sees it."""
    return DetokenizeResponse(content=generation.detokenize(request.tokens, param="tokens"))
