"""Races at scale: many daemons started at once against a real etcd."""

from __future__ import annotations

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
