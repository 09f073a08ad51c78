"""Dual stack (EnableIPv6) across namespaces with a real etcd: host-gw and kernel vxlan
carry IPv6 container to container; the lease key, the lease JSON and subnet.env are
flannel's byte for byte; a node programmed by hand exactly as Go flannel programs
`flannel-v6.1` exchanges IPv6 traffic with ours; an IPv4-only peer shares the network;
the udp backend and the userspace VXLAN data plane refuse IPv6 in one line."""

from __future__ import annotations

import json
from functools import partial
from ipaddress import IPv4Network, IPv6Network
from typing import Any

import pytest

from flanneld.files import write_atomic
from flanneld.lab import Host, Lab, wait_for
from flanneld.subnet_env import format_subnet_env

NETWORK = IPv4Network("10.5.0.0/16")
NETWORK6 = IPv6Network("fc00:5::/48")
GO_SUBNET = IPv4Network("10.5.200.0/24")
GO_SUBNET6 = IPv6Network("fc00:5:0:c8::/64")
GO_MAC, GO_MAC6 = "c6:d2:32:6f:8f:44", "c6:d2:32:6f:8f:66"


def dual_config(kind: str, **options: Any) -> dict[str, Any]:
    return {"Network": str(NETWORK), "EnableIPv6": True, "IPv6Network": str(NETWORK6),
            "Backend": {"Type": kind, **options}}


def dual_lab(lab: Lab, count: int) -> list[Host]:
    lab.ipv6 = True
    return [lab.add_host() for _ in range(count)]


def start(lab: Lab, host: Host, *extra: str) -> None:
    lab.start_daemon(host, "-healthz-port=8471", *extra)
    lab.wait_ready(host)
    lab.add_container(host)


def reach6(lab: Lab, a: Host, b: Host) -> None:
    wait_for(f"c{a.index} -> c{b.index} over IPv6",
             partial(lab.can_reach, a, b.container_ip6), timeout=10)


def reach(lab: Lab, a: Host, b: Host) -> None:
    wait_for(f"c{a.index} -> c{b.index}", partial(lab.can_reach, a, b.container_ip),
             timeout=10)


def mac_of(lab: Lab, host: Host, device: str) -> str:
    link = json.loads(lab.exec(host.ns, "ip", "-j", "link", "show", device).stdout)[0]
    return str(link["address"])


def raw_lease(lab: Lab, key: str) -> str:
    """The value exactly as etcd holds it (etcdctl, a client we did not write)."""
    out = lab.etcdctl("get", "--print-value-only", f"/coreos.com/network/subnets/{key}")
    return out.stdout.rstrip("\n")


def key_of(host: Host) -> str:
    return (f"{host.subnet.network_address}-{host.subnet.prefixlen}"
            f"&{host.subnet6.network_address}-{host.subnet6.prefixlen}")


@pytest.mark.parametrize("kind", ["host-gw", "vxlan"])
def test_dual_stack_traffic_leases_and_subnet_env_as_flannel(lab: Lab, kind: str) -> None:
    lab.put_config(dual_config(kind))
    a, b = dual_lab(lab, 2)
    for host in (a, b):
        start(lab, host, "-ip-masq")
    reach6(lab, a, b)
    reach6(lab, b, a)
    reach(lab, a, b)
    assert lab.ping(a, b.container_ip6, count=5)["received"] == 5
    assert lab.iperf(a, b, seconds=1, ipv6=True) > 50e6

    # the key and the value, byte for byte as flannel's json.Marshal(LeaseAttrs) writes them
    assert set(lab.leases()) == {key_of(a), key_of(b)}
    mtu = 1500 if kind == "host-gw" else 1450
    for host in (a, b):
        if kind == "host-gw":
            expected = (f'{{"PublicIP":"{host.ip}","PublicIPv6":"{host.ip6}",'
                        f'"BackendType":"host-gw"}}')
        else:
            expected = (f'{{"PublicIP":"{host.ip}","PublicIPv6":"{host.ip6}",'
                        f'"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":'
                        f'"{mac_of(lab, host, "flannel.1")}"}},"BackendV6Data":{{"VNI":1,'
                        f'"VtepMAC":"{mac_of(lab, host, "flannel-v6.1")}"}}}}')
        assert raw_lease(lab, key_of(host)) == expected
        assert host.subnet_file.read_text() == (
            f"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET={host.subnet.network_address + 1}/24\n"
            f"FLANNEL_IPV6_NETWORK=fc00:5::/48\n"
            f"FLANNEL_IPV6_SUBNET={host.subnet6.network_address + 1}/64\n"
            f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n")

    # flannel's ip6tables rules for the IPv6 network and subnet
    nat6 = lab.exec(a.ns, "ip6tables-save", "-t", "nat").stdout
    assert (f"-A FLANNEL-POSTRTG -s {a.subnet6} -d fc00:5::/48 -m comment --comment "
            f'"flanneld masq" -j RETURN') in nat6
    assert "! -d ff00::/8" in nat6
    assert "-s fc00:5::/48" in lab.exec(a.ns, "ip6tables-save", "-t", "filter").stdout

    route6 = lab.exec(a.ns, "ip", "-6", "route", "show", str(b.subnet6)).stdout
    if kind == "host-gw":
        assert f"via {b.ip6} dev eth0" in route6
        return
    # flannel-v6.1 as Go flannel programs it: local = our IPv6 address, <v6 subnet>/128
    link = json.loads(lab.exec(a.ns, "ip", "-d", "-j", "addr", "show", "flannel-v6.1").stdout)[0]
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["local6"], info["port"], link["mtu"]) == (1, a.ip6, 8472, 1430)
    assert info["learning"] is False and info["proxy"] and info["l2miss"] and info["l3miss"]
    assert [f"{x['local']}/{x['prefixlen']}" for x in link["addr_info"]
            if x["scope"] == "global"] == [f"{a.subnet6.network_address}/128"]
    gateway, mac6 = b.subnet6.network_address, mac_of(lab, b, "flannel-v6.1")
    assert f"via {gateway} dev flannel-v6.1" in route6 and "onlink" in route6
    neigh = lab.exec(a.ns, "ip", "-6", "neigh", "show", "dev", "flannel-v6.1").stdout
    assert f"{gateway} lladdr {mac6} PERMANENT" in neigh
    fdb = lab.exec(a.ns, "bridge", "fdb", "show", "dev", "flannel-v6.1").stdout
    assert f"{mac6} dst {b.ip6} self permanent" in fdb

    # flushed by someone: the misses on flannel-v6.1 are answered, traffic heals
    lab.exec(a.ns, "ip", "-6", "neigh", "flush", "dev", "flannel-v6.1", "nud", "permanent")
    lab.exec(a.ns, "bridge", "fdb", "del", mac6, "dev", "flannel-v6.1", "dst", b.ip6, "self")
    reach6(lab, a, b)
    counters = lab.counters(a)
    assert counters["v6_l3_misses_answered"] + counters["v6_l2_misses_answered"] >= 1
    assert counters["v6_peers"] == 1


def go_flannel_dual_node(lab: Lab, host: Host) -> None:
    """flannel.1 and flannel-v6.1, the lease and subnet.env, as Go flannel makes them."""
    for device, local, mac in (("flannel.1", host.ip, GO_MAC),
                               ("flannel-v6.1", host.ip6, GO_MAC6)):
        lab.exec(host.ns, "ip", "link", "add", device, "type", "vxlan", "id", "1", "local",
                 local, "dev", "eth0", "dstport", "8472", "nolearning")
        lab.exec(host.ns, "ip", "link", "set", device, "address", mac)
    lab.exec(host.ns, "ip", "link", "set", "flannel.1", "mtu", "1450")
    lab.exec(host.ns, "sysctl", "-qw", "net.ipv6.conf.flannel-v6/1.accept_ra=0")
    lab.exec(host.ns, "ip", "addr", "add", f"{GO_SUBNET.network_address}/32", "dev", "flannel.1")
    lab.exec(host.ns, "ip", "addr", "add", f"{GO_SUBNET6.network_address}/128", "dev",
             "flannel-v6.1")
    for device in ("flannel.1", "flannel-v6.1"):
        lab.exec(host.ns, "ip", "link", "set", device, "up")
    lease_id = lab.etcdctl("lease", "grant", "600").stdout.split()[1]
    key = "/coreos.com/network/subnets/10.5.200.0-24&fc00:5:0:c8::-64"
    value = (f'{{"PublicIP":"{host.ip}","PublicIPv6":"{host.ip6}","BackendType":"vxlan",'
             f'"BackendData":{{"VNI":1,"VtepMAC":"{GO_MAC}"}},'
             f'"BackendV6Data":{{"VNI":1,"VtepMAC":"{GO_MAC6}"}}}}')
    lab.etcdctl("put", "--lease", lease_id, key, value)
    write_atomic(host.subnet_file, format_subnet_env(NETWORK, GO_SUBNET, 1450, False,
                                                     NETWORK6, GO_SUBNET6))
    lab.add_container(host)


def go_flannel_add_dual_peer(lab: Lab, go: Host, peer: Host) -> None:
    """flannel's handleSubnetEvents for a dual-stack peer: AddARP, AddFDB, route; then
    AddV6ARP, AddV6FDB, the v6 route, from the peer's lease in etcd."""
    lease = lab.leases()[key_of(peer)]
    for device, family, subnet, public, data in (
            ("flannel.1", "-4", peer.subnet, lease["PublicIP"], lease["BackendData"]),
            ("flannel-v6.1", "-6", peer.subnet6, lease["PublicIPv6"], lease["BackendV6Data"])):
        gateway, mac = str(subnet.network_address), data["VtepMAC"]
        lab.exec(go.ns, "ip", family, "neigh", "replace", gateway, "lladdr", mac, "dev", device,
                 "nud", "permanent")
        lab.exec(go.ns, "bridge", "fdb", "replace", mac, "dev", device, "dst", public, "self",
                 "permanent")
        lab.exec(go.ns, "ip", family, "route", "replace", str(subnet), "via", gateway, "dev",
                 device, "onlink")


def test_a_go_flannel_dual_stack_node_and_ours_exchange_ipv6_traffic(lab: Lab) -> None:
    lab.put_config(dual_config("vxlan"))
    ours, go = dual_lab(lab, 2)
    go_flannel_dual_node(lab, go)
    start(lab, ours)
    go_flannel_add_dual_peer(lab, go, ours)
    reach6(lab, ours, go)
    reach6(lab, go, ours)
    reach(lab, ours, go)
    assert lab.iperf(go, ours, seconds=1, ipv6=True) > 50e6
    fdb = lab.exec(ours.ns, "bridge", "fdb", "show", "dev", "flannel-v6.1").stdout
    assert f"{GO_MAC6} dst {go.ip6} self permanent" in fdb


def test_an_ipv4_only_peer_and_dual_stack_peers_share_the_network(lab: Lab) -> None:
    lab.put_config(dual_config("vxlan"))
    a, b, v4 = dual_lab(lab, 3)
    # the IPv4-only peer: a kernel VXLAN node with a lease whose key has no IPv6 part
    lab.exec(v4.ns, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local",
             v4.ip, "dev", "eth0", "dstport", "8472", "nolearning")
    lab.exec(v4.ns, "ip", "link", "set", "flannel.1", "address", GO_MAC, "mtu", "1450", "up")
    lab.exec(v4.ns, "ip", "addr", "add", f"{GO_SUBNET.network_address}/32", "dev", "flannel.1")
    lab.etcdctl("put", "/coreos.com/network/subnets/10.5.200.0-24",
                f'{{"PublicIP":"{v4.ip}","PublicIPv6":null,"BackendType":"vxlan",'
                f'"BackendData":{{"VNI":1,"VtepMAC":"{GO_MAC}"}}}}')
    write_atomic(v4.subnet_file, format_subnet_env(NETWORK, GO_SUBNET, 1450, False))
    lab.add_container(v4)
    start(lab, a)
    start(lab, b)
    for peer in (a, b):
        lease = lab.leases()[key_of(peer)]
        gateway = str(peer.subnet.network_address)
        mac = lease["BackendData"]["VtepMAC"]
        lab.exec(v4.ns, "ip", "neigh", "replace", gateway, "lladdr", mac, "dev", "flannel.1",
                 "nud", "permanent")
        lab.exec(v4.ns, "bridge", "fdb", "append", mac, "dev", "flannel.1", "dst", peer.ip)
        lab.exec(v4.ns, "ip", "route", "replace", str(peer.subnet), "via", gateway, "dev",
                 "flannel.1", "onlink")
    reach6(lab, a, b)
    for x, y in ((a, v4), (v4, a), (b, v4)):
        reach(lab, x, y)
    counters = lab.counters(a)
    assert counters["peers"] == 2 and counters["v6_peers"] == 1
    routes6 = lab.exec(a.ns, "ip", "-6", "route", "show", "dev", "flannel-v6.1").stdout
    assert str(b.subnet6) in routes6 and routes6.count(" via ") == 1


@pytest.mark.parametrize(("backend", "message"), [
    ({"Type": "udp"}, "the udp backend is IPv4-only, as in flannel, but EnableIPv6 is true"),
    ({"Type": "vxlan", "Dataplane": "userspace"},
     "the userspace data plane is IPv4-only; EnableIPv6 needs Dataplane kernel"),
])
def test_ipv4_only_data_paths_refuse_ipv6_in_one_line(lab: Lab, backend: dict[str, Any],
                                                       message: str) -> None:
    lab.put_config({**dual_config("x"), "Backend": backend})
    (host,) = dual_lab(lab, 1)
    lab.start_daemon(host)
    assert host.daemon is not None
    wait_for("flanneld to exit", lambda: host.daemon is not None
             and host.daemon.poll() is not None, timeout=20)
    assert host.daemon.returncode == 1
    last = host.log_file.read_text().strip().splitlines()[-1]
    assert message in last and "Traceback" not in host.log_file.read_text()
    assert lab.leases() == {}
