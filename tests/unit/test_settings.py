"""Settings parsing, and the docs that must list every setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings


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
    example = Path(__file__).parents[2] / ".env.example"
    text = example.read_text()
    missing = [name for name in Settings.model_fields if f"GGSERVE_{name.upper()}=" not in text]
    assert not missing, f".env.example lacks: {missing}"


def test_settings_reference_lists_every_setting() -> None:
    reference = (Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    rows = {line.split("`")[1] for line in reference.splitlines() if line.startswith("| `")}
    missing = [name for name in Settings.model_fields if f"GGSERVE_{name.upper()}" not in rows]
    assert not missing, f"docs/settings.md lacks: {missing}"
    unknown = rows - {f"GGSERVE_{name.upper()}" for name in Settings.model_fields}
    assert not unknown, f"docs/settings.md lists settings that do not exist: {unknown}"


def test_trusted_proxies_parse_cidrs_and_refuse_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GGSERVE_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8,192.0.2.7")
    parsed = Settings(_env_file=None).trusted_proxies  # type: ignore[call-arg]
    assert [str(n) for n in parsed] == ["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]
    monkeypatch.setenv("GGSERVE_TRUSTED_PROXIES", "")
    assert Settings(_env_file=None).trusted_proxies == []  # type: ignore[call-arg]
    for bad in ("ingress", "10.0.0.0/33", "10.0.0.1/8", "*", "10.0.0.0/8,,x"):
        monkeypatch.setenv("GGSERVE_TRUSTED_PROXIES", bad)
        with pytest.raises(ValueError, match="trusted_proxies"):
            Settings(_env_file=None)  # type: ignore[call-arg]


def test_named_adapters_parse_and_bad_entries_fail_at_start() -> None:
    from pathlib import Path

    from server.settings import parse_adapters

    assert parse_adapters("") == ()
    assert parse_adapters(" a=x.gguf , b=/m/y.gguf:0.5 ") == (
        ("a", Path("x.gguf"), 1.0),
        ("b", Path("/m/y.gguf"), 0.5),
    )
    assert parse_adapters("c=C:/w/z.gguf") == (("c", Path("C:/w/z.gguf"), 1.0),)
    for bad in ("noequals", "=x.gguf", "a=", "a=x.gguf:9", "a=x.gguf:-1", "a=x,a=y"):
        with pytest.raises(ValueError, match="GGSERVE_LORA_ADAPTERS"):
            parse_adapters(bad)
    with pytest.raises(ValueError, match="GGSERVE_LORA_ADAPTERS"):
        Settings(_env_file=None, lora_adapters="a=x.gguf:lots:9")
