"""Key parsing and verification, the readiness machine, and settings parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.readiness import InvalidTransitionError, Readiness
from server.security.api_keys import KeyConfigError, KeyStore, hash_key, load_keys_file, new_key
from server.security.api_keys import parse_key_entry as parse
from server.settings import Settings


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


def test_readiness_moves_loading_to_ready_or_failed_only() -> None:
    r = Readiness()
    assert r.state == "loading"
    r.failed("model file x.gguf is not a GGUF file")
    assert r.snapshot().reason == "model file x.gguf is not a GGUF file"
    with pytest.raises(InvalidTransitionError):
        r.ready()
    r.loading()
    r.ready()
    assert r.is_ready and r.snapshot().reason is None


def test_settings_read_env_with_prefix_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGSERVE_N_SLOTS", "8")
    monkeypatch.setenv("GGSERVE_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("GGSERVE_API_KEY", "plain")
    monkeypatch.setenv("GGSERVE_LOG_LEVEL", "debug")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.n_slots == 8
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.api_key is not None and "plain" not in repr(s)
    assert s.log_level == "DEBUG"


def test_settings_reject_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGSERVE_N_SLOTS", "0")
    with pytest.raises(ValueError, match="n_slots"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_env_example_documents_every_setting() -> None:
    example = Path(__file__).parents[3] / ".env.example"
    text = example.read_text()
    missing = [name for name in Settings.model_fields if f"GGSERVE_{name.upper()}=" not in text]
    assert not missing, f".env.example lacks: {missing}"


def test_readme_settings_table_lists_every_setting() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`GGSERVE_{name.upper()}`" not in readme]
    assert not missing, f"README settings table lacks: {missing}"
