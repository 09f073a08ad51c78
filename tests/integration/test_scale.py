"""Races at scale: many daemons started at once against a real etcd."""

from __future__ import annotations

import json
import re
from functools import partial

from flanneld.lab import Host, Lab, wait_for


def has_routes(lab: Lab, host: Host, count: int) -> bool:
    out = lab.exec(host.ns, "ip", "-4", "route", "show", "proto", "70").stdout
    return len(out.splitlines()) == count


def test_fifty_daemons_at_once_for_exactly_fifty_subnets_and_a_fifty_first(lab: Lab) -> None:
    lab.put_config({"Network": "10.8.0.0/24", "SubnetLen": 30, "SubnetMin": "10.8.0.4",
                    "SubnetMax": "10.8.0.200", "Backend": {"Type": "host-gw"}})  # 50 x /30
    hosts = [lab.add_host() for _ in range(50)]
    for host in hosts:  # all at once: they race for the same 50 subnets
        lab.start_daemon(host)
    subnets = [lab.wait_ready(host, timeout=300) for host in hosts]
    assert len(set(subnets)) == 50
    leases = lab.leases()
    assert len(leases) == 50
    assert sorted(lease["PublicIP"] for lease in leases.values()) == sorted(h.ip for h in hosts)
    assert all(host.daemon is not None and host.daemon.poll() is None for host in hosts)
    # a consistent peer set: every host ends up routing to the 49 others
    for host in hosts:
        wait_for(f"49 routes on {host.ns}", partial(has_routes, lab, host, 49), timeout=60,
                 interval=0.5)

    extra = lab.add_host()
    lab.start_daemon(extra)
    assert extra.daemon is not None and extra.daemon.wait(120) == 1
    log = extra.log_file.read_text()
    assert "out of subnets" in log and "Traceback" not in log
    assert len(lab.leases()) == 50


def fdb_has(lab: Lab, host: Host, mac: str) -> bool:
    return mac in lab.exec(host.ns, "bridge", "fdb", "show", "dev", "flannel.1").stdout


def logged_removals(host: Host, count: int) -> int:
    """How many bulk removal lines, once they and the single ones add up to `count`."""
    text = host.log_file.read_text(errors="replace")
    bulk = [int(n) for n in re.findall(r"(?:peers|routes) removed count=(\d+) ", text)]
    single = len(re.findall(r"(?:peer|route) removed subnet=", text))
    return len(bulk) if sum(bulk) + single == count else 0


def logged_bulk(host: Host, count: int) -> bool:
    text = host.log_file.read_text(errors="replace")
    return f"peers added or changed count={count} " in text or \
        f"routes added count={count} " in text


def test_a_node_joining_a_big_cluster_programs_every_peer_in_bulk(lab: Lab) -> None:
    """600 leases already there: the kernel ends up with exactly what each one asks for
    (routes; for vxlan neighbour, FDB entry, onlink route), and later single changes still
    apply one by one."""
    from benchmarks.scale import simulated_leases, write_leases

    for backend in ("host-gw", "vxlan"):
        lab.etcdctl("del", "--prefix", "/coreos.com/network/")
        lab.put_config({"Network": "10.64.0.0/10", "Backend": {"Type": backend}})
        leases = simulated_leases(600, backend, set())
        write_leases(lab, leases)
        host = lab.add_host()
        lab.start_daemon(host)
        lab.wait_ready(host)
        wait_for(f"{backend}: 600 routes", partial(has_routes, lab, host, 600), timeout=60)
        routes = lab.exec(host.ns, "ip", "-4", "route", "show", "proto", "70").stdout
        expected_routes = set()
        neighbours, fdb = set(), set()
        for key, value in leases:
            network = key.rsplit("/", 1)[1].replace("-", "/")
            doc = json.loads(value)
            gateway = network.split("/")[0]
            if backend == "host-gw":
                expected_routes.add(f"{network} via {doc['PublicIP']} dev eth0")
            else:
                expected_routes.add(f"{network} via {gateway} dev flannel.1 onlink")
                mac = doc["BackendData"]["VtepMAC"]
                neighbours.add(f"{gateway} lladdr {mac} PERMANENT")
                fdb.add(f"{mac} dst {doc['PublicIP']} self permanent")
        got = {" ".join(line.split()[:7]).replace(" proto 70", "") for line in
               routes.splitlines()}
        assert {r for r in expected_routes if r not in got} == set(), backend
        if backend == "vxlan":
            neigh_out = lab.exec(host.ns, "ip", "neigh", "show", "dev", "flannel.1").stdout
            assert neighbours <= {line.strip() for line in neigh_out.splitlines()}
            fdb_out = lab.exec(host.ns, "bridge", "fdb", "show", "dev", "flannel.1").stdout
            assert fdb <= {line.strip() for line in fdb_out.splitlines()}
        # the daemon logs the bulk change after the kernel has it: poll, the routes may win
        wait_for(f"{backend}: one bulk log line for all 600 peers",
                 partial(logged_bulk, host, 600))
        if backend == "vxlan":  # every peer moves at once: new VtepMACs and PublicIPs
            moved = simulated_leases(600, backend, set(), generation=1)
            write_leases(lab, moved)
            last_mac = json.loads(moved[-1][1])["BackendData"]["VtepMAC"]
            wait_for("the last peer to move", partial(fdb_has, lab, host, last_mac))
            fdb_out = lab.exec(host.ns, "bridge", "fdb", "show", "dev", "flannel.1").stdout
            now = {line.strip() for line in fdb_out.splitlines() if "dst" in line}
            assert now == {f"{json.loads(v)['BackendData']['VtepMAC']} dst "
                           f"{json.loads(v)['PublicIP']} self permanent" for _, v in moved}
            neigh_out = lab.exec(host.ns, "ip", "neigh", "show", "dev", "flannel.1").stdout
            assert {f"{k.rsplit('/', 1)[1].split('-')[0]} lladdr "
                    f"{json.loads(v)['BackendData']['VtepMAC']} PERMANENT" for k, v in moved} \
                <= {line.strip() for line in neigh_out.splitlines()}
            assert has_routes(lab, host, 600)
        # a single new lease afterwards takes the ordinary path
        lab.etcdctl("put", "/coreos.com/network/subnets/10.127.0.0-24", leases[0][1])
        wait_for(f"{backend}: the 601st route", partial(has_routes, lab, host, 601))
        # all of them leave at once (transactions of 128): removed in bulk, nothing left
        gone = [(key, None) for key, _ in leases] + \
            [("/coreos.com/network/subnets/10.127.0.0-24", None)]
        write_leases(lab, gone)
        wait_for(f"{backend}: no route of ours", partial(has_routes, lab, host, 0))
        if backend == "vxlan":
            left = lab.exec(host.ns, "ip", "neigh", "show", "dev", "flannel.1").stdout + \
                lab.exec(host.ns, "bridge", "fdb", "show", "dev", "flannel.1").stdout
            assert " dst 192.0.2." not in left and "PERMANENT" not in left, left
        wait_for(f"{backend}: all 601 removals logged", partial(logged_removals, host, 601))
        assert logged_removals(host, 601) > 0  # at least one batch went in bulk
        lab.stop_daemon(host)
        lab.exec(host.ns, "ip", "route", "flush", "proto", "70")
