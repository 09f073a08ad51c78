"""The Backend protocol and what the daemon hands a backend when it creates one.

flannel's best idea, kept small: the daemon acquires the lease once and feeds the backend
lease events; a backend never talks to etcd.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from lease.config import NetworkConfig
from lease.model import Lease, LeaseAttrs, LeaseEvent


@dataclass(frozen=True, slots=True)
class ExternalInterface:
    """The underlay interface (`-iface`) and the address peers reach us on."""

    name: str
    index: int
    address: IPv4Address  # the interface's own IPv4 address
    public_ip: IPv4Address  # -public-ip, or `address`
    mtu: int
    address6: IPv6Address | None = None  # the interface's first IPv6 address (not link-local)
    public_ipv6: IPv6Address | None = None  # -public-ipv6, or `address6`


@dataclass(frozen=True, slots=True)
class BackendContext:
    network: NetworkConfig
    iface: ExternalInterface


class Backend(Protocol):
    """One data plane. The daemon calls, in order: lease_attrs(), start(lease), then runs
    apply() for every batch of peer changes alongside run(), which runs until cancelled.
    Kernel state is left in place on cancellation so traffic survives a restart."""

    @property
    def mtu(self) -> int:
        """The MTU the overlay offers to containers (FLANNEL_MTU)."""
        ...

    async def lease_attrs(self, previous: LeaseAttrs | None) -> LeaseAttrs:
        """Our lease's attributes; `previous` is what our last lease in etcd said (vxlan
        keeps its VtepMAC across restarts this way)."""
        ...

    async def start(self, lease: Lease) -> None: ...

    async def apply(self, events: Sequence[LeaseEvent]) -> None: ...

    async def run(self) -> None: ...

    def counters(self) -> Mapping[str, int]: ...

    async def close(self) -> None: ...
