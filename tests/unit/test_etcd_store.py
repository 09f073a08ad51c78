"""Tests for lease/etcd_store.py's pure part: -etcd-endpoints parsing (no etcd, no DNS)."""

from __future__ import annotations

import pytest

from lease.errors import ConfigError
from lease.etcd_store import parse_endpoints


@pytest.mark.parametrize(("endpoints", "targets", "host"), [
    (["http://192.0.2.1:2379"], ["192.0.2.1:2379"], "192.0.2.1"),
    (["https://192.0.2.1"], ["192.0.2.1:2379"], "192.0.2.1"),
    (["192.0.2.1:4001", "http://198.51.100.7:2379/"], ["192.0.2.1:4001", "198.51.100.7:2379"],
     "192.0.2.1"),
    (["http://[2001:db8::1]:2379"], ["2001:db8::1:2379"], "2001:db8::1"),
])
def test_endpoints_become_grpc_targets(endpoints: list[str], targets: list[str],
                                       host: str) -> None:
    assert parse_endpoints(endpoints) == (targets, host)


@pytest.mark.parametrize(("url", "message"), [
    ("http://[::1", "is not a URL"),
    ("http://[not-an-ip]:2379", "is not a URL"),
    ("ftp://192.0.2.1:2379", "is not an http(s)://host:port URL"),
    ("http://:2379", "is not an http(s)://host:port URL"),
    ("http://192.0.2.1:99999", "has a bad port"),
    ("http://192.0.2.1:port", "has a bad port"),
])
def test_a_bad_endpoint_is_one_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^-etcd-endpoints: ") as info:
        parse_endpoints([url])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_no_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no endpoint given"):
        parse_endpoints([])
