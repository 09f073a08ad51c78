"""Hostile input on the userspace data planes' ports while real traffic flows: 100,000
datagrams from a host that is not a peer, and malformed ones from a peer's address. The
daemon stays up, traffic keeps flowing, every datagram is accounted for (a counted drop
or a socket-buffer overflow in the kernel), and nothing from a non-peer reaches a
container."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from flanneld.lab import Host, Lab, wait_for

HEALTHZ = "-healthz-port=8471"
HOSTILE = 100_000
LISTENER_PORT = 9999

# Datagrams an attacker would try, built without scapy (this runs inside a namespace with
# the system Python): garbage of every length, IPv4 packets for the container (valid,
# truncated, bad checksum, wrong version), VXLAN frames with our VNI; fixed seed.
FLOOD = r"""
import random, socket, struct, sys

target, port, count, container = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(7)

def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def ipv4_to_container(payload):
    udp = struct.pack("!HHHH", 4242, 9999, 8 + len(payload), 0) + payload
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                                   socket.inet_aton("10.5.77.7"), socket.inet_aton(container)))
    struct.pack_into("!H", header, 10, checksum(bytes(header)))
    return bytes(header) + udp

def vxlan(inner):
    return struct.pack("!II", 0x08000000, 1 << 8) + b"\xff" * 6 + b"\x02" * 6 + b"\x08\x00" + inner

kinds = [
    lambda: rng.randbytes(rng.randrange(1, 1473)),
    lambda: ipv4_to_container(b"injected"),
    lambda: ipv4_to_container(b"injected")[:rng.randrange(1, 28)],
    lambda: bytes([0x65]) + ipv4_to_container(b"v6?")[1:],
    lambda: vxlan(ipv4_to_container(b"injected")),
    lambda: vxlan(rng.randbytes(rng.randrange(0, 100))),
]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = 0
for _ in range(count):
    datagram = rng.choice(kinds)()
    while True:
        try:
            sock.sendto(datagram, (target, port))
            break
        except BlockingIOError:
            pass
    sent += 1
print(sent)
"""

# Counts what reaches a UDP port until it is told to stop (a line on stdin).
LISTENER = """
import select, socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 9999))
print("listening", flush=True)
got = 0
while True:
    ready, _, _ = select.select([sock, sys.stdin], [], [])
    if sock in ready:
        sock.recv(2048)
        got += 1
    if sys.stdin in ready:
        break
print(got, flush=True)
"""

BACKENDS = {
    "udp": ({"Type": "udp"}, 8285),
    "vxlan-userspace": ({"Type": "vxlan", "Dataplane": "userspace"}, 8472),
}

pytestmark = pytest.mark.usefixtures("engine")  # each test with both engines


def udp_rcvbuf_errors(lab: Lab, ns: str) -> int:
    out = lab.exec(ns, "nstat", "-az", "UdpRcvbufErrors").stdout.split()
    return int(out[out.index("UdpRcvbufErrors") + 1])


def drops(counters: dict[str, Any]) -> int:
    return sum(value for key, value in counters.items() if key.startswith("drop_"))


def start_pair(lab: Lab, config: dict[str, Any]) -> tuple[Host, Host]:
    lab.put_config({"Network": "10.5.0.0/16", "Backend": config})
    a, b = lab.add_host(), lab.add_host()
    for host in (a, b):
        lab.start_daemon(host, HEALTHZ)
    for host in (a, b):
        lab.wait_ready(host)
        lab.add_container(host)
    wait_for("c1 -> c2", lambda: lab.can_reach(a, b.container_ip))
    return a, b


def flood_during_iperf3(lab: Lab, a: Host, b: Host, source_ns: str, port: int,
                        script: str) -> tuple[dict[str, Any], int]:
    """HOSTILE datagrams from `source_ns` to b's port while iperf3 runs a -> b: b's
    counters after, and the kernel's socket-buffer overflows meanwhile."""
    before, overflow_before = drops(lab.counters(b)), udp_rcvbuf_errors(lab, b.ns)
    rates: list[float] = []
    traffic = threading.Thread(target=lambda: rates.append(lab.iperf(a, b, seconds=6)))
    traffic.start()
    sent = lab.exec(source_ns, sys.executable, "-c", script, b.ip, str(port), str(HOSTILE),
                    b.container_ip, timeout=120).stdout
    traffic.join(timeout=60)
    assert int(sent) == HOSTILE
    assert b.daemon is not None and b.daemon.poll() is None, lab.log_tail(b)
    assert rates and rates[0] > 20e6, rates  # the flood did not stop the traffic
    assert lab.can_reach(a, b.container_ip)
    counters = lab.counters(b)
    overflow = udp_rcvbuf_errors(lab, b.ns) - overflow_before
    counted = drops(counters) - before
    # every datagram is a counted drop or a kernel socket-buffer overflow (the kernel may
    # count a GRO batch it could not queue more than once)
    assert counted <= HOSTILE <= counted + overflow, (counted, overflow)
    return counters, overflow


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_flood_of_hostile_datagrams_changes_nothing(lab: Lab, backend: str) -> None:
    config, port = BACKENDS[backend]
    a, b = start_pair(lab, config)
    attacker = lab.add_host()  # on the underlay, but it holds no lease: not a peer
    listener = subprocess.Popen(
        ["ip", "netns", "exec", b.container_ns, sys.executable, "-c", LISTENER,
         b.container_ip], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdin is not None
        assert listener.stdout.readline().strip() == "listening"
        counters, overflow = flood_during_iperf3(lab, a, b, attacker.ns, port, FLOOD)
        assert counters["drop_not_peer"] >= HOSTILE - overflow - counters["drop_malformed"]
        listener.stdin.write("stop\n")
        listener.stdin.flush()
        assert listener.communicate(timeout=10)[0].strip() == "0"  # nothing got through
    finally:
        if listener.poll() is None:
            listener.kill()
        listener.wait()


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_malformed_datagrams_from_a_peer_are_counted_drops(lab: Lab, backend: str) -> None:
    config, port = BACKENDS[backend]
    a, b = start_pair(lab, config)
    not_peer = lab.counters(b)["drop_not_peer"]
    # from the peer's own address (another port: the daemon holds its own), garbage and
    # broken packets only: the kinds that carry a valid packet for the container are left
    # out (from a peer, those are traffic)
    script = FLOOD.replace("kinds = [", "kinds = [\n    lambda: b'',") \
        .replace("    lambda: ipv4_to_container(b\"injected\"),\n", "") \
        .replace("    lambda: vxlan(ipv4_to_container(b\"injected\")),\n", "")
    assert script.count("injected") == 1  # the one kind left that names it is truncated
    counters, _ = flood_during_iperf3(lab, a, b, a.ns, port, script)
    assert counters["drop_not_peer"] == not_peer  # a's address is a peer's
    assert counters["drop_malformed"] > HOSTILE // 4, counters
