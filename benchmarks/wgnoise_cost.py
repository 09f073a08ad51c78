"""What one WireGuard transport packet costs in backends/_wgnoise.py: microseconds per
1420-byte IP packet for Device.send (encrypt) and Device.receive (decrypt), next to the bare
ChaCha20-Poly1305 call each makes, so the Python overhead is the difference. No I/O: two
Devices in one process, a fake clock. Every packet and datagram is a buffer of its own (as
from a TUN or a socket), for the bare AEAD calls too: one buffer used over and over would
sit in the CPU cache and flatter the numbers.

    python -m benchmarks.wgnoise_cost [--packets N] [--size BYTES] [--batch N] [--mtu N] [--json]

With the default --mtu 1420 (flannel's wireguard MTU), a 1420-byte packet needs no padding
(padding stops at the MTU, as in wireguard-go); --mtu 0 pads it to 1424, one copy more.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from collections.abc import Callable
from ipaddress import ip_network
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from backends._wgnoise import Device

A_ADDR = ("192.0.2.1", 51820)
B_ADDR = ("192.0.2.2", 51820)
_NONCE = struct.Struct("<4xQ")


def ipv4_packet(size: int, fill: int = 0) -> bytes:
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 6, 0,
                         bytes([10, 0, 1, 1]), bytes([10, 0, 2, 1]))
    return header + bytes([fill & 0xFF]) * (size - len(header))


def best_of(runs: int, fn: Callable[[], int]) -> float:
    """Seconds per item, the best of `runs` (fn returns how many items it did)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        n = fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def connected_pair(limits_rekey: int, mtu: int = 0) -> tuple[Device, Device]:
    from backends._wgnoise import Limits

    now = [1000.0]
    limits = Limits(rekey_after_messages=limits_rekey)
    a = Device(bytes([1]) * 32, clock=lambda: now[0], limits=limits, mtu=mtu)
    b = Device(bytes([2]) * 32, clock=lambda: now[0], limits=limits, mtu=mtu)
    a.set_peer(b.public_key, endpoint=B_ADDR, allowed_ips=[ip_network("10.0.2.0/24")])
    b.set_peer(a.public_key, endpoint=A_ADDR, allowed_ips=[ip_network("10.0.1.0/24")])
    first = [d for _, ds in a.send([ipv4_packet(60)]) for d in ds]
    replies, _ = b.receive(first[0], A_ADDR)
    data, _ = a.receive(replies[0][1], B_ADDR)
    _, packets = b.receive(data[0][1], A_ADDR)
    assert packets, "the benchmark's handshake did not complete"
    return a, b


def measure(packets: int, size: int, batch: int, mtu: int = 1420,
            runs: int = 7) -> dict[str, Any]:
    a, b = connected_pair(2**60, mtu)
    batches = max(1, packets // batch)
    total = batches * batch
    plain = [ipv4_packet(size, i) for i in range(total)]
    pad = bytes(max(0, min(-size & 15, mtu - size)) if mtu else -size & 15)
    padded = [p + pad for p in plain]
    aead = ChaCha20Poly1305(bytes(32))
    frames = [bytes(16) + aead.encrypt(_NONCE.pack(i), p, None) for i, p in enumerate(padded)]
    bursts = [plain[i:i + batch] for i in range(0, total, batch)]

    def crypto_encrypt() -> int:
        enc, pack = aead.encrypt, _NONCE.pack
        for i, p in enumerate(padded):
            enc(pack(i), p, None)
        return total

    def crypto_decrypt() -> int:
        dec, pack = aead.decrypt, _NONCE.pack
        for i, f in enumerate(frames):
            dec(pack(i), memoryview(f)[16:], None)
        return total

    datagrams: list[bytes] = []

    def send() -> int:
        datagrams.clear()
        for burst in bursts:
            for _, ds in a.send(burst):
                datagrams.extend(ds)
        return total

    def receive() -> int:
        rx = b.receive
        got = 0
        for d in datagrams:
            got += len(rx(d, A_ADDR)[1])
        assert got == len(datagrams), b.drops
        return got

    enc = best_of(runs, crypto_encrypt)
    dec = best_of(runs, crypto_decrypt)
    snd = float("inf")
    rcv = float("inf")
    for _ in range(runs):  # each send run makes fresh datagrams for one receive run
        snd = min(snd, best_of(1, send))
        rcv = min(rcv, best_of(1, receive))
    rows = {
        "encrypt": {"total_us": snd * 1e6, "crypto_us": enc * 1e6},
        "decrypt": {"total_us": rcv * 1e6, "crypto_us": dec * 1e6},
    }
    for row in rows.values():
        row["overhead_us"] = row["total_us"] - row["crypto_us"]
        row["gbit_s"] = size * 8 / (row["total_us"] * 1e-6) / 1e9
    return {"packet_bytes": size, "mtu": mtu, "packets": total, "batch": batch,
            "python": sys.version.split()[0], "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--size", type=int, default=1420)
    parser.add_argument("--batch", type=int, default=64, help="packets per Device.send call")
    parser.add_argument("--mtu", type=int, default=1420, help="0: pad every packet to 16")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 20 <= args.size <= 65535:
        parser.error("--size must be 20..65535 (an IPv4 packet)")
    result = measure(args.packets, args.size, args.batch, args.mtu)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"WireGuard transport cost per {args.size}-byte packet "
          f"(MTU {args.mtu}, {result['packets']} packets, send batches of {args.batch}, Python "
          f"{result['python']}, one core)")
    print(f"{'':10}{'total µs':>10}{'AEAD µs':>10}{'Python µs':>11}{'Gbit/s':>9}")
    for name, row in result["rows"].items():
        print(f"{name:10}{row['total_us']:>10.2f}{row['crypto_us']:>10.2f}"
              f"{row['overhead_us']:>11.2f}{row['gbit_s']:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
