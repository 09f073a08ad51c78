"""The lease coordinator: wait for the config, acquire a subnet, keep it, watch the peers.

Async, but every effect comes through the LeaseStore and Clock protocols (lease/store.py),
so the unit tests drive it with an in-memory store and a fake clock.

Fixes over upstream flannel: a lost create race is retried; renewal keeps
the one etcd lease alive instead of granting a new one each time; renewal runs on its own
timer and never stops silently; reservations stay reservations; our own key vanishing
triggers a re-acquire.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Final, TypeVar

from lease.errors import (
    ConfigError,
    DecodeError,
    LeaseError,
    StoreAuthError,
    StoreUnavailable,
)

from .allocation import allocate
from .config import NetworkConfig, parse_network_config
from .model import EventKind, Lease, LeaseAttrs, LeaseEvent, by_key, decode_lease, diff_leases
from .store import Clock, KeyEvent, LeaseStore, Listing

log = logging.getLogger(__name__)

DEFAULT_TTL_S: Final = 86400
ACQUIRE_TRIES: Final = 10
T = TypeVar("T")
EventSink = Callable[[Sequence[LeaseEvent]], Awaitable[None]]


class Backoff:
    """Exponential back-off that logs one line per class of failure, not one per attempt."""

    def __init__(self, clock: Clock, what: str, initial_s: float, cap_s: float) -> None:
        self._clock, self._what = clock, what
        self._initial_s, self._cap_s = initial_s, cap_s
        self._delay_s = initial_s
        self._logged: str | None = None
        self.failures = 0

    async def fail(self, reason: str, detail: str = "") -> None:
        """Log `reason` once while it stays the same (details vary per attempt), then wait."""
        self.failures += 1
        suffix = f" ({detail})" if detail else ""
        if reason != self._logged:
            log.warning("%s: %s%s; retrying every %.1f..%.0f s", self._what, reason, suffix,
                        self._initial_s, self._cap_s)
            self._logged = reason
        else:
            log.debug("%s: %s%s (attempt %d)", self._what, reason, suffix, self.failures)
        await self._clock.sleep(self._delay_s)
        self._delay_s = min(self._delay_s * 2, self._cap_s)

    def succeeded(self) -> None:
        if self._logged is not None:
            log.info("%s: recovered after %d failed attempts", self._what, self.failures)
        self._logged, self._delay_s, self.failures = None, self._initial_s, 0


def _reason(exc: StoreUnavailable) -> str:
    """The class of an etcd failure, logged once while it lasts."""
    return "etcd refused our credentials" if isinstance(exc, StoreAuthError) else "etcd unavailable"


def renew_at(expires_at: float, ttl_s: float, margin_s: float) -> float:
    """When to renew: `margin_s` before expiry, but never later than half-way through a
    short TTL (so that a test TTL of seconds still renews in time)."""
    return expires_at - min(margin_s, ttl_s / 2)


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    public_ip: IPv4Address
    ttl_s: int = DEFAULT_TTL_S
    renew_margin_s: float = 3600.0
    previous_subnet: IPv4Network | None = None
    previous_ipv6_subnet: IPv6Network | None = None  # with EnableIPv6, from subnet.env


class LeaseManager:
    def __init__(
        self, store: LeaseStore, clock: Clock, settings: LeaseSettings, rng: random.Random
    ) -> None:
        self._store, self._clock, self._rng = store, clock, rng
        self.settings = settings
        self._previous = settings.previous_subnet
        self._previous6 = settings.previous_ipv6_subnet
        self.lease: Lease | None = None
        self.expires_at = math.inf
        self._attrs: LeaseAttrs | None = None
        self._config: NetworkConfig | None = None
        self._lost = asyncio.Event()
        self.peers: dict[str, Lease] = {}
        self.watch_connected = False
        self.watch_reconnects = 0
        self.renewals = 0
        self.config_rejected = 0

    # -- start-up -----------------------------------------------------------------------

    async def retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op` until it stops raising StoreUnavailable (etcd down) or returns."""
        backoff = Backoff(self._clock, what, 0.5, 10.0)
        while True:
            try:
                result = await op()
            except StoreUnavailable as exc:
                await backoff.fail(_reason(exc), str(exc))
                continue
            backoff.succeeded()
            return result

    async def wait_for_config(self) -> NetworkConfig:
        """Read and parse `<prefix>/config`, waiting while it is missing or invalid."""
        backoff = Backoff(self._clock, "network config", 0.5, 10.0)
        while True:
            try:
                raw = await self._store.get_config()
                if raw is None:
                    await backoff.fail(f"{self._store.config_key} is missing; waiting for it")
                    continue
                config = parse_network_config(raw)
            except StoreUnavailable as exc:
                await backoff.fail(_reason(exc), str(exc))
                continue
            except ConfigError as exc:
                await backoff.fail(f"{exc}; waiting for a valid one")
                continue
            backoff.succeeded()
            return config

    async def previous_attrs(self, config: NetworkConfig) -> LeaseAttrs | None:
        """The attributes of the lease etcd holds for our PublicIP (fitting the config), if
        any: a backend reuses what it can (vxlan: its VtepMAC)."""
        listing = await self.retry("list leases", self._store.list_leases)
        ours = sorted((lease for lease in listing.leases
                       if lease.attrs.public_ip == self.settings.public_ip
                       and config.fits_both(lease.subnet, lease.ipv6_subnet)),
                      key=lambda lease: (not lease.is_reservation, lease.subnet))
        return ours[0].attrs if ours else None

    async def acquire(self, config: NetworkConfig, attrs: LeaseAttrs) -> Lease:
        """Acquire (or take back) this host's lease, retrying etcd outages and lost races."""
        self._config, self._attrs = config, attrs
        lease = await self.retry("acquire lease", self._try_acquire)
        self.lease, self._previous, self._previous6 = lease, lease.subnet, lease.ipv6_subnet
        self._lost.clear()
        return lease

    async def _try_acquire(self) -> Lease:
        assert self._config is not None and self._attrs is not None
        config, attrs = self._config, self._attrs
        for attempt in range(1, ACQUIRE_TRIES + 1):
            listing = await self._store.list_leases()
            plan = allocate(config, listing.leases, attrs.public_ip, self._previous, self._rng,
                            self._previous6)
            for stale in plan.stale:
                log.info("deleting lease subnet=%s ipv6_subnet=%s public_ip=%s: it does not "
                         "fit the config", stale.subnet, stale.ipv6_subnet, stale.attrs.public_ip)
                await self._store.delete_lease(stale)
            lease = await (self._take(plan.reuse, attrs) if plan.reuse else
                           self._create(plan.create, attrs, plan.create6))
            if lease is not None:
                return lease
            log.info("lost a race for a subnet (attempt %d of %d), retrying",
                     attempt, ACQUIRE_TRIES)
        raise LeaseError(f"could not acquire a subnet: lost the race {ACQUIRE_TRIES} times")

    async def _take(self, lease: Lease, attrs: LeaseAttrs) -> Lease | None:
        if lease.attrs != attrs:
            updated = await self._store.update_lease(lease, attrs)
            if updated is None:
                return None
            lease = updated
        if lease.is_reservation:
            log.info("lease acquired subnet=%s reservation=true", lease.subnet)
            self.expires_at = math.inf
            return lease
        ttl_s = await self._store.renew_lease(lease)
        if ttl_s is None:
            return None
        self.expires_at = self._clock.now() + ttl_s
        log.info("lease reused subnet=%s ttl_s=%.0f", lease.subnet, ttl_s)
        return lease

    async def _create(self, subnet: IPv4Network | None, attrs: LeaseAttrs,
                      subnet6: IPv6Network | None = None) -> Lease | None:
        assert subnet is not None
        created = await self._store.create_lease(subnet, attrs, self.settings.ttl_s, subnet6)
        if created is None:
            return None
        lease, ttl_s = created
        self.expires_at = self._clock.now() + ttl_s
        if lease.ipv6_subnet is not None:
            log.info("lease acquired subnet=%s ipv6_subnet=%s ttl_s=%.0f", lease.subnet,
                     lease.ipv6_subnet, ttl_s)
        else:
            log.info("lease acquired subnet=%s ttl_s=%.0f", lease.subnet, ttl_s)
        return lease

    # -- keeping it ---------------------------------------------------------------------

    @property
    def renew_at(self) -> float:
        if self.lease is None or self.lease.is_reservation:
            return math.inf
        return renew_at(self.expires_at, self.settings.ttl_s, self.settings.renew_margin_s)

    def own_lease_lost(self, why: str) -> None:
        if not self._lost.is_set():
            log.warning("own lease lost: %s; re-acquiring", why)
            self._lost.set()

    async def _wait_for_renewal_or_loss(self) -> bool:
        """Sleep until renew_at; True if the lease was reported lost meanwhile."""
        if math.isinf(self.renew_at):  # a reservation: nothing to renew, ever
            await self._lost.wait()
            return True
        delay_s = self.renew_at - self._clock.now()
        if delay_s <= 0:
            return self._lost.is_set()
        sleeper = asyncio.ensure_future(self._clock.sleep(delay_s))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({sleeper, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            lost.cancel()
        return self._lost.is_set()

    async def run_renewal(self) -> None:
        """Renew before expiry, forever. Raises LeaseError if the subnet had to change."""
        backoff = Backoff(self._clock, "lease renewal", 1.0, 30.0)
        while True:
            lost = await self._wait_for_renewal_or_loss()
            lease = self.lease
            assert lease is not None
            if not lost:
                try:
                    ttl_s = await self._store.renew_lease(lease)
                except StoreUnavailable as exc:
                    left_s = self.expires_at - self._clock.now()
                    await backoff.fail(_reason(exc), f"{exc}; lease expires in {left_s:.0f} s")
                    continue
                backoff.succeeded()
                if ttl_s is not None:
                    self.expires_at = self._clock.now() + ttl_s
                    self.renewals += 1
                    log.debug("lease renewed subnet=%s ttl_s=%.0f", lease.subnet, ttl_s)
                    continue
                self.own_lease_lost("etcd lease expired")
            await self._reacquire(lease)

    async def _reacquire(self, old: Lease) -> None:
        assert self._config is not None and self._attrs is not None
        new = await self.acquire(self._config, self._attrs)
        if not old.is_reservation and old.etcd_lease != new.etcd_lease:
            try:
                await self._store.revoke(old.etcd_lease)
            except StoreUnavailable:
                log.debug("could not revoke old etcd lease %x", old.etcd_lease)
        if (new.subnet, new.ipv6_subnet) != (old.subnet, old.ipv6_subnet):
            lost = " and ".join(str(s) for s in (old.subnet, old.ipv6_subnet) if s)
            got = " and ".join(str(s) for s in (new.subnet, new.ipv6_subnet) if s)
            raise LeaseError(
                f"lost subnet {lost} and acquired {got} instead; "
                "restart flanneld (and what uses subnet.env) to move to it"
            )
        log.info("lease re-acquired subnet=%s", new.subnet)

    # -- watching the config ------------------------------------------------------------

    async def run_config_watch(self, current: NetworkConfig, period_s: float = 5.0,
                               check: Callable[[NetworkConfig], None] | None = None) -> None:
        """Re-read `<prefix>/config` every `period_s`. A bad one is ignored (the last good one
        stays in force; one line says why); a valid different one is reported once: moving
        a running node to another network needs a restart, as in flannel."""
        seen: bytes | None = None
        while True:
            await self._clock.sleep(period_s)
            try:
                raw = await self._store.get_config()
            except StoreUnavailable:
                continue  # the lease watch and renewal report etcd outages
            if raw == seen:
                continue
            seen = raw
            if raw is None:
                self.config_rejected += 1
                log.warning("network config %s was deleted; keeping the last good one",
                            self._store.config_key)
                continue
            try:
                config = parse_network_config(raw)
                if check is not None:
                    check(config)  # e.g. the backend and its options
            except ConfigError as exc:
                self.config_rejected += 1
                log.warning("ignoring the new network config (%s); keeping the last good one",
                            exc)
                continue
            if config != current:
                log.warning("the network config changed (network=%s backend=%s); restart "
                            "flanneld to apply it", config.network, config.backend.type)

    # -- watching the peers -------------------------------------------------------------

    def _is_own(self, key: str) -> bool:
        return self.lease is not None and key == self.lease.key

    def _apply_listing(self, listing: Listing) -> list[LeaseEvent]:
        for key in listing.invalid:
            log.warning("ignoring lease %s: its key or value does not decode", key)
        own_key = self.lease.key if self.lease else None
        seen = by_key(listing.leases)
        if own_key is not None and own_key not in seen:
            self.own_lease_lost(f"{own_key} is missing from etcd")
        elif own_key is not None and seen[own_key].attrs.public_ip != self.settings.public_ip:
            self.own_lease_lost(f"{own_key} now belongs to {seen[own_key].attrs.public_ip}")
        new = {key: lease for key, lease in seen.items() if key != own_key}
        events = diff_leases(self.peers, new)
        self.peers = new
        return events

    def _apply_event(self, event: KeyEvent) -> LeaseEvent | None:
        if event.value is None:
            if self._is_own(event.name):
                self.own_lease_lost(f"{event.name} was deleted")
                return None
            gone = self.peers.pop(event.name, None)
            return LeaseEvent(EventKind.REMOVED, gone) if gone else None
        try:
            lease = decode_lease(event.name, event.value, event.etcd_lease, event.mod_revision)
        except DecodeError as exc:
            log.warning("ignoring lease %s: %s", event.name, exc)
            gone = self.peers.pop(event.name, None)
            return LeaseEvent(EventKind.REMOVED, gone) if gone else None
        if self._is_own(event.name):
            if lease.attrs.public_ip != self.settings.public_ip:
                self.own_lease_lost(f"{event.name} was taken by {lease.attrs.public_ip}")
            return None
        old = self.peers.get(event.name)
        self.peers[event.name] = lease
        changed = diff_leases({event.name: old} if old else {}, {event.name: lease})
        return changed[0] if changed else None

    async def run_watch(self, sink: EventSink) -> None:
        """List the peers, hand them to `sink`, then follow every change, forever."""
        backoff = Backoff(self._clock, "lease watch", 0.1, 5.0)
        revision: int | None = None
        while True:
            try:
                if revision is None:
                    listing = await self._store.list_leases()
                    revision = listing.revision
                    events = self._apply_listing(listing)
                    if events:
                        await sink(events)
                async for batch in self._store.watch_leases(revision + 1):
                    if not self.watch_connected:
                        self.watch_connected = True
                        backoff.succeeded()
                    if batch.compacted:
                        log.warning("lease watch: history compacted at revision %d; re-listing",
                                    batch.revision)
                        revision = None
                        break
                    applied = [self._apply_event(event) for event in batch.events]
                    revision = batch.revision
                    changes = [event for event in applied if event is not None]
                    if changes:
                        await sink(changes)
            except StoreUnavailable as exc:
                if self.watch_connected:
                    self.watch_reconnects += 1
                self.watch_connected = False
                await backoff.fail(_reason(exc), str(exc))
