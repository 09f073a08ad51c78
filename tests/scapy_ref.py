"""Scapy as the independent second opinion: helpers the codec tests share."""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption, defragment

from tun.packet import check_ipv4


def scapy_reencode(packet: bytes, **changes: Any) -> bytes:
    """`packet` dissected by scapy, `changes` applied, the IP header checksum recomputed."""
    parsed = IP(packet)
    for name, value in changes.items():
        setattr(parsed, name, value)
    parsed.chksum = None
    return bytes(parsed)


def header_checksum_ok(packet: bytes) -> bool:
    """Scapy's verdict on the IPv4 header checksum of `packet`."""
    return scapy_reencode(packet) == packet[: IP(packet).len]


def assert_intact_but_ttl(original: bytes, out: bytes, hops: int) -> None:
    """`out` is `original` after `hops` routers: only the TTL and the header checksum
    changed, and scapy agrees on the re-encoding."""
    assert len(out) == len(original)
    assert out[:8] == original[:8]
    assert out[8] == original[8] - hops
    assert out[9] == original[9]
    assert out[12:] == original[12:]
    assert header_checksum_ok(out)
    assert check_ipv4(out, len(out)) == len(out)
    assert out == scapy_reencode(original, ttl=original[8] - hops)


def reassemble(pieces: list[bytes]) -> bytes:
    """Scapy's reassembly of `pieces` (in order of arrival, the last fragment last): the
    payload of the one packet it rebuilds."""
    scapy_defragment: Any = defragment  # scapy's annotations are partial
    whole = scapy_defragment([IP(piece) for piece in pieces])
    assert len(whole) == 1
    return bytes(whole[0][IP].payload)


def inner(src: str = "10.5.1.7", dst: str = "10.5.2.9", ttl: int = 64, size: int = 100,
          proto: str = "udp", **fields: Any) -> bytes:
    """An inner IPv4 packet of exactly `size` bytes (at least the headers)."""
    layer: Any = {"udp": UDP(sport=4000, dport=5000), "tcp": TCP(sport=4000, dport=80),
                  "icmp": ICMP(type=8, id=7, seq=1)}[proto]
    header = IP(src=src, dst=dst, ttl=ttl, id=0x4242, **fields) / layer
    fill = max(size - len(header), 0)
    packet = bytes(header / bytes(i % 251 for i in range(fill)))
    assert len(packet) == max(size, len(header))
    return packet


def pair_packets(mtu: int) -> list[bytes]:
    """Inner packets for the pair tests (A's encapsulation into B's decapsulation)."""
    return [
        inner(),
        inner(proto="tcp", size=40),
        inner(proto="icmp", size=84),
        inner(size=mtu, ttl=255),
        inner(size=mtu, flags="DF", ttl=3),
        inner(src="10.5.1.200", dst="10.5.2.255", size=29),
        bytes(IP(src="10.5.1.7", dst="10.5.2.9")),
        bytes(IP(src="10.5.1.7", dst="10.5.2.9", tos=0xB8, id=65535,
                 options=[IPOption(b"\x94\x04\x00\x00")]) / UDP() / b"options survive"),
    ]
