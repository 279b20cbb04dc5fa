"""The Inference Gateway's request headers, read into a request's priority and fairness bucket.

An Inference Gateway (Kubernetes' Gateway API Inference Extension, llm-d) sends two headers to
the model server it picked:

- ``x-gateway-inference-objective``: how urgent the request is. An integer is the priority
  itself (vLLM's semantics: lower goes first); a name is looked up in
  ``GGSERVE_INFERENCE_OBJECTIVES`` (``critical=-10,standard=0,sheddable=10``). Anyone may
  send it: it asks for no more than the body's ``priority`` field may, and the same floor
  (``GGSERVE_MIN_PRIORITY``) applies.
- ``x-gateway-inference-fairness-id``: whose turn it is. It replaces the API key as the
  engine's fair-share tenant only when the request comes from a trusted proxy
  (``GGSERVE_TRUSTED_PROXIES``); from anyone else it is ignored, or a client could pick a fresh
  bucket per request and take every other turn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from server.security.client_address import IPNetwork, _ip, _trusted

OBJECTIVE_HEADER = "x-gateway-inference-objective"
FAIRNESS_HEADER = "x-gateway-inference-fairness-id"

PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1  # the body field's range
_FAIRNESS_ID = re.compile(r"[A-Za-z0-9_.:@/-]{1,128}")
_INTEGER = re.compile(r"[+-]?[0-9]{1,11}")  # bounded before int(): no huge parses


def objective_priority(values: Sequence[str], objectives: Mapping[str, int]) -> int | None:
    """The priority the objective header asks for; None without the header;
    ``GatewayHeaderError`` when it is repeated, or neither an integer nor a known objective."""
    if not values:
        return None
    if len(values) > 1:
        raise _bad(OBJECTIVE_HEADER, "is sent more than once")
    value = values[0].strip()
    if _INTEGER.fullmatch(value) and PRIORITY_MIN <= int(value) <= PRIORITY_MAX:
        return int(value)
    if value in objectives:
        return objectives[value]
    known = ", ".join(sorted(objectives)) or "none configured (GGSERVE_INFERENCE_OBJECTIVES)"
    raise _bad(
        OBJECTIVE_HEADER, f"must be a 32-bit integer priority or a known objective ({known})"
    )


def fairness_tenant(
    values: Sequence[str], peer: str | None, trusted: Sequence[IPNetwork]
) -> str | None:
    """The fair-share tenant the fairness header names, when a trusted proxy sent it; None
    otherwise (the key is the tenant). ``GatewayHeaderError`` for a malformed value."""
    if not values:
        return None
    peer_ip = _ip(peer) if peer else None
    if peer_ip is None or not trusted or not _trusted(peer_ip, trusted):
        return None  # a client's own claim: ignored
    if len(values) > 1 or not _FAIRNESS_ID.fullmatch(value := values[0].strip()):
        raise _bad(FAIRNESS_HEADER, "must be one id of 1-128 characters from A-Z a-z 0-9 _.:@/-")
    return "fairness:" + value  # its own namespace: cannot merge with a key id's turns


class GatewayHeaderError(ValueError):
    """A gateway header the server cannot use; the HTTP layer answers 400 naming it."""

    def __init__(self, header: str, problem: str) -> None:
        super().__init__(f"header {header} {problem}.")
        self.header = header


def _bad(header: str, problem: str) -> GatewayHeaderError:
    return GatewayHeaderError(header, problem)
