"""Which address a request comes from, trusting ``X-Forwarded-For`` only from known proxies.

The brute-force limiter counts failures per client address. Behind an ingress every
connection comes from the proxy, so the real client is in ``X-Forwarded-For``; but any client
can write that header, so it is read only when the connection comes from a configured trusted
proxy network (``GGSERVE_TRUSTED_PROXIES``). The header is then walked from the right (each
proxy appends the address it saw) past the trusted hops; the first untrusted address is the
client. A malformed entry stops the walk at the last trusted hop, so a forged header can at
worst make its sender share the proxy's bucket, never choose another client's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A real chain has a handful of hops; a longer header is not walked further (bounded work).
MAX_FORWARDED_HOPS = 32


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:51234"
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Sequence[IPNetwork]
) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # "::ffff:10.0.0.1" is 10.0.0.1
    candidates = (address, mapped) if mapped is not None else (address,)
    return any(candidate in net for candidate in candidates for net in nets)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy that forwarded the request.

    ``forwarded_for`` holds every ``X-Forwarded-For`` header value in arrival order.
    """
    if not peer:
        return "unknown"
    peer_ip = _ip(peer)
    if peer_ip is None or not trusted or not _trusted(peer_ip, trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    current = str(peer_ip)
    for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
        ip = _ip(hop)
        if ip is None:
            return current  # forged or garbled: stay with the last hop we can vouch for
        current = str(ip)
        if not _trusted(ip, trusted):
            return current
    return current
