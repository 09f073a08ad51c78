"""Our WireGuard (backends/_wgnoise.py) against one nobody here wrote: Debian's wireguard-go
configured with `wg`. Two network namespaces joined by a veth underlay (192.0.2.0/24):
wireguard-go's device in one, in the other our Device driven by this file's own small loop
(run as `python -m tests.integration.test_wireguard_interop` under `ip netns exec`, never
setns in the test process) over a real TUN, so the kernels on both sides answer pings and
carry TCP.

Checked: it initiates and we answer; pings; a SHA-256-checked TCP transfer each way with our
side rekeying (shortened Limits) in the middle; real datagrams replayed, forged and
bit-flipped at our port are counted by reason and never reach the TUN; wireguard-go's key
changes, we set the new key, we initiate and traffic flows again; under load our cookie
reply makes wireguard-go come back with a mac2 we accept; pings keep flowing across our
sessions' expiry and time-based rekeys.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import selectors
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

PORT = 51820
OURS, THEIRS = "192.0.2.1", "192.0.2.2"  # underlay
OUR_TUN_IP, THEIR_TUN_IP = "10.9.0.1", "10.9.0.2"
TUN_NAME = "wgpy0"
# a rekey or two inside each transfer; sessions rekeyed after 4 s and dead after 20 s
LIMITS = {"rekey_after_messages": 1500, "rekey_after_time": 4.0, "reject_after_time": 20.0}
TRANSFER_BYTES = 4 * 1024 * 1024

pytestmark = pytest.mark.integration


# --- the driver: our Device between a TUN and a UDP socket (runs inside the namespace) ---

def drive(private_hex: str, limits: dict[str, Any]) -> None:
    """Read JSON commands on stdin, answer one JSON line each; move packets meanwhile."""
    from backends._wgnoise import Device, Limits, WGDrop
    from tun.device import TunDevice
    from tun.wireguard import MessageType

    device = Device(bytes.fromhex(private_hex), limits=Limits(**limits), mtu=1420)
    tun = TunDevice.open(TUN_NAME)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", PORT))
    sock.setblocking(False)
    os.set_blocking(sys.stdin.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(tun.fd, selectors.EVENT_READ, "tun")
    sel.register(sock, selectors.EVENT_READ, "udp")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "ctl")
    captured: dict[str, Any] = {"initiation": None, "transport": []}
    tun_writes = 0
    pending = b""
    print(json.dumps({"public_key": device.public_key.hex()}), flush=True)
    while True:
        deadline = device.next_deadline()
        timeout = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
        for key, _ in sel.select(timeout):
            if key.data == "tun":
                batch = []
                for _ in range(64):
                    try:
                        batch.append(os.read(tun.fd, 65536))
                    except BlockingIOError:
                        break
                for addr, datagrams in device.send(batch):
                    for datagram in datagrams:
                        sock.sendto(datagram, addr)
            elif key.data == "udp":
                for _ in range(64):
                    try:
                        data, src = sock.recvfrom(65536)
                    except BlockingIOError:
                        break
                    if data[:1] == bytes([MessageType.INITIATION]) and not captured["initiation"]:
                        captured["initiation"] = data.hex()
                    elif data[:1] == bytes([MessageType.TRANSPORT]):
                        captured["transport"] = [*captured["transport"][-31:], data.hex()]
                    replies, packets = device.receive(data, src)
                    for addr, reply in replies:
                        sock.sendto(reply, addr)
                    for packet in packets:
                        os.write(tun.fd, packet)
                        tun_writes += 1
            else:
                chunk = os.read(sys.stdin.fileno(), 65536)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    cmd = json.loads(line)
                    if cmd["op"] == "set_peer":
                        device.set_peer(bytes.fromhex(cmd["key"]), endpoint=tuple(cmd["endpoint"]),
                                        allowed_ips=[ip_network(a) for a in cmd["allowed"]])
                    elif cmd["op"] == "remove_peer":
                        device.remove_peer(bytes.fromhex(cmd["key"]))
                    elif cmd["op"] == "load":
                        device.under_load = bool(cmd["on"])
                    answer = {"counters": device.counters(), "tun_writes": tun_writes,
                              "drops": {WGDrop(k).name: v for k, v in device.drops.items()},
                              "peers": [{"key": p.public_key.hex(), "endpoint": p.endpoint,
                                         "last_handshake": p.last_handshake,
                                         "rx": p.rx_bytes, "tx": p.tx_bytes}
                                        for p in device.peers()],
                              "captured": captured}
                    print(json.dumps(answer), flush=True)
        for addr, datagram in device.tick():
            sock.sendto(datagram, addr)


# --- the test side ------------------------------------------------------------------------

def sh(*args: str, check: bool = True, timeout: float = 30,
       input_: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, check=check, timeout=timeout, capture_output=True, input=input_)


def in_ns(ns: str, *args: str, check: bool = True,
          timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)


def wait_for(what: str, condition: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def wg_keypair() -> tuple[str, str]:
    private = sh("wg", "genkey").stdout.strip().decode()
    public = sh("wg", "pubkey", input_=private.encode()).stdout.strip().decode()
    return private, public


def b64_to_hex(text: str) -> str:
    import base64
    return base64.b64decode(text).hex()


@dataclass
class Pair:
    us: str  # namespace of our Device
    them: str  # namespace of wireguard-go
    driver: subprocess.Popen[bytes]
    our_public_b64: str
    their_public_b64: str
    workdir: Path
    wg_dev: str = "wg0"
    vector_out: Path | None = None
    vector: dict[str, str] | None = None

    def ask(self, op: str = "status", **fields: Any) -> dict[str, Any]:
        assert self.driver.stdin is not None and self.driver.stdout is not None
        self.driver.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
        self.driver.stdin.flush()
        answer: dict[str, Any] = json.loads(read_line(self.driver, 10))
        return answer

    def ping(self, ns: str, target: str, count: int = 3) -> bool:
        return in_ns(ns, "ping", "-c", str(count), "-i", "0.2", "-W", "2", target,
                     check=False, timeout=30).returncode == 0

    def set_wg(self, *args: str) -> None:
        in_ns(self.them, "wg", "set", self.wg_dev, *args)


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        pytest.fail(f"our WireGuard driver did not answer in {timeout:.0f}s")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read().decode() if proc.stderr else ""
        pytest.fail(f"our WireGuard driver died: {err[-2000:]}")
    return line


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    if os.geteuid() != 0:
        pytest.fail("the WireGuard interop test needs root (network namespaces)")
    missing = [t for t in ("wireguard-go", "wg", "ip", "ping", "socat") if not shutil.which(t)]
    if missing:
        pytest.fail(f"the WireGuard interop test needs {', '.join(missing)} (make deps)")
    prefix = f"wgi{secrets.token_hex(3)}"
    us, them = f"{prefix}-us", f"{prefix}-them"
    # wireguard-go's control socket, /var/run/wireguard/<name>.sock, is one per name on the
    # whole machine, namespaces or not: a name of this run's own
    wg_dev = f"{prefix}g"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (us, them):
            sh("ip", "netns", "add", ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", f"{prefix}a", "netns", us, "type", "veth",
           "peer", "name", f"{prefix}b", "netns", them)
        in_ns(us, "ip", "addr", "add", f"{OURS}/24", "dev", f"{prefix}a")
        in_ns(them, "ip", "addr", "add", f"{THEIRS}/24", "dev", f"{prefix}b")
        in_ns(us, "ip", "link", "set", f"{prefix}a", "up")
        in_ns(them, "ip", "link", "set", f"{prefix}b", "up")
        # wireguard-go, in the foreground so we hold its PID
        env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
        with open(tmp_path / "wireguard-go.log", "wb") as log:
            wg_go = subprocess.Popen(["ip", "netns", "exec", them, "wireguard-go", "-f", wg_dev],
                                     env=env, stdout=subprocess.DEVNULL, stderr=log)
        procs.append(wg_go)
        wait_for("wireguard-go's device", lambda: in_ns(them, "wg", "show", wg_dev,
                                                     check=False).returncode == 0)
        their_private, their_public = wg_keypair()
        (tmp_path / "their.key").write_text(their_private + "\n")
        our_private = secrets.token_bytes(32)
        root = Path(__file__).resolve().parents[2]
        driver = subprocess.Popen(
            ["ip", "netns", "exec", us, sys.executable, "-m",
             "tests.integration.test_wireguard_interop", our_private.hex(), json.dumps(LIMITS)],
            cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(driver)
        our_public = bytes.fromhex(json.loads(read_line(driver, 20))["public_key"])
        import base64
        our_public_b64 = base64.b64encode(our_public).decode()
        in_ns(us, "ip", "addr", "add", f"{OUR_TUN_IP}/24", "dev", TUN_NAME)
        in_ns(us, "ip", "link", "set", TUN_NAME, "mtu", "1420", "up")
        in_ns(them, "wg", "set", wg_dev, "private-key", str(tmp_path / "their.key"),
              "listen-port", str(PORT), "peer", our_public_b64, "endpoint", f"{OURS}:{PORT}",
              "allowed-ips", f"{OUR_TUN_IP}/32")
        in_ns(them, "ip", "addr", "add", f"{THEIR_TUN_IP}/24", "dev", wg_dev)
        in_ns(them, "ip", "link", "set", wg_dev, "mtu", "1420", "up")
        p = Pair(us, them, driver, our_public_b64, their_public, tmp_path, wg_dev)
        vector = os.environ.get("WG_VECTOR_OUT")  # a real initiation for the unit tests' KAT
        if vector:
            p.vector_out = Path(vector)
            p.vector = {"our_private": our_private.hex(),
                        "their_private": b64_to_hex(their_private)}
        p.ask("set_peer", key=b64_to_hex(their_public), endpoint=[THEIRS, PORT],
              allowed=[f"{THEIR_TUN_IP}/32"])
        yield p
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for ns in (us, them):
            sh("ip", "netns", "del", ns, check=False)
    left = [ns for ns in sh("ip", "netns", "list").stdout.decode().split() if
            ns.startswith(prefix)]
    assert not left, f"namespaces left behind: {left}"


def transfer(p: Pair, sender: str, receiver: str, target: str, port: int) -> None:
    """TRANSFER_BYTES of random data over TCP through the tunnel, checked by SHA-256."""
    data = os.urandom(TRANSFER_BYTES)
    src, dst = p.workdir / f"send-{port}", p.workdir / f"recv-{port}"
    src.write_bytes(data)
    server = subprocess.Popen(["ip", "netns", "exec", receiver, "socat", "-u",
                               f"TCP-LISTEN:{port},reuseaddr", f"OPEN:{dst},creat,trunc"])
    try:
        wait_for("the socat listener", lambda: f":{port}" in in_ns(
            receiver, "ss", "-ltn").stdout.decode())
        in_ns(sender, "socat", "-u", f"OPEN:{src}", f"TCP:{target}:{port}", timeout=120)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=5)
    assert dst.exists(), "nothing arrived"
    got = dst.read_bytes()
    assert len(got) == len(data)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def send_from_them(p: Pair, datagrams: list[bytes], sport: int = 40000) -> None:
    """Datagrams at our port from wireguard-go's namespace, over the real underlay."""
    script = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              f"s.bind(('{THEIRS}',{sport}))\n"
              "for line in sys.stdin.read().split():\n"
              f"    s.sendto(bytes.fromhex(line),('{OURS}',{PORT}))\n")
    sh("ip", "netns", "exec", p.them, sys.executable, "-c", script,
       input_="\n".join(d.hex() for d in datagrams).encode())


def test_wireguard_go_interop(pair: Pair) -> None:
    p = pair
    # 1. wireguard-go initiates (its ping), we answer
    assert p.ping(p.them, OUR_TUN_IP), "no ping from wireguard-go's side"
    status = p.ask()
    assert status["counters"]["handshakes_completed"] >= 1
    assert status["counters"]["handshakes_sent"] == 0, "we initiated; it should have"
    assert status["captured"]["initiation"], "no initiation from wireguard-go seen"
    if p.vector_out and p.vector:
        p.vector["initiation"] = status["captured"]["initiation"]
        p.vector_out.write_text(json.dumps(p.vector))
    assert p.ping(p.us, THEIR_TUN_IP)
    shown = in_ns(p.them, "wg", "show", p.wg_dev, "latest-handshakes").stdout.decode()
    assert p.our_public_b64 in shown and not shown.strip().endswith("\t0")

    # 2. transfers both ways; our side rekeys after LIMITS' message count meanwhile
    before = p.ask()["counters"]
    transfer(p, p.us, p.them, THEIR_TUN_IP, 5001)
    transfer(p, p.them, p.us, OUR_TUN_IP, 5002)
    after = p.ask()
    assert after["counters"]["rekeys"] > before["rekeys"], after["counters"]
    assert after["counters"]["handshakes_sent"] >= 1
    bad = {k: v for k, v in after["drops"].items() if k not in ("NO_PEER",)}
    assert not bad, f"drops during clean transfers: {bad}"
    assert p.ping(p.us, THEIR_TUN_IP)

    # 3. real datagrams replayed, bit-flipped and forged at our port
    real = [bytes.fromhex(h) for h in after["captured"]["transport"]]
    assert len(real) >= 8
    flipped = []  # fresh counters (the nonce) or a flipped ciphertext bit: no authentication
    for i, d in enumerate(real[-8:]):
        b = bytearray(d)
        b[8:16] = (int.from_bytes(b[8:16], "little") + 10**6 + i).to_bytes(8, "little")
        if i % 2:
            b[16 + i % (len(d) - 16)] ^= 0x01
        flipped.append(bytes(b))
    forged_init = bytes([1, 0, 0, 0]) + os.urandom(144)
    garbage = [b"\x07\x00\x00\x00" + os.urandom(60), b"\x04", os.urandom(3)]
    before = p.ask()
    send_from_them(p, real + flipped + [forged_init] + garbage)

    def counted() -> dict[str, Any] | None:
        s = p.ask()
        d = s["drops"]
        done = (d.get("REPLAYED", 0) + d.get("KEY_EXPIRED", 0) + d.get("UNKNOWN_INDEX", 0)
                - sum(before["drops"].get(k, 0) for k in ("REPLAYED", "KEY_EXPIRED",
                                                          "UNKNOWN_INDEX")) >= len(real)
                and d.get("BAD_MAC1", 0) > before["drops"].get("BAD_MAC1", 0)
                and d.get("RUNT", 0) > before["drops"].get("RUNT", 0))
        return s if done else None

    s = wait_for("the replayed and forged datagrams to be counted", counted, 10)
    assert s["drops"].get("REPLAYED", 0) > before["drops"].get("REPLAYED", 0)
    assert s["drops"].get("DECRYPT_FAILED", 0) - before["drops"].get("DECRYPT_FAILED", 0) \
        == len(flipped)
    assert s["drops"].get("UNKNOWN_TYPE", 0) > before["drops"].get("UNKNOWN_TYPE", 0)
    assert s["tun_writes"] == before["tun_writes"], "a forged or replayed packet reached the TUN"
    ours = next(q for q in s["peers"] if q["key"] == b64_to_hex(p.their_public_b64))
    assert ours["endpoint"] == [THEIRS, PORT], "an unauthenticated datagram moved the endpoint"
    assert p.ping(p.us, THEIR_TUN_IP)

    # 4. wireguard-go's key changes; we set the new one and initiate
    new_private, new_public = wg_keypair()
    (p.workdir / "new.key").write_text(new_private + "\n")
    p.set_wg("private-key", str(p.workdir / "new.key"))
    p.ask("remove_peer", key=b64_to_hex(p.their_public_b64))
    before = p.ask("set_peer", key=b64_to_hex(new_public), endpoint=[THEIRS, PORT],
                   allowed=[f"{THEIR_TUN_IP}/32"])["counters"]
    assert p.ping(p.us, THEIR_TUN_IP), "no ping after the key change"
    s = p.ask()
    assert s["counters"]["handshakes_sent"] > before["handshakes_sent"]
    assert s["counters"]["handshakes_completed"] > before["handshakes_completed"]
    assert [q["key"] for q in s["peers"]] == [b64_to_hex(new_public)]
    transfer(p, p.us, p.them, THEIR_TUN_IP, 5003)

    # 5. under load we answer wireguard-go's fresh initiation with a cookie reply; it
    # retransmits with mac2 (our cookie, opened with its XChaCha20-Poly1305) and gets in
    before = p.ask("load", on=True)["counters"]
    p.set_wg("peer", p.our_public_b64, "remove")
    p.set_wg("peer", p.our_public_b64, "endpoint", f"{OURS}:{PORT}",
             "allowed-ips", f"{OUR_TUN_IP}/32")
    wait_for("a handshake through the cookie", lambda: p.ping(p.them, OUR_TUN_IP, 1), 30)
    s = p.ask("load", on=False)
    assert s["counters"]["cookie_replies_sent"] > before["cookie_replies_sent"]
    assert s["drops"].get("COOKIE_REQUIRED", 0) >= 1
    assert s["counters"]["handshakes_completed"] > before["handshakes_completed"]

    # 6. 25 s of pings across REJECT_AFTER_TIME (20 s here): our session expires, we
    # initiate, then rekey on time (4 s) as the initiator; the pings keep getting through
    before = p.ask()["counters"]
    pings = in_ns(p.us, "ping", "-c", "100", "-i", "0.25", "-W", "1", THEIR_TUN_IP,
                  check=False, timeout=60).stdout.decode()
    received = int(pings.split(" received")[0].rsplit(" ", 1)[-1])
    assert received >= 90, pings[-300:]
    s = p.ask()
    assert s["counters"]["handshakes_sent"] >= before["handshakes_sent"] + 2, s["counters"]
    assert s["counters"]["rekeys"] > before["rekeys"]
    final = p.ask()
    print(f"pings across expiry: {received}/100;", "our side:", json.dumps(final["counters"]),
          json.dumps(final["drops"]))


if __name__ == "__main__":
    drive(sys.argv[1], json.loads(sys.argv[2]))
