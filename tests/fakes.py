"""In-memory LeaseStore and a fake clock for the lease coordinator's unit tests.

The store keeps etcd's semantics that the coordinator relies on: a global revision, keys
with an optional lease (TTL on the fake clock), create-if-absent, compare-mod-revision
writes, a watch from a revision, compaction, and an outage switch.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from lease.errors import DecodeError, StoreUnavailable
from lease.model import Lease, LeaseAttrs, decode_lease, encode_lease_attrs, subnet_key
from lease.store import KeyEvent, Listing, WatchBatch


class FakeClock:
    """Time only moves when someone sleeps: sleep(s) jumps the clock forward by s."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if math.isfinite(seconds):
            self.t += max(seconds, 0.0)
        await asyncio.sleep(0)


@dataclass
class _Entry:
    value: bytes
    etcd_lease: int
    mod_revision: int


class InMemoryStore:
    def __init__(self, clock: FakeClock, config: bytes | None = None) -> None:
        self.clock = clock
        self.config = config
        self.revision = 1
        self.keys: dict[str, _Entry] = {}
        self.leases: dict[int, tuple[float, float]] = {}  # id -> (ttl_s, expires_at)
        self.history: list[tuple[int, KeyEvent]] = []
        self.compacted = 0
        self.down = False
        self.lose_creates = 0  # how many creates lose a race to "another host"
        self.calls: list[tuple[str, float]] = []
        self._next_lease = 100
        self._changed = asyncio.Event()

    # -- helpers for tests ----------------------------------------------------------------

    def _check(self, what: str) -> None:
        self.calls.append((what, self.clock.now()))
        self.expire()
        if self.down:
            raise StoreUnavailable("connection refused")

    def expire(self) -> None:
        now = self.clock.now()
        for lease_id, (_, expires_at) in list(self.leases.items()):
            if expires_at <= now:
                del self.leases[lease_id]
                for name, entry in list(self.keys.items()):
                    if entry.etcd_lease == lease_id:
                        self.delete(name)

    def _bump(self, event: KeyEvent) -> None:
        self.history.append((self.revision, event))
        self._changed.set()
        self._changed = asyncio.Event()

    def put(self, name: str, value: bytes | str, etcd_lease: int = 0) -> None:
        raw = value.encode() if isinstance(value, str) else value
        self.revision += 1
        self.keys[name] = _Entry(raw, etcd_lease, self.revision)
        self._bump(KeyEvent(name, raw, etcd_lease, self.revision))

    def delete(self, name: str) -> None:
        if self.keys.pop(name, None) is not None:
            self.revision += 1
            self._bump(KeyEvent(name, None, 0, self.revision))

    def outage(self, down: bool) -> None:
        """Take the fake etcd down (every call raises StoreUnavailable) or bring it back."""
        self.down = down
        self._changed.set()
        self._changed = asyncio.Event()

    def compact(self) -> None:
        self.compacted = self.revision
        self.history = [(rev, ev) for rev, ev in self.history if rev > self.compacted]
        self._changed.set()
        self._changed = asyncio.Event()

    def grant(self, ttl_s: float) -> int:
        self._next_lease += 1
        self.leases[self._next_lease] = (ttl_s, self.clock.now() + ttl_s)
        return self._next_lease

    # -- LeaseStore -----------------------------------------------------------------------

    @property
    def config_key(self) -> str:
        return "/coreos.com/network/config"

    async def get_config(self) -> bytes | None:
        self._check("get_config")
        return self.config

    async def list_leases(self) -> Listing:
        self._check("list")
        leases, invalid = [], []
        for name, entry in self.keys.items():
            try:
                leases.append(decode_lease(name, entry.value, entry.etcd_lease,
                                           entry.mod_revision))
            except DecodeError:
                invalid.append(name)
        return Listing(leases, self.revision, invalid)

    async def create_lease(
        self, subnet: IPv4Network, attrs: LeaseAttrs, ttl_s: int,
        ipv6_subnet: IPv6Network | None = None,
    ) -> tuple[Lease, float] | None:
        self._check("create")
        name = subnet_key(subnet, ipv6_subnet)
        if self.lose_creates > 0:
            self.lose_creates -= 1
            rival = LeaseAttrs(IPv4Address("203.0.113.9"), attrs.backend_type)
            self.put(name, encode_lease_attrs(rival), self.grant(ttl_s))
            return None
        if name in self.keys:
            return None
        lease_id = self.grant(ttl_s)
        self.put(name, encode_lease_attrs(attrs), lease_id)
        return Lease(subnet, attrs, ipv6_subnet, lease_id, self.revision), float(ttl_s)

    async def update_lease(self, lease: Lease, attrs: LeaseAttrs) -> Lease | None:
        self._check("update")
        entry = self.keys.get(lease.key)
        if entry is None or entry.mod_revision != lease.mod_revision:
            return None
        self.put(lease.key, encode_lease_attrs(attrs), lease.etcd_lease)
        return Lease(lease.subnet, attrs, lease.ipv6_subnet, lease.etcd_lease, self.revision)

    async def delete_lease(self, lease: Lease) -> None:
        self._check("delete")
        entry = self.keys.get(lease.key)
        if entry is not None and entry.mod_revision == lease.mod_revision:
            self.delete(lease.key)

    async def renew_lease(self, lease: Lease) -> float | None:
        self._check("renew")
        if lease.etcd_lease not in self.leases:
            return None
        ttl_s, _ = self.leases[lease.etcd_lease]
        self.leases[lease.etcd_lease] = (ttl_s, self.clock.now() + ttl_s)
        return ttl_s

    async def revoke(self, etcd_lease: int) -> None:
        self._check("revoke")
        if self.leases.pop(etcd_lease, None) is not None:
            for name, entry in list(self.keys.items()):
                if entry.etcd_lease == etcd_lease:
                    self.delete(name)

    async def watch_leases(self, start_revision: int) -> AsyncIterator[WatchBatch]:
        self._check("watch")
        if start_revision <= self.compacted:
            yield WatchBatch((), self.compacted, compacted=True)
            return
        next_rev = start_revision
        yield WatchBatch((), start_revision - 1)  # "created"
        while True:
            if self.down:
                raise StoreUnavailable("watch stream broken")
            if self.compacted >= next_rev:
                yield WatchBatch((), self.compacted, compacted=True)
                return
            pending = [(rev, ev) for rev, ev in self.history if rev >= next_rev]
            if pending:
                next_rev = pending[-1][0] + 1
                yield WatchBatch([ev for _, ev in pending], pending[-1][0])
                continue
            changed = self._changed
            await changed.wait()
