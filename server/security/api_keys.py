"""API keys stored only as sha256 hashes, each with an id (and name) for logs and metrics."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

KEY_PREFIX = "ggs-"
_HEX = set("0123456789abcdef")
PRIORITY_FIELD = "priority="
_PRIORITY = re.compile(r"[+-]?[0-9]{1,11}")


@dataclass(frozen=True)
class ApiKey:
    """A known key: its id (safe to log), an optional name, the sha256 of the secret, and the
    priority its requests get when they ask for none (None: the server's default, 0)."""

    key_id: str
    name: str | None
    sha256: str
    priority: int | None = None


class KeyConfigError(ValueError):
    """A key entry in the settings or keys file is malformed."""


def hash_key(plaintext: str) -> str:
    """sha256 hex of a key, as stored in configuration."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def metrics_label(key_id: str, sha256: str | None) -> str:
    """The label /metrics shows for a key: an HMAC of its id under its own stored hash.

    Stable across restarts and replicas (Prometheus series continue), one per key, and
    unguessable by a reader of /metrics who does not hold the keys' configuration: a plain
    hash of a short id could be reversed by trying ids. The operator maps a label back with
    ``metrics_label(id, sha256)`` over the configured keys (docs/security.md).
    """
    if sha256 is None:
        return key_id  # not a configured key ("anonymous" with auth disabled): no tenant
    mac = hmac.new(bytes.fromhex(sha256), b"ggserve-metrics\0" + key_id.encode(), "sha256")
    return "k-" + mac.hexdigest()[:16]


def new_key() -> str:
    """A fresh random key (256 bits of entropy)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_key_entry(entry: str) -> ApiKey:
    """Parse ``id:sha256`` or ``id:name:sha256``, optionally followed by ``:priority=N``."""
    parts = entry.strip().split(":")
    priority: int | None = None
    if len(parts) > 2 and parts[-1].startswith(PRIORITY_FIELD):
        priority = _parse_priority(parts.pop()[len(PRIORITY_FIELD) :], parts[0])
    if len(parts) not in (2, 3):
        raise KeyConfigError(
            f"API key entry {entry[:12]!r}… must be 'id:sha256hex' or 'id:name:sha256hex'"
        )
    key_id, digest = parts[0], parts[-1].lower()
    name = parts[1] if len(parts) == 3 else None
    if not key_id or len(digest) != 64 or not set(digest) <= _HEX:
        raise KeyConfigError(
            f"API key entry for id {key_id!r}: the last field must be a 64-character sha256 hex "
            "digest (make one with 'ggserve keys create')"
        )
    return ApiKey(key_id=key_id, name=name, sha256=digest, priority=priority)


def _parse_priority(text: str, key_id: str) -> int:
    if not _PRIORITY.fullmatch(text) or not -(2**31) <= int(text) < 2**31:
        raise KeyConfigError(
            f"API key entry for id {key_id!r}: priority must be a 32-bit integer, e.g. "
            "'priority=10' (lower goes first)"
        )
    return int(text)


def load_keys_file(path: Path) -> list[ApiKey]:
    """One entry per line; blank lines and ``#`` comments are ignored."""
    if not path.is_file():
        raise KeyConfigError(f"API keys file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [parse_key_entry(ln) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


class KeyStore:
    """Looks a presented key up by hash, comparing in constant time."""

    def __init__(self, keys: list[ApiKey]) -> None:
        ids = [k.key_id for k in keys]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise KeyConfigError(f"duplicate API key ids: {', '.join(sorted(duplicates))}")
        self._keys = keys
        self._by_id = {k.key_id: k for k in keys}

    def __len__(self) -> int:
        return len(self._keys)

    def metrics_label(self, key_id: str) -> str:
        """The opaque label /metrics shows for ``key_id`` (see ``metrics_label``)."""
        key = self._by_id.get(key_id)
        return metrics_label(key_id, key.sha256 if key is not None else None)

    def default_priority(self, key_id: str) -> int | None:
        """The priority ``key_id``'s requests get when they ask for none; None: not set."""
        key = self._by_id.get(key_id)
        return key.priority if key is not None else None

    def verify(self, presented: str) -> ApiKey | None:
        """The key whose hash matches ``presented``, else None."""
        digest = hash_key(presented)
        match: ApiKey | None = None
        for key in self._keys:  # no early exit: time does not depend on which key matched
            if hmac.compare_digest(digest, key.sha256):
                match = key
        return match
