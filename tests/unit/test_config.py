"""Tests for lease/config.py: flannel's network config (`<prefix>/config`)."""

from __future__ import annotations

import json
import random
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Final

import pytest

from lease.config import BackendSpec, NetworkConfig, parse_network_config
from lease.errors import ConfigError

EXAMPLE: Final = (
    '{"Network": "10.5.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1}}'
)


def config_text(**fields: Any) -> str:
    """A config with Network 10.5.0.0/16 unless overridden; a value of None drops the key."""
    doc: dict[str, Any] = {"Network": "10.5.0.0/16"}
    doc.update(fields)
    return json.dumps({key: value for key, value in doc.items() if value is not None})


def config_error(text: str | bytes) -> str:
    """Parse `text`, which must fail with ConfigError, and return the message."""
    with pytest.raises(ConfigError) as excinfo:
        parse_network_config(text)
    return str(excinfo.value)


# --- the documented example -------------------------------------------------------------


def test_flannel_example_parses_to_full_config() -> None:
    assert parse_network_config(EXAMPLE) == NetworkConfig(
        network=IPv4Network("10.5.0.0/16"),
        subnet_len=24,
        subnet_min=IPv4Address("10.5.1.0"),
        subnet_max=IPv4Address("10.5.255.0"),
        backend=BackendSpec("vxlan", {"Type": "vxlan", "VNI": 1}),
        enable_ipv4=True,
        enable_ipv6=False,
        ipv6_network=None,
        ipv6_subnet_len=0,
        ipv6_subnet_min=None,
        ipv6_subnet_max=None,
        enable_nftables=False,
    )


def test_bytes_input_is_accepted() -> None:
    assert parse_network_config(EXAMPLE.encode()) == parse_network_config(EXAMPLE)


def test_subnet_size() -> None:
    assert parse_network_config(config_text()).subnet_size == 256
    assert parse_network_config(config_text(SubnetLen=28)).subnet_size == 16


# --- keys are matched like Go's encoding/json ----------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"Network": "10.5.0.0/16", "SubnetLen": 25, "Backend": {"Type": "vxlan"}}',
        '{"network": "10.5.0.0/16", "subnetlen": 25, "backend": {"type": "vxlan"}}',
        '{"NETWORK": "10.5.0.0/16", "SUBNETLEN": 25, "BACKEND": {"TYPE": "vxlan"}}',
        '{"nEtWoRk": "10.5.0.0/16", "subnetLen": 25, "bAcKeNd": {"tYpE": "vxlan"}}',
    ],
)
def test_keys_are_case_insensitive(text: str) -> None:
    config = parse_network_config(text)
    assert config.network == IPv4Network("10.5.0.0/16")
    assert config.subnet_len == 25
    assert config.subnet_min == IPv4Address("10.5.0.128")
    assert config.subnet_max == IPv4Address("10.5.255.128")
    assert config.backend.type == "vxlan"


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ('{"Network": "10.1.0.0/16", "network": "10.2.0.0/16"}', "10.2.0.0/16"),
        ('{"network": "10.1.0.0/16", "Network": "10.2.0.0/16"}', "10.2.0.0/16"),
        (
            '{"NETWORK": "10.1.0.0/16", "Network": "10.2.0.0/16", "network": "10.3.0.0/16"}',
            "10.3.0.0/16",
        ),
        ('{"Network": "10.1.0.0/16", "Network": "10.2.0.0/16"}', "10.2.0.0/16"),
    ],
)
def test_later_duplicate_key_wins(text: str, network: str) -> None:
    assert parse_network_config(text).network == IPv4Network(network)


def test_later_duplicate_subnet_len_wins() -> None:
    text = '{"Network": "10.5.0.0/16", "SubnetLen": 20, "subnetlen": 26}'
    assert parse_network_config(text).subnet_len == 26


def test_unknown_keys_are_ignored() -> None:
    text = config_text(Foo=1, Bar={"x": [1, 2, 3]}, Baz="qux", Nested={"Network": "192.168.0.0/16"})
    assert parse_network_config(text) == parse_network_config(config_text())


# --- Backend ---------------------------------------------------------------------------


def test_missing_backend_is_udp() -> None:
    backend = parse_network_config(config_text()).backend
    assert backend == BackendSpec("udp", {})
    assert backend.type == "udp"
    assert dict(backend.options) == {}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("vxlan", "vxlan"),
        ("VXLAN", "vxlan"),
        ("VxLaN", "vxlan"),
        ("host-gw", "host-gw"),
        ("Host-GW", "host-gw"),
        ("UDP", "udp"),
    ],
)
def test_backend_type_is_lower_cased(given: str, expected: str) -> None:
    config = parse_network_config(config_text(Backend={"Type": given}))
    assert config.backend.type == expected


def test_backend_options_are_kept_as_given() -> None:
    config = parse_network_config(config_text(Backend={"Type": "VXLAN", "VNI": 4, "Port": 4789}))
    assert dict(config.backend.options) == {"Type": "VXLAN", "VNI": 4, "Port": 4789}


@pytest.mark.parametrize(
    "backend",
    [
        {},
        {"VNI": 1},
        {"Type": ""},
        {"Type": None},
        {"Type": 1},
        {"Type": ["vxlan"]},
        {"Kind": "vxlan"},
    ],
)
def test_backend_without_type_is_an_error(backend: dict[str, Any]) -> None:
    message = config_error(config_text(Backend=backend))
    assert "Backend" in message
    assert "Type" in message


@pytest.mark.parametrize("backend", ['"vxlan"', "1", "[]", '["vxlan"]', "true", "null"])
def test_backend_not_an_object_is_an_error(backend: str) -> None:
    message = config_error('{"Network": "10.5.0.0/16", "Backend": ' + backend + "}")
    assert "Backend" in message


@pytest.mark.parametrize(
    ("options", "name", "expected"),
    [
        ({"Type": "vxlan", "VNI": 4}, "VNI", 4),
        ({"Type": "vxlan", "VNI": 4}, "vni", 4),
        ({"Type": "vxlan", "VNI": 4}, "Vni", 4),
        ({"Type": "vxlan", "vni": 4}, "VNI", 4),
        ({"Type": "vxlan", "VNI": 4, "vni": 7}, "VNI", 7),
        ({"Type": "vxlan", "vni": 7, "VNI": 4}, "vni", 4),
        ({"Type": "vxlan", "DirectRouting": True}, "directrouting", True),
        ({"Type": "vxlan", "VNI": 0}, "VNI", 0),
        ({"Type": "vxlan"}, "Type", "vxlan"),
    ],
)
def test_backend_option_is_case_insensitive(
    options: dict[str, Any], name: str, expected: object
) -> None:
    assert BackendSpec("vxlan", options).option(name) == expected


def test_backend_option_default() -> None:
    spec = BackendSpec("vxlan", {"Type": "vxlan", "VNI": 1})
    assert spec.option("Port") is None
    assert spec.option("Port", 8472) == 8472
    assert spec.option("VNI", 99) == 1
    assert BackendSpec("udp").option("Port", 8285) == 8285


def test_backend_option_through_parse() -> None:
    text = '{"Network": "10.5.0.0/16", "Backend": {"type": "vxlan", "vni": 3, "PORT": 4789}}'
    backend = parse_network_config(text).backend
    assert backend.option("VNI") == 3
    assert backend.option("Port") == 4789
    assert backend.option("MTU") is None


# --- SubnetLen, SubnetMin, SubnetMax -----------------------------------------------------

DEFAULT_RANGES: Final[list[tuple[str, int, str, str]]] = [
    # Network, SubnetLen, SubnetMin, SubnetMax
    ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0"),
    ("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0"),
    ("10.5.0.0/20", 24, "10.5.1.0", "10.5.15.0"),
    ("10.5.0.0/22", 24, "10.5.1.0", "10.5.3.0"),
    ("10.5.0.0/23", 25, "10.5.0.128", "10.5.1.128"),
    ("10.5.0.0/24", 26, "10.5.0.64", "10.5.0.192"),
    ("10.5.0.0/26", 28, "10.5.0.16", "10.5.0.48"),
    ("10.5.0.0/28", 30, "10.5.0.4", "10.5.0.12"),
    ("10.5.0.16/28", 30, "10.5.0.20", "10.5.0.28"),
    ("10.5.1.7/16", 24, "10.5.1.0", "10.5.255.0"),  # host bits are masked, as net.ParseCIDR
]


@pytest.mark.parametrize(("network", "subnet_len", "subnet_min", "subnet_max"), DEFAULT_RANGES)
def test_subnet_len_and_range_defaults(
    network: str, subnet_len: int, subnet_min: str, subnet_max: str
) -> None:
    config = parse_network_config(config_text(Network=network))
    assert config.network == IPv4Network(network, strict=False)
    assert config.subnet_len == subnet_len
    assert config.subnet_min == IPv4Address(subnet_min)
    assert config.subnet_max == IPv4Address(subnet_max)


def test_subnet_len_zero_means_default() -> None:
    assert parse_network_config(config_text(Network="10.5.0.0/23", SubnetLen=0)).subnet_len == 25


@pytest.mark.parametrize("network", ["10.5.0.0/29", "10.5.0.0/30", "10.5.0.0/31", "10.5.0.1/32"])
def test_network_too_small_without_subnet_len(network: str) -> None:
    assert "Network" in config_error(config_text(Network=network))


@pytest.mark.parametrize(
    ("network", "subnet_len", "subnet_min", "subnet_max"),
    [
        ("10.5.0.0/16", 18, "10.5.64.0", "10.5.192.0"),
        ("10.5.0.0/16", 20, "10.5.16.0", "10.5.240.0"),
        ("10.5.0.0/16", 26, "10.5.0.64", "10.5.255.192"),
        ("10.5.0.0/16", 30, "10.5.0.4", "10.5.255.252"),
        ("10.0.0.0/8", 16, "10.1.0.0", "10.255.0.0"),
        ("10.5.0.0/28", 30, "10.5.0.4", "10.5.0.12"),
        ("10.5.0.0/22", 25, "10.5.0.128", "10.5.3.128"),
    ],
)
def test_explicit_subnet_len(
    network: str, subnet_len: int, subnet_min: str, subnet_max: str
) -> None:
    config = parse_network_config(config_text(Network=network, SubnetLen=subnet_len))
    assert config.subnet_len == subnet_len
    assert config.subnet_min == IPv4Address(subnet_min)
    assert config.subnet_max == IPv4Address(subnet_max)


@pytest.mark.parametrize(
    ("network", "subnet_len"),
    [
        ("10.5.0.0/16", 31),  # > 30
        ("10.5.0.0/16", 32),
        ("10.5.0.0/16", 33),
        ("10.5.0.0/16", 17),  # < prefix + 2
        ("10.5.0.0/16", 16),
        ("10.5.0.0/16", 8),
        ("10.5.0.0/28", 29),
        ("10.5.0.0/29", 30),
        ("10.5.0.0/29", 31),
    ],
)
def test_explicit_subnet_len_limits(network: str, subnet_len: int) -> None:
    assert "SubnetLen" in config_error(config_text(Network=network, SubnetLen=subnet_len))


def test_explicit_subnet_min_and_max() -> None:
    config = parse_network_config(config_text(SubnetMin="10.5.10.0", SubnetMax="10.5.20.0"))
    assert config.subnet_min == IPv4Address("10.5.10.0")
    assert config.subnet_max == IPv4Address("10.5.20.0")
    assert config.subnet_len == 24


def test_explicit_subnet_min_and_max_with_subnet_len() -> None:
    config = parse_network_config(
        config_text(SubnetLen=26, SubnetMin="10.5.1.64", SubnetMax="10.5.2.192")
    )
    assert config.subnet_min == IPv4Address("10.5.1.64")
    assert config.subnet_max == IPv4Address("10.5.2.192")


def test_subnet_min_may_be_the_first_subnet() -> None:
    config = parse_network_config(config_text(SubnetMin="10.5.0.0"))
    assert config.subnet_min == IPv4Address("10.5.0.0")
    assert config.subnet_max == IPv4Address("10.5.255.0")


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"SubnetMin": "10.6.0.0"}, "SubnetMin"),  # outside Network
        ({"SubnetMin": "10.4.255.0"}, "SubnetMin"),
        ({"SubnetMin": "192.168.1.0"}, "SubnetMin"),
        ({"SubnetMax": "10.6.0.0"}, "SubnetMax"),
        ({"SubnetMax": "10.4.255.0"}, "SubnetMax"),
        ({"SubnetMin": "10.5.1.1"}, "SubnetMin"),  # not aligned
        ({"SubnetMin": "10.5.1.128"}, "SubnetMin"),
        ({"SubnetMax": "10.5.255.255"}, "SubnetMax"),
        ({"SubnetMax": "10.5.200.1"}, "SubnetMax"),
        ({"SubnetLen": 26, "SubnetMin": "10.5.1.32"}, "SubnetMin"),
        ({"SubnetLen": 26, "SubnetMax": "10.5.1.96"}, "SubnetMax"),
        ({"SubnetMin": "not-an-ip"}, "SubnetMin"),  # not an address
        ({"SubnetMin": "10.5.1.0/24"}, "SubnetMin"),
        ({"SubnetMax": "10.5.256.0"}, "SubnetMax"),
        ({"SubnetMax": "fc00::"}, "SubnetMax"),
        ({"SubnetMin": 167051520}, "SubnetMin"),  # a number, not a string
        ({"SubnetMax": ["10.5.2.0"]}, "SubnetMax"),
        ({"SubnetMin": "10.5.20.0", "SubnetMax": "10.5.10.0"}, "SubnetMin"),  # min above max
    ],
)
def test_subnet_min_max_errors(fields: dict[str, Any], name: str) -> None:
    assert name in config_error(config_text(**fields))


# --- wrong JSON types, not JSON, not an object ----------------------------------------------


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"SubnetLen": "24"}, "SubnetLen"),
        ({"SubnetLen": True}, "SubnetLen"),
        ({"SubnetLen": False}, "SubnetLen"),
        ({"SubnetLen": 24.5}, "SubnetLen"),
        ({"SubnetLen": 24.0}, "SubnetLen"),
        ({"SubnetLen": -1}, "SubnetLen"),
        ({"SubnetLen": [24]}, "SubnetLen"),
        ({"SubnetLen": {"len": 24}}, "SubnetLen"),
        ({"Network": 10}, "Network"),
        ({"Network": 167051264}, "Network"),
        ({"Network": True}, "Network"),
        ({"Network": ["10.5.0.0/16"]}, "Network"),
        ({"Network": {"IP": "10.5.0.0", "PrefixLen": 16}}, "Network"),
        ({"Network": "10.5.0.0/33"}, "Network"),
        ({"Network": "10.5.0/16"}, "Network"),
        ({"Network": "fc00::/48"}, "Network"),
        ({"Network": "ten.five.0.0/16"}, "Network"),
        ({"Network": None}, "Network"),  # missing
        ({"Network": ""}, "Network"),
        ({"EnableIPv4": "true"}, "EnableIPv4"),
        ({"EnableIPv4": 1}, "EnableIPv4"),
        ({"EnableIPv6": "yes"}, "EnableIPv6"),
        ({"EnableIPv6": 1}, "EnableIPv6"),
        ({"EnableNFTables": "true"}, "EnableNFTables"),
        ({"EnableIPv6": True, "IPv6Network": "fc00::/48", "IPv6SubnetLen": "64"}, "IPv6SubnetLen"),
        ({"EnableIPv6": True, "IPv6Network": "fc00::/48", "IPv6SubnetLen": True}, "IPv6SubnetLen"),
        ({"EnableIPv6": True, "IPv6Network": 64}, "IPv6Network"),
    ],
)
def test_wrong_json_types(fields: dict[str, Any], name: str) -> None:
    assert name in config_error(config_text(**fields))


def test_network_missing_from_empty_object() -> None:
    assert "Network" in config_error("{}")


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "{",
        '{"Network": "10.5.0.0/16"',
        '{"Network": "10.5.0.0/16",}',
        "{'Network': '10.5.0.0/16'}",
        "Network: 10.5.0.0/16",
        "Network=10.5.0.0/16",
        '{"Network": "10.5.0.0/16"} trailing',
        '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "VNI": NaN}}',  # not JSON
        '{"Network": "10.5.0.0/16", "Foo": -Infinity}',
        b"\xff\xfe\xfd",
        b'{"Network": "\xff"}',
    ],
)
def test_not_json_is_an_error(text: str | bytes) -> None:
    assert "JSON" in config_error(text)


@pytest.mark.parametrize(
    "text", ["[]", '[{"Network": "10.5.0.0/16"}]', "null", "42", "true", '"10.5.0.0/16"']
)
def test_non_object_json_is_an_error(text: str) -> None:
    assert "object" in config_error(text)


# --- flags and IPv6 ----------------------------------------------------------------------


def test_enable_flags() -> None:
    config = parse_network_config(config_text(EnableIPv4=True, EnableNFTables=True))
    assert config.enable_ipv4 is True
    assert config.enable_nftables is True
    assert config.enable_ipv6 is False
    defaults = parse_network_config(config_text())
    assert defaults.enable_ipv4 is True
    assert defaults.enable_nftables is False


def test_ipv6_fields_ignored_unless_enabled() -> None:
    config = parse_network_config(config_text(IPv6Network="fc00::/48", IPv6SubnetLen=64))
    assert config.enable_ipv6 is False
    assert config.ipv6_network is None
    assert config.ipv6_subnet_len == 0
    assert config.ipv6_subnet_min is None
    assert config.ipv6_subnet_max is None


@pytest.mark.parametrize(
    ("network6", "subnet_len6", "min6", "max6"),
    [
        ("fc00::/48", 64, "fc00:0:0:1::", "fc00:0:0:ffff::"),
        ("fc00::/56", 64, "fc00:0:0:1::", "fc00:0:0:ff::"),
        ("fc00::/62", 64, "fc00:0:0:1::", "fc00:0:0:3::"),
        ("fc00::/63", 65, "fc00:0:0:0:8000::", "fc00:0:0:1:8000::"),
        ("fc00::/64", 66, "fc00::4000:0:0:0", "fc00::c000:0:0:0"),
        ("fc00::/124", 126, "fc00::4", "fc00::c"),
    ],
)
def test_ipv6_defaults(network6: str, subnet_len6: int, min6: str, max6: str) -> None:
    config = parse_network_config(config_text(EnableIPv6=True, IPv6Network=network6))
    assert config.enable_ipv4 is True
    assert config.enable_ipv6 is True
    assert config.ipv6_network == IPv6Network(network6)
    assert config.ipv6_subnet_len == subnet_len6
    assert config.ipv6_subnet_min == IPv6Address(min6)
    assert config.ipv6_subnet_max == IPv6Address(max6)
    # the IPv4 side is unchanged
    assert config.network == IPv4Network("10.5.0.0/16")
    assert config.subnet_len == 24


def test_ipv6_keys_are_case_insensitive() -> None:
    text = (
        '{"network": "10.5.0.0/16", "enableipv6": true, "ipv6network": "fc00::/48", '
        '"IPV6SUBNETLEN": 80, "ipv6subnetmin": "fc00:0:0:1::", "Ipv6SubnetMax": "fc00:0:0:2::"}'
    )
    config = parse_network_config(text)
    assert config.enable_ipv6 is True
    assert config.ipv6_network == IPv6Network("fc00::/48")
    assert config.ipv6_subnet_len == 80
    assert config.ipv6_subnet_min == IPv6Address("fc00:0:0:1::")
    assert config.ipv6_subnet_max == IPv6Address("fc00:0:0:2::")


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({}, "IPv6Network"),  # EnableIPv6 without IPv6Network
        ({"IPv6Network": ""}, "IPv6Network"),
        ({"IPv6Network": "10.0.0.0/8"}, "IPv6Network"),
        ({"IPv6Network": "fc00::/129"}, "IPv6Network"),
        ({"IPv6Network": "fc00::/125"}, "IPv6Network"),  # too small, no IPv6SubnetLen
        ({"IPv6Network": "fc00::/48", "IPv6SubnetLen": 127}, "IPv6SubnetLen"),
        ({"IPv6Network": "fc00::/48", "IPv6SubnetLen": 128}, "IPv6SubnetLen"),
        ({"IPv6Network": "fc00::/48", "IPv6SubnetLen": 49}, "IPv6SubnetLen"),
        ({"IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc01::"}, "IPv6SubnetMin"),
        ({"IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::1"}, "IPv6SubnetMin"),
        ({"IPv6Network": "fc00::/48", "IPv6SubnetMin": "bogus"}, "IPv6SubnetMin"),
        ({"IPv6Network": "fc00::/48", "IPv6SubnetMax": "fc01::"}, "IPv6SubnetMax"),
        ({"IPv6Network": "fc00::/48", "IPv6SubnetMax": "fc00:0:0:1:8000::"}, "IPv6SubnetMax"),
        ({"IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:20::",  # min above max
          "IPv6SubnetMax": "fc00:0:0:10::"}, "IPv6SubnetMin fc00:0:0:20:: is above"),
    ],
)
def test_ipv6_errors(fields: dict[str, Any], name: str) -> None:
    assert name in config_error(config_text(EnableIPv6=True, **fields))


# --- NetworkConfig.fits -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [
        ("10.5.1.0/24", True),
        ("10.5.34.0/24", True),
        ("10.5.255.0/24", True),
        ("10.5.0.0/24", False),  # the first subnet is skipped
        ("10.5.34.0/25", False),  # wrong length
        ("10.5.34.128/25", False),
        ("10.5.34.0/23", False),
        ("10.5.0.0/16", False),
        ("10.6.0.0/24", False),  # outside Network
        ("10.4.255.0/24", False),
        ("192.168.1.0/24", False),
    ],
)
def test_fits_default_range(subnet: str, expected: bool) -> None:
    assert parse_network_config(EXAMPLE).fits(IPv4Network(subnet)) is expected


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [
        ("10.5.9.0/24", False),
        ("10.5.10.0/24", True),
        ("10.5.15.0/24", True),
        ("10.5.20.0/24", True),
        ("10.5.21.0/24", False),
        ("10.5.255.0/24", False),
    ],
)
def test_fits_explicit_range(subnet: str, expected: bool) -> None:
    config = parse_network_config(config_text(SubnetMin="10.5.10.0", SubnetMax="10.5.20.0"))
    assert config.fits(IPv4Network(subnet)) is expected


# --- only ConfigError, whatever the input -------------------------------------------------


def test_mutated_configs_only_parse_or_raise_config_error() -> None:
    rng = random.Random(1234)
    seeds = [
        EXAMPLE.encode(),
        config_text(SubnetLen=26, SubnetMin="10.5.1.64", SubnetMax="10.5.2.192").encode(),
        config_text(EnableIPv6=True, IPv6Network="fc00::/48", Backend={"Type": "host-gw"}).encode(),
    ]
    parsed = 0
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            action = rng.randrange(3)
            pos = rng.randrange(len(data) + 1)
            if action == 0 and pos < len(data):
                data[pos] = rng.randrange(256)
            elif action == 1:
                data.insert(pos, rng.choice(b'{}[]",:0123456789-./aefnrtu '))
            elif pos < len(data):
                del data[pos]
        try:
            config = parse_network_config(bytes(data))
        except ConfigError:
            continue
        parsed += 1
        assert config.subnet_min <= config.subnet_max
        assert config.subnet_min in config.network
        assert config.subnet_max in config.network
        assert config.subnet_len <= 30
    assert parsed > 0


def test_ipv6_only_is_refused_with_one_line() -> None:
    message = config_error(config_text(EnableIPv4=False, EnableIPv6=True,
                                       IPv6Network="fc00:5::/48"))
    assert "EnableIPv4 false (an IPv6-only network) is not supported" in message
    assert "\n" not in message


def test_ipv6_subnet_size() -> None:
    config = parse_network_config(config_text(EnableIPv6=True, IPv6Network="fc00:5::/120"))
    assert config.ipv6_subnet_len == 122 and config.ipv6_subnet_size == 64
    assert parse_network_config(config_text()).ipv6_subnet_size == 0
