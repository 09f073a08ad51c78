"""The udp backend across namespaces with a real etcd, against our own nodes and socat."""

from __future__ import annotations

import subprocess
import sys
import time
from functools import partial
from ipaddress import IPv4Network

import pytest

from flanneld.lab import Host, Lab, wait_for

UDP = {"Network": "10.5.0.0/16", "Backend": {"Type": "udp"}}
HEALTHZ = "-healthz-port=8471"

pytestmark = pytest.mark.usefixtures("engine")  # each test with both engines


def start_hosts(lab: Lab, count: int) -> list[Host]:
    lab.put_config(UDP)
    hosts = [lab.add_host() for _ in range(count)]
    for host in hosts:
        lab.start_daemon(host, HEALTHZ)
    for host in hosts:
        lab.wait_ready(host)
        lab.add_container(host)
    return hosts


def flannel0_exists(lab: Lab, host: Host) -> bool:
    return lab.exec(host.ns, "ip", "link", "show", "flannel0", check=False).returncode == 0


def test_three_hosts_ping_and_iperf3_in_every_direction(lab: Lab, engine: str) -> None:
    hosts = start_hosts(lab, 3)
    env = hosts[0].subnet_env()
    assert env["FLANNEL_MTU"] == "1472"  # underlay 1500 - 28
    assert "BackendType" not in str(lab.leases())  # udp leases carry no BackendType
    link = lab.exec(hosts[0].ns, "ip", "-d", "addr", "show", "flannel0").stdout
    assert f"inet {hosts[0].subnet.network_address}/32" in link and "mtu 1472" in link
    assert "dev flannel0" in lab.exec(hosts[0].ns, "ip", "route", "show", "10.5.0.0/16").stdout
    for a in hosts:
        for b in hosts:
            if a is not b:
                wait_for(f"c{a.index}->c{b.index}", partial(lab.can_reach, a, b.container_ip))
                assert lab.iperf(a, b, seconds=2) > 50e6
    counters = lab.counters(hosts[0])
    assert counters["engine_native"] == (engine == "native")
    assert f"engine={engine}" in hosts[0].log_file.read_text()
    assert counters["tx_packets"] > 1000 and counters["rx_packets"] > 1000
    assert counters["drop_not_peer"] == 0 and counters["drop_malformed"] == 0


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 5201), timeout=2)
except OSError as exc:
    print(f"errno={exc.errno}")
"""


def test_a_peer_that_leaves_is_unreachable_and_a_new_one_is_reachable_at_once(lab: Lab) -> None:
    h1, _, h3 = start_hosts(lab, 3)
    lab.stop_daemon(h3)
    lab.etcdctl("del", f"/coreos.com/network/subnets/{h3.subnet.network_address}-24")
    # flannel sends no ICMP error about ICMP (so ping just times out); TCP gets a Net
    # Unreachable from h1's flannel0 and fails at once with ENETUNREACH
    wait_for("h3 to be unroutable", lambda: "errno=101" in lab.exec(
        h1.container_ns, sys.executable, "-c", CONNECT, h3.container_ip, check=False).stdout,
        timeout=5)
    counters = lab.counters(h1)
    assert counters["drop_no_route"] >= 1 and counters["icmp_sent"] >= 1
    assert counters["drop_not_ipv4"] == 0  # no IPv6 noise on flannel0

    h4 = lab.add_host()
    lab.start_daemon(h4, HEALTHZ)
    known = set(lab.leases())
    new_key = wait_for("h4's lease", lambda: set(lab.leases()) - known, timeout=30, interval=0.02)
    appeared = time.monotonic()
    subnet = IPv4Network(next(iter(new_key)).replace("-", "/"))
    target = str(subnet.network_address)  # h4's flannel0 address: needs both directions
    wait_for("c1 -> h4", lambda: lab.exec(h1.container_ns, "ping", "-c", "1", "-W", "0.2",
                                          target, check=False).returncode == 0,
             timeout=5, interval=0.01)
    assert time.monotonic() - appeared < 1.0


def test_socat_speaking_flannels_udp_format_both_ways(lab: Lab) -> None:
    """h2 runs no flanneld: socat moves raw IPv4 between a TUN and UDP, as flannel does."""
    lab.put_config(UDP)
    ours, other = lab.add_host(), lab.add_host()
    lab.etcdctl("put", "/coreos.com/network/subnets/10.5.210.0-24",
                '{"PublicIP":"192.0.2.2","PublicIPv6":null}')
    lab.start_daemon(ours, HEALTHZ)
    lab.wait_ready(ours)
    lab.add_container(ours)
    socat = subprocess.Popen(
        ["ip", "netns", "exec", other.ns, "socat", f"UDP:{ours.ip}:8285,bind={other.ip}:8285",
         "TUN:10.5.210.1/16,tun-name=socat0,iff-no-pi,iff-up"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("socat0", lambda: lab.exec(other.ns, "ip", "link", "show", "socat0",
                                            check=False).returncode == 0, timeout=10)
        lab.exec(other.ns, "ip", "link", "set", "socat0", "mtu", "1472")
        # socat's side -> our container, and our container -> socat's side
        wait_for("socat -> c1", lambda: lab.exec(other.ns, "ping", "-c", "1", "-W", "1",
                                                 ours.container_ip, check=False).returncode == 0,
                 timeout=10)
        assert lab.can_reach(ours, "10.5.210.1")
        counters = lab.counters(ours)
        assert counters["rx_packets"] >= 1 and counters["tx_packets"] >= 1
    finally:
        socat.terminate()
        socat.wait(5)


INJECT = """
import socket, sys
from scapy.layers.inet import IP, UDP
inner = bytes(IP(src="10.5.99.9", dst=sys.argv[2], ttl=64) / UDP(sport=4444, dport=9999)
              / b"injected")
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    sock.sendto(inner, (sys.argv[1], 8285))
"""


def test_datagrams_from_a_host_without_a_lease_never_reach_a_container(lab: Lab) -> None:
    h1, h2 = start_hosts(lab, 2)
    outsider = lab.add_host()  # on the same underlay, holds no lease
    listener = subprocess.Popen(
        ["ip", "netns", "exec", h1.container_ns, "timeout", "6", "socat", "-u",
         "UDP-RECV:9999", "STDOUT"], stdout=subprocess.PIPE)
    time.sleep(0.5)  # let the listener bind; only its absence of output is asserted on
    lab.exec(outsider.ns, sys.executable, "-c", INJECT, h1.ip, h1.container_ip, "100")
    wait_for("100 counted drops", lambda: lab.counters(h1)["drop_not_peer"] >= 100, timeout=5)
    # the positive control: the same packet from a peer's address is delivered
    lab.exec(h2.ns, sys.executable, "-c", INJECT, h1.ip, h1.container_ip, "1")
    received, _ = listener.communicate(timeout=10)
    assert received.count(b"injected") == 1  # exactly the peer's one, none of the 100
    # and a peer cannot aim at a subnet that is not ours
    lab.exec(h2.ns, sys.executable, "-c", INJECT, h1.ip, h2.container_ip, "5")
    wait_for("not-our-subnet drops", lambda: lab.counters(h1)["drop_not_our_subnet"] >= 5,
             timeout=5)


def test_restart_recreates_flannel0_and_routes_within_a_second(lab: Lab) -> None:
    h1, h2 = start_hosts(lab, 2)
    assert lab.stop_daemon(h1) == 0
    assert not flannel0_exists(lab, h1)  # the TUN is not persistent (as in flannel)
    lab.start_daemon(h1, HEALTHZ)
    wait_for("flannel0", partial(flannel0_exists, lab, h1), timeout=30, interval=0.01)
    created = time.monotonic()
    wait_for("c1 -> c2 again", lambda: lab.exec(h1.container_ns, "ping", "-c", "1", "-W", "0.2",
                                                h2.container_ip, check=False).returncode == 0,
             timeout=5, interval=0.01)
    assert time.monotonic() - created < 1.0
