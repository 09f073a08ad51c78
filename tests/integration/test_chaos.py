"""Chaos with a real etcd: a daemon killed with SIGKILL at random points of its renewal
cycle, and a host cut off from etcd while the cluster changes."""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Sequence
from functools import partial
from ipaddress import IPv4Network
from typing import Any

from flanneld.lab import ETCD_IP, ETCD_PORT, Host, Lab, wait_for

HOST_GW = {"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}
TTL_S = 6  # renewal every 3 s (half the TTL)
PARTITION_S = 20  # longer than gRPC's keep-alive needs to declare the connection dead
HEAL_BOUND_S = 15  # the bound README states for a healed host to catch up


def etcd_leases(lab: Lab) -> set[str]:
    """The etcd lease IDs alive now."""
    out = lab.etcdctl("lease", "list").stdout.splitlines()
    return {line.strip() for line in out[1:] if line.strip()}


def subnet_keys(lab: Lab) -> dict[str, Any]:
    return lab.leases()


def routes(lab: Lab, host: Host) -> set[IPv4Network]:
    out = lab.exec(host.ns, "ip", "-j", "route", "show", "proto", "70").stdout
    return {IPv4Network(route["dst"]) for route in json.loads(out or "[]")}


def peers_in_etcd(lab: Lab, me: Host) -> set[IPv4Network]:
    return {IPv4Network(key.replace("-", "/")) for key in lab.leases()} - {me.subnet}


def test_sigkill_at_random_points_of_the_renewal_cycle(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    a, b = lab.add_host(), lab.add_host()
    for host in (a, b):
        lab.start_daemon(host, f"-subnet-lease-ttl={TTL_S}")
    subnet = lab.wait_ready(a)
    lab.wait_ready(b)
    for host in (a, b):
        lab.add_container(host)
    rng = random.Random(11)
    for round_ in range(8):
        time.sleep(rng.uniform(0, TTL_S / 2))  # the point of the cycle is what is random
        assert lab.stop_daemon(a, signal.SIGKILL) == -signal.SIGKILL
        lab.start_daemon(a, f"-subnet-lease-ttl={TTL_S}")
        assert lab.wait_ready(a) == subnet, f"round {round_}: a moved subnet"
        wait_for(f"round {round_}: c2 -> c1", lambda: lab.can_reach(b, a.container_ip))
        # no etcd lease piles up: one per daemon, plus at most the killed one's until its
        # TTL runs out
        assert len(etcd_leases(lab)) <= 3, etcd_leases(lab)
    # after a TTL, only the live daemons' leases are left, and both keys are still there
    wait_for("orphaned etcd leases to expire", lambda: len(etcd_leases(lab)) == 2,
             timeout=TTL_S * 2)
    time.sleep(TTL_S)  # a whole TTL later the keys must still be renewed
    assert len(subnet_keys(lab)) == 2 and len(etcd_leases(lab)) == 2
    assert lab.can_reach(a, b.container_ip) and lab.can_reach(b, a.container_ip)
    assert consistent(lab, (a, b))


def test_a_host_cut_off_from_etcd_keeps_traffic_and_catches_up(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    a, b, c = lab.add_host(), lab.add_host(), lab.add_host()
    for host in (a, b, c):
        lab.start_daemon(host, "-healthz-port=8471")
    for host in (a, b, c):
        lab.wait_ready(host)
        lab.add_container(host)
    wait_for("c1 -> c2", lambda: lab.can_reach(a, b.container_ip))
    blocks = (("OUTPUT", "-d", ETCD_IP, "-p", "tcp", "--dport", str(ETCD_PORT), "-j", "DROP"),
              ("INPUT", "-s", ETCD_IP, "-p", "tcp", "--sport", str(ETCD_PORT), "-j", "DROP"))
    for block in blocks:  # both ways: etcd's pushes would still arrive otherwise
        lab.exec(a.ns, "iptables", "-I", *block)
    try:
        # the cluster changes while a cannot see it: a new host's lease
        lab.etcdctl("put", "/coreos.com/network/subnets/10.5.250.0-24",
                    '{"PublicIP":"192.0.2.250","PublicIPv6":null,"BackendType":"host-gw"}')
        wait_for("b and c to route the new lease", lambda: all(
            IPv4Network("10.5.250.0/24") in routes(lab, host) for host in (b, c)))
        started = time.monotonic()
        while time.monotonic() - started < PARTITION_S:  # traffic flows all along
            assert lab.can_reach(a, b.container_ip) and lab.can_reach(c, a.container_ip)
            time.sleep(1)
        assert a.daemon is not None and a.daemon.poll() is None
        assert IPv4Network("10.5.250.0/24") not in routes(lab, a)  # it really was cut off
    finally:
        for block in blocks:
            lab.exec(a.ns, "iptables", "-D", *block)
    healed = time.monotonic()
    wait_for("a's peer set to match etcd", lambda: routes(lab, a) == peers_in_etcd(lab, a),
             timeout=HEAL_BOUND_S, interval=0.1)
    caught_up_s = time.monotonic() - healed
    print(f"caught up {caught_up_s:.1f} s after the partition healed")
    assert caught_up_s < HEAL_BOUND_S
    assert lab.counters(a)["watch_connected"]
    assert lab.can_reach(a, c.container_ip)


def consistent(lab: Lab, hosts: Sequence[Host]) -> bool:
    """Every host routes exactly the other subnets etcd holds."""
    return all(routes(lab, host) == peers_in_etcd(lab, host) for host in hosts)


def test_a_key_deleted_by_hand_is_taken_back_and_every_host_agrees(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    a, b, c = lab.add_host(), lab.add_host(), lab.add_host()
    for host in (a, b, c):
        lab.start_daemon(host)
    for host in (a, b, c):
        lab.wait_ready(host)
    wait_for("a consistent start", lambda: consistent(lab, (a, b, c)))
    subnet = a.subnet
    lab.etcdctl("del", f"/coreos.com/network/subnets/{subnet.network_address}-24")
    deleted = time.monotonic()
    wait_for("a's key to come back", lambda: f"{subnet.network_address}-24" in lab.leases(),
             timeout=10, interval=0.05)
    wait_for("every host to agree with etcd", lambda: consistent(lab, (a, b, c)),
             timeout=HEAL_BOUND_S, interval=0.1)
    assert time.monotonic() - deleted < HEAL_BOUND_S
    assert a.subnet == subnet and a.daemon is not None and a.daemon.poll() is None
    # logged after the revoke of the old etcd lease, so after the key is back: poll
    wait_for("a to log the re-acquisition", lambda: "re-acquired" in a.log_file.read_text())


BAD_CONFIGS = (
    '{"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}',  # not JSON
    '{"Network": 10, "Backend": {"Type": "host-gw"}}',  # a wrong type
    '{"Network": "10.5.0.0/16", "SubnetLen": 40, "Backend": {"Type": "host-gw"}}',  # range
    '{"Network": "10.5.0.0/16", "Backend": {"Type": "nosuch"}}',  # an unknown backend
    '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "VNI": "one"}}',  # an option
)


def rejected_at_least(lab: Lab, host: Host, count: int) -> bool:
    return int(lab.counters(host)["config_rejected"]) >= count


def test_bad_configs_in_etcd_are_rejected_and_the_last_good_one_stays(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    a, b = lab.add_host(), lab.add_host()
    for host in (a, b):
        lab.start_daemon(host, "-healthz-port=8471")
    for host in (a, b):
        lab.wait_ready(host)
    for number, bad in enumerate(BAD_CONFIGS, start=1):
        lab.put_config(bad)
        wait_for(f"bad config {number} to be rejected",
                 partial(rejected_at_least, lab, a, number), timeout=15)
        assert a.daemon is not None and a.daemon.poll() is None
    log = a.log_file.read_text()
    assert "Traceback" not in log and log.count("keeping the last good one") == len(BAD_CONFIGS)
    # the node still follows the cluster under its last good config
    lab.etcdctl("put", "/coreos.com/network/subnets/10.5.250.0-24",
                '{"PublicIP":"192.0.2.250","PublicIPv6":null,"BackendType":"host-gw"}')
    wait_for("a route to the new peer", lambda: IPv4Network("10.5.250.0/24") in routes(lab, a))
