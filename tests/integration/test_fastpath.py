"""The offloaded data path (TUN TSO, UDP GSO/GRO, cutting and joining in userspace) across
namespaces: nothing corrupted, no checksum error, and a node with offloads interworks with
one without them, in both directions."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import pytest

from flanneld.lab import Host, Lab, wait_for

HEALTHZ = "-healthz-port=8471"
FILE_BYTES = 24 << 20

# A receiver that prints the SHA-256 of everything one connection brings, then exits.
RECEIVER = """
import hashlib, socket, sys
server = socket.create_server((sys.argv[1], 5300))
print("listening", flush=True)
conn, _ = server.accept()
digest, size = hashlib.sha256(), 0
while chunk := conn.recv(1 << 20):
    digest.update(chunk)
    size += len(chunk)
print(size, digest.hexdigest(), flush=True)
"""
SENDER = """
import socket, sys
with socket.create_connection((sys.argv[1], 5300), timeout=30) as conn, \\
        open(sys.argv[2], "rb") as source:
    conn.sendfile(source)
"""

pytestmark = pytest.mark.usefixtures("engine")  # each test with both engines


def start(lab: Lab, backend: dict[str, Any], *flags: Sequence[str]) -> list[Host]:
    """One host per entry of `flags` (that host's extra daemon flags), each with a container."""
    lab.put_config({"Network": "10.5.0.0/16", "Backend": backend})
    hosts = [lab.add_host() for _ in flags]
    for host, extra in zip(hosts, flags, strict=True):
        if backend["Type"] == "vxlan":
            lab.wire_like(host)  # the userspace VXLAN receiver gets what a wire delivers
        lab.start_daemon(host, HEALTHZ, *extra)
    for host in hosts:
        lab.wait_ready(host)
        lab.add_container(host)
    for a in hosts:
        for b in hosts:
            if a is not b:
                wait_for(f"c{a.index} -> c{b.index}", partial(lab.can_reach, a, b.container_ip))
    return hosts


def checksum_errors(lab: Lab, hosts: Sequence[Host]) -> int:
    """TCP segments dropped for a bad checksum in every container and host (nstat counts
    since the namespace was created: -a, absolute)."""
    total = 0
    for host in hosts:
        for ns in (host.ns, host.container_ns):
            out = lab.exec(ns, "nstat", "-az", "TcpInCsumErrors").stdout.split()
            total += int(out[out.index("TcpInCsumErrors") + 1])
    return total


def transfer(lab: Lab, src: Host, dst: Host, path: str) -> tuple[int, str]:
    """Send the file at `path` from src's container to dst's; what the receiver got."""
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", dst.container_ns, sys.executable, "-c", RECEIVER,
         dst.container_ip], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "listening"
        lab.exec(src.container_ns, sys.executable, "-c", SENDER, dst.container_ip, path,
                 timeout=60)
        size, digest = receiver.communicate(timeout=30)[0].split()
        return int(size), digest
    finally:
        if receiver.poll() is None:
            receiver.kill()
        receiver.wait()


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, str]:
    path = tmp_path_factory.mktemp("payload") / "random.bin"
    data = os.urandom(FILE_BYTES)
    path.write_bytes(data)
    return str(path), len(data), hashlib.sha256(data).hexdigest()


BACKENDS = {
    "udp": {"Type": "udp"},
    "vxlan-userspace": {"Type": "vxlan", "Dataplane": "userspace"},
}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_offloaded_path_delivers_every_byte_without_checksum_errors(
        lab: Lab, backend: str, payload: tuple[str, int, str]) -> None:
    a, b = start(lab, BACKENDS[backend], (), ())
    path, size, digest = payload
    assert transfer(lab, a, b, path) == (size, digest)
    assert transfer(lab, b, a, path) == (size, digest)
    assert lab.iperf(a, b, seconds=2) > 100e6
    assert checksum_errors(lab, (a, b)) == 0
    for host in (a, b):
        counters = lab.counters(host)
        assert counters["offload_tun"] == 1, counters
        # the data went through the offloads: super-packets cut, segments joined
        assert counters["tso_packets"] > 100 and counters["joined_segments"] > 1000, counters
        assert counters["drop_malformed"] == 0, counters


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_node_with_offloads_and_one_without_exchange_traffic(
        lab: Lab, backend: str, payload: tuple[str, int, str]) -> None:
    fast, plain = start(lab, BACKENDS[backend], (), ("-offload=off",))
    path, size, digest = payload
    assert transfer(lab, fast, plain, path) == (size, digest)
    assert transfer(lab, plain, fast, path) == (size, digest)
    assert lab.iperf(fast, plain, seconds=2) > 50e6
    assert lab.iperf(plain, fast, seconds=2) > 50e6
    assert checksum_errors(lab, (fast, plain)) == 0
    fast_counters, plain_counters = lab.counters(fast), lab.counters(plain)
    assert fast_counters["offload_tun"] == 1 and fast_counters["joined_segments"] > 1000
    assert plain_counters["offload_tun"] == 0 and plain_counters["offload_gso"] == 0
    assert plain_counters["tso_packets"] == 0 and plain_counters["joined_segments"] == 0
    for counters in (fast_counters, plain_counters):
        assert counters["drop_malformed"] == 0 and counters["drop_oversized"] == 0, counters


def cpu_seconds(host: Host) -> float:
    """The daemon's user + system CPU time so far (/proc/<pid>/stat, all its threads)."""
    assert host.daemon is not None
    with open(f"/proc/{host.daemon.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_the_data_path_costs_no_cpu_when_idle_and_little_for_sparse_pings(
        lab: Lab, backend: str) -> None:
    """The native thread watches its fds for a while after light work (for the answer's
    sake) but from a budget of a tenth of its time: idle, nothing; a ping every 20 ms (the
    benchmark's RTT probe), well under a tenth of a core."""
    a, b = start(lab, BACKENDS[backend], (), ())
    assert lab.exec(a.container_ns, "ping", "-c", "50", "-i", "0.02", b.container_ip,
                    check=False).returncode == 0
    before = {host.index: cpu_seconds(host) for host in (a, b)}
    time.sleep(3)  # the measurement itself: three idle seconds
    for host in (a, b):
        assert cpu_seconds(host) - before[host.index] < 0.1, "CPU while idle"
    before = {host.index: cpu_seconds(host) for host in (a, b)}
    started = time.monotonic()
    lab.exec(a.container_ns, "ping", "-c", "150", "-i", "0.02", b.container_ip, check=False)
    elapsed = time.monotonic() - started
    for host in (a, b):
        share = (cpu_seconds(host) - before[host.index]) / elapsed
        assert share < 0.15, f"c{host.index}'s daemon used {share:.0%} of a core for pings"
