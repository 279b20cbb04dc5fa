"""Redaction removes personal data and secrets and leaves ordinary text and numbers alone."""

from __future__ import annotations

import pytest

from server.feedback.redaction import CARD, EMAIL, PHONE, SECRET, redact, redact_value


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("write to ana.lopez+news@correo.example.es today", "ana.lopez+news@correo.example.es"),
        ("my card is 4111 1111 1111 1111, expires 09/29", "4111 1111 1111 1111"),
        ("card 5500-0000-0000-0004", "5500-0000-0000-0004"),
        ("card 4012888888881881", "4012888888881881"),
        ("llámame al +34 612 345 678", "+34 612 345 678"),
        ("call (555) 123-4567 after six", "(555) 123-4567"),
        ("móvil 612345678", "612345678"),
        ("key ggs-3f9a2c7d1e8b4a6f", "ggs-3f9a2c7d1e8b4a6f"),
        ("OPENAI_API_KEY=sk-proj-Ab12Cd34Ef56Gh78", "sk-proj-Ab12Cd34Ef56Gh78"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
        ("Authorization: Bearer abc123.def456-ghi", "abc123.def456-ghi"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r", "eyJhbG"),
        ("hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "9f86d08"),
    ],
)
def test_personal_data_and_secrets_do_not_survive(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert any(marker in cleaned for marker in (CARD, EMAIL, PHONE, SECRET))


def test_each_kind_gets_its_own_marker() -> None:
    cleaned = redact("a@b.io 4111111111111111 +34 612 345 678 ggs-0123456789abcdef")
    assert cleaned == f"{EMAIL} {CARD} {PHONE} {SECRET}"


@pytest.mark.parametrize(
    "text",
    [
        "La Segunda Guerra Mundial terminó en 1945.",
        "Meet on 2026-11-29 at 10:30; room 42.",
        "pi is 3.14159265358979 and e is 2.71828",
        "skateboarding and hf_transfer_enabled are plain words",
        "internationalization_and_localization_are_long_words",
        "The order had 12 items costing 1,250 euros.",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_nested_values_are_redacted_and_keys_kept() -> None:
    value = {
        "messages": [{"role": "user", "content": "I am bob@example.com"}],
        "n": 3,
        "ok": True,
        "none": None,
    }
    assert redact_value(value) == {
        "messages": [{"role": "user", "content": f"I am {EMAIL}"}],
        "n": 3,
        "ok": True,
        "none": None,
    }


def test_redaction_is_fast_on_hostile_input() -> None:
    import time

    started = time.perf_counter()
    redact("1 " * 50_000 + "a" * 100_000 + "@" * 10_000 + "-1" * 20_000)
    assert time.perf_counter() - started < 2.0, "a pathological input made the regexes backtrack"
