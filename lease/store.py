"""The boundary between the lease coordinator and etcd: a Protocol and its value types.

The coordinator (lease/manager.py) only sees this; lease/etcd_store.py implements it on
etcd3aio, and the unit tests implement it in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Final, Protocol

from .model import Lease, LeaseAttrs

# flannel's defaults for where the store is and where its keys live
DEFAULT_ENDPOINTS: Final = ("http://127.0.0.1:4001", "http://127.0.0.1:2379")
DEFAULT_PREFIX: Final = "/coreos.com/network"


@dataclass(frozen=True, slots=True)
class Listing:
    leases: Sequence[Lease]
    revision: int
    invalid: Sequence[str] = field(default_factory=tuple)  # keys whose value did not decode


@dataclass(frozen=True, slots=True)
class KeyEvent:
    name: str  # last path component, e.g. "10.5.34.0-24"
    value: bytes | None  # None = deleted (by hand or by expiry)
    etcd_lease: int = 0
    mod_revision: int = 0


@dataclass(frozen=True, slots=True)
class WatchBatch:
    events: Sequence[KeyEvent]
    revision: int
    compacted: bool = False  # history before `revision` is gone: re-list


class LeaseStore(Protocol):
    """Everything the lease coordinator asks of etcd. Raises StoreUnavailable on failure."""

    @property
    def config_key(self) -> str: ...

    async def get_config(self) -> bytes | None: ...

    async def list_leases(self) -> Listing: ...

    async def create_lease(
        self, subnet: IPv4Network, attrs: LeaseAttrs, ttl_s: int,
        ipv6_subnet: IPv6Network | None = None,
    ) -> tuple[Lease, float] | None:
        """Create the key (`<v4>-<len>`, or with `ipv6_subnet` flannel's dual-stack
        `<v4>-<len>&<v6>-<len>`) if it does not exist; None if another host was first."""
        ...

    async def update_lease(self, lease: Lease, attrs: LeaseAttrs) -> Lease | None:
        """Rewrite the value, keeping its etcd lease (none for a reservation); None if the
        key changed or vanished since `lease` was read."""
        ...

    async def delete_lease(self, lease: Lease) -> None: ...

    async def renew_lease(self, lease: Lease) -> float | None:
        """Refresh the etcd lease; the remaining TTL in seconds, None if it is gone."""
        ...

    async def revoke(self, etcd_lease: int) -> None: ...

    def watch_leases(self, start_revision: int) -> AsyncIterator[WatchBatch]: ...


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...
