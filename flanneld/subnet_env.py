"""subnet.env: flannel's hand-off file to Docker and friends, formatted and parsed as
flannel writes it. Pure; flanneld/files.py writes it (atomically).
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from typing import Final

from lease.errors import DecodeError

DEFAULT_SUBNET_FILE: Final = "/run/flannel/subnet.env"  # flannel's -subnet-file default


def format_subnet_env(
    network: IPv4Network,
    subnet: IPv4Network,
    mtu: int,
    ip_masq: bool,
    ipv6_network: IPv6Network | None = None,
    ipv6_subnet: IPv6Network | None = None,
) -> str:
    """flannel's WriteSubnetFile, byte for byte: FLANNEL_SUBNET is the first usable address
    with the subnet's prefix length (what `dockerd --bip` wants)."""
    lines = [
        f"FLANNEL_NETWORK={network}",
        f"FLANNEL_SUBNET={subnet.network_address + 1}/{subnet.prefixlen}",
    ]
    if ipv6_network is not None and ipv6_subnet is not None:
        lines.append(f"FLANNEL_IPV6_NETWORK={ipv6_network}")
        first6 = ipv6_subnet.network_address + 1
        lines.append(f"FLANNEL_IPV6_SUBNET={first6}/{ipv6_subnet.prefixlen}")
    lines.append(f"FLANNEL_MTU={mtu}")
    lines.append(f"FLANNEL_IPMASQ={'true' if ip_masq else 'false'}")
    return "\n".join(lines) + "\n"


def parse_subnet_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments skipped); DecodeError on anything else."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise DecodeError(f"subnet.env line {number}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def previous_subnet(values: Mapping[str, str]) -> IPv4Network | None:
    """The subnet a previous run held (the hint for allocation), if the file names one."""
    text = values.get("FLANNEL_SUBNET")
    if not text:
        return None
    try:
        return IPv4Interface(text).network
    except ValueError:
        raise DecodeError(f"subnet.env: FLANNEL_SUBNET={text!r} is not an IPv4 CIDR") from None


def previous_ipv6_subnet(values: Mapping[str, str]) -> IPv6Network | None:
    text = values.get("FLANNEL_IPV6_SUBNET")
    if not text:
        return None
    try:
        return IPv6Interface(text).network
    except ValueError:
        raise DecodeError(f"subnet.env: FLANNEL_IPV6_SUBNET={text!r} is not an IPv6 CIDR") from None
