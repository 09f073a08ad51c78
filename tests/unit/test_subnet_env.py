"""Tests for flanneld/subnet_env.py: flannel's subnet.env, byte-exact."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flanneld.subnet_env import (
    format_subnet_env,
    parse_subnet_env,
    previous_ipv6_subnet,
    previous_subnet,
)
from lease.errors import DecodeError

FLANNEL_EXAMPLE: Final = (
    "FLANNEL_NETWORK=10.5.0.0/16\n"
    "FLANNEL_SUBNET=10.5.72.1/24\n"
    "FLANNEL_MTU=1450\n"
    "FLANNEL_IPMASQ=false\n"
)

# (network, subnet, mtu, ip_masq, ipv6 network, ipv6 subnet, exact file text)
VECTORS: Final = [
    pytest.param(
        "10.5.0.0/16", "10.5.72.0/24", 1450, False, None, None, FLANNEL_EXAMPLE,
        id="flannel-md-example",
    ),
    pytest.param(
        "10.244.0.0/16", "10.244.1.0/24", 1500, True, None, None,
        "FLANNEL_NETWORK=10.244.0.0/16\n"
        "FLANNEL_SUBNET=10.244.1.1/24\n"
        "FLANNEL_MTU=1500\n"
        "FLANNEL_IPMASQ=true\n",
        id="k8s-masq",
    ),
    pytest.param(
        "10.0.0.0/8", "10.17.3.16/28", 8951, False, None, None,
        "FLANNEL_NETWORK=10.0.0.0/8\n"
        "FLANNEL_SUBNET=10.17.3.17/28\n"
        "FLANNEL_MTU=8951\n"
        "FLANNEL_IPMASQ=false\n",
        id="small-subnet",
    ),
    pytest.param(
        "10.5.0.0/16", "10.5.72.0/24", 1450, True, "fd00:10:5::/48", "fd00:10:5:48::/64",
        "FLANNEL_NETWORK=10.5.0.0/16\n"
        "FLANNEL_SUBNET=10.5.72.1/24\n"
        "FLANNEL_IPV6_NETWORK=fd00:10:5::/48\n"
        "FLANNEL_IPV6_SUBNET=fd00:10:5:48::1/64\n"
        "FLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=true\n",
        id="dual-stack",
    ),
]


def v6(text: str | None) -> IPv6Network | None:
    return None if text is None else IPv6Network(text)


# --- the vector table, both directions ---------------------------------------------------


@pytest.mark.parametrize(
    ("network", "subnet", "mtu", "ip_masq", "network6", "subnet6", "expected"), VECTORS
)
def test_format_is_byte_exact(network: str, subnet: str, mtu: int, ip_masq: bool,
                              network6: str | None, subnet6: str | None,
                              expected: str) -> None:
    text = format_subnet_env(IPv4Network(network), IPv4Network(subnet), mtu, ip_masq,
                             v6(network6), v6(subnet6))
    assert text == expected
    assert text.encode("ascii") == expected.encode("ascii")


@pytest.mark.parametrize(
    ("network", "subnet", "mtu", "ip_masq", "network6", "subnet6", "expected"), VECTORS
)
def test_parse_reads_the_vector_back(network: str, subnet: str, mtu: int, ip_masq: bool,
                                     network6: str | None, subnet6: str | None,
                                     expected: str) -> None:
    values = parse_subnet_env(expected)
    assert values["FLANNEL_NETWORK"] == network
    assert values["FLANNEL_MTU"] == str(mtu)
    assert values["FLANNEL_IPMASQ"] == ("true" if ip_masq else "false")
    assert previous_subnet(values) == IPv4Network(subnet)
    assert previous_ipv6_subnet(values) == v6(subnet6)
    if network6 is None:
        assert "FLANNEL_IPV6_NETWORK" not in values
    else:
        assert values["FLANNEL_IPV6_NETWORK"] == network6


@pytest.mark.parametrize(
    ("network", "subnet", "mtu", "ip_masq", "network6", "subnet6", "expected"), VECTORS
)
def test_format_then_parse_round_trips(network: str, subnet: str, mtu: int, ip_masq: bool,
                                       network6: str | None, subnet6: str | None,
                                       expected: str) -> None:
    text = format_subnet_env(IPv4Network(network), IPv4Network(subnet), mtu, ip_masq,
                             v6(network6), v6(subnet6))
    values = parse_subnet_env(text)
    assert previous_subnet(values) == IPv4Network(subnet)
    assert previous_ipv6_subnet(values) == v6(subnet6)
    expected_keys = ["FLANNEL_NETWORK", "FLANNEL_SUBNET"]
    if network6 is not None:
        expected_keys += ["FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET"]
    expected_keys += ["FLANNEL_MTU", "FLANNEL_IPMASQ"]
    assert list(values) == expected_keys


def test_ipv6_lines_sit_between_subnet_and_mtu() -> None:
    text = format_subnet_env(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.72.0/24"), 1450,
                             False, IPv6Network("2001:db8::/56"), IPv6Network("2001:db8:0:7::/64"))
    keys = [line.partition("=")[0] for line in text.splitlines()]
    assert keys == ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK",
                    "FLANNEL_IPV6_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"]
    assert "FLANNEL_IPV6_SUBNET=2001:db8:0:7::1/64\n" in text


@given(
    st.integers(0, 2**32 - 1), st.integers(8, 30), st.integers(576, 9000), st.booleans()
)
def test_round_trip_for_any_ipv4_subnet(address: int, prefixlen: int, mtu: int,
                                         ip_masq: bool) -> None:
    subnet = IPv4Network((address, prefixlen), strict=False)
    network = subnet.supernet(new_prefix=max(prefixlen - 8, 0))
    values = parse_subnet_env(format_subnet_env(network, subnet, mtu, ip_masq))
    assert previous_subnet(values) == subnet
    assert values["FLANNEL_NETWORK"] == str(network)
    assert values["FLANNEL_MTU"] == str(mtu)
    assert values["FLANNEL_IPMASQ"] == ("true" if ip_masq else "false")


# --- parse --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("\n\n   \n", {}),
        ("# written by flanneld\n", {}),
        ("# comment\n\nFLANNEL_MTU=1450\n   # indented comment\n\n", {"FLANNEL_MTU": "1450"}),
        ('FLANNEL_SUBNET="10.5.72.1/24"\n', {"FLANNEL_SUBNET": "10.5.72.1/24"}),
        ('FLANNEL_MTU="1450"\nFLANNEL_IPMASQ="false"', {"FLANNEL_MTU": "1450",
                                                        "FLANNEL_IPMASQ": "false"}),
        ("FLANNEL_MTU=1450\r\nFLANNEL_IPMASQ=true\r\n", {"FLANNEL_MTU": "1450",
                                                         "FLANNEL_IPMASQ": "true"}),
        ("FLANNEL_MTU=1450", {"FLANNEL_MTU": "1450"}),
        ("KEY=a=b\n", {"KEY": "a=b"}),
        ("FLANNEL_SUBNET=\n", {"FLANNEL_SUBNET": ""}),
    ],
    ids=["empty", "blank-lines", "comment-only", "comments-and-blanks", "double-quoted",
         "several-quoted", "crlf", "no-final-newline", "equals-in-value", "empty-value"],
)
def test_parse(text: str, expected: dict[str, str]) -> None:
    assert parse_subnet_env(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "garbage\n",
        "FLANNEL_SUBNET\n",
        "=10.5.72.1/24\n",
        "   =x\n",
        FLANNEL_EXAMPLE + "not a line\n",
        "FLANNEL_MTU=1450\n\x00\x01\x02\n",
    ],
    ids=["word", "key-only", "no-key", "blank-key", "trailing-garbage", "binary"],
)
def test_parse_garbage_raises_decode_error(text: str) -> None:
    with pytest.raises(DecodeError):
        parse_subnet_env(text)


def test_decode_error_names_the_line() -> None:
    with pytest.raises(DecodeError, match="line 5"):
        parse_subnet_env(FLANNEL_EXAMPLE + "not a line\n")


# --- previous subnet (the allocation hint) -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.5.72.1/24", "10.5.72.0/24"),
        ("10.5.72.0/24", "10.5.72.0/24"),
        ("172.16.3.129/25", "172.16.3.128/25"),
        ("10.17.3.17/28", "10.17.3.16/28"),
    ],
)
def test_previous_subnet_is_the_masked_network(value: str, expected: str) -> None:
    assert previous_subnet({"FLANNEL_SUBNET": value}) == IPv4Network(expected)


def test_previous_subnet_from_flannel_md_example() -> None:
    assert previous_subnet(parse_subnet_env(FLANNEL_EXAMPLE)) == IPv4Network("10.5.72.0/24")


@pytest.mark.parametrize("values", [{}, {"FLANNEL_SUBNET": ""}, {"FLANNEL_NETWORK": "10.5.0.0/16"}])
def test_no_previous_subnet(values: dict[str, str]) -> None:
    assert previous_subnet(values) is None


@pytest.mark.parametrize(
    "value", ["garbage", "10.5.72.1/33", "300.1.1.1/24", "10.5.72.1/", "fd00::1/64", "10.5/24",
              "10.5.72.1/24/8"],
)
def test_bad_previous_subnet_raises_decode_error(value: str) -> None:
    with pytest.raises(DecodeError):
        previous_subnet({"FLANNEL_SUBNET": value})


def test_bad_subnet_in_file_raises_decode_error() -> None:
    text = FLANNEL_EXAMPLE.replace("10.5.72.1/24", "10.5.72.1/99")
    with pytest.raises(DecodeError):
        previous_subnet(parse_subnet_env(text))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fd00:10:5:48::1/64", "fd00:10:5:48::/64"),
        ("2001:db8:0:7::/64", "2001:db8:0:7::/64"),
        ("2001:db8::1:2:3:4/80", "2001:db8::1:0:0:0/80"),
    ],
)
def test_previous_ipv6_subnet_is_the_masked_network(value: str, expected: str) -> None:
    assert previous_ipv6_subnet({"FLANNEL_IPV6_SUBNET": value}) == IPv6Network(expected)


@pytest.mark.parametrize("values", [{}, {"FLANNEL_IPV6_SUBNET": ""},
                                    {"FLANNEL_SUBNET": "10.5.72.1/24"}])
def test_no_previous_ipv6_subnet(values: dict[str, str]) -> None:
    assert previous_ipv6_subnet(values) is None


@pytest.mark.parametrize("value", ["garbage", "10.5.72.1/24", "fd00::1/129", "zz::1/64",
                                   "fd00::1/"])
def test_bad_previous_ipv6_subnet_raises_decode_error(value: str) -> None:
    with pytest.raises(DecodeError):
        previous_ipv6_subnet({"FLANNEL_IPV6_SUBNET": value})


# --- any text: parsed or DecodeError, nothing else ------------------------------------------

KEYS: Final = (
    "FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET",
    "FLANNEL_MTU", "FLANNEL_IPMASQ",
)
SUBNET_KEYS: Final = ("FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET")


def env_line(key: str, value: str) -> str:
    return f"{key}={value}"


def cidr(address: object, prefixlen: int) -> str:
    return f"{address}/{prefixlen}"


ADDRESSISH: Final = st.one_of(
    st.builds(cidr, st.ip_addresses(), st.integers(-2, 200)),
    st.text(alphabet="0123456789abcdefABCDEF:./%-\" ", max_size=40),
    st.text(max_size=40),
)
LINE: Final = st.one_of(
    st.text(max_size=60),
    st.builds(env_line, st.sampled_from(KEYS), st.text(max_size=40)),
    st.builds(env_line, st.sampled_from(SUBNET_KEYS), ADDRESSISH),
    st.sampled_from(["", "#", "# c", "=", "==", '"', "\r", "\x00", "\u2028", "\x85"]),
)
ANY_TEXT: Final = st.one_of(st.text(max_size=200), st.lists(LINE, max_size=10).map("\n".join))


@settings(max_examples=3000, deadline=None)
@given(ANY_TEXT)
def test_any_text_parses_or_raises_decode_error(text: str) -> None:
    try:
        values = parse_subnet_env(text)
        network = previous_subnet(values)
        network6 = previous_ipv6_subnet(values)
    except DecodeError:
        return
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in values.items())
    assert network is None or isinstance(network, IPv4Network)
    assert network6 is None or isinstance(network6, IPv6Network)
