"""Leases as flannel stores them in etcd: the subnet key and the lease JSON value.

Pure: no I/O. Encoding is byte-exact with Go flannel's `json.Marshal(LeaseAttrs)`:
compact JSON, fields in the order PublicIP, PublicIPv6, BackendType, BackendData,
BackendV6Data, `PublicIPv6: null` when unset, BackendType/BackendData omitted when empty,
BackendData embedded as JSON (not a string). Decoding matches keys case-insensitively.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Final

from lease.errors import DecodeError

from .config import fold_keys, json_object

SUBNETS_DIR: Final = "subnets/"
DECODED: Final = 1 << 15  # keys and values remembered decoded: twice the largest /10 of /24s
# Upstream: (\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$ ; we also insist on real dots.
_KEY_RE: Final = re.compile(r"(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?")


@dataclass(frozen=True, slots=True)
class LeaseAttrs:
    public_ip: IPv4Address
    backend_type: str = ""
    backend_data: str = ""  # compact JSON text of the embedded value, "" = omitted
    public_ipv6: IPv6Address | None = None
    backend_v6_data: str = ""


@dataclass(frozen=True, slots=True)
class Lease:
    subnet: IPv4Network
    attrs: LeaseAttrs
    ipv6_subnet: IPv6Network | None = None
    etcd_lease: int = 0  # etcd lease ID; 0 = a reservation, which never expires
    mod_revision: int = 0

    @property
    def key(self) -> str:
        return subnet_key(self.subnet, self.ipv6_subnet)

    @property
    def is_reservation(self) -> bool:
        return self.etcd_lease == 0


class EventKind(enum.Enum):
    ADDED = "added"  # new or changed
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    kind: EventKind
    lease: Lease


def subnet_key(subnet: IPv4Network, ipv6_subnet: IPv6Network | None = None) -> str:
    """`10.5.34.0-24`, or `10.5.34.0-24&fc00:0:0:22::-64` for dual stack."""
    key = f"{subnet.network_address}-{subnet.prefixlen}"
    if ipv6_subnet is not None:
        key += f"&{ipv6_subnet.network_address}-{ipv6_subnet.prefixlen}"
    return key


@functools.lru_cache(maxsize=DECODED)
def parse_subnet_key(name: str) -> tuple[IPv4Network, IPv6Network | None]:
    """Inverse of subnet_key for the last path component; DecodeError if it is not one.
    Cached, as decode_lease_attrs."""
    match = _KEY_RE.fullmatch(name)
    if match is None:
        raise DecodeError(f"subnet key {name!r} is not of the form a.b.c.d-len")
    try:
        subnet = IPv4Network(f"{match[1]}/{match[2]}")
        ipv6 = IPv6Network(f"{match[3]}/{match[4]}") if match[3] is not None else None
    except ValueError as exc:
        raise DecodeError(f"subnet key {name!r}: {exc}") from None
    if subnet_key(subnet, ipv6) != name:  # one subnet, one key: leading zeros etc. refused
        raise DecodeError(f"subnet key {name!r} is not in canonical form")
    return subnet, ipv6


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_lease_attrs(attrs: LeaseAttrs) -> bytes:
    parts = [
        f'"PublicIP":"{attrs.public_ip}"',
        f'"PublicIPv6":{_compact(str(attrs.public_ipv6)) if attrs.public_ipv6 else "null"}',
    ]
    if attrs.backend_type:
        parts.append(f'"BackendType":{_compact(attrs.backend_type)}')
    if attrs.backend_data:
        parts.append(f'"BackendData":{attrs.backend_data}')
    if attrs.backend_v6_data:
        parts.append(f'"BackendV6Data":{attrs.backend_v6_data}')
    return ("{" + ",".join(parts) + "}").encode()


def backend_data_json(data: Mapping[str, Any]) -> str:
    """BackendData as flannel marshals a Go struct: compact, keys in the given order."""
    return _compact(dict(data))


@functools.lru_cache(maxsize=DECODED)
def decode_lease_attrs(value: bytes | str) -> LeaseAttrs:
    """A lease's JSON value; DecodeError naming what is wrong. Cached (the result is
    immutable): start-up lists the leases three times, a re-list after a compaction once
    more, and the values rarely change."""
    raw = json_object(value, "lease value", DecodeError)
    public_ip = raw.get("publicip")
    if not isinstance(public_ip, str):
        raise DecodeError("lease value: PublicIP is missing or not a string")
    try:
        ip = IPv4Address(public_ip)
    except ValueError:
        raise DecodeError(f"lease value: PublicIP {public_ip!r} is not an IPv4 address") from None
    ipv6: IPv6Address | None = None
    if (text := raw.get("publicipv6")) is not None:
        try:
            ipv6 = IPv6Address(text) if isinstance(text, str) else None
        except ValueError:
            ipv6 = None
        if ipv6 is None:
            raise DecodeError(f"lease value: PublicIPv6 {text!r} is not an IPv6 address")
    backend_type = raw.get("backendtype")
    if backend_type is None:
        backend_type = ""
    if not isinstance(backend_type, str):
        raise DecodeError(f"lease value: BackendType {backend_type!r} is not a string")
    data, data6 = raw.get("backenddata"), raw.get("backendv6data")
    return LeaseAttrs(
        public_ip=ip,
        public_ipv6=ipv6,
        backend_type=backend_type,
        backend_data=_compact(data) if data is not None else "",
        backend_v6_data=_compact(data6) if data6 is not None else "",
    )


def backend_data(attrs: LeaseAttrs) -> dict[str, Any]:
    """The BackendData object with lower-cased keys ({} when absent or not an object)."""
    if not attrs.backend_data:
        return {}
    value = json.loads(attrs.backend_data)
    return fold_keys(value) if isinstance(value, dict) else {}


def backend_v6_data(attrs: LeaseAttrs) -> dict[str, Any]:
    """The BackendV6Data object (the IPv6 VTEP of a dual-stack vxlan lease) with lower-cased
    keys ({} when absent or not an object)."""
    if not attrs.backend_v6_data:
        return {}
    value = json.loads(attrs.backend_v6_data)
    return fold_keys(value) if isinstance(value, dict) else {}


def decode_lease(
    name: str, value: bytes | str, etcd_lease: int = 0, mod_revision: int = 0
) -> Lease:
    subnet, ipv6 = parse_subnet_key(name)
    return Lease(subnet, decode_lease_attrs(value), ipv6, etcd_lease, mod_revision)


def diff_leases(old: Mapping[str, Lease], new: Mapping[str, Lease]) -> list[LeaseEvent]:
    """The events that turn the peer set `old` into `new` (both keyed by subnet key).

    A lease whose attributes changed is re-announced as ADDED; a renewal that changed
    nothing but the revision produces no event.
    """
    events = [
        LeaseEvent(EventKind.REMOVED, lease) for key, lease in old.items() if key not in new
    ]
    events.extend(
        LeaseEvent(EventKind.ADDED, lease)
        for key, lease in new.items()
        if key not in old or _material(old[key]) != _material(lease)
    )
    return events


def _material(lease: Lease) -> tuple[IPv4Network, LeaseAttrs, IPv6Network | None]:
    return lease.subnet, lease.attrs, lease.ipv6_subnet


def by_key(leases: Iterable[Lease]) -> dict[str, Lease]:
    return {lease.key: lease for lease in leases}
