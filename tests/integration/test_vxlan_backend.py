"""The vxlan backend across namespaces with a real etcd, against the kernel's VXLAN device
programmed by hand exactly as Go flannel programs a vxlan node."""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from ipaddress import IPv4Network
from typing import Any

import pytest

from flanneld.files import write_atomic
from flanneld.lab import Host, Lab, wait_for
from flanneld.subnet_env import format_subnet_env
from tests.integration.conftest import engine_variant

NETWORK = IPv4Network("10.5.0.0/16")
GO_SUBNET = IPv4Network("10.5.200.0/24")
GO_MAC = "c6:d2:32:6f:8f:44"


def vxlan_config(**options: Any) -> dict[str, Any]:
    return {"Network": str(NETWORK), "Backend": {"Type": "vxlan", **options}}


def start(lab: Lab, host: Host, *extra: str) -> None:
    lab.start_daemon(host, "-healthz-port=8471", *extra)
    lab.wait_ready(host)
    lab.add_container(host)


def vtep_mac(lab: Lab, host: Host) -> str:
    lease = lab.leases()[f"{host.subnet.network_address}-24"]
    assert lease["BackendType"] == "vxlan" and lease["BackendData"]["VNI"] == 1
    mac: str = lease["BackendData"]["VtepMAC"]
    return mac


def go_flannel_node(lab: Lab, host: Host) -> None:
    """Device, lease JSON, then per peer neighbour, FDB and route, as Go flannel >= 0.9."""
    lab.exec(host.ns, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local",
             host.ip, "dev", "eth0", "dstport", "8472", "nolearning")
    lab.exec(host.ns, "ip", "link", "set", "flannel.1", "address", GO_MAC, "mtu", "1450", "up")
    lab.exec(host.ns, "ip", "addr", "add", f"{GO_SUBNET.network_address}/32", "dev",
             "flannel.1")
    lease_id = lab.etcdctl("lease", "grant", "600").stdout.split()[1]
    key = f"/coreos.com/network/subnets/{GO_SUBNET.network_address}-24"
    lab.etcdctl("put", "--lease", lease_id, key,
                json.dumps({"PublicIP": host.ip, "PublicIPv6": None, "BackendType": "vxlan",
                            "BackendData": {"VNI": 1, "VtepMAC": GO_MAC}},
                           separators=(",", ":")))
    write_atomic(host.subnet_file, format_subnet_env(NETWORK, GO_SUBNET, 1450, False))
    lab.add_container(host)


def go_flannel_add_peer(lab: Lab, go: Host, peer: Host) -> None:
    gateway = str(peer.subnet.network_address)
    mac = vtep_mac(lab, peer)
    lab.exec(go.ns, "ip", "neigh", "replace", gateway, "lladdr", mac, "dev", "flannel.1", "nud",
             "permanent")
    lab.exec(go.ns, "bridge", "fdb", "append", mac, "dev", "flannel.1", "dst", peer.ip)
    lab.exec(go.ns, "ip", "route", "replace", str(peer.subnet), "via", gateway, "dev",
             "flannel.1", "onlink")


def reach(lab: Lab, a: Host, b: Host) -> None:
    wait_for(f"c{a.index} -> c{b.index}", partial(lab.can_reach, a, b.container_ip), timeout=10)


def vxlan_tx_packets(lab: Lab, host: Host) -> int:
    stats = json.loads(lab.exec(host.ns, "ip", "-j", "-s", "link", "show", "flannel.1").stdout)
    return int(stats[0]["stats64"]["tx"]["packets"])


@pytest.mark.parametrize("variant", ["kernel", "userspace", "userspace-python"])
def test_a_go_flannel_node_and_ours_exchange_traffic(lab: Lab, variant: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dataplane = engine_variant(monkeypatch, variant)
    lab.put_config(vxlan_config(Dataplane=dataplane))
    ours, go = lab.add_host(), lab.add_host()
    if dataplane == "userspace":
        lab.wire_like(ours)
    go_flannel_node(lab, go)
    start(lab, ours)
    go_flannel_add_peer(lab, go, ours)
    reach(lab, ours, go)
    reach(lab, go, ours)
    assert lab.iperf(ours, go, seconds=2) > 50e6
    assert lab.iperf(go, ours, seconds=2) > 50e6
    counters = lab.counters(ours)
    assert counters["dataplane_userspace"] == (dataplane == "userspace")
    if dataplane == "kernel":
        neigh = lab.exec(ours.ns, "ip", "neigh", "show", "dev", "flannel.1").stdout
        fdb = lab.exec(ours.ns, "bridge", "fdb", "show", "dev", "flannel.1").stdout
        route = lab.exec(ours.ns, "ip", "route", "show", str(GO_SUBNET)).stdout
        assert f"{GO_SUBNET.network_address} lladdr {GO_MAC} PERMANENT" in neigh
        assert f"{GO_MAC} dst {go.ip} self permanent" in fdb
        assert f"via {GO_SUBNET.network_address} dev flannel.1" in route and "onlink" in route
    else:
        assert counters["drop_not_peer"] == 0 and counters["rx_packets"] > 100


@pytest.mark.usefixtures("engine")
def test_kernel_userspace_and_go_nodes_all_reach_each_other(lab: Lab) -> None:
    lab.put_config(vxlan_config())
    kernel, userspace, go = lab.add_host(), lab.add_host(), lab.add_host()
    lab.wire_like(userspace)
    go_flannel_node(lab, go)
    start(lab, kernel)
    start(lab, userspace, "-vxlan-dataplane=userspace")
    for peer in (kernel, userspace):
        go_flannel_add_peer(lab, go, peer)
    assert lab.counters(userspace)["dataplane_userspace"] == 1
    assert lab.counters(kernel)["dataplane_userspace"] == 0
    for a in (kernel, userspace, go):
        for b in (kernel, userspace, go):
            if a is not b:
                reach(lab, a, b)


def test_flushed_neighbours_and_fdb_recover_through_misses(lab: Lab) -> None:
    lab.put_config(vxlan_config())
    ours, go = lab.add_host(), lab.add_host()
    go_flannel_node(lab, go)
    start(lab, ours)
    go_flannel_add_peer(lab, go, ours)
    reach(lab, ours, go)
    lab.exec(ours.ns, "ip", "neigh", "flush", "dev", "flannel.1", "nud", "all")
    lab.exec(ours.ns, "bridge", "fdb", "del", GO_MAC, "dev", "flannel.1", "dst", go.ip)
    assert GO_MAC not in lab.exec(ours.ns, "bridge", "fdb", "show", "dev", "flannel.1").stdout
    flushed = time.monotonic()
    wait_for("traffic again", lambda: lab.exec(
        ours.container_ns, "ping", "-c", "1", "-W", "0.2", go.container_ip,
        check=False).returncode == 0, timeout=5, interval=0.01)
    assert time.monotonic() - flushed < 2.0
    counters = lab.counters(ours)
    assert counters["l3_misses_answered"] >= 1 and counters["l2_misses_answered"] >= 1


def test_direct_routing_skips_vxlan_on_the_same_l2_only(lab: Lab) -> None:
    lab.put_config(vxlan_config(DirectRouting=True))
    h1, h2 = lab.add_host(), lab.add_host()
    far = lab.add_routed_host()  # behind the router: needs VXLAN
    for host in (h1, h2, far):
        start(lab, host)
    near_route = lab.exec(h1.ns, "ip", "route", "show", str(h2.subnet)).stdout
    far_route = lab.exec(h1.ns, "ip", "route", "show", str(far.subnet)).stdout
    assert f"via {h2.ip} dev eth0" in near_route
    assert f"via {far.subnet.network_address} dev flannel.1" in far_route
    reach(lab, h1, h2)
    before = vxlan_tx_packets(lab, h1)
    lab.ping(h1, h2.container_ip, count=10)
    assert vxlan_tx_packets(lab, h1) == before  # same L2: not one packet through VXLAN
    reach(lab, h1, far)
    reach(lab, far, h1)
    before = vxlan_tx_packets(lab, h1)
    lab.ping(h1, far.container_ip, count=10)
    assert vxlan_tx_packets(lab, h1) >= before + 10


FAKE_LEASES = """
import asyncio, sys, etcd3aio
async def main():
    async with etcd3aio.Etcd3Client(["127.0.0.1:2379"]) as client:
        gate = asyncio.Semaphore(64)
        async def put(i):
            key = f"/coreos.com/network/subnets/10.{100 + i // 256}.{i % 256}.0-24"
            value = ('{"PublicIP":"198.51.100.%d","PublicIPv6":null,"BackendType":"vxlan",'
                     '"BackendData":{"VNI":1,"VtepMAC":"02:00:00:%02x:%02x:01"}}'
                     % (50 + i % 200, i >> 8, i & 255))
            async with gate:
                await client.kv.put(key, value)
        await asyncio.gather(*(put(i) for i in range(int(sys.argv[1]))))
asyncio.run(main())
"""


def kernel_entries(lab: Lab, host: Host) -> tuple[int, int]:
    """(neighbour entries, FDB entries with a remote dst) on flannel.1."""
    neigh = lab.exec(host.ns, "ip", "neigh", "show", "dev", "flannel.1").stdout.splitlines()
    fdb = [line for line in lab.exec(host.ns, "bridge", "fdb", "show", "dev",
                                     "flannel.1").stdout.splitlines() if " dst " in line]
    return len([line for line in neigh if "lladdr" in line]), len(fdb)


def test_lazy_programming_holds_entries_only_for_the_peers_it_talks_to(lab: Lab) -> None:
    lab.put_config({"Network": "10.0.0.0/8", "SubnetLen": 24,
                    "Backend": {"Type": "vxlan", "Programming": "lazy", "IdleTimeout": 10}})
    lab.exec(lab.underlay_ns, sys.executable, "-c", FAKE_LEASES, "1000", timeout=120)
    assert len(lab.leases()) == 1000
    hosts = [lab.add_host() for _ in range(4)]
    for host in hosts:
        start(lab, host)
    me, *peers = hosts
    wait_for("1003 peers known", lambda: lab.counters(me)["peers"] == 1003, timeout=30)
    assert kernel_entries(lab, me) == (0, 0)  # nothing installed up front
    routes = lab.exec(me.ns, "ip", "route", "show", "dev", "flannel.1").stdout
    assert routes.strip().splitlines() == ["10.0.0.0/8 proto 70 scope link"]
    for peer in peers:
        reach(lab, me, peer)
        reach(lab, peer, me)
    assert kernel_entries(lab, me) == (3, 3)  # one container per peer: 3 + 3, not 1003
    # idle entries age out (IdleTimeout 10 s; the sweep runs every 5 s)
    wait_for("entries to age out", lambda: kernel_entries(lab, me) == (0, 0), timeout=30,
             interval=0.5)
    assert lab.counters(me)["entries_aged_out"] >= 3
    reach(lab, me, peers[0])  # and come back on demand
    assert kernel_entries(lab, me) == (1, 1)


def test_vtep_mac_and_device_survive_a_restart(lab: Lab) -> None:
    lab.put_config(vxlan_config())
    a, b = lab.add_host(), lab.add_host()
    start(lab, a)
    start(lab, b)
    mac = vtep_mac(lab, a)
    index = lab.exec(a.ns, "cat", "/sys/class/net/flannel.1/ifindex").stdout
    assert lab.stop_daemon(a) == 0
    reach(lab, b, a)  # the kernel data plane keeps working with the daemon gone
    lab.start_daemon(a, "-healthz-port=8471")
    wait_for("restarted", lambda: "running subnet" in lab.log_tail(a, 20), timeout=30)
    assert vtep_mac(lab, a) == mac
    assert lab.exec(a.ns, "cat", "/sys/class/net/flannel.1/ifindex").stdout == index
    reach(lab, a, b)
