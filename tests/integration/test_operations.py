"""Operating a node: etcd outages with traffic flowing, etcd auth, several endpoints."""

from __future__ import annotations

import shutil
import subprocess
import time
from functools import partial

from flanneld.lab import Lab, wait_for

from .conftest import HOST_GW


def http_code(lab: Lab, ns: str, url: str) -> str:
    return lab.exec(ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url,
                    check=False).stdout


def test_etcd_stopped_for_30_s_while_traffic_flows(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    a, b = lab.add_host(), lab.add_host()
    for host in (a, b):
        lab.start_daemon(host, "-healthz-port=8471")
        lab.wait_ready(host)
        lab.add_container(host)
    wait_for("c1 -> c2", partial(lab.can_reach, a, b.container_ip))
    pinger = subprocess.Popen(["ip", "netns", "exec", a.container_ns, "ping", "-n", "-q",
                               "-i", "0.2", "-w", "34", b.container_ip],
                              stdout=subprocess.PIPE, text=True)
    lab.stop_etcd()
    time.sleep(30)  # the outage is what is under test
    assert a.daemon is not None and a.daemon.poll() is None
    assert http_code(lab, a.ns, f"http://{a.ip}:8471/readyz") == "200"
    lab.start_etcd()
    out, _ = pinger.communicate(timeout=30)
    summary = next(line for line in out.splitlines() if "received" in line)
    assert " 0% packet loss" in summary, summary
    # the watch resumes: a lease written after the outage is applied
    lab.etcdctl("put", "/coreos.com/network/subnets/10.5.250.0-24",
                '{"PublicIP":"192.0.2.250","PublicIPv6":null,"BackendType":"host-gw"}')
    wait_for("the new peer's route", lambda: "10.5.250.0/24" in lab.exec(
        a.ns, "ip", "route", "show", "proto", "70").stdout, timeout=15)
    log = a.log_file.read_text()
    assert log.count("lease watch: etcd unavailable") == 1, log
    assert "Traceback" not in log


def test_etcd_username_and_password(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    lab.etcdctl("user", "add", "root", "--new-user-password=S3cret-pw", "--interactive=false")
    lab.etcdctl("auth", "enable")
    lab.etcd_user = "root:S3cret-pw"
    good, bad = lab.add_host(), lab.add_host()
    lab.start_daemon(good, "-etcd-username=root", "-etcd-password=S3cret-pw")
    assert lab.wait_ready(good).prefixlen == 24
    lab.start_daemon(bad, "-etcd-username=root", "-etcd-password=wrong-pw", "-v=1")
    wait_for("the refusal", lambda: "etcd refused our credentials" in bad.log_file.read_text(),
             timeout=15)
    assert bad.daemon is not None and bad.daemon.poll() is None  # waits, does not crash
    for host in (good, bad):
        log = host.log_file.read_text()
        assert "S3cret-pw" not in log and "wrong-pw" not in log and "Traceback" not in log


def test_several_endpoints_one_of_them_dead(lab: Lab) -> None:
    lab.put_config(HOST_GW)
    host = lab.add_host()
    # a later -etcd-endpoints replaces the lab's: a dead endpoint first, then the live one
    lab.start_daemon(host, "-etcd-endpoints=http://192.0.2.254:2399,http://192.0.2.254:2379")
    lab.wait_ready(host)
    assert "Traceback" not in host.log_file.read_text()


def test_an_etcd_cluster_member_going_away_is_survived(lab: Lab) -> None:
    lab.stop_etcd()  # the fixture's single member: replaced by a fresh three-member cluster
    shutil.rmtree(lab.workdir / "etcd-m0")
    lab.start_etcd(members=3)
    lab.put_config(HOST_GW)
    host = lab.add_host()
    lab.start_daemon(host, "-subnet-lease-ttl=6")  # -etcd-endpoints lists all three members
    subnet = lab.wait_ready(host)
    key = f"{subnet.network_address}-24"
    lab.stop_etcd(member=0)  # the first endpoint, the one a client tries first
    deadline = time.monotonic() + 15  # 2.5 TTLs: renewals must go through the others
    while time.monotonic() < deadline:
        assert key in lab.leases(), lab.log_tail(host)
        time.sleep(1)
    lab.etcdctl("put", "/coreos.com/network/subnets/10.5.250.0-24",
                '{"PublicIP":"192.0.2.250","PublicIPv6":null,"BackendType":"host-gw"}')
    wait_for("the new peer's route", lambda: "10.5.250.0/24" in lab.exec(
        host.ns, "ip", "route", "show", "proto", "70").stdout, timeout=15)
    assert host.daemon is not None and host.daemon.poll() is None
