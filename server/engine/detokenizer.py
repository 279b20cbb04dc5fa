"""Token bytes → text, one token at a time, never emitting a broken UTF-8 character.

A byte-level BPE token can end in the middle of a multi-byte character (emoji, CJK): its bytes
are held back until the character is complete. Bytes that can never become valid UTF-8 are
replaced with U+FFFD instead of stalling the stream.
"""

from __future__ import annotations

import codecs


class IncrementalDetokenizer:
    """Feed each token's bytes; get back exactly the text that is now complete."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        """Text completed by ``piece`` ('' while a character is still incomplete)."""
        return self._decoder.decode(piece, final=False)

    def flush(self) -> str:
        """At the end of the stream: an unfinished character becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)
