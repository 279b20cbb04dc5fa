"""Errors of the retrieval layer. Each message names the problem and what to do about it."""

from __future__ import annotations


class RagError(Exception):
    """Base of every retrieval error; the message is meant for the user as is."""


class NothingToIndexError(RagError):
    """A documents folder (or file list) yielded no indexable text."""


class IndexNotFoundError(RagError):
    """The index folder does not exist or is not an index built by ``ggserve index build``."""


class IndexCorruptError(RagError):
    """The index folder exists but its files cannot be read or disagree with each other."""


class EmbedderMismatchError(RagError):
    """The index was built with another embedder than the one configured."""


class EmbedderLoadError(RagError):
    """The sentence-transformers folder cannot be loaded."""


class DocumentNotInIndexError(RagError):
    """``index remove`` was asked for a document the index does not hold."""
