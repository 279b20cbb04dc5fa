"""Which address the brute-force limiter counts: the peer, or X-Forwarded-For via a proxy."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.security.client_address import MAX_FORWARDED_HOPS, client_address

TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


def test_an_untrusted_peer_is_the_client_whatever_its_forwarded_for_says() -> None:
    assert client_address("192.0.2.1", ["203.0.113.9"], TRUSTED) == "192.0.2.1"
    assert client_address("10.0.0.1", ["203.0.113.9"], []) == "10.0.0.1"  # nothing trusted


def test_behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() -> None:
    # The client can forge the left part; the hops our proxies appended are on the right.
    chain = ["1.1.1.1, 203.0.113.9", "10.2.0.1"]
    assert client_address("10.0.0.1", chain, TRUSTED) == "203.0.113.9"
    assert client_address("fd00::5", ["2001:db8::7"], TRUSTED) == "2001:db8::7"
    assert client_address("::ffff:10.0.0.1", ["198.51.100.4"], TRUSTED) == "198.51.100.4"


def test_ports_and_brackets_in_forwarded_entries_are_understood() -> None:
    assert client_address("10.0.0.1", ["203.0.113.9:5123"], TRUSTED) == "203.0.113.9"
    assert client_address("10.0.0.1", ["[2001:db8::1]:443"], TRUSTED) == "2001:db8::1"


@pytest.mark.parametrize(
    "forwarded",
    [[], [""], ["not-an-ip"], ["203.0.113.9, garbage"], ["%00"], ["999.1.1.1"], [" , , "]],
)
def test_a_missing_or_garbled_header_falls_back_to_the_last_trusted_hop(
    forwarded: list[str],
) -> None:
    assert client_address("10.0.0.1", forwarded, TRUSTED) == "10.0.0.1"


def test_a_chain_of_only_trusted_hops_and_a_missing_peer() -> None:
    assert client_address("10.0.0.1", ["10.0.0.2, 10.0.0.3"], TRUSTED) == "10.0.0.2"
    assert client_address(None, ["203.0.113.9"], TRUSTED) == "unknown"


def test_a_huge_forwarded_header_is_walked_only_a_bounded_number_of_hops() -> None:
    # 10 000 trusted hops with the real client first: not reached, so no client is named
    # from the far end of a header anyone could have padded.
    chain = ["203.0.113.9, " + ", ".join(["10.0.0.9"] * 10_000)]
    assert client_address("10.0.0.1", chain, TRUSTED) == "10.0.0.9"
    assert MAX_FORWARDED_HOPS < 10_000


@given(st.lists(st.text(max_size=60), max_size=5), st.text(max_size=40))
def test_client_address_never_raises_and_returns_text(forwarded: list[str], peer: str) -> None:
    result = client_address(peer, forwarded, TRUSTED)
    assert isinstance(result, str) and result
