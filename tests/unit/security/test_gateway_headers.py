"""The gateway headers' parsing, and the API key entry's default priority, without HTTP."""

from __future__ import annotations

import ipaddress

import pytest

from server.security.api_keys import KeyConfigError, KeyStore, parse_key_entry
from server.security.gateway_headers import (
    FAIRNESS_HEADER,
    OBJECTIVE_HEADER,
    GatewayHeaderError,
    fairness_tenant,
    objective_priority,
)
from server.settings import Settings, parse_objectives

OBJECTIVES = {"critical": -10, "standard": 0, "sheddable": 10}
PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
DIGEST = "a" * 64


def test_an_integer_objective_is_the_priority_and_a_name_is_looked_up() -> None:
    assert objective_priority(["7"], OBJECTIVES) == 7
    assert objective_priority([" -3 "], OBJECTIVES) == -3
    assert objective_priority(["sheddable"], OBJECTIVES) == 10
    assert objective_priority([], OBJECTIVES) is None


@pytest.mark.parametrize(
    "hostile",
    ["", "urgent", "CRITICAL", "1.5", "0x10", str(2**31), str(-(2**31) - 1), "9" * 5000, "１"],
)
def test_an_unknown_or_out_of_range_objective_is_refused_naming_the_header(hostile: str) -> None:
    with pytest.raises(GatewayHeaderError) as raised:
        objective_priority([hostile], OBJECTIVES)
    assert raised.value.header == OBJECTIVE_HEADER
    assert OBJECTIVE_HEADER in str(raised.value)


def test_a_repeated_objective_header_is_refused() -> None:
    with pytest.raises(GatewayHeaderError):
        objective_priority(["critical", "sheddable"], OBJECTIVES)


def test_the_fairness_id_counts_only_from_a_trusted_proxy() -> None:
    assert fairness_tenant(["team-a"], "10.1.2.3", PROXIES) == "fairness:team-a"
    assert fairness_tenant(["team-a"], "203.0.113.9", PROXIES) is None  # a client's own claim
    assert fairness_tenant(["team-a"], "10.1.2.3", []) is None  # no proxy configured
    assert fairness_tenant(["team-a"], None, PROXIES) is None
    assert fairness_tenant([], "10.1.2.3", PROXIES) is None


@pytest.mark.parametrize("hostile", ["", "a" * 129, "a b", "x\x00y", "é", "a,b"])
def test_a_malformed_fairness_id_from_the_proxy_is_refused(hostile: str) -> None:
    with pytest.raises(GatewayHeaderError) as raised:
        fairness_tenant([hostile], "10.1.2.3", PROXIES)
    assert raised.value.header == FAIRNESS_HEADER


def test_a_fairness_id_cannot_share_a_key_ids_turns() -> None:
    tenant = fairness_tenant(["alpha"], "10.1.2.3", PROXIES)
    assert tenant is not None and tenant != "alpha"


def test_objectives_setting_parses_and_refuses_bad_entries() -> None:
    assert parse_objectives("critical=-10, standard=0,sheddable=+10,") == OBJECTIVES
    settings = Settings(_env_file=None, inference_objectives="critical=-10")
    assert settings.inference_objectives == {"critical": -10}
    for bad in ("critical", "critical=high", "a=1,a=2", f"huge={2**31}", "=3", "bad name=1"):
        with pytest.raises(ValueError):
            parse_objectives(bad)


def test_a_key_entry_may_carry_a_default_priority() -> None:
    assert parse_key_entry(f"batch:Nightly:{DIGEST}:priority=10").priority == 10
    assert parse_key_entry(f"vip:{DIGEST}:priority=-5").priority == -5
    plain = parse_key_entry(f"app:{DIGEST}")
    assert (plain.key_id, plain.name, plain.priority) == ("app", None, None)
    store = KeyStore([parse_key_entry(f"batch:{DIGEST}:priority=10"), plain])
    assert (store.default_priority("batch"), store.default_priority("app")) == (10, None)
    assert store.default_priority("unknown") is None


@pytest.mark.parametrize("bad", ["priority=", "priority=high", f"priority={2**31}", "priority=1.5"])
def test_a_bad_key_priority_is_a_config_error(bad: str) -> None:
    with pytest.raises(KeyConfigError):
        parse_key_entry(f"batch:{DIGEST}:{bad}")
