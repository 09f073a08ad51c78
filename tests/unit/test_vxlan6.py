"""Tests for backends/_vxlan6.py's pure parts: which leases have an IPv6 VTEP, and the
requests that program one (flannel's AddV6ARP, AddV6FDB, the onlink route, in that order)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from backends._bulk import RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWNEIGH, RTM_NEWROUTE
from backends._vxlan6 import Peer6, device_name, install_requests, peer6_of, removal_requests
from lease.model import Lease, LeaseAttrs

V6_DATA = '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:66"}'
SUBNET6 = IPv6Network("fc00:5:0:c8::/64")


def lease(subnet6: IPv6Network | None = SUBNET6, public6: str | None = "2001:db8::2",
          data6: str = V6_DATA, kind: str = "vxlan") -> Lease:
    attrs = LeaseAttrs(IPv4Address("192.0.2.2"), kind, '{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}',
                       IPv6Address(public6) if public6 else None, data6)
    return Lease(IPv4Network("10.5.200.0/24"), attrs, subnet6)


def test_device_name_is_flannels() -> None:
    assert device_name(1) == "flannel-v6.1" and device_name(4096) == "flannel-v6.4096"


def test_a_dual_stack_vxlan_lease_has_an_ipv6_vtep() -> None:
    assert peer6_of(lease(), 64) == Peer6(SUBNET6, IPv6Address("2001:db8::2"),
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
    assert [r.kind for r in install_requests(peer, 9)] == [RTM_NEWNEIGH, RTM_NEWNEIGH,
                                                           RTM_NEWROUTE]
    assert [r.what for r in install_requests(peer, 9)] == [
        "neighbour fc00:5:0:c8::", "fdb c6:d2:32:6f:8f:66 dst 2001:db8::2",
        "route fc00:5:0:c8::/64 via fc00:5:0:c8::"]
    assert [r.kind for r in removal_requests(peer, 9)] == [RTM_DELROUTE, RTM_DELNEIGH,
                                                           RTM_DELNEIGH]
