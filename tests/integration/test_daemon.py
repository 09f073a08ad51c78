"""flanneld as a subprocess in network namespaces, with a real etcd and host-gw routes."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from flanneld.files import write_atomic
from flanneld.lab import Host, Lab, wait_for
from flanneld.subnet_env import format_subnet_env
from tests.integration.conftest import engine_variant

from .conftest import HOST_GW


def routes(lab: Lab, host: Host) -> str:
    return lab.exec(host.ns, "ip", "-4", "route", "show", "proto", "70").stdout


def count_routes(lab: Lab, host: Host, expected: int) -> bool:
    return len(routes(lab, host).splitlines()) == expected


def subnets_in_etcd(lab: Lab) -> dict[str, str]:
    return {key: value["PublicIP"] for key, value in lab.leases().items()}


def start(lab: Lab, host: Host, *extra: str) -> IPv4Network:
    lab.start_daemon(host, *extra)
    return lab.wait_ready(host)


def test_three_hosts_route_to_each_other_and_follow_lease_changes(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    hosts = [lab.add_host() for _ in range(3)]
    subnets = [start(lab, host) for host in hosts]
    assert len(set(subnets)) == 3
    assert subnets_in_etcd(lab) == {f"{s.network_address}-24": h.ip
                                    for s, h in zip(subnets, hosts, strict=True)}
    for host in hosts:
        lab.add_container(host)
    for a in hosts:
        for b in hosts:
            if a is not b:
                wait_for(f"c{a.index}->c{b.index}", partial(lab.can_reach, a, b.container_ip))
    h1, h2, h3 = hosts
    assert f"{subnets[1]} via {h2.ip} dev eth0" in routes(lab, h1)

    # a peer that leaves (its lease deleted) is no longer routed
    lab.stop_daemon(h3)
    lab.etcdctl("del", f"/coreos.com/network/subnets/{subnets[2].network_address}-24")
    wait_for("h3's route to go", lambda: str(subnets[2]) not in routes(lab, h1), timeout=5)

    # a route deleted by hand is repaired by the 10 s re-check
    lab.exec(h1.ns, "ip", "route", "del", str(subnets[1]))
    wait_for("route repair", lambda: str(subnets[1]) in routes(lab, h1), timeout=15)


def test_a_hand_written_go_flannel_lease_is_a_peer_both_ways(lab: Lab) -> None:
    """h2 is programmed by hand exactly as Go flannel's host-gw would program it."""
    lab.put_config(HOST_GW)
    ours, go = lab.add_host(), lab.add_host()
    go_subnet = IPv4Network("10.5.200.0/24")
    lease_id = lab.etcdctl("lease", "grant", "600").stdout.split()[1]
    lab.etcdctl("put", "--lease", lease_id, "/coreos.com/network/subnets/10.5.200.0-24",
                '{"PublicIP":"192.0.2.2","PublicIPv6":null,"BackendType":"host-gw"}')
    our_subnet = start(lab, ours)
    wait_for("route to the Go node", lambda: f"{go_subnet} via {go.ip} dev eth0"
             in routes(lab, ours), timeout=5)
    write_atomic(go.subnet_file, format_subnet_env(IPv4Network("10.5.0.0/16"), go_subnet,
                                                   1500, False))
    lab.exec(go.ns, "ip", "route", "add", str(our_subnet), "via", ours.ip, "dev", "eth0")
    lab.add_container(ours)
    lab.add_container(go)
    wait_for("ours -> go", lambda: lab.can_reach(ours, go.container_ip))
    assert lab.can_reach(go, ours.container_ip)


def test_two_daemons_racing_for_the_last_subnet(lab: Lab) -> None:
    lab.put_config({"Network": "10.9.0.0/28", "Backend": {"Type": "host-gw"}})  # 3 x /30
    for base, ip in ((4, "192.0.2.101"), (8, "192.0.2.102")):
        lab.etcdctl("put", f"/coreos.com/network/subnets/10.9.0.{base}-30",
                    json.dumps({"PublicIP": ip, "PublicIPv6": None, "BackendType": "host-gw"}))
    hosts = [lab.add_host(), lab.add_host()]
    for host in hosts:
        lab.start_daemon(host)
    def outcome(host: Host) -> str | None:
        assert host.daemon is not None
        if host.daemon.poll() is not None:
            return f"exit {host.daemon.returncode}"
        return "ready" if "FLANNEL_SUBNET" in host.subnet_env() else None

    outcomes = [wait_for("an outcome", partial(outcome, host), timeout=30) for host in hosts]
    assert sorted(outcomes) == ["exit 1", "ready"], [lab.log_tail(h) for h in hosts]
    winner, loser = (hosts[0], hosts[1]) if outcomes[0] == "ready" else (hosts[1], hosts[0])
    assert winner.subnet == IPv4Network("10.9.0.12/30")
    log = loser.log_file.read_text()
    assert "out of subnets" in log and "Traceback" not in log


def test_twenty_daemons_at_once_get_twenty_distinct_subnets(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    hosts = [lab.add_host() for _ in range(20)]
    for host in hosts:
        lab.start_daemon(host)
    subnets = [lab.wait_ready(host, timeout=90) for host in hosts]
    assert len(set(subnets)) == 20
    in_etcd = subnets_in_etcd(lab)
    assert len(in_etcd) == 20 and sorted(in_etcd.values()) == sorted(h.ip for h in hosts)
    # everyone ends up with a route to everyone else
    for host in (hosts[0], hosts[-1]):
        wait_for("19 routes", partial(count_routes, lab, host, 19), timeout=20)


def test_a_reservation_is_honoured_and_stays_permanent(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    key = "/coreos.com/network/subnets/10.5.123.0-24"
    lab.etcdctl("put", key, json.dumps({"PublicIP": host.ip, "PublicIPv6": None}))
    assert start(lab, host) == IPv4Network("10.5.123.0/24")
    kv = json.loads(lab.etcdctl("get", key, "-w", "json").stdout)["kvs"][0]
    assert kv.get("lease", 0) == 0  # still a reservation: no TTL was attached


def test_restart_keeps_the_subnet_the_lease_and_the_routes(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    a, b = lab.add_host(), lab.add_host()
    subnet_a, subnet_b = start(lab, a), start(lab, b)
    wait_for("route a->b", lambda: str(subnet_b) in routes(lab, a), timeout=5)
    started = time.monotonic()
    assert lab.stop_daemon(a) == 0
    assert time.monotonic() - started < 2
    assert f"{subnet_a.network_address}-24" in lab.leases()  # shutdown keeps the lease
    assert str(subnet_b) in routes(lab, a)  # and the kernel state
    assert start(lab, a) == subnet_a
    # even without subnet.env, the lease with our PublicIP brings the same subnet back
    lab.stop_daemon(a)
    a.subnet_file.unlink()
    assert start(lab, a) == subnet_a


def test_waits_for_config_then_runs_without_a_traceback(lab: Lab) -> None:
    host = lab.add_host()
    lab.start_daemon(host)
    wait_for("the waiting line", lambda: "is missing; waiting" in host.log_file.read_text(),
             timeout=15)
    lab.put_config("{not json")
    wait_for("the invalid-config line", lambda: "not valid JSON" in host.log_file.read_text(),
             timeout=15)
    lab.put_config(HOST_GW)
    lab.wait_ready(host)
    log = host.log_file.read_text()
    assert "Traceback" not in log
    assert log.count("is missing; waiting") == 1  # one line per class of failure


def test_etcd_down_for_ten_seconds(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    a, b = lab.add_host(), lab.add_host()
    subnet_a = start(lab, a, "-subnet-lease-ttl=6")
    start(lab, b, "-subnet-lease-ttl=6")
    key = f"{subnet_a.network_address}-24"
    lab.stop_etcd()
    time.sleep(10)  # the outage itself is what is under test
    assert a.daemon is not None and a.daemon.poll() is None
    lab.start_etcd()
    # renewing resumes: the key outlives several TTLs after etcd is back
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert key in lab.leases(), lab.log_tail(a)
        time.sleep(1)
    # and the watch resumes: a new peer is routed
    lab.etcdctl("put", "/coreos.com/network/subnets/10.5.250.0-24",
                '{"PublicIP":"192.0.2.250","PublicIPv6":null,"BackendType":"host-gw"}')
    wait_for("route to the new peer", lambda: "10.5.250.0/24" in routes(lab, a), timeout=10)
    assert "Traceback" not in a.log_file.read_text()


def test_compaction_during_a_watch_is_recovered(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    start(lab, host)
    subnets = "/coreos.com/network/subnets/"
    lab.etcdctl("put", subnets + "10.5.241.0-24",
                '{"PublicIP":"192.0.2.241","PublicIPv6":null,"BackendType":"host-gw"}')
    wait_for("first peer", lambda: "10.5.241.0/24" in routes(lab, host), timeout=5)
    assert host.daemon is not None
    host.daemon.send_signal(signal.SIGSTOP)
    try:
        # cut the daemon's connection first, so that no later event can sit in a buffer
        lab.exec(host.ns, "ss", "-K", "dst", "192.0.2.254", "dport", "=", "2379")
        lab.etcdctl("del", subnets + "10.5.241.0-24")
        lab.etcdctl("put", subnets + "10.5.242.0-24",
                    '{"PublicIP":"192.0.2.242","PublicIPv6":null,"BackendType":"host-gw"}')
        revision = json.loads(lab.etcdctl("get", "x", "-w", "json").stdout)["header"]["revision"]
        lab.etcdctl("compact", str(revision))
    finally:
        host.daemon.send_signal(signal.SIGCONT)
    wait_for("the diff after re-listing", lambda: "10.5.242.0/24" in routes(lab, host)
             and "10.5.241.0/24" not in routes(lab, host), timeout=15)
    assert "compacted" in host.log_file.read_text()


def test_host_gw_refuses_to_run_behind_nat(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    lab.start_daemon(host, "-public-ip=198.51.100.7")
    assert host.daemon is not None
    assert host.daemon.wait(30) == 1
    log = host.log_file.read_text()
    assert "behind NAT" in log and "Traceback" not in log


@pytest.mark.parametrize("variant", ["host-gw", "udp", "udp-python", "vxlan", "vxlan-userspace",
                                     "vxlan-userspace-python"])
def test_the_lab_command_passes_ping_and_iperf3(variant: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    backend = engine_variant(monkeypatch, variant)
    args = ["--backend", "vxlan", "--dataplane", "userspace"] \
        if backend == "vxlan-userspace" else ["--backend", backend]
    result = subprocess.run([sys.executable, "-m", "flanneld.lab", "--json", "--seconds", "2",
                             *args],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    assert len(report["ping"]) == 6 and all(p["received"] == p["sent"] for p in report["ping"])
    assert len(report["iperf3"]) == 3 and all(r["gbit_s"] > 0.1 for r in report["iperf3"])
    netns = Path("/run/netns")
    assert not [ns for ns in netns.iterdir() if ns.name.startswith(report["prefix"] + "-")]


def test_etcd_unreachable_at_start_is_waited_for_with_one_line(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    lab.stop_etcd()
    lab.start_daemon(host)
    wait_for("the etcd line", lambda: "etcd unavailable" in host.log_file.read_text(),
             timeout=15)
    time.sleep(3)  # several more failed attempts happen here; they must not be logged
    assert host.daemon is not None and host.daemon.poll() is None
    lab.start_etcd()
    lab.wait_ready(host)
    log = host.log_file.read_text()
    assert log.count("etcd unavailable") == 1, log
    assert "recovered after" in log and "Traceback" not in log


def test_the_etcd_password_is_never_logged(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    lab.start_daemon(host, "-etcd-username=root", "-v=10",
                     env={"FLANNELD_ETCD_PASSWORD": "Sup3r-S3cret"})
    wait_for("the auth failure line", lambda: "refused user 'root'" in host.log_file.read_text(),
             timeout=15)
    lab.stop_daemon(host)
    assert "Sup3r-S3cret" not in host.log_file.read_text()


def test_interface_selection(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    lab.start_daemon(host, iface="192.0.2.1")
    lab.wait_ready(host)
    lab.stop_daemon(host)
    lab.start_daemon(host, "-iface=missing0", "-iface-regex=^nothing", iface="nope0")
    assert host.daemon is not None and host.daemon.wait(30) == 1
    assert "-iface: none of nope0, missing0 exists" in host.log_file.read_text()
    lab.start_daemon(host, iface="lo")  # 127.0.0.1 would send every peer to itself
    assert host.daemon is not None and host.daemon.wait(30) == 1
    assert "interface lo's address 127.0.0.1 is not an address peers can reach" \
        in host.log_file.read_text()
    lab.start_daemon(host, "-public-ip=0.0.0.0")
    assert host.daemon is not None and host.daemon.wait(30) == 1
    assert "-public-ip 0.0.0.0 is not an address peers can reach" in host.log_file.read_text()
    lab.start_daemon(host, "-iface-regex=^eth", iface=None)
    lab.wait_ready(host)
    lab.stop_daemon(host)
    lab.start_daemon(host, "-iface-can-reach=192.0.2.254", iface=None)
    lab.wait_ready(host)
    lab.stop_daemon(host)
    lab.start_daemon(host, iface=None)  # no -iface and no default route in the namespace
    assert host.daemon is not None and host.daemon.wait(30) == 1
    assert "no default route; choose the interface with -iface" in host.log_file.read_text()
    lab.exec(host.ns, "ip", "route", "add", "default", "via", "192.0.2.254")
    lab.start_daemon(host, iface=None)  # the default route's interface
    lab.wait_ready(host)
    assert "using interface name=eth0 address=192.0.2.1" in host.log_file.read_text()


def test_previous_subnet_from_subnet_env_is_preferred(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    write_atomic(host.subnet_file, format_subnet_env(
        IPv4Network("10.5.0.0/16"), IPv4Network("10.5.222.0/24"), 1500, False))
    assert start(lab, host) == IPv4Network("10.5.222.0/24")
    lab.stop_daemon(host)
    lab.etcdctl("del", "/coreos.com/network/subnets/10.5.222.0-24")  # no lease to match by IP
    assert start(lab, host) == IPv4Network("10.5.222.0/24")


def test_an_unwritable_subnet_file_is_one_line_before_any_lease(lab: Lab) -> None:
    """-subnet-file under a regular file: refused at start with one line and exit 1, before
    a lease is taken or a route changed."""
    lab.put_config(HOST_GW)
    host = lab.add_host()
    blocker = host.workdir / "not-a-directory"
    blocker.write_text("")
    lab.start_daemon(host, f"-subnet-file={blocker / 'subnet.env'}")
    assert host.daemon is not None
    assert host.daemon.wait(30) == 1
    log = host.log_file.read_text()
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if " E " in line]
    assert len(errors) == 1 and "-subnet-file" in errors[0] and str(blocker) in errors[0], log
    assert lab.leases() == {}


def test_a_healthz_port_in_use_is_one_line_before_any_lease(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    holder = subprocess.Popen(
        ["ip", "netns", "exec", host.ns, sys.executable, "-c",
         "import socket, sys, time\n"
         "s = socket.socket(); s.bind(('0.0.0.0', 8471)); s.listen()\n"
         "print('listening', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "listening\n"
        lab.start_daemon(host, "-healthz-port=8471")
        assert host.daemon is not None
        assert host.daemon.wait(30) == 1
    finally:
        holder.kill()
        holder.wait()
    log = host.log_file.read_text()
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if " E " in line]
    assert len(errors) == 1 and "-healthz-port 8471" in errors[0] \
        and "Address already in use" in errors[0], log
    assert lab.leases() == {}


def test_a_conflicting_route_is_replaced(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    start(lab, host)
    lab.exec(host.ns, "ip", "route", "add", "10.5.250.0/24", "via", "192.0.2.99", "dev", "eth0")
    lab.etcdctl("put", "/coreos.com/network/subnets/10.5.250.0-24",
                '{"PublicIP":"192.0.2.250","PublicIPv6":null,"BackendType":"host-gw"}')
    wait_for("the replaced route", lambda: "via 192.0.2.250" in lab.exec(
        host.ns, "ip", "route", "show", "10.5.250.0/24").stdout, timeout=5)
    assert "192.0.2.99" not in lab.exec(host.ns, "ip", "route", "show", "10.5.250.0/24").stdout


def test_sd_notify_ready_watchdog_and_stopping(lab: Lab, tmp_path: Path) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(20)
        lab.start_daemon(host, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        messages = [sock.recv(256).decode()]
        assert "FLANNEL_SUBNET" in host.subnet_env()  # READY=1 only after subnet.env
        messages += [sock.recv(256).decode() for _ in range(3)]
        assert "READY=1" in messages and messages.count("WATCHDOG=1") >= 2
        assert lab.stop_daemon(host) == 0
        tail = []
        sock.settimeout(1)
        with contextlib.suppress(TimeoutError):
            while True:
                tail.append(sock.recv(256).decode())
        assert "STOPPING=1" in tail


def test_ip_masq_rules_and_readiness(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    lab.start_daemon(host, "-ip-masq", "-healthz-port=8471", "-iptables-resync=1")
    subnet = lab.wait_ready(host)
    assert host.subnet_env()["FLANNEL_IPMASQ"] == "true"
    wait_for("readyz", lambda: lab.exec(host.ns, "curl", "-s", "-o", "/dev/null", "-w",
                                        "%{http_code}", f"http://{host.ip}:8471/readyz",
                                        check=False).stdout == "200", timeout=10)
    rules = lab.exec(host.ns, "iptables-save").stdout
    assert f'-A FLANNEL-POSTRTG -s {subnet} -d 10.5.0.0/16 -m comment --comment "flanneld masq"' \
        " -j RETURN" in rules
    assert '-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT' \
        in rules
    # a rule removed by hand comes back at the next resync
    lab.exec(host.ns, "iptables", "-t", "nat", "-D", "POSTROUTING", "-m", "comment",
             "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG")
    wait_for("the jump rule again", lambda: "-A POSTROUTING" in lab.exec(
        host.ns, "iptables-save", "-t", "nat").stdout, timeout=10)


def test_print_systemd_unit_and_docker_dropin() -> None:
    unit = subprocess.run([sys.executable, "-m", "flanneld", "--print-systemd-unit"],
                          capture_output=True, text=True, check=True).stdout
    assert "Type=notify" in unit and "Restart=on-failure" in unit and "ExecStart=" in unit
    dropin = subprocess.run([sys.executable, "-m", "flanneld", "-print-docker-dropin"],
                            capture_output=True, text=True, check=True).stdout
    assert "EnvironmentFile=/run/flannel/subnet.env" in dropin
    assert "--bip=${FLANNEL_SUBNET} --mtu=${FLANNEL_MTU}" in dropin


def test_metrics_status_and_a_bad_config_while_running(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    a, b = lab.add_host(), lab.add_host()
    for host in (a, b):
        lab.start_daemon(host, "-healthz-port=8471")
        lab.wait_ready(host)

    def get(path: str) -> str:
        return lab.exec(a.ns, "curl", "-s", f"http://{a.ip}:8471{path}").stdout

    wait_for("one peer", lambda: '"peers": 1' in get("/counters"), timeout=10)
    metrics = get("/metrics")
    for line in ("flanneld_peers 1.0", "flanneld_etcd_watch_connected 1.0",
                 'flanneld_backend_events_total{backend="host-gw",event="routes_installed"} 1.0'):
        assert line in metrics, metrics
    assert "flanneld_lease_expiry_timestamp_seconds " in metrics
    status = lab.exec(a.ns, sys.executable, "-m", "flanneld", "status", "-healthz-ip", a.ip,
                      "-healthz-port", "8471").stdout
    assert str(a.subnet) in status and str(b.subnet) in status and b.ip in status
    doc = json.loads(lab.exec(a.ns, sys.executable, "-m", "flanneld", "status", "-json",
                              f"-healthz-ip={a.ip}", "-healthz-port=8471").stdout)
    assert doc["lease"]["subnet"] == str(a.subnet)
    assert [p["public_ip"] for p in doc["peers"]] == [b.ip]

    lab.put_config('{"Network": "10.5.0.0/16", "Backend": {"Type": "nosuch"}}x')
    wait_for("the ignoring line", lambda: "keeping the last good one" in a.log_file.read_text(),
             timeout=15)
    assert lab.exec(a.ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    f"http://{a.ip}:8471/readyz").stdout == "200"
    assert a.daemon is not None and a.daemon.poll() is None
    assert json.loads(get("/counters"))["config_rejected"] >= 1
    # the node keeps working: a new peer is still routed
    lab.etcdctl("put", "/coreos.com/network/subnets/10.5.250.0-24",
                '{"PublicIP":"192.0.2.250","PublicIPv6":null,"BackendType":"host-gw"}')
    wait_for("route to the new peer", lambda: "10.5.250.0/24" in routes(lab, a), timeout=10)


def test_an_expired_peer_lease_removes_its_routes(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    a, b = lab.add_host(), lab.add_host()
    start(lab, a)
    subnet_b = start(lab, b, "-subnet-lease-ttl=6")
    wait_for("route to b", lambda: str(subnet_b) in routes(lab, a), timeout=10)
    lab.stop_daemon(b, signal.SIGKILL)  # no more renewals: etcd expires the lease
    wait_for("b's lease to expire", lambda: f"{subnet_b.network_address}-24" not in lab.leases(),
             timeout=20, interval=0.5)
    wait_for("the route to go", lambda: str(subnet_b) not in routes(lab, a), timeout=5)


@pytest.mark.parametrize("backend", ["host-gw", "vxlan"])
def test_a_ping_across_a_restart_loses_at_most_two_packets(lab: Lab, backend: str) -> None:
    lab.put_config({"Network": "10.5.0.0/16", "Backend": {"Type": backend}})
    a, b = lab.add_host(), lab.add_host()
    for host in (a, b):
        start(lab, host)
        lab.add_container(host)
    wait_for("c1 -> c2", partial(lab.can_reach, a, b.container_ip))
    pinger = subprocess.Popen(["ip", "netns", "exec", a.container_ns, "ping", "-n", "-q",
                               "-i", "0.05", "-W", "1", "-w", "6", b.container_ip],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # pings flowing before the restart; the assertion is on the ping's count
    assert lab.stop_daemon(a) == 0
    start(lab, a)
    out, _ = pinger.communicate(timeout=20)
    summary = next(line for line in out.splitlines() if "received" in line)
    sent, received = (int(summary.split(",")[i].split()[0]) for i in (0, 1))
    assert sent - received <= 2, summary


@pytest.mark.parametrize(("variant", "device"), [
    ("udp", "flannel0"), ("udp-python", "flannel0"), ("vxlan", "flannel.1"),
    ("vxlan-userspace", "flannel.1"), ("vxlan-userspace-python", "flannel.1")])
def test_a_deleted_device_ends_the_daemon_with_one_line_and_a_restart_heals(
        lab: Lab, variant: str, device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Somebody deletes our device: the daemon says so in one line and exits 1 within
    seconds (systemd's Restart=on-failure starts it over), keeping its lease; started again
    it makes the device again and carries traffic."""
    backend = engine_variant(monkeypatch, variant)
    config: dict[str, object] = {"Type": backend.removesuffix("-userspace")}
    if backend == "vxlan-userspace":
        config["Dataplane"] = "userspace"
    lab.put_config({"Network": "10.5.0.0/16", "Backend": config})
    a, b = lab.add_host(), lab.add_host()
    for host in (a, b):
        start(lab, host)
        lab.add_container(host)
    lease = f"{a.subnet.network_address}-24"
    assert lease in lab.leases()

    lab.exec(a.ns, "ip", "link", "del", device)
    assert a.daemon is not None
    started = time.monotonic()
    assert a.daemon.wait(15) == 1
    assert time.monotonic() - started < 5
    log = a.log_file.read_text()
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if " E " in line]
    assert len(errors) == 1 and f"{device} was deleted" in errors[0], log
    assert lease in lab.leases()  # kept, as on SIGTERM

    subnet = a.subnet
    assert start(lab, a) == subnet
    wait_for("c1 -> c2 again", lambda: lab.exec(a.container_ns, "ping", "-c", "1", "-W", "1",
                                                b.container_ip, check=False).returncode == 0,
             timeout=15)
