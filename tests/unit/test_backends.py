"""Tests for backends/__init__.py: the registry's checks of a network config."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backends import check_backend
from lease.config import parse_network_config
from lease.errors import ConfigError

DUAL = {"Network": "10.5.0.0/16", "EnableIPv6": True, "IPv6Network": "fc00:5::/48"}


def config(**fields: Any) -> Any:
    return parse_network_config(json.dumps({**DUAL, **fields}))


@pytest.mark.parametrize("backend", [None, {"Type": "udp"}, {"Type": "UDP", "Port": 8285}])
def test_udp_with_ipv6_is_refused_with_one_line(backend: dict[str, Any] | None) -> None:
    fields = {"Backend": backend} if backend else {}
    with pytest.raises(ConfigError) as excinfo:
        check_backend(config(**fields))
    message = str(excinfo.value)
    assert "udp backend is IPv4-only, as in flannel, but EnableIPv6 is true" in message
    assert "\n" not in message


@pytest.mark.parametrize("kind", ["vxlan", "host-gw"])
def test_dual_stack_backends_pass(kind: str) -> None:
    check_backend(config(Backend={"Type": kind}))


def test_udp_without_ipv6_passes() -> None:
    check_backend(parse_network_config('{"Network": "10.5.0.0/16"}'))
