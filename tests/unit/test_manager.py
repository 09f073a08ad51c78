"""The lease coordinator against an in-memory etcd and a fake clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from lease.errors import LeaseError
from lease.manager import LeaseManager, LeaseSettings, renew_at
from lease.model import EventKind, LeaseAttrs, LeaseEvent, encode_lease_attrs
from tests.fakes import FakeClock, InMemoryStore

CONFIG = b'{"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}'
ME = IPv4Address("192.0.2.1")
ATTRS = LeaseAttrs(ME, "host-gw")


def peer_value(ip: str, kind: str = "host-gw") -> bytes:
    return encode_lease_attrs(LeaseAttrs(IPv4Address(ip), kind))


def make(
    store: InMemoryStore | None = None, clock: FakeClock | None = None, **settings: object
) -> tuple[LeaseManager, InMemoryStore, FakeClock]:
    clock = clock or FakeClock()
    store = store or InMemoryStore(clock, CONFIG)
    manager = LeaseManager(store, clock, LeaseSettings(public_ip=ME, **settings),  # type: ignore[arg-type]
                           random.Random(7))
    return manager, store, clock


async def until(condition: Callable[[], bool], steps: int = 5000) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def acquire(manager: LeaseManager) -> IPv4Network:
    config = await manager.wait_for_config()
    return (await manager.acquire(config, ATTRS)).subnet


# -- acquisition ---------------------------------------------------------------------------


async def test_acquire_creates_a_lease_with_an_etcd_lease_in_range() -> None:
    manager, store, _ = make()
    subnet = await acquire(manager)
    assert subnet.prefixlen == 24 and subnet.subnet_of(IPv4Network("10.5.0.0/16"))
    assert subnet != IPv4Network("10.5.0.0/24")  # the first subnet is never handed out
    entry = store.keys[f"{subnet.network_address}-24"]
    assert entry.value == b'{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"host-gw"}'
    assert entry.etcd_lease in store.leases
    assert store.leases[entry.etcd_lease][0] == 86400


async def test_same_seed_same_subnet_and_previous_subnet_wins() -> None:
    first, _, _ = make()
    second, _, _ = make()
    assert await acquire(first) == await acquire(second)
    hinted, _, _ = make(previous_subnet=IPv4Network("10.5.200.0/24"))
    assert await acquire(hinted) == IPv4Network("10.5.200.0/24")


async def test_our_existing_lease_is_reused_with_its_etcd_lease() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock, CONFIG)
    lease_id = store.grant(86400)
    store.put("10.5.9.0-24", encode_lease_attrs(ATTRS), lease_id)
    clock.t += 1000
    manager, _, _ = make(store, clock, previous_subnet=IPv4Network("10.5.200.0/24"))
    assert await acquire(manager) == IPv4Network("10.5.9.0/24")
    assert list(store.leases) == [lease_id]  # no new grant, nothing orphaned
    assert store.leases[lease_id][1] == clock.now() + 86400  # refreshed to a full TTL


async def test_changed_backend_data_of_our_lease_is_rewritten() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock, CONFIG)
    store.put("10.5.9.0-24", peer_value(str(ME), "udp"), store.grant(86400))
    manager, _, _ = make(store, clock)
    await acquire(manager)
    assert b'"BackendType":"host-gw"' in store.keys["10.5.9.0-24"].value


async def test_reservation_is_taken_and_stays_a_reservation() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock, CONFIG)
    store.put("10.5.77.0-24", encode_lease_attrs(ATTRS))  # no etcd lease: a reservation
    manager, _, _ = make(store, clock)
    assert await acquire(manager) == IPv4Network("10.5.77.0/24")
    assert store.keys["10.5.77.0-24"].etcd_lease == 0
    assert not store.leases
    task = asyncio.create_task(manager.run_renewal())
    await asyncio.sleep(0.01)
    assert not [call for call in store.calls if call[0] == "renew"]
    task.cancel()


async def test_a_lease_of_ours_that_no_longer_fits_is_deleted() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock, CONFIG)
    store.put("10.6.1.0-24", encode_lease_attrs(ATTRS), store.grant(86400))
    manager, _, _ = make(store, clock)
    subnet = await acquire(manager)
    assert "10.6.1.0-24" not in store.keys
    assert subnet.subnet_of(IPv4Network("10.5.0.0/16"))


async def test_lost_races_are_retried() -> None:
    manager, store, _ = make()
    store.lose_creates = 9
    subnet = await acquire(manager)
    assert store.keys[f"{subnet.network_address}-24"].value.startswith(b'{"PublicIP":"192.0.2.1"')
    assert len([c for c in store.calls if c[0] == "create"]) == 10


async def test_ten_lost_races_is_a_clear_error() -> None:
    manager, store, _ = make()
    store.lose_creates = 10
    with pytest.raises(LeaseError, match="lost the race 10 times"):
        await acquire(manager)


async def test_out_of_subnets_is_a_clear_error() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock, b'{"Network": "10.9.0.0/28"}')  # /30s: .4, .8, .12
    for index, base in enumerate((4, 8, 12)):
        store.put(f"10.9.0.{base}-30", peer_value(f"192.0.2.{50 + index}", ""), store.grant(60))
    manager, _, _ = make(store, clock)
    with pytest.raises(LeaseError, match="out of subnets"):
        await acquire(manager)


class HookedClock(FakeClock):
    """Runs `hook(number_of_sleeps)` before every sleep."""

    def __init__(self, hook: Callable[[int], None]) -> None:
        super().__init__()
        self.hook = hook

    async def sleep(self, seconds: float) -> None:
        self.hook(len(self.sleeps))
        await super().sleep(seconds)


async def test_etcd_down_at_start_is_waited_out_with_backoff() -> None:
    store_box: list[InMemoryStore] = []
    clock = HookedClock(lambda n: store_box[0].outage(n < 4))
    store = InMemoryStore(clock, CONFIG)
    store_box.append(store)
    store.outage(True)
    manager, _, _ = make(store, clock)
    await acquire(manager)
    assert clock.sleeps[:4] == [0.5, 1.0, 2.0, 4.0]  # exponential, capped later


async def test_missing_then_invalid_config_is_waited_for() -> None:
    configs = [None, None, b'{"Network": "10.5.0.0/30"}', CONFIG]
    store_box: list[InMemoryStore] = []

    def next_config(n: int) -> None:
        store_box[0].config = configs[min(n + 1, 3)]

    clock = HookedClock(next_config)
    store = InMemoryStore(clock, configs[0])
    store_box.append(store)
    manager, _, _ = make(store, clock)
    config = await manager.wait_for_config()
    assert str(config.network) == "10.5.0.0/16"
    assert len(clock.sleeps) == 3


# -- renewal -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl_s", "margin_s", "period_s"),
    [(86400, 3600, 82800), (86400, 60, 86340), (10, 3600, 5), (600, 60, 540)],
)
async def test_renewal_happens_the_margin_before_expiry(
    ttl_s: int, margin_s: float, period_s: float
) -> None:
    manager, store, clock = make(ttl_s=ttl_s, renew_margin_s=margin_s)
    start = clock.now()
    await acquire(manager)
    task = asyncio.create_task(manager.run_renewal())
    await until(lambda: manager.renewals >= 3)
    task.cancel()
    renewals = [t - start for what, t in store.calls if what == "renew"][:3]
    assert renewals == [period_s, 2 * period_s, 3 * period_s]
    assert len(store.leases) == 1  # the same etcd lease, kept alive


def test_renew_at_is_pure() -> None:
    assert renew_at(100_000.0, 86400, 3600) == 96_400.0
    assert renew_at(100.0, 10, 3600) == 95.0


async def test_renewal_rides_out_an_etcd_outage() -> None:
    manager, store, clock = make(ttl_s=100, renew_margin_s=30)
    await acquire(manager)
    store.outage(True)
    task = asyncio.create_task(manager.run_renewal())
    await until(lambda: len([c for c in store.calls if c[0] == "renew"]) >= 3)
    assert manager.renewals == 0
    store.outage(False)
    await until(lambda: manager.renewals >= 1)
    task.cancel()
    assert manager.expires_at == pytest.approx(clock.now() + 100, abs=31)


async def test_expired_lease_is_reacquired_with_the_same_subnet() -> None:
    manager, store, clock = make(ttl_s=100, renew_margin_s=30)
    subnet = await acquire(manager)
    old_lease = manager.lease
    assert old_lease is not None
    store.outage(True)
    clock.t += 500  # etcd unreachable past expiry: etcd dropped the key meanwhile
    store.outage(False)
    store.expire()
    assert f"{subnet.network_address}-24" not in store.keys
    task = asyncio.create_task(manager.run_renewal())
    await until(lambda: manager.lease is not None and manager.lease.etcd_lease
                != old_lease.etcd_lease)
    task.cancel()
    assert manager.lease is not None and manager.lease.subnet == subnet
    assert f"{subnet.network_address}-24" in store.keys


async def test_losing_our_subnet_to_another_host_is_an_error_not_silence() -> None:
    manager, store, _ = make(ttl_s=100, renew_margin_s=30)
    subnet = await acquire(manager)
    key = f"{subnet.network_address}-24"
    store.delete(key)
    store.put(key, peer_value("192.0.2.99"), store.grant(1000))
    manager.own_lease_lost("test")
    with pytest.raises(LeaseError, match=f"lost subnet {subnet}"):
        await manager.run_renewal()


# -- watching ------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.events: list[LeaseEvent] = []

    async def __call__(self, events: Sequence[LeaseEvent]) -> None:
        self.events.extend(events)

    def seen(self) -> list[tuple[str, str]]:
        return [(e.kind.value, str(e.lease.subnet)) for e in self.events]


async def test_watch_lists_peers_then_follows_changes_without_our_own() -> None:
    manager, store, _ = make()
    store.put("10.5.1.0-24", peer_value("192.0.2.11"), 0)
    own = await acquire(manager)
    sink = Sink()
    task = asyncio.create_task(manager.run_watch(sink))
    await until(lambda: len(sink.events) == 1)
    store.put("10.5.2.0-24", peer_value("192.0.2.12"), 0)
    store.put("10.5.2.0-24", peer_value("192.0.2.12"), 0)  # a renewal: no event
    store.put("10.5.2.0-24", peer_value("192.0.2.13"), 0)  # a change: re-announced
    store.delete("10.5.1.0-24")
    await until(lambda: len(sink.events) == 4)
    task.cancel()
    assert sink.seen() == [("added", "10.5.1.0/24"), ("added", "10.5.2.0/24"),
                           ("added", "10.5.2.0/24"), ("removed", "10.5.1.0/24")]
    assert str(own) not in {subnet for _, subnet in sink.seen()}
    assert set(manager.peers) == {"10.5.2.0-24"}


async def test_watch_recovers_from_outage_and_compaction_with_a_diff() -> None:
    manager, store, _ = make()
    store.put("10.5.1.0-24", peer_value("192.0.2.11"))
    store.put("10.5.2.0-24", peer_value("192.0.2.12"))
    await acquire(manager)
    sink = Sink()
    task = asyncio.create_task(manager.run_watch(sink))
    await until(lambda: len(sink.events) == 2 and manager.watch_connected)
    store.outage(True)
    await until(lambda: not manager.watch_connected)
    store.put("10.5.3.0-24", peer_value("192.0.2.13"))
    store.delete("10.5.1.0-24")
    store.compact()
    store.outage(False)
    await until(lambda: len(sink.events) == 4)
    task.cancel()
    assert sorted(sink.seen()[2:]) == [("added", "10.5.3.0/24"), ("removed", "10.5.1.0/24")]
    assert manager.watch_reconnects == 1
    assert set(manager.peers) == {"10.5.2.0-24", "10.5.3.0-24"}


async def test_garbage_lease_values_are_ignored() -> None:
    manager, store, _ = make()
    store.put("10.5.1.0-24", b"{not json")
    await acquire(manager)
    sink = Sink()
    task = asyncio.create_task(manager.run_watch(sink))
    await until(lambda: manager.watch_connected)
    store.put("10.5.2.0-24", b'{"PublicIP": 7}')
    store.put("10.5.4.0-24", peer_value("192.0.2.14"))
    await until(lambda: len(sink.events) == 1)
    task.cancel()
    assert sink.seen() == [("added", "10.5.4.0/24")]


async def test_our_key_deleted_by_hand_is_reacquired() -> None:
    manager, store, _ = make()
    subnet = await acquire(manager)
    key = f"{subnet.network_address}-24"
    sink = Sink()
    tasks = [asyncio.create_task(manager.run_watch(sink)),
             asyncio.create_task(manager.run_renewal())]
    await until(lambda: manager.watch_connected)
    old = store.keys[key].etcd_lease
    store.delete(key)
    await until(lambda: key in store.keys)
    for task in tasks:
        task.cancel()
    assert store.keys[key].etcd_lease != old
    assert old not in store.leases  # the old etcd lease was revoked, not orphaned
    assert not [e for e in sink.events if e.kind is EventKind.REMOVED]


# -- dual stack ----------------------------------------------------------------------------

DUAL_CONFIG = (b'{"Network": "10.5.0.0/16", "EnableIPv6": true, "IPv6Network": "fc00:5::/48",'
               b' "Backend": {"Type": "host-gw"}}')


async def test_dual_stack_lease_key_and_value_as_flannel_writes_them() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock, DUAL_CONFIG)
    manager, _, _ = make(store, clock, previous_subnet=IPv4Network("10.5.52.0/24"),
                         previous_ipv6_subnet=IPv6Network("fc00:5:0:34::/64"))
    config = await manager.wait_for_config()
    attrs = LeaseAttrs(ME, "host-gw", public_ipv6=IPv6Address("2001:db8::1"))
    lease = await manager.acquire(config, attrs)
    assert lease.ipv6_subnet == IPv6Network("fc00:5:0:34::/64")
    entry = store.keys["10.5.52.0-24&fc00:5:0:34::-64"]
    assert entry.value == (b'{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1",'
                           b'"BackendType":"host-gw"}')
    # a restart finds the lease by PublicIP and takes it back, both subnets
    again, _, _ = make(store, clock)
    assert (await again.acquire(config, attrs)).key == "10.5.52.0-24&fc00:5:0:34::-64"


async def test_dual_stack_lease_lost_and_reacquired_elsewhere_names_both() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock, DUAL_CONFIG)
    manager, _, _ = make(store, clock)
    config = await manager.wait_for_config()
    lease = await manager.acquire(config, LeaseAttrs(ME, "host-gw"))
    store.delete(lease.key)
    store.put(lease.key, peer_value("192.0.2.99"))  # someone else took the pair
    manager.own_lease_lost("test")
    with pytest.raises(LeaseError, match=r"lost subnet .* and fc00:5:.* and acquired "):
        await manager.run_renewal()
