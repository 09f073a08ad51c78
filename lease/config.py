"""Network config (`<prefix>/config`), parsed and validated exactly like flannel.

Pure: no I/O. flannel decodes the JSON with Go's encoding/json, so keys match
case-insensitively, unknown keys are ignored and a later duplicate wins. Defaults and
limits follow Go flannel's subnet config; every error names the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Final

from lease.errors import ConfigError, FlannelError

DEFAULT_BACKEND: Final = "udp"


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """`Backend` object: the lower-cased type and all options as given (keys untouched)."""

    type: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, name: str, default: Any = None) -> Any:
        """An option matched case-insensitively like Go's JSON decoder (last one wins)."""
        return fold_keys(self.options).get(name.lower(), default)


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Address
    subnet_max: IPv4Address
    backend: BackendSpec
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    ipv6_network: IPv6Network | None = None
    ipv6_subnet_len: int = 0
    ipv6_subnet_min: IPv6Address | None = None
    ipv6_subnet_max: IPv6Address | None = None
    enable_nftables: bool = False

    @property
    def subnet_size(self) -> int:
        return 1 << (32 - self.subnet_len)

    @property
    def ipv6_subnet_size(self) -> int:
        return 1 << (128 - self.ipv6_subnet_len) if self.enable_ipv6 else 0

    def fits(self, subnet: IPv4Network) -> bool:
        """flannel's isSubnetConfigCompat: inside [SubnetMin, SubnetMax] with SubnetLen."""
        return (
            subnet.prefixlen == self.subnet_len
            and self.subnet_min <= subnet.network_address <= self.subnet_max
        )

    def fits6(self, subnet: IPv6Network | None) -> bool:
        """flannel's isIPv6SubnetConfigCompat: without EnableIPv6 a lease must have no IPv6
        subnet; with it, one inside [IPv6SubnetMin, IPv6SubnetMax] with IPv6SubnetLen."""
        if not self.enable_ipv6:
            return subnet is None
        assert self.ipv6_subnet_min is not None and self.ipv6_subnet_max is not None
        return (
            subnet is not None
            and subnet.prefixlen == self.ipv6_subnet_len
            and self.ipv6_subnet_min <= subnet.network_address <= self.ipv6_subnet_max
        )

    def fits_both(self, subnet: IPv4Network, subnet6: IPv6Network | None) -> bool:
        return self.fits(subnet) and self.fits6(subnet6)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a float")
    return value


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def loads_strict(text: str | bytes) -> Any:
    """json.loads as Go reads JSON: UTF-8 only, NaN/Infinity rejected (also numbers that
    overflow to infinity, which could not be written back as JSON), lone surrogates
    rejected.

    Raises ValueError (json.JSONDecodeError or UnicodeError are ValueErrors too)."""
    if isinstance(text, bytes):
        text = text.decode()  # strict UTF-8: no surrogates in what it gives
    try:
        value = _DECODER.decode(text)
        if "\\u" in text or not text.isascii():  # a lone surrogate cannot be re-encoded
            json.dumps(value, ensure_ascii=False).encode()
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return value


def fold_keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Lower-case the keys of a JSON object; a later duplicate wins, as in Go."""
    return {str(k).lower(): v for k, v in obj.items()}


def json_object(text: str | bytes, what: str, error: type[FlannelError]) -> dict[str, Any]:
    """`text` as a JSON object (loads_strict), its keys folded (fold_keys); `error` saying
    that `what` is not JSON, or not an object."""
    try:
        doc = loads_strict(text)
    except ValueError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise error(f"{what} is not a JSON object")
    return fold_keys(doc)


def _get_bool(raw: Mapping[str, Any], name: str, default: bool) -> bool:
    value = raw.get(name.lower(), default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"network config: {name} must be true or false, not {value!r}")
    return value


def _get_uint(raw: Mapping[str, Any], name: str) -> int:
    value = raw.get(name.lower(), 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"network config: {name} must be a non-negative integer, not {value!r}")
    return value


def _get_str(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name.lower())
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"network config: {name} must be a string, not {value!r}")
    return value


def _parse_backend(raw: Mapping[str, Any]) -> BackendSpec:
    if "backend" not in raw:
        return BackendSpec(DEFAULT_BACKEND, {})
    backend = raw["backend"]
    if not isinstance(backend, dict):
        raise ConfigError(f"network config: Backend must be an object, not {backend!r}")
    kind = fold_keys(backend).get("type")
    if not isinstance(kind, str) or not kind:
        raise ConfigError("network config: Backend.Type is missing (unknown backend type)")
    return BackendSpec(kind.lower(), dict(backend))


def _ranges(raw: Mapping[str, Any], v6: bool) -> tuple[IPv4Network | IPv6Network, int, int, int]:
    """Network, SubnetLen, SubnetMin and SubnetMax (as ints), or with v6 their IPv6 twins,
    with flannel's defaults and limits; ConfigError naming the field."""
    p, family = ("IPv6", 6) if v6 else ("", 4)
    text = _get_str(raw, f"{p}Network")
    if text is None:
        raise ConfigError("network config: EnableIPv6 is true but IPv6Network is missing" if v6
                          else "network config: Network is missing")
    try:
        network: IPv4Network | IPv6Network = IPv6Network(text, strict=False) if v6 \
            else IPv4Network(text, strict=False)
    except ValueError:
        raise ConfigError(f"network config: {p}Network {text!r} is not an IPv{family} CIDR") \
            from None
    bits, usual = network.max_prefixlen, 64 if v6 else 24
    address = type(network.network_address)
    subnet_len = _get_uint(raw, f"{p}SubnetLen")
    if subnet_len > 0:
        if subnet_len > bits - 2:
            raise ConfigError(f"network config: {p}SubnetLen must be less than /{bits - 1}")
        if subnet_len < network.prefixlen + 2:
            raise ConfigError(
                f"network config: {p}SubnetLen /{subnet_len} leaves {p}Network {network} "
                "room for fewer than four subnets"
            )
    elif network.prefixlen > bits - 4:
        raise ConfigError(f"network config: {p}Network {network} is too small, the minimum "
                          f"useful prefix is /{bits - 4}")
    elif network.prefixlen <= usual - 2:
        subnet_len = usual
    else:
        subnet_len = network.prefixlen + 2
    size = 1 << (bits - subnet_len)
    bounds: list[int] = []
    for name, default in ((f"{p}SubnetMin", int(network.network_address) + size),
                          (f"{p}SubnetMax", int(network.broadcast_address) + 1 - size)):
        given = _get_str(raw, name)
        if given is None:
            bounds.append(default)
            continue
        try:
            addr = address(given)
        except ValueError:
            raise ConfigError(f"network config: {name} {given!r} is not an IPv{family} address") \
                from None
        if not v6 and int(addr) == 0:  # Go's zero IP: as if not given
            bounds.append(default)
            continue
        if addr not in network:
            raise ConfigError(f"network config: {name} {addr} is not inside {p}Network {network}")
        if int(addr) % size:
            raise ConfigError(f"network config: {name} {addr} is not on {'an' if v6 else 'a'} "
                              f"{p}SubnetLen /{subnet_len} boundary")
        bounds.append(int(addr))
    if bounds[0] > bounds[1]:
        low, high = (address(b) for b in bounds)
        raise ConfigError(f"network config: {p}SubnetMin {low} is above {p}SubnetMax {high}")
    return network, subnet_len, bounds[0], bounds[1]


def parse_network_config(text: str | bytes) -> NetworkConfig:
    """Parse `<prefix>/config`; raise ConfigError naming the offending field."""
    raw = json_object(text, "network config", ConfigError)

    enable_ipv4 = _get_bool(raw, "EnableIPv4", True)
    enable_ipv6 = _get_bool(raw, "EnableIPv6", False)
    if not enable_ipv4 and not enable_ipv6:
        raise ConfigError("network config: EnableIPv4 and EnableIPv6 are both false")
    if not enable_ipv4:  # flannel's etcd subnet manager always leases an IPv4 subnet too
        raise ConfigError("network config: EnableIPv4 false (an IPv6-only network) is not "
                          "supported: flannel's etcd lease keys always carry an IPv4 subnet")

    network, subnet_len, subnet_min, subnet_max = _ranges(raw, v6=False)
    assert isinstance(network, IPv4Network)
    v6: dict[str, Any] = {}
    if enable_ipv6:
        net6, len6, min6, max6 = _ranges(raw, v6=True)
        v6 = {
            "ipv6_network": net6,
            "ipv6_subnet_len": len6,
            "ipv6_subnet_min": IPv6Address(min6),
            "ipv6_subnet_max": IPv6Address(max6),
        }
    return NetworkConfig(
        network=network,
        subnet_len=subnet_len,
        subnet_min=IPv4Address(subnet_min),
        subnet_max=IPv4Address(subnet_max),
        backend=_parse_backend(raw),
        enable_ipv4=enable_ipv4,
        enable_ipv6=enable_ipv6,
        enable_nftables=_get_bool(raw, "EnableNFTables", False),
        **v6,
    )
