"""Engine logprobs → OpenAI's two wire shapes (chat's per-token objects, completions' lists)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from server.api.openai.protocol import CompletionLogprobs, TokenLogprobOut, TopLogprob
from server.engine.types import TokenLogprob

PieceOf = Callable[[int], bytes]


def _text(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


def chat_logprobs(entries: Sequence[TokenLogprob], piece_of: PieceOf) -> list[TokenLogprobOut]:
    """Chat's ``logprobs.content``: one object per generated token, with its top alternatives."""
    out: list[TokenLogprobOut] = []
    for entry in entries:
        piece = piece_of(entry.token_id)
        top = []
        for token, logprob in entry.top:
            alt = piece_of(token)
            top.append(TopLogprob(token=_text(alt), logprob=logprob, bytes=list(alt)))
        out.append(
            TokenLogprobOut(
                token=_text(piece), logprob=entry.logprob, bytes=list(piece), top_logprobs=top
            )
        )
    return out


def completion_logprobs(
    entries: Sequence[TokenLogprob | tuple[int, None]],
    piece_of: PieceOf,
    *,
    text_offset: int = 0,
) -> CompletionLogprobs:
    """The legacy shape for ``entries`` (a prompt's first token comes as ``(id, None)``).

    ``text_offset`` is the character offset of the first token in the returned text.
    """
    result = CompletionLogprobs()
    offset = text_offset
    for entry in entries:
        top: dict[str, float] | None = None
        if isinstance(entry, TokenLogprob):
            token_id, logprob, top = entry.token_id, entry.logprob, {}
            for token, alt in entry.top:
                top.setdefault(_text(piece_of(token)), alt)  # pieces may decode alike
        else:
            token_id, logprob = entry[0], None
        text = _text(piece_of(token_id))
        result.tokens.append(text)
        result.token_logprobs.append(logprob)
        result.top_logprobs.append(top)
        result.text_offset.append(offset)
        offset += len(text)
    return result
