"""The wireguard backend across namespaces with a real etcd: flanneld-py daemons with
Backend Type "wireguard". This machine has no wireguard kernel module, so every daemon
here runs the userspace data plane (the fallback from Dataplane auto is checked, and
Dataplane kernel failing in one line); the kernel plane's requests are unit-tested only.

Checked: leases carry flannel's BackendData byte for byte; ping and a SHA-256-checked
transfer container to container; a lease removed in etcd and a key changed are followed;
a node that is wireguard-go configured by hand as Go flannel configures flannel-wg (its
lease written into etcd by the test) exchanges traffic with a daemon, also after its key
changes;
the key file is 0400 and reused across restarts; the private key is in no log line, nor
in /metrics, /counters, /status; 100,000 hostile datagrams at the port while iperf3 runs,
and 20,000 from a peer's own address, are counted drops and nothing reaches a container.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from flanneld.files import write_atomic
from flanneld.lab import Host, Lab, wait_for
from flanneld.subnet_env import format_subnet_env
from tests.integration.test_hostile import (
    FLOOD,
    LISTENER,
    drops,
    flood_during_iperf3,
    udp_rcvbuf_errors,
)

HEALTHZ = "-healthz-port=8471"
PORT = 51820
WG = {"Network": "10.5.0.0/16", "Backend": {"Type": "wireguard"}}
TRANSFER = 8 * 1024 * 1024
FROM_PEER = 20_000  # hostile datagrams from a peer's own address

# test_hostile's flood plus WireGuard-shaped forgeries: transport data under random
# indexes, initiations and responses with random MACs, cookie replies, each also truncated.
_SOCKET = "sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nsent = 0"
WG_KINDS = """
def message(kind, size):
    return struct.pack("<I", kind) + rng.randbytes(size - 4)
kinds += [
    lambda: message(4, rng.randrange(32, 1473)),
    lambda: message(1, 148),
    lambda: message(2, 92),
    lambda: message(3, 64),
    lambda: message(rng.choice((1, 2, 3)), rng.randrange(4, 148)),
] * 2
"""
assert _SOCKET in FLOOD
WG_FLOOD = FLOOD.replace(_SOCKET, WG_KINDS + _SOCKET)

# A TCP sink that prints the SHA-256 of what it received; a source that sends seeded bytes.
SINK = """
import hashlib, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
srv = socket.create_server((sys.argv[1], 7777), family=family)
print("listening", flush=True)
conn, _ = srv.accept()
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(1 << 16):
    digest.update(chunk)
    total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""
SOURCE = """
import hashlib, random, socket, sys
data = random.Random(16).randbytes(int(sys.argv[2]))
sock = socket.create_connection((sys.argv[1], 7777), timeout=20)
sock.sendall(data)
sock.close()
print(hashlib.sha256(data).hexdigest())
"""


def key_file(host: Host) -> Path:
    return host.workdir / "wgkey"


def start(lab: Lab, host: Host, *extra: str) -> None:
    lab.start_daemon(host, HEALTHZ, *extra, env={"WIREGUARD_KEY_FILE": str(key_file(host))})


def start_hosts(lab: Lab, count: int, config: dict[str, Any] = WG) -> list[Host]:
    lab.put_config(config)
    hosts = [lab.add_host() for _ in range(count)]
    for host in hosts:
        start(lab, host)
    for host in hosts:
        lab.wait_ready(host)
        lab.add_container(host)
    return hosts


def lease_of(lab: Lab, host: Host) -> dict[str, Any]:
    return lab.leases()[f"{host.subnet.network_address}-24"]


def raw_lease(lab: Lab, host: Host) -> str:
    return lab.etcdctl("get", "--print-value-only",
                       f"/coreos.com/network/subnets/{host.subnet.network_address}-24").stdout.strip()


def public_key(lab: Lab, host: Host) -> str:
    return str(lease_of(lab, host)["BackendData"]["PublicKey"])


def private_key_text(host: Host) -> str:
    return key_file(host).read_text()


def transfer(lab: Lab, src: Host, dst: Host, ipv6: bool = False) -> None:
    target = dst.container_ip6 if ipv6 else dst.container_ip
    sink = subprocess.Popen(["ip", "netns", "exec", dst.container_ns, sys.executable, "-c", SINK,
                             target], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "listening"
        sent = lab.exec(src.container_ns, sys.executable, "-c", SOURCE, target,
                        str(TRANSFER), timeout=60).stdout.strip()
        total, digest = sink.stdout.readline().split()
        assert (int(total), digest) == (TRANSFER, sent)
    finally:
        if sink.poll() is None:
            sink.kill()
        sink.wait()


def no_secret_anywhere(lab: Lab, host: Host) -> None:
    secret = private_key_text(host)
    raw = base64.b64decode(secret)
    fetch = ("import sys, urllib.request; "
             "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode('latin-1'))")
    for path in ("metrics", "counters", "status"):
        body = lab.exec(host.ns, sys.executable, "-c", fetch,
                        f"http://{host.ip}:8471/{path}").stdout
        assert secret not in body and raw.hex() not in body, path
    for args in (["-json"], []):
        shown = lab.exec(host.ns, sys.executable, "-m", "flanneld", "status",
                         "-healthz-port", "8471", "-healthz-ip", host.ip, *args).stdout
        assert shown and secret not in shown
    log = host.log_file.read_text()
    assert secret not in log and raw.hex() not in log


def test_three_hosts_leases_ping_transfer_and_key_file(lab: Lab) -> None:
    hosts = start_hosts(lab, 3)
    h1 = hosts[0]
    env = h1.subnet_env()
    assert env["FLANNEL_MTU"] == "1420"  # underlay 1500 - 80, as flannel
    for host in hosts:
        mode = stat.S_IMODE(key_file(host).stat().st_mode)
        assert mode == 0o400, oct(mode)
        key = public_key(lab, host)
        assert raw_lease(lab, host) == (
            f'{{"PublicIP":"{host.ip}","PublicIPv6":null,"BackendType":"wireguard",'
            f'"BackendData":{{"PublicKey":"{key}","Port":{PORT}}}}}')
        assert len(base64.b64decode(key)) == 32
    link = lab.exec(h1.ns, "ip", "-d", "addr", "show", "flannel-wg").stdout
    assert f"inet {h1.subnet.network_address}/32" in link and "mtu 1420" in link
    assert "dev flannel-wg" in lab.exec(h1.ns, "ip", "route", "show", "10.5.0.0/16").stdout
    log = h1.log_file.read_text()
    assert "cannot create a wireguard link" in log and "dataplane=userspace" in log
    for a in hosts:
        for b in hosts:
            if a is not b:
                wait_for(f"c{a.index}->c{b.index}", partial(lab.can_reach, a, b.container_ip))
    transfer(lab, hosts[0], hosts[1])
    transfer(lab, hosts[2], hosts[0])
    assert lab.iperf(hosts[0], hosts[1], seconds=2) > 50e6
    counters = lab.counters(h1)
    assert counters["peers"] == 2 and counters["dataplane_userspace"] == 1
    assert counters["wg_handshakes_completed"] + counters["wg_sessions"] >= 2
    assert counters["drop_decrypt_failed"] == 0 and counters["drop_replayed"] == 0
    for host in hosts:
        no_secret_anywhere(lab, host)


def test_restart_reuses_the_key_and_a_changed_key_or_removed_lease_is_followed(
        lab: Lab) -> None:
    h1, h2, h3 = start_hosts(lab, 3)
    wait_for("c1->c2", partial(lab.can_reach, h1, h2.container_ip))
    before = public_key(lab, h2)
    # a restart keeps the key (and the subnet)
    lab.stop_daemon(h2)
    start(lab, h2)
    wait_for("h2's lease again", lambda: public_key(lab, h2) == before and
             "ready" in h2.log_file.read_text())
    wait_for("c1->c2 after h2's restart", partial(lab.can_reach, h1, h2.container_ip))
    assert public_key(lab, h2) == before
    # a new key: h2's key file removed, h2 restarted; h1 follows the lease
    lab.stop_daemon(h2)
    key_file(h2).chmod(0o600)
    key_file(h2).unlink()
    start(lab, h2)
    wait_for("h2's new key in its lease", lambda: public_key(lab, h2) != before)
    wait_for("c1->c2 with h2's new key", partial(lab.can_reach, h1, h2.container_ip))
    wait_for("c2->c1 with h2's new key", partial(lab.can_reach, h2, h1.container_ip))
    assert f"public_key={public_key(lab, h2)}" in h1.log_file.read_text()
    # a lease removed: h1 drops the peer
    lab.stop_daemon(h3)
    lab.etcdctl("del", f"/coreos.com/network/subnets/{h3.subnet.network_address}-24")
    wait_for("h1 to forget h3", lambda: lab.counters(h1)["peers"] == 1)
    assert not lab.can_reach(h1, h3.container_ip)
    assert lab.can_reach(h1, h2.container_ip)
    no_secret_anywhere(lab, h1)


def test_dataplane_kernel_fails_in_one_line(lab: Lab) -> None:
    config = {"Network": "10.5.0.0/16", "Backend": {"Type": "wireguard", "Dataplane": "kernel"}}
    lab.put_config(config)
    host = lab.add_host()
    start(lab, host)
    assert host.daemon is not None
    code = host.daemon.wait(30)
    lab.stop_daemon(host)
    assert code != 0
    lines = [line for line in host.log_file.read_text().splitlines() if line.strip()]
    assert "Dataplane kernel, but the kernel cannot create a wireguard link" in lines[-1]
    assert "Traceback" not in host.log_file.read_text()


def test_a_flood_of_hostile_datagrams_changes_nothing(lab: Lab) -> None:
    a, b = start_hosts(lab, 2)
    wait_for("c1->c2", partial(lab.can_reach, a, b.container_ip))
    attacker = lab.add_host()  # on the underlay, no lease
    listener = subprocess.Popen(["ip", "netns", "exec", b.container_ns, sys.executable, "-c",
                                 LISTENER, b.container_ip], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
        writes_before = lab.counters(b)["tun_writes"]
        started = time.monotonic()
        counters, overflow = flood_during_iperf3(lab, a, b, attacker.ns, PORT, WG_FLOOD)
        assert time.monotonic() - started < 120
        # and from a peer's own address (its namespace, another source port): WireGuard
        # trusts no address, so these are drops too, and the peer's endpoint stays put
        before = drops(lab.counters(b)), udp_rcvbuf_errors(lab, b.ns)
        sent = lab.exec(a.ns, sys.executable, "-c", WG_FLOOD, b.ip, str(PORT),
                        str(FROM_PEER), b.container_ip, timeout=60).stdout
        assert int(sent) == FROM_PEER
        after = lab.counters(b)
        counted = drops(after) - before[0]
        assert counted <= FROM_PEER <= counted + udp_rcvbuf_errors(lab, b.ns) - before[1]
        assert lab.can_reach(a, b.container_ip) and lab.can_reach(b, a.container_ip)
        assert listener.stdin is not None
        listener.stdin.write("stop\n")
        listener.stdin.flush()
        got = int(listener.stdout.readline())
    finally:
        if listener.poll() is None:
            listener.kill()
        listener.wait()
    assert got == 0  # nothing the attacker sent reached the container
    wg_drops = {k: v for k, v in counters.items() if k.startswith("drop_") and v}
    assert counters["drop_unknown_index"] > 0 and counters["drop_bad_mac1"] > 0, wg_drops
    assert counters["tun_writes"] > writes_before  # the real traffic got through
    print(json.dumps({"drops": wg_drops, "overflow": overflow}))


# -- a Go-flannel-like node: wireguard-go configured by hand ------------------------------

GO_SUBNET = IPv4Network("10.5.200.0/24")


def wg_keys() -> tuple[str, str]:
    private = subprocess.run(["wg", "genkey"], capture_output=True, text=True,
                             check=True).stdout.strip()
    public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                            check=True).stdout.strip()
    return private, public


def put_go_lease(lab: Lab, host: Host, public: str) -> None:
    """The lease Go flannel's wireguard backend writes for `host` (a reservation here)."""
    lab.etcdctl("put", f"/coreos.com/network/subnets/{GO_SUBNET.network_address}-24",
                f'{{"PublicIP":"{host.ip}","PublicIPv6":null,"BackendType":"wireguard",'
                f'"BackendData":{{"PublicKey":"{public}","Port":{PORT}}}}}')


@contextlib.contextmanager
def wireguard_go(lab: Lab, host: Host) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    with (host.workdir / "wireguard-go.log").open("wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", host.ns, "wireguard-go", "-f",
                                 "flannel-wg"], env=env, stdout=log, stderr=log)
    try:
        wait_for("wireguard-go's flannel-wg", lambda: lab.exec(
            host.ns, "ip", "link", "show", "flannel-wg", check=False).returncode == 0)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def configure_as_flannel(lab: Lab, host: Host, private: str, peer: Host,
                         psk: str | None) -> None:
    """What Go flannel does to flannel-wg: key and ListenPort, the peer from its lease
    (endpoint PublicIP:Port, allowed IPs its subnet, the PSK), <subnet>.0/32, MTU 1420, up,
    a route for the network."""
    key = host.workdir / "go.key"
    key.write_text(private)
    lease = lab.leases()[f"{peer.subnet.network_address}-24"]
    data = lease["BackendData"]
    extra: list[str] = []
    if psk is not None:
        (host.workdir / "go.psk").write_text(psk)
        extra = ["preshared-key", str(host.workdir / "go.psk")]
    lab.exec(host.ns, "wg", "set", "flannel-wg", "private-key", str(key), "listen-port",
             str(PORT), "peer", data["PublicKey"], "endpoint",
             f"{lease['PublicIP']}:{data['Port']}", "allowed-ips", str(peer.subnet), *extra)
    lab.exec(host.ns, "ip", "addr", "replace", f"{GO_SUBNET.network_address}/32", "dev",
             "flannel-wg")
    lab.exec(host.ns, "ip", "link", "set", "flannel-wg", "mtu", "1420", "up")
    lab.exec(host.ns, "ip", "route", "replace", "10.5.0.0/16", "dev", "flannel-wg")


@pytest.mark.parametrize("with_psk", [False, True], ids=["no-psk", "psk"])
def test_a_wireguard_go_node_configured_as_go_flannel_does(lab: Lab, with_psk: bool) -> None:
    psk = subprocess.run(["wg", "genpsk"], capture_output=True, text=True,
                         check=True).stdout.strip() if with_psk else None
    backend: dict[str, Any] = {"Type": "wireguard", **({"PSK": psk} if psk else {})}
    [ours] = start_hosts(lab, 1, {"Network": "10.5.0.0/16", "Backend": backend})
    go = lab.add_host()
    write_atomic(go.subnet_file, format_subnet_env(IPv4Network("10.5.0.0/16"), GO_SUBNET,
                                                   1420, False))
    lab.add_container(go)
    private, public = wg_keys()
    with wireguard_go(lab, go):
        configure_as_flannel(lab, go, private, ours, psk)
        put_go_lease(lab, go, public)
        wait_for("c1 -> the wireguard-go node's container",
                 partial(lab.can_reach, ours, go.container_ip))
        wait_for("the wireguard-go node's container -> c1",
                 partial(lab.can_reach, go, ours.container_ip))
        transfer(lab, ours, go)
        transfer(lab, go, ours)
        shown = lab.exec(go.ns, "wg", "show", "flannel-wg", "latest-handshakes").stdout
        assert public_key(lab, ours) in shown
        # the wireguard-go node's key changes: a new lease value, and we follow it
        private, public = wg_keys()
        configure_as_flannel(lab, go, private, ours, psk)
        put_go_lease(lab, go, public)
        wait_for("our daemon to take the new key",
                 lambda: f"public_key={public}" in ours.log_file.read_text())
        wait_for("c1 -> the wireguard-go node, new key",
                 partial(lab.can_reach, ours, go.container_ip))
        transfer(lab, go, ours)
    counters = lab.counters(ours)
    assert counters["drop_decrypt_failed"] == 0 and counters["peers"] == 1
    no_secret_anywhere(lab, ours)


# -- dual stack: flannel-wg-v6 ------------------------------------------------------------

def test_dual_stack_two_devices_as_flannel(lab: Lab) -> None:
    lab.ipv6 = True
    config = {"Network": "10.5.0.0/16", "EnableIPv6": True, "IPv6Network": "fc00:5::/48",
              "Backend": {"Type": "wireguard"}}
    h1, h2 = start_hosts(lab, 2, config)
    for host in (h1, h2):
        key = f"{host.subnet.network_address}-24&{host.subnet6.network_address}-64"
        raw = lab.etcdctl("get", "--print-value-only",
                          f"/coreos.com/network/subnets/{key}").stdout.strip()
        public = json.loads(raw)["BackendData"]["PublicKey"]
        assert raw == (
            f'{{"PublicIP":"{host.ip}","PublicIPv6":"{host.ip6}","BackendType":"wireguard",'
            f'"BackendData":{{"PublicKey":"{public}","Port":51820}},'
            f'"BackendV6Data":{{"PublicKey":"{public}","Port":51821}}}}')
    link6 = lab.exec(h1.ns, "ip", "-6", "addr", "show", "flannel-wg-v6").stdout
    assert f"inet6 {h1.subnet6.network_address}/128" in link6
    assert "dev flannel-wg-v6" in lab.exec(h1.ns, "ip", "-6", "route", "show",
                                           "fc00:5::/48").stdout
    for a, b in ((h1, h2), (h2, h1)):
        wait_for(f"c{a.index}->c{b.index}", partial(lab.can_reach, a, b.container_ip))
        wait_for(f"c{a.index}->c{b.index} over IPv6",
                 partial(lab.can_reach, a, b.container_ip6))
    transfer(lab, h1, h2, ipv6=True)
    transfer(lab, h2, h1, ipv6=True)
    transfer(lab, h1, h2)
    counters = lab.counters(h1)
    assert counters["v6_peers"] == 1 and counters["peers"] == 1
    assert counters["v6_wg_packets_in"] > 1000 and counters["v6_drop_decrypt_failed"] == 0
    listening = lab.exec(h1.ns, "ss", "-Hlun").stdout
    assert f"[{h1.ip6}]:51821" in listening and f"{h1.ip}:51820" in listening
    no_secret_anywhere(lab, h1)
