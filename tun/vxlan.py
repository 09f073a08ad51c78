"""VXLAN frames for the userspace data plane: RFC 7348 header, Ethernet II, ARP (RFC 826),
and the flow hash. Pure: bytes in, bytes out.

On the wire a frame is exactly what the kernel's VXLAN device sends:
    outer IPv4 / UDP (dst port 8472, a flow-hashed source port) / VXLAN (flags 0x08, VNI)
    / Ethernet (dst = peer VtepMAC, src = our VtepMAC, type 0x0800) / inner IPv4
The engine reads each inner packet from the TUN at offset HEADROOM, so the 22 bytes of
VXLAN + Ethernet header are written in front of it in place: no copy per packet.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

from lease.errors import DecodeError

VXLAN_PORT: Final = 8472  # flannel's (and Linux's) default, not IANA's 4789
VXLAN_HEADER_LEN: Final = 8
ETH_HEADER_LEN: Final = 14
HEADROOM: Final = VXLAN_HEADER_LEN + ETH_HEADER_LEN
VXLAN_FLAG_I: Final = 0x08
ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_ARP: Final = 0x0806
BROADCAST: Final = b"\xff" * 6
ARP_REQUEST: Final = 1
ARP_REPLY: Final = 2
ARP_LEN: Final = 28
OUTER_OVERHEAD: Final = 20 + 8 + HEADROOM  # 50: outer IPv4 + UDP + VXLAN + Ethernet

_VXLAN: Final = struct.Struct("!B3xI")  # flags, reserved, VNI << 8 | reserved
_ETH: Final = struct.Struct("!6s6sH")
_ARP: Final = struct.Struct("!HHBBH6s4s6s4s")


_MAC: Final = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def parse_mac(text: str) -> bytes:
    if not _MAC.fullmatch(text):
        raise DecodeError(f"{text!r} is not a MAC address")
    return bytes.fromhex(text.replace(":", ""))


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def encode_vxlan_header(vni: int) -> bytes:
    """RFC 7348 §5: flags with only I set, 24-bit VNI, reserved fields zero."""
    if not 0 <= vni < 1 << 24:
        raise ValueError(f"VNI {vni} does not fit 24 bits")
    return _VXLAN.pack(VXLAN_FLAG_I, vni << 8)


def decode_vxlan_header(data: bytes | bytearray | memoryview) -> int:
    """The VNI; DecodeError if short or the I flag is clear (reserved bits are ignored on
    receipt, RFC 7348 §5)."""
    if len(data) < VXLAN_HEADER_LEN:
        raise DecodeError(f"VXLAN header needs 8 bytes, got {len(data)}")
    flags, word = _VXLAN.unpack_from(data)
    if not flags & VXLAN_FLAG_I:
        raise DecodeError("VXLAN I flag is not set")
    return int(word) >> 8


def encode_ethernet(dst: bytes, src: bytes, ethertype: int) -> bytes:
    return _ETH.pack(dst, src, ethertype)


def decode_ethernet(data: bytes | bytearray | memoryview) -> tuple[bytes, bytes, int]:
    if len(data) < ETH_HEADER_LEN:
        raise DecodeError(f"Ethernet header needs 14 bytes, got {len(data)}")
    dst, src, ethertype = _ETH.unpack_from(data)
    return bytes(dst), bytes(src), int(ethertype)


@dataclass(frozen=True, slots=True)
class ARPPacket:
    op: int
    sender_mac: bytes
    sender_ip: IPv4Address
    target_mac: bytes
    target_ip: IPv4Address


def encode_arp(arp: ARPPacket) -> bytes:
    """RFC 826 for Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4)."""
    return _ARP.pack(1, ETHERTYPE_IPV4, 6, 4, arp.op, arp.sender_mac, arp.sender_ip.packed,
                     arp.target_mac, arp.target_ip.packed)


def decode_arp(data: bytes | bytearray | memoryview) -> ARPPacket:
    if len(data) < ARP_LEN:
        raise DecodeError(f"ARP packet needs 28 bytes, got {len(data)}")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(data)
    if (htype, ptype, hlen, plen) != (1, ETHERTYPE_IPV4, 6, 4):
        raise DecodeError("ARP is not Ethernet/IPv4")
    return ARPPacket(int(op), bytes(sha), IPv4Address(bytes(spa)), bytes(tha),
                     IPv4Address(bytes(tpa)))


def flow_hash(packet: bytes | bytearray | memoryview, offset: int = 0,
              length: int | None = None) -> int:
    """A hash of the inner flow (addresses, protocol, ports for TCP/UDP), as the kernel
    spreads VXLAN source ports. Ports are mixed in before any modulo (Linux prefers even
    ports: a plain sum would leave half the range unused)."""
    o = offset
    end = len(packet) if length is None else min(len(packet), offset + length)
    proto = packet[o + 9]
    h = ((packet[o + 12] << 24) | (packet[o + 13] << 16) | (packet[o + 14] << 8)
         | packet[o + 15]) ^ ((packet[o + 16] << 24) | (packet[o + 17] << 16)
                              | (packet[o + 18] << 8) | packet[o + 19]) ^ proto
    ihl = (packet[o] & 0x0F) * 4
    if proto in (6, 17) and end >= o + ihl + 4:
        p = o + ihl
        h ^= ((packet[p] << 8 | packet[p + 1]) << 16) | (packet[p + 2] << 8 | packet[p + 3])
    h = (h ^ (h >> 16)) * 0x45D9F3B & 0xFFFFFFFF
    return (h ^ (h >> 16)) & 0xFFFFFFFF
