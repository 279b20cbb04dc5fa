"""Tokenizing for clients with the served model's own vocabulary."""

from __future__ import annotations

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


def tokenize(request: TokenizeRequest, generation: GenerationService) -> TokenizeResponse:
    """Text → token ids (with their pieces when asked)."""
    tokens = generation.tokenize(
        request.content, add_special=request.add_special, parse_special=request.parse_special
    )
    if not request.with_pieces:
        return TokenizeResponse(tokens=tokens)
    pieces = [TokenPiece(id=t, piece=_piece(generation.token_piece(t))) for t in tokens]
    return TokenizeResponse(tokens=pieces)


def detokenize(request: DetokenizeRequest, generation: GenerationService) -> DetokenizeResponse:
    """Token ids → text; every id is range-checked before the tokenizer sees it."""
    return DetokenizeResponse(content=generation.detokenize(request.tokens, param="tokens"))
