"""Tests for backends/_vxlan_plan.py: which leases have a VTEP (IPv4, IPv6), what a batch of
lease events changes for a device, the requests each change needs (flannel's AddARP,
AddFDB, the onlink route, in that order), and lazy entries aging out on a given clock."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from backends import _vxlan_kernel
from backends._base import ExternalInterface
from backends._bulk import (
    NUD_PERMANENT,
    NUD_REACHABLE,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    Miss,
    Request,
)
from backends._vxlan_plan import (
    Change,
    Device,
    LazyEntries,
    Peer,
    VTEPPlan,
    answer_l2,
    answer_l3,
    install,
    peer6_of,
    removal,
    superseded,
)
from backends.vxlan import VXLANConfig
from lease.config import BackendSpec
from lease.model import EventKind, Lease, LeaseAttrs, LeaseEvent

V6_DATA = '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:66"}'
SUBNET6 = IPv6Network("fc00:5:0:c8::/64")


def lease(subnet6: IPv6Network | None = SUBNET6, public6: str | None = "2001:db8::2",
          data6: str = V6_DATA, kind: str = "vxlan") -> Lease:
    attrs = LeaseAttrs(IPv4Address("192.0.2.2"), kind, '{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}',
                       IPv6Address(public6) if public6 else None, data6)
    return Lease(IPv4Network("10.5.200.0/24"), attrs, subnet6)


def test_a_dual_stack_vxlan_lease_has_an_ipv6_vtep() -> None:
    assert peer6_of(lease(), 64) == Peer(SUBNET6, IPv6Address("2001:db8::2"),
                                          bytes.fromhex("c6d2326f8f66"))


@pytest.mark.parametrize("bad", [
    lease(subnet6=None),  # an IPv4-only peer
    lease(public6=None),
    lease(data6=""),
    lease(data6='{"VNI":1}'),
    lease(data6='{"VNI":1,"VtepMAC":"not a mac"}'),
    lease(data6='[1]'),
    lease(kind="host-gw"),
    lease(subnet6=IPv6Network("fc00:5:0:c8::/80")),  # not the config's IPv6SubnetLen
])
def test_leases_without_a_usable_ipv6_vtep(bad: Lease) -> None:
    assert peer6_of(bad, 64) is None


def test_install_and_removal_requests_in_flannels_order() -> None:
    peer = peer6_of(lease(), 64)
    assert peer is not None
    assert [r.kind for r in install(peer, Device(9, 2), False)] == [RTM_NEWNEIGH, RTM_NEWNEIGH,
                                                           RTM_NEWROUTE]
    assert [r.what for r in install(peer, Device(9, 2), False)] == [
        "neighbour fc00:5:0:c8::", "fdb c6:d2:32:6f:8f:66 dst 2001:db8::2",
        "route fc00:5:0:c8::/64 via fc00:5:0:c8::"]
    assert [r.kind for r in removal(peer, Device(9, 2), False)] == [RTM_DELROUTE, RTM_DELNEIGH,
                                                           RTM_DELNEIGH]


# --- the planner: a batch of lease events -> per subnet, what it was and what it is now ----

MAC_1 = "0e:00:00:00:00:01"
MAC_2 = "0e:00:00:00:00:02"
DEVICE = Device(9, 2)


def v4_lease(third: int, mac: str = MAC_1, public: str = "192.0.2.2", kind: str = "vxlan",
             prefix: int = 24) -> Lease:
    data = f'{{"VNI":1,"VtepMAC":"{mac}"}}' if mac else '{"VNI":1}'
    return Lease(IPv4Network(f"10.5.{third}.0/{prefix}"),
                 LeaseAttrs(IPv4Address(public), kind, data))


def added(lease_: Lease) -> LeaseEvent:
    return LeaseEvent(EventKind.ADDED, lease_)


def removed(lease_: Lease) -> LeaseEvent:
    return LeaseEvent(EventKind.REMOVED, lease_)


def peer(third: int, mac: str = MAC_1, public: str = "192.0.2.2") -> Peer:
    return Peer(IPv4Network(f"10.5.{third}.0/24"), IPv4Address(public),
                bytes.fromhex(mac.replace(":", "")))


def test_a_new_lease_is_a_change_from_nothing_and_the_same_again_is_none() -> None:
    plan = VTEPPlan(False, 24)
    assert plan.apply([added(v4_lease(3))]).changes == [Change(None, peer(3))]
    assert plan.apply([added(v4_lease(3))]).changes == []  # a renewal changes nothing
    assert plan.owner_of(IPv4Address("10.5.3.77")) == peer(3)
    assert plan.owner_of(IPv4Address("10.5.4.1")) is None
    assert plan.owner_of_mac(bytes.fromhex("0e0000000001")) == peer(3)


def test_a_moved_mac_or_address_is_one_change_and_a_removal_another() -> None:
    plan = VTEPPlan(False, 24)
    plan.apply([added(v4_lease(3))])
    assert plan.apply([added(v4_lease(3, MAC_2, "192.0.2.9"))]).changes == [
        Change(peer(3), peer(3, MAC_2, "192.0.2.9"))]
    assert plan.owner_of_mac(bytes.fromhex("0e0000000001")) is None
    assert plan.apply([removed(v4_lease(3))]).changes == [
        Change(peer(3, MAC_2, "192.0.2.9"), None)]
    assert plan.peers == {}


def test_a_batch_counts_by_its_final_state_per_subnet() -> None:
    plan = VTEPPlan(False, 24)
    plan.apply([added(v4_lease(5))])
    planned = plan.apply([added(v4_lease(3)), removed(v4_lease(3)),  # came and went
                          removed(v4_lease(5)), added(v4_lease(5)),  # went and came back
                          added(v4_lease(6)), added(v4_lease(6, MAC_2))])  # changed twice
    assert planned.changes == [Change(None, peer(6, MAC_2))]


def test_leases_the_device_cannot_use() -> None:
    plan = VTEPPlan(False, 24)
    planned = plan.apply([added(v4_lease(3, mac="")), added(v4_lease(4, kind="host-gw")),
                          added(v4_lease(5, prefix=26))])
    assert planned.changes == []
    assert [lease_.subnet for lease_ in planned.skipped] == [IPv4Network("10.5.3.0/24"),
                                                             IPv4Network("10.5.5.0/26")]


def test_the_ipv6_plan_ignores_ipv4_only_leases() -> None:
    plan = VTEPPlan(True, 64)
    planned = plan.apply([added(v4_lease(3)), added(lease())])
    assert planned.changes == [Change(None, Peer(SUBNET6, IPv6Address("2001:db8::2"),
                                                 bytes.fromhex("c6d2326f8f66")))]
    assert plan.owner_of(IPv6Address("fc00:5:0:c8::1234")) is not None
    assert plan.owner_of(IPv4Address("10.5.3.1")) is None


# --- what a change sends ------------------------------------------------------------------


def kinds(requests: list[Request]) -> list[tuple[int, str]]:
    return [(r.kind, r.what) for r in requests]


def test_a_changed_peer_drops_only_what_its_new_entries_do_not_replace() -> None:
    old, moved, same = peer(3), peer(3, MAC_2, "192.0.2.9"), peer(3)
    assert superseded(old, same, DEVICE, False, False) == []
    assert kinds(superseded(old, moved, DEVICE, False, False)) == [
        (RTM_DELNEIGH, "fdb 0e:00:00:00:00:01 dst 192.0.2.2")]
    assert kinds(superseded(old, moved, DEVICE, False, True)) == [  # became direct
        (RTM_DELNEIGH, "fdb 0e:00:00:00:00:01 dst 192.0.2.2"),
        (RTM_DELNEIGH, "neighbour 10.5.3.0")]
    assert superseded(old, moved, DEVICE, True, False) == []  # was direct: route replaced
    assert kinds(install(old, DEVICE, True)) == [(RTM_NEWROUTE, "route 10.5.3.0/24 via 192.0.2.2")]
    assert kinds(removal(old, DEVICE, True)) == [(RTM_DELROUTE, "route 10.5.3.0/24 via 192.0.2.2")]


def neighbour_state(request: Request) -> int:
    return int.from_bytes(request.body[8:10], "little")  # ndmsg's ndm_state


def test_misses_are_answered_permanent_for_the_gateway_reachable_for_the_rest() -> None:
    gateway = answer_l3(IPv4Address("10.5.3.0"), peer(3), DEVICE, lazy=False)
    assert [neighbour_state(r) for r in gateway] == [NUD_PERMANENT]
    other = answer_l3(IPv4Address("10.5.3.7"), peer(3), DEVICE, lazy=False)
    assert [neighbour_state(r) for r in other] == [NUD_REACHABLE]
    lazy = answer_l3(IPv4Address("10.5.3.0"), peer(3), DEVICE, lazy=True)
    assert kinds(lazy) == [(RTM_NEWNEIGH, "neighbour 10.5.3.0"),
                           (RTM_NEWNEIGH, "fdb 0e:00:00:00:00:01 dst 192.0.2.2")]
    assert neighbour_state(lazy[0]) == NUD_REACHABLE
    assert kinds(answer_l2(peer(3).vtep_mac, peer(3), DEVICE)) == [
        (RTM_NEWNEIGH, "fdb 0e:00:00:00:00:01 dst 192.0.2.2")]


# --- lazy entries, on a clock of the test's ------------------------------------------------


def test_lazy_entries_age_out_from_their_installation_and_take_the_fdb_entry_last() -> None:
    entries = LazyEntries(idle_timeout_s=300)
    a, b = IPv4Address("10.5.3.7"), IPv4Address("10.5.3.8")
    entries.record(a, now=1000)
    entries.record(b, now=1100)
    entries.record(a, now=1200)  # used again: still aged from its installation
    assert entries.expired(now=1300) == []
    assert entries.expired(now=1300.5) == [a]
    first = entries.forget(entries.expired(now=1300.5), peer(3), DEVICE)
    assert kinds(first) == [(RTM_DELNEIGH, "neighbour 10.5.3.7")]  # b still needs the FDB
    assert entries.in_subnet(IPv4Network("10.5.3.0/24")) == [b]
    last = entries.forget([b], peer(3), DEVICE)
    assert kinds(last) == [(RTM_DELNEIGH, "neighbour 10.5.3.8"),
                           (RTM_DELNEIGH, "fdb 0e:00:00:00:00:01 dst 192.0.2.2")]
    assert entries.forget([b], peer(3), DEVICE) == []  # forgotten once


IFACE = ExternalInterface("eth0", 2, IPv4Address("192.0.2.1"), IPv4Address("192.0.2.1"), 1500)


async def test_the_kernel_vtep_ages_lazy_entries_on_its_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """KernelVTEP with a clock of the test's: a miss answered at t=0 is removed by the first
    sweep after IdleTimeout, not before; the requests are recorded instead of sent."""
    sent: list[list[Request]] = []

    async def record(requests: list[Request], who: str) -> tuple[list[Request], int]:
        sent.append(list(requests))
        return [], 0

    monkeypatch.setattr(_vxlan_kernel, "program", record)
    now = [0.0]
    config = VXLANConfig.from_spec(BackendSpec("vxlan", {"Programming": "lazy",
                                                         "IdleTimeout": 60}))
    vtep = _vxlan_kernel.KernelVTEP(config, False, IFACE, IPv4Network("10.5.0.0/16"), 24,
                                    netlink=None, clock=lambda: now[0])  # type: ignore[arg-type]
    vtep.index = 9
    await vtep.apply([added(v4_lease(3))])
    assert sent == []  # lazy: nothing up front
    await vtep.answer(Miss(2, 9, "10.5.3.7", None))
    assert kinds(sent.pop()) == [(RTM_NEWNEIGH, "neighbour 10.5.3.7"),
                                 (RTM_NEWNEIGH, "fdb 0e:00:00:00:00:01 dst 192.0.2.2")]
    now[0] = 60.0
    await vtep.sweep()
    assert sent == []
    now[0] = 60.5
    await vtep.sweep()
    assert kinds(sent.pop()) == [(RTM_DELNEIGH, "neighbour 10.5.3.7"),
                                 (RTM_DELNEIGH, "fdb 0e:00:00:00:00:01 dst 192.0.2.2")]
    await vtep.answer(Miss(2, 9, "10.9.9.9", None))  # nobody's
    counters = vtep.counters()
    assert (counters["l3_misses_answered"], counters["entries_aged_out"],
            counters["misses_unknown"]) == (1, 1, 1)
