"""EtcdLeaseStore against a real etcd: the semantics the coordinator relies on."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Network

import pytest

from lease.errors import StoreUnavailable
from lease.etcd_store import EtcdLeaseStore, EtcdSettings
from lease.model import LeaseAttrs
from lease.store import WatchBatch

ATTRS = LeaseAttrs(IPv4Address("192.0.2.1"), "host-gw")


def etcdctl(endpoint: str, *args: str) -> str:
    return subprocess.run(["etcdctl", f"--endpoints={endpoint}", *args], check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "ETCDCTL_API": "3"}).stdout


@pytest.fixture
async def store(local_etcd: str) -> AsyncIterator[EtcdLeaseStore]:
    prefix = f"/test-{secrets.token_hex(4)}/network"
    store = EtcdLeaseStore(EtcdSettings(endpoints=[local_etcd], prefix=prefix))
    yield store
    await store.close()


def prefix_of(store: EtcdLeaseStore) -> str:
    return store.config_key.rsplit("/", 1)[0]


async def test_config_missing_then_present(store: EtcdLeaseStore, local_etcd: str) -> None:
    assert await store.get_config() is None
    etcdctl(local_etcd, "put", store.config_key, '{"Network": "10.5.0.0/16"}')
    assert await store.get_config() == b'{"Network": "10.5.0.0/16"}'


async def test_create_is_exclusive_under_a_race(store: EtcdLeaseStore, local_etcd: str) -> None:
    subnet = IPv4Network("10.5.3.0/24")
    leases_before = {int(x, 16) for x in etcdctl(local_etcd, "lease", "list").split()[3:]}
    other = EtcdLeaseStore(EtcdSettings(endpoints=[local_etcd], prefix=prefix_of(store)))
    try:
        results = await asyncio.gather(*(s.create_lease(subnet, ATTRS, 60)
                                         for s in (store, other, store, other)))
    finally:
        await other.close()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    lease, ttl = winners[0]
    assert ttl == 60 and lease.etcd_lease != 0
    # the losers revoked the etcd leases they were granted: only the winner's is new
    new_leases = {int(x, 16) for x in etcdctl(local_etcd, "lease", "list").split()[3:]}
    assert new_leases - leases_before == {lease.etcd_lease}
    key = f"{prefix_of(store)}/subnets/10.5.3.0-24"
    raw = etcdctl(local_etcd, "get", key, "--print-value-only")
    assert raw.strip() == '{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"host-gw"}'


async def test_update_needs_the_current_revision(store: EtcdLeaseStore) -> None:
    created = await store.create_lease(IPv4Network("10.5.4.0/24"), ATTRS, 60)
    assert created is not None
    lease, _ = created
    changed = LeaseAttrs(ATTRS.public_ip, "vxlan", '{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}')
    updated = await store.update_lease(lease, changed)
    assert updated is not None and updated.etcd_lease == lease.etcd_lease
    assert await store.update_lease(lease, ATTRS) is None  # stale revision
    listing = await store.list_leases()
    assert [item.attrs for item in listing.leases] == [changed]


async def test_renew_keeps_one_lease_and_reports_loss(store: EtcdLeaseStore) -> None:
    created = await store.create_lease(IPv4Network("10.5.5.0/24"), ATTRS, 30)
    assert created is not None
    lease, _ = created
    assert await store.renew_lease(lease) == 30
    await store.revoke(lease.etcd_lease)
    assert await store.renew_lease(lease) is None
    assert (await store.list_leases()).leases == []


async def test_watch_sees_puts_and_deletes_from_a_revision(
    store: EtcdLeaseStore, local_etcd: str
) -> None:
    start = (await store.list_leases()).revision
    subnets = f"{prefix_of(store)}/subnets/"
    etcdctl(local_etcd, "put", subnets + "10.5.6.0-24", '{"PublicIP":"192.0.2.6"}')
    etcdctl(local_etcd, "del", subnets + "10.5.6.0-24")
    batches: list[WatchBatch] = []
    async with asyncio.timeout(10):
        async for batch in store.watch_leases(start + 1):
            batches.append(batch)
            if sum(len(b.events) for b in batches) == 2:
                break
    events = [event for batch in batches for event in batch.events]
    assert [(e.name, e.value) for e in events] == [
        ("10.5.6.0-24", b'{"PublicIP":"192.0.2.6"}'), ("10.5.6.0-24", None)]
    assert batches[-1].revision == start + 2


async def test_watch_from_a_compacted_revision_says_so(
    store: EtcdLeaseStore, local_etcd: str
) -> None:
    start = (await store.list_leases()).revision
    key = f"{prefix_of(store)}/subnets/10.5.7.0-24"
    etcdctl(local_etcd, "put", key, '{"PublicIP":"1.2.3.4"}')
    now = (await store.list_leases()).revision
    etcdctl(local_etcd, "compact", str(now))
    batches: list[WatchBatch] = []
    async with asyncio.timeout(10):
        async for batch in store.watch_leases(start):
            batches.append(batch)
    # etcd first confirms the watch (no progress claimed), then cancels it as compacted
    assert [(b.compacted, b.revision, len(b.events)) for b in batches][-1] == (True, now, 0)
    assert all(b.revision < start for b in batches[:-1])


async def test_unreachable_etcd_is_store_unavailable_quickly() -> None:
    dead = EtcdLeaseStore(EtcdSettings(endpoints=["http://127.0.0.1:9"]))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await dead.list_leases()
    assert time.monotonic() - started < 6
    await dead.close()


def test_settings_never_show_the_password() -> None:
    settings = EtcdSettings(username="root", password="s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(settings) and "s3cr3t-pw" not in str(settings)
