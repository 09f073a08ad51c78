"""IPv4 packet helpers for the userspace data planes: header checks, TTL, ICMP errors,
fragmentation. Pure: bytes in, bytes out, no I/O.

RFC 791 (IPv4), RFC 792 (ICMP), RFC 1071 (checksum), RFC 1624 (incremental checksum update),
RFC 1191 (Fragmentation Needed with next-hop MTU).
"""

from __future__ import annotations

import enum
import struct
import sys
from typing import Final

from lease.errors import DecodeError

IPV4_HEADER_LEN: Final = 20
ICMP_HEADER_LEN: Final = 8
PROTO_ICMP: Final = 1
ICMP_ERROR_TTL: Final = 8  # what flannel's proxy puts in its ICMP errors
FLAG_DF: Final = 0x4000
FLAG_MF: Final = 0x2000
OFFSET_MASK: Final = 0x1FFF

_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_HEADER: Final = struct.Struct("!BBHHHBBHII")  # RFC 791 fixed header
_ICMP: Final = struct.Struct("!BBHI")
_ADDRESSES: Final = struct.Struct("!4H")  # source and destination address words


class ICMPType(enum.IntEnum):
    DEST_UNREACHABLE = 3
    TIME_EXCEEDED = 11


class UnreachableCode(enum.IntEnum):
    NET = 0
    FRAGMENTATION_NEEDED = 4


def _ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The folded 16-bit ones'-complement sum of `data`, in host byte order.

    Summing native-order words is enough: the ones'-complement sum commutes with a byte
    swap (RFC 1071 §2(B)), so one memoryview cast replaces a struct unpack."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(memoryview(data).cast("B").cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 Internet checksum of `data` (odd length padded with a zero byte)."""
    total = _ones_sum(data)
    if _LITTLE_ENDIAN:
        total = ((total & 0xFF) << 8) | (total >> 8)
    return ~total & 0xFFFF


def check_ipv4(buf: bytes | bytearray | memoryview, n: int) -> int:
    """Validate the IPv4 header of buf[:n]; the packet's total length (<= n).

    DecodeError for anything a kernel would not accept: short, not version 4, bad IHL,
    total length outside [IHL, n], or a wrong header checksum."""
    if n < IPV4_HEADER_LEN:
        raise DecodeError(f"IPv4 packet of {n} bytes is shorter than a header")
    first = buf[0]
    if first >> 4 != 4:
        raise DecodeError(f"IP version {first >> 4}, not 4")
    ihl = (first & 0x0F) * 4
    if ihl < IPV4_HEADER_LEN or ihl > n:
        raise DecodeError(f"IPv4 header length {ihl} does not fit a {n}-byte packet")
    total = (buf[2] << 8) | buf[3]
    if total < ihl or total > n:
        raise DecodeError(f"IPv4 total length {total} does not fit a {n}-byte packet")
    # An intact header's ones'-complement sum is 0xFFFF (RFC 1071). As 2**16 is 1 modulo
    # 0xFFFF, that sum is congruent to the header read as one big-endian integer, and a
    # version-4 header never sums to 0: one C call instead of a loop over its words (this
    # runs for every packet, and a cold daemon pays for each distinct operation).
    if int.from_bytes(buf[:ihl], "big") % 0xFFFF:
        raise DecodeError("IPv4 header checksum is wrong")
    return total


def pseudo_header_sum(packet: bytes | bytearray | memoryview, proto: int, length: int) -> int:
    """The folded, not inverted sum of the pseudo-header of the IPv4 packet at packet[0]
    (addresses, zero + protocol, transport length; RFC 9293 3.1, RFC 768), as a value in
    network order: what CHECKSUM_PARTIAL leaves in the transport checksum field."""
    total: int = sum(_ADDRESSES.unpack_from(packet, 12)) + proto + length
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _network_order(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8) if _LITTLE_ENDIAN else value


def complete_partial_checksum(packet: bytearray | memoryview, total: int) -> bool:
    """Finish a TCP/UDP checksum left unfinished by a sender's checksum offload.

    A kernel that offloads the transport checksum (CHECKSUM_PARTIAL) leaves the folded
    pseudo-header sum in the checksum field for the NIC to finish. A physical NIC always
    does; a veth hands the packet on unfinished, so a userspace receiver of a kernel VXLAN
    peer on a virtual underlay sees such fields. Where the field equals exactly that sum,
    finish it as the NIC would (True); anything else is left for the kernel to verify. A
    complete checksum that happens to equal the pseudo-header sum is recomputed to itself.
    """
    ihl = (packet[0] & 0x0F) * 4
    proto = packet[9]
    if proto == 6:
        field_at = ihl + 16
    elif proto == 17:
        field_at = ihl + 6
    else:
        return False
    if ((packet[6] << 8) | packet[7]) & (FLAG_MF | OFFSET_MASK) or total < field_at + 2:
        return False
    stored = (packet[field_at] << 8) | packet[field_at + 1]
    length = total - ihl
    if stored != pseudo_header_sum(packet, proto, length):
        return False
    value = _network_order(~_ones_sum(memoryview(packet)[ihl:total]) & 0xFFFF)
    if proto == 17 and value == 0:
        value = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    packet[field_at], packet[field_at + 1] = value >> 8, value & 0xFF
    return True


def decrement_ttl(buf: bytearray | memoryview) -> bool:
    """TTL - 1 in place with the RFC 1624 incremental checksum; False (and untouched) if the
    packet must be dropped because its TTL would reach 0."""
    ttl = buf[8]
    if ttl <= 1:
        return False
    buf[8] = ttl - 1
    # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') with m = TTL:proto, m' = (TTL-1):proto.
    # ~m + m' is 0xFEFF in ones' complement (the -0x0100 change of the TTL byte).
    total = (~((buf[10] << 8) | buf[11]) & 0xFFFF) + 0xFEFF
    total = (total & 0xFFFF) + (total >> 16)
    value = ~total & 0xFFFF
    buf[10], buf[11] = value >> 8, value & 0xFF
    return True


def destination(buf: bytes | bytearray | memoryview) -> int:
    return (buf[16] << 24) | (buf[17] << 16) | (buf[18] << 8) | buf[19]


def source(buf: bytes | bytearray | memoryview) -> int:
    return (buf[12] << 24) | (buf[13] << 16) | (buf[14] << 8) | buf[15]


def build_ipv4(src: int, dst: int, protocol: int, payload: bytes, ttl: int = 64,
               ident: int = 0, flags_offset: int = 0, tos: int = 0) -> bytes:
    header = bytearray(_HEADER.pack(0x45, tos, IPV4_HEADER_LEN + len(payload), ident,
                                    flags_offset, ttl, protocol, 0, src, dst))
    struct.pack_into("!H", header, 10, checksum(header))
    return bytes(header) + payload


def wants_icmp_error(buf: bytes | bytearray | memoryview) -> bool:
    """flannel's rule: no ICMP error about an ICMP packet or a non-first fragment."""
    offset = ((buf[6] << 8) | buf[7]) & OFFSET_MASK
    return buf[9] != PROTO_ICMP and offset == 0


def icmp_error(offender: bytes | bytearray | memoryview, icmp_type: ICMPType, code: int,
               src: int, rest: int = 0) -> bytes | None:
    """An ICMP error about `offender` as flannel's proxy builds it: TTL 8, from `src`, to the
    offender's source, carrying its IP header + 8 bytes. None where no error is due."""
    if not wants_icmp_error(offender):
        return None
    ihl = (offender[0] & 0x0F) * 4
    quoted = bytes(offender[: ihl + 8])
    icmp = bytearray(_ICMP.pack(icmp_type, code, 0, rest) + quoted)
    struct.pack_into("!H", icmp, 2, checksum(icmp))
    return build_ipv4(src, source(offender), PROTO_ICMP, bytes(icmp), ttl=ICMP_ERROR_TTL)


def fragment(packet: bytes | bytearray | memoryview, mtu: int) -> list[bytes]:
    """Split an IPv4 packet (DF clear) into fragments of at most `mtu` bytes (RFC 791).

    Options are copied into every fragment (a simplification: RFC 791 copies only those
    with the copied flag; flannel's peers do not care)."""
    ihl = (packet[0] & 0x0F) * 4
    total = (packet[2] << 8) | packet[3] if len(packet) >= 4 else 0
    if ihl < IPV4_HEADER_LEN or total < ihl or total > len(packet):
        raise DecodeError("cannot fragment a packet with a broken IPv4 header")
    if total <= mtu:
        return [bytes(packet[:total])]
    header = bytes(packet[:ihl])
    payload = bytes(packet[ihl:total])
    room = mtu - ihl
    step = room // 8 * 8
    if step <= 0:
        raise DecodeError(f"MTU {mtu} cannot carry a fragment of this packet")
    flags_offset = (packet[6] << 8) | packet[7]
    base_offset = flags_offset & OFFSET_MASK
    more = flags_offset & FLAG_MF
    pieces: list[bytes] = []
    start = 0
    while start < len(payload):
        last = len(payload) - start <= room  # the last piece need not be a multiple of 8
        chunk = payload[start:] if last else payload[start:start + step]
        frag = bytearray(header + chunk)
        struct.pack_into("!H", frag, 2, ihl + len(chunk))
        struct.pack_into("!H", frag, 6, (base_offset + start // 8)
                         | (more if last else FLAG_MF))
        struct.pack_into("!H", frag, 10, 0)
        struct.pack_into("!H", frag, 10, checksum(frag[:ihl]))
        pieces.append(bytes(frag))
        start += len(chunk)
    return pieces
