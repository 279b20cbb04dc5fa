"""Key parsing, the key store, key files."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.security.api_keys import KeyConfigError, KeyStore, hash_key, load_keys_file, new_key
from server.security.api_keys import parse_key_entry as parse


def test_key_entries_parse_with_and_without_name() -> None:
    digest = hash_key("s3cret")
    assert parse(f"k1:{digest}").key_id == "k1"
    named = parse(f"k2:mobile app:{digest}")
    assert (named.key_id, named.name, named.sha256) == ("k2", "mobile app", digest)


@pytest.mark.parametrize("entry", ["justone", "k1:nothex", f"k1:{'a' * 63}", f":{'a' * 64}"])
def test_malformed_key_entries_are_refused(entry: str) -> None:
    with pytest.raises(KeyConfigError):
        parse(entry)


def test_keystore_finds_the_matching_key_only() -> None:
    store = KeyStore([parse(f"a:{hash_key('one')}"), parse(f"b:{hash_key('two')}")])
    assert store.verify("two").key_id == "b"  # type: ignore[union-attr]
    assert store.verify("three") is None
    with pytest.raises(KeyConfigError, match="duplicate"):
        KeyStore([parse(f"a:{hash_key('one')}"), parse(f"a:{hash_key('two')}")])


def test_new_keys_are_random_and_long() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50 and all(len(k) > 40 for k in keys)


def test_keys_file_skips_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# ops team\n\nops:Ops:{hash_key('x')}\n")
    assert [k.key_id for k in load_keys_file(path)] == ["ops"]
