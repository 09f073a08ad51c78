"""The vxlan backend's pure parts: which VTEPs the leases describe, what a batch of lease
events changes for one VTEP device, the kernel requests each change needs, and which lazily
installed entries have aged out. No I/O and no clock: `now` comes in as an argument.

A VTEP is one VXLAN device: `flannel.<VNI>` (IPv4) or, with EnableIPv6, `flannel-v6.<VNI>`
(IPv6). Per peer Go flannel programs on each, in this order: the permanent neighbour
`<subnet's first address> lladdr <VtepMAC>`, the FDB entry `<VtepMAC> dst <PublicIP> self
permanent`, the route `<subnet> via <subnet's first address> onlink` (the route last: the
kernel would solicit the gateway otherwise). With DirectRouting, a peer on our own L2
segment gets `<subnet> via <PublicIP> dev <iface>` instead and nothing on the device.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final

from lease.errors import DecodeError
from lease.model import EventKind, Lease, LeaseEvent, backend_data, backend_v6_data
from tun.vxlan import parse_mac

from ._bulk import (
    NUD_PERMANENT,
    NUD_REACHABLE,
    RTPROT_FLANNEL,
    Request,
    fdb_delete,
    fdb_replace,
    neigh_delete,
    neigh_replace,
    route_delete,
    route_replace,
)

BACKEND_TYPE: Final = "vxlan"

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


def random_vtep_mac(rng: random.Random) -> bytes:
    """A random locally administered unicast MAC, as flannel makes one."""
    mac = bytearray(rng.getrandbits(8) for _ in range(6))
    mac[0] = (mac[0] & 0xFE) | 0x02
    return bytes(mac)


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer's VTEP on one device: its subnet (IPv4 or IPv6), the address its frames go
    to, its device's MAC."""

    subnet: Network
    public_ip: Address
    vtep_mac: bytes


def _mac(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    with contextlib.suppress(DecodeError):
        return parse_mac(text)
    return None


def peer_of(lease: Lease) -> Peer | None:
    """The IPv4 VTEP a lease describes, or None if it is not a (usable) vxlan lease."""
    if lease.attrs.backend_type != BACKEND_TYPE:
        return None
    mac = _mac(backend_data(lease.attrs).get("vtepmac"))
    return Peer(lease.subnet, lease.attrs.public_ip, mac) if mac is not None else None


def peer6_of(lease: Lease, subnet_len: int) -> Peer | None:
    """The IPv6 VTEP a dual-stack vxlan lease describes, or None (not vxlan, IPv4-only, no
    usable BackendV6Data, or an IPv6 subnet of another length)."""
    attrs = lease.attrs
    if attrs.backend_type != BACKEND_TYPE or lease.ipv6_subnet is None \
            or attrs.public_ipv6 is None or lease.ipv6_subnet.prefixlen != subnet_len:
        return None
    mac = _mac(backend_v6_data(attrs).get("vtepmac"))
    return Peer(lease.ipv6_subnet, attrs.public_ipv6, mac) if mac is not None else None


@dataclass(frozen=True, slots=True)
class Change:
    """One subnet's change over a batch: from `old` (None: it was not a peer) to `new`
    (None: it is not one any more)."""

    old: Peer | None
    new: Peer | None


@dataclass(slots=True)
class Planned:
    changes: list[Change] = field(default_factory=list)
    skipped: list[Lease] = field(default_factory=list)  # vxlan leases without a usable VTEP


class VTEPPlan:
    """The peers of one VTEP device, and what each batch of lease events changes: per
    subnet, from what it was before the batch to what its last event says."""

    def __init__(self, ipv6: bool, subnet_len: int) -> None:
        self.ipv6, self.subnet_len = ipv6, subnet_len
        self.peers: dict[Network, Peer] = {}
        self._by_mac: dict[bytes, Peer] = {}
        self._mask = (1 << (128 if ipv6 else 32)) - (1 << ((128 if ipv6 else 32) - subnet_len))
        self._by_net: dict[int, Peer] = {}

    def _peer(self, lease: Lease) -> Peer | None:
        if self.ipv6:
            return peer6_of(lease, self.subnet_len)
        peer = peer_of(lease)
        return peer if peer is not None and peer.subnet.prefixlen == self.subnet_len else None

    def _subnet(self, lease: Lease) -> Network | None:
        return lease.ipv6_subnet if self.ipv6 else lease.subnet

    def apply(self, events: Sequence[LeaseEvent]) -> Planned:
        planned = Planned()
        before: dict[Network, Peer | None] = {}
        for event in events:
            subnet = self._subnet(event.lease)
            if subnet is None:
                continue  # an IPv4-only lease: nothing on the IPv6 device
            new = self._peer(event.lease) if event.kind is EventKind.ADDED else None
            if event.kind is EventKind.ADDED and new is None \
                    and event.lease.attrs.backend_type == BACKEND_TYPE:
                planned.skipped.append(event.lease)
            old = self._forget(subnet)
            before.setdefault(subnet, old)
            if new is not None:
                self._remember(new)
        for subnet, old in before.items():
            new = self.peers.get(subnet)
            if old != new:
                planned.changes.append(Change(old, new))
        return planned

    def _remember(self, peer: Peer) -> None:
        self.peers[peer.subnet] = peer
        self._by_mac[peer.vtep_mac] = peer
        self._by_net[int(peer.subnet.network_address)] = peer

    def _forget(self, subnet: Network) -> Peer | None:
        peer = self.peers.pop(subnet, None)
        if peer is not None:
            if self._by_mac.get(peer.vtep_mac) == peer:
                del self._by_mac[peer.vtep_mac]
            self._by_net.pop(int(subnet.network_address), None)
        return peer

    def owner_of(self, ip: Address) -> Peer | None:
        """The peer whose subnet holds `ip` (all share SubnetLen: one mask, one probe)."""
        if ip.version != (6 if self.ipv6 else 4):
            return None
        return self._by_net.get(int(ip) & self._mask)

    def owner_of_mac(self, mac: bytes) -> Peer | None:
        return self._by_mac.get(mac)


# -- the requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    """Where a VTEP's entries go: the VXLAN device, and the underlay interface that direct
    routes use."""

    index: int
    iface_index: int


def install(peer: Peer, device: Device, direct: bool) -> list[Request]:
    """A peer's entries: neighbour, FDB entry and onlink route, or the direct route."""
    if direct:
        return [route_replace(peer.subnet, peer.public_ip, device.iface_index, RTPROT_FLANNEL)]
    gateway = peer.subnet.network_address
    return [neigh_replace(gateway, peer.vtep_mac, device.index),
            fdb_replace(peer.vtep_mac, peer.public_ip, device.index),
            route_replace(peer.subnet, gateway, device.index, RTPROT_FLANNEL, onlink=True)]


def removal(peer: Peer, device: Device, direct: bool) -> list[Request]:
    """What install() made, deleted (route first). A delete names our route protocol, so a
    route somebody else put on the same subnet stays."""
    if direct:
        return [route_delete(peer.subnet, peer.public_ip, device.iface_index, RTPROT_FLANNEL)]
    gateway = peer.subnet.network_address
    return [route_delete(peer.subnet, gateway, device.index, RTPROT_FLANNEL, onlink=True),
            fdb_delete(peer.vtep_mac, peer.public_ip, device.index),
            neigh_delete(gateway, device.index)]


def superseded(old: Peer, new: Peer, device: Device, old_direct: bool,
               new_direct: bool) -> list[Request]:
    """What of a changed peer's old entries its new ones do not replace: the old FDB entry
    when its MAC or address moved (the neighbour and the route are replaced in place), or
    the device entries of a peer that became direct."""
    if old_direct:
        return []  # its route is replaced; it had nothing on the device
    if new_direct:
        return removal(old, device, False)[1:]  # keep the route: it is replaced
    if (old.vtep_mac, old.public_ip) != (new.vtep_mac, new.public_ip):
        return [fdb_delete(old.vtep_mac, old.public_ip, device.index)]
    return []


def answer_l3(ip: Address, peer: Peer, device: Device, lazy: bool) -> list[Request]:
    """An L3 miss for `ip` inside `peer`'s subnet: the neighbour, permanent for the subnet's
    first address (the gateway of the onlink route) unless lazy; lazy, the FDB entry too,
    or the next packet is an L2 miss."""
    permanent = not lazy and ip == peer.subnet.network_address
    requests = [neigh_replace(ip, peer.vtep_mac, device.index,
                              NUD_PERMANENT if permanent else NUD_REACHABLE)]
    if lazy:
        requests.append(fdb_replace(peer.vtep_mac, peer.public_ip, device.index))
    return requests


def answer_l2(mac: bytes, peer: Peer, device: Device) -> list[Request]:
    """An L2 miss for a peer's VtepMAC: its FDB entry."""
    return [fdb_replace(mac, peer.public_ip, device.index)]


# -- lazy programming --------------------------------------------------------------------


class LazyEntries:
    """Lazy programming: the neighbours installed for misses and when, each living
    `idle_timeout_s` from its installation (a flow still using it resolves it again through
    a miss; one that stopped leaves nothing behind), with its peer's FDB entry while any
    neighbour in the peer's subnet lives."""

    def __init__(self, idle_timeout_s: float) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.installed: dict[Address, float] = {}

    def record(self, ip: Address, now: float) -> None:
        self.installed.setdefault(ip, now)

    def expired(self, now: float) -> list[Address]:
        deadline = now - self.idle_timeout_s
        return [ip for ip, at in self.installed.items() if at < deadline]

    def in_subnet(self, subnet: Network) -> list[Address]:
        return [ip for ip in self.installed if ip in subnet]

    def forget(self, ips: Iterable[Address], peer: Peer, device: Device) -> list[Request]:
        """Forget `ips` (all in `peer`'s subnet): their neighbours go, and the peer's FDB
        entry with the last of them."""
        requests = []
        for ip in ips:
            if self.installed.pop(ip, None) is not None:
                requests.append(neigh_delete(ip, device.index))
        if requests and not self.in_subnet(peer.subnet):
            requests.append(fdb_delete(peer.vtep_mac, peer.public_ip, device.index))
        return requests
