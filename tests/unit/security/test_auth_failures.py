"""Brute-force limiter and log sanitizing: pure logic with a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.observability.sanitize import MAX_LOG_VALUE_CHARS, for_log
from server.security.auth_failures import AuthFailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_blocked_after_max_failures_until_the_window_frees() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(3, 60, clock=clock)
    for _ in range(2):
        limiter.record_failure("10.0.0.1")
        assert limiter.retry_after_s("10.0.0.1") is None
    limiter.record_failure("10.0.0.1")
    assert limiter.retry_after_s("10.0.0.1") == 60
    assert limiter.retry_after_s("10.0.0.2") is None  # other addresses are unaffected
    clock.now += 59.5
    assert limiter.retry_after_s("10.0.0.1") == 1
    clock.now += 1
    assert limiter.retry_after_s("10.0.0.1") is None


def test_tracked_addresses_are_bounded_oldest_dropped_first() -> None:
    limiter = AuthFailureLimiter(1, 60, max_addresses=100, clock=Clock())
    for i in range(1000):
        limiter.record_failure(f"addr-{i}")
    assert len(limiter) == 100
    assert limiter.retry_after_s("addr-999") is not None
    assert limiter.retry_after_s("addr-0") is None


@given(st.text(max_size=1000))
def test_logged_values_are_one_printable_bounded_line(value: str) -> None:
    logged = for_log(value)
    assert "\n" not in logged and "\r" not in logged and "\x1b" not in logged
    assert len(logged) <= MAX_LOG_VALUE_CHARS * 6 + 30  # every kept char escapes to <= 6
    logged.encode("utf-8")  # never raises


def test_clean_short_values_are_logged_unchanged() -> None:
    assert for_log("req-123.abc") == "req-123.abc"
    assert for_log("a\nb\x1b[31m") == "a\\x0ab\\x1b[31m"
    assert for_log("\ud800") == "\\ud800"
    assert for_log("x" * 300).endswith("...(+100 chars)")
