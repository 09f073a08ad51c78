"""Tests for tun/packet.py: IPv4 header checks, TTL, ICMP errors, fragmentation.

flannel's udp data path. Scapy is the independent second opinion:
it builds the reference packets and parses every packet we produce.
"""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address
from typing import Any, Final

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption
from scapy.layers.inet6 import IPv6
from scapy.utils import checksum as scapy_checksum

from lease.errors import DecodeError
from tests.scapy_ref import header_checksum_ok, reassemble, scapy_reencode
from tun.packet import (
    FLAG_DF,
    FLAG_MF,
    ICMP_ERROR_TTL,
    IPV4_HEADER_LEN,
    OFFSET_MASK,
    PROTO_ICMP,
    ICMPType,
    UnreachableCode,
    build_ipv4,
    check_ipv4,
    checksum,
    complete_partial_checksum,
    decrement_ttl,
    destination,
    fragment,
    icmp_error,
    source,
    wants_icmp_error,
)

SEED: Final = 20240611
GATEWAY: Final = "10.5.1.0"


def addr(text: str) -> int:
    return int(IPv4Address(text))


def reference_checksum(data: bytes) -> int:
    """RFC 1071 the long way: big-endian 16-bit words, 32-bit sum, fold, complement."""
    if len(data) % 2:
        data += b"\0"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_packet(ttl: int = 64, payload: bytes = b"hello flannel", **fields: Any) -> bytes:
    return bytes(IP(src="10.5.1.7", dst="10.5.2.9", ttl=ttl, **fields)
                 / TCP(sport=40000, dport=80) / payload)


def random_packet(rng: random.Random, ttl: int | None = None) -> bytes:
    """A valid IPv4 packet with random header fields (scapy computes the checksum)."""
    layer: Any = rng.choice([UDP(sport=rng.randrange(65536), dport=rng.randrange(65536)),
                             TCP(sport=rng.randrange(65536), dport=rng.randrange(65536)),
                             ICMP(id=rng.randrange(65536), seq=rng.randrange(65536))])
    options = [IPOption(b"\x94\x04\x00\x00")] if rng.random() < 0.2 else []
    ip = IP(src=str(IPv4Address(rng.getrandbits(32))), dst=str(IPv4Address(rng.getrandbits(32))),
            ttl=rng.randrange(256) if ttl is None else ttl, id=rng.randrange(65536),
            tos=rng.randrange(256), flags=rng.choice([0, 2]), options=options)
    return bytes(ip / layer / rng.randbytes(rng.randrange(64)))


# --- checksum ---------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [
    (b"", 0xFFFF),
    (b"\x00", 0xFFFF),
    (b"\x00\x00", 0xFFFF),
    (b"\x01", 0xFEFF),  # odd length: padded with a zero byte
    (b"\xff\xff", 0x0000),
    (b"\xff\xff\xff\xff", 0x0000),
    (b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7", 0x220D),  # RFC 1071 §3 worked example
    (b"\x00\x01\xf2\x03\xf4\xf5\xf6", 0x2304),
    (bytes.fromhex("4500003c1c4640004006 0000ac100a63ac100a0c"), 0xB1E6),  # textbook header
])
def test_checksum_vectors(data: bytes, expected: int) -> None:
    assert checksum(data) == expected
    assert reference_checksum(data) == expected
    assert scapy_checksum(data) == expected


@pytest.mark.parametrize("length", [*range(0, 34), 63, 64, 65, 1499, 1500, 1501, 65535])
def test_checksum_matches_reference_on_random_data(length: int) -> None:
    rng = random.Random(SEED + length)
    for _ in range(20):
        data = rng.randbytes(length)
        expected = reference_checksum(data)
        assert checksum(data) == expected
        assert checksum(bytearray(data)) == expected
        assert checksum(memoryview(data)) == expected
        assert scapy_checksum(data) == expected


def test_checksum_of_a_slice_of_a_larger_buffer() -> None:
    data = bytes(range(256)) * 3
    view = memoryview(data)
    for start, stop in [(0, 7), (1, 8), (3, 100), (5, 768), (1, 2)]:
        assert checksum(view[start:stop]) == reference_checksum(data[start:stop])


def test_checksum_equals_scapys_ip_header_checksum() -> None:
    rng = random.Random(SEED)
    for _ in range(300):
        packet = random_packet(rng)
        ihl = (packet[0] & 0x0F) * 4
        zeroed = bytearray(packet[:ihl])
        zeroed[10:12] = b"\0\0"
        assert checksum(zeroed) == IP(packet).chksum
        assert checksum(packet[:ihl]) == 0  # a valid header sums to 0xFFFF


@pytest.mark.parametrize("payload_len", [0, 1, 2, 3, 17, 56, 57, 1001])
def test_checksum_equals_scapys_icmp_checksum(payload_len: int) -> None:
    rng = random.Random(SEED + payload_len)
    for _ in range(20):
        message = bytes(ICMP(type=8, id=rng.randrange(65536), seq=rng.randrange(65536))
                        / rng.randbytes(payload_len))
        zeroed = bytearray(message)
        zeroed[2:4] = b"\0\0"
        assert checksum(zeroed) == ICMP(message).chksum
        assert checksum(message) == 0


# --- check_ipv4 -------------------------------------------------------------------------


def with_header(packet: bytes, fix_checksum: bool = True, **fields: int) -> bytearray:
    """`packet` with raw header bytes rewritten: first (version/IHL byte), total, ttl."""
    buf = bytearray(packet)
    if "first" in fields:
        buf[0] = fields["first"]
    if "total" in fields:
        struct.pack_into("!H", buf, 2, fields["total"])
    if "ttl" in fields:
        buf[8] = fields["ttl"]
    if fix_checksum:
        ihl = max((buf[0] & 0x0F) * 4, IPV4_HEADER_LEN)
        buf[10:12] = b"\0\0"
        struct.pack_into("!H", buf, 10, checksum(buf[:ihl]))
    return buf


VALID_PACKETS: Final = [
    bytes(IP(src="10.5.1.7", dst="10.5.2.9")),  # a bare header
    tcp_packet(),
    bytes(IP(src="10.5.1.7", dst="10.5.2.9") / UDP(sport=1, dport=2) / (b"u" * 1000)),
    bytes(IP(src="10.5.1.7", dst="10.5.2.9") / ICMP() / b"ping"),
    bytes(IP(src="10.5.1.7", dst="10.5.2.9", options=[IPOption(b"\x94\x04\x00\x00")])
          / UDP() / b"options"),
    bytes(IP(src="10.5.1.7", dst="10.5.2.9", options=[IPOption(b"\x01" * 40)]) / b"x"),
]


@pytest.mark.parametrize("packet", VALID_PACKETS)
def test_check_ipv4_accepts_valid_packets(packet: bytes) -> None:
    assert check_ipv4(packet, len(packet)) == len(packet)
    assert check_ipv4(bytearray(packet), len(packet)) == len(packet)
    assert check_ipv4(memoryview(packet), len(packet)) == len(packet)


@pytest.mark.parametrize("packet", VALID_PACKETS)
@pytest.mark.parametrize("slack", [1, 7, 64, 1500])
def test_check_ipv4_returns_total_length_when_buffer_is_longer(packet: bytes,
                                                               slack: int) -> None:
    buf = packet + b"\xaa" * slack
    assert check_ipv4(buf, len(buf)) == len(packet)
    assert check_ipv4(bytearray(buf), len(packet) + slack // 2) == len(packet)


def test_check_ipv4_accepts_random_valid_packets() -> None:
    rng = random.Random(SEED)
    for _ in range(300):
        packet = random_packet(rng)
        assert check_ipv4(packet, len(packet)) == len(packet)


@pytest.mark.parametrize("packet", VALID_PACKETS)
def test_check_ipv4_rejects_every_truncation(packet: bytes) -> None:
    for n in range(len(packet)):
        with pytest.raises(DecodeError):
            check_ipv4(packet[:n], n)
        with pytest.raises(DecodeError):  # the buffer is there, n says it is not
            check_ipv4(packet, n)


def test_check_ipv4_rejects_truncations_of_random_packets() -> None:
    rng = random.Random(SEED + 1)
    for _ in range(50):
        packet = random_packet(rng)
        for n in range(len(packet)):
            with pytest.raises(DecodeError):
                check_ipv4(bytearray(packet[:n]), n)


MALFORMED: Final = [
    ("version 6", with_header(tcp_packet(), first=0x65)),
    ("version 0", with_header(tcp_packet(), first=0x05)),
    ("version 15", with_header(tcp_packet(), first=0xF5)),
    ("a real IPv6 packet", bytearray(bytes(IPv6(src="fd00::1", dst="fd00::2") / UDP()))),
    *[(f"IHL {ihl}", with_header(tcp_packet(), first=0x40 | ihl)) for ihl in range(5)],
    ("IHL*4 > n", with_header(tcp_packet(payload=b"x" * 19), first=0x4F)),  # 59 bytes
    ("IHL 15 in a 20-byte packet", with_header(bytes(IP()), first=0x4F)),
    ("total length n + 1", with_header(tcp_packet(), total=len(tcp_packet()) + 1)),
    ("total length 65535", with_header(tcp_packet(), total=65535)),
    ("total length < IHL", with_header(tcp_packet(), total=19)),
    ("total length 0", with_header(tcp_packet(), total=0)),
    ("bad checksum", with_header(tcp_packet(), fix_checksum=False, ttl=63)),
    ("checksum off by one", bytearray(tcp_packet()[:10]
                                      + struct.pack("!H", (IP(tcp_packet()).chksum + 1) & 0xFFFF)
                                      + tcp_packet()[12:])),
    ("option byte flipped", bytearray(VALID_PACKETS[4][:21] + b"\x05"
                                      + VALID_PACKETS[4][22:])),
]


@pytest.mark.parametrize(("case", "packet"), MALFORMED, ids=[case for case, _ in MALFORMED])
def test_check_ipv4_rejects_malformed_headers(case: str, packet: bytearray) -> None:
    with pytest.raises(DecodeError):
        check_ipv4(packet, len(packet))


def test_check_ipv4_checksum_verdict_is_rfc_1071s_on_random_headers() -> None:
    """check_ipv4 reads the header as one integer modulo 0xFFFF; RFC 1071's word sum (our
    `checksum`, itself checked against scapy) must give the same verdict, also for the two
    encodings of a zero sum (0x0000 and 0xFFFF in the checksum field)."""
    rng = random.Random(SEED + 3)
    seen = {True: 0, False: 0}
    for round_ in range(4000):
        ihl = rng.choice((5, 5, 5, 6, 15))
        header = bytearray(rng.randbytes(ihl * 4))
        header[0], header[2:4] = 0x40 | ihl, struct.pack("!H", ihl * 4)
        if round_ % 4 == 1:  # a correct checksum
            header[10:12] = b"\0\0"
            header[10:12] = struct.pack("!H", checksum(header))
        elif round_ % 4 == 3:  # the ID chosen so that the checksum is zero, in either encoding
            header[4:6] = header[10:12] = b"\0\0"
            header[4:6] = struct.pack("!H", checksum(header))
            header[10:12] = rng.choice((b"\0\0", b"\xff\xff"))
        intact = checksum(header) == 0
        seen[intact] += 1
        try:
            check_ipv4(header, len(header))
        except DecodeError:
            assert not intact, header.hex()
        else:
            assert intact, header.hex()
    assert min(seen.values()) > 1000


def test_check_ipv4_garbage_gives_only_decode_error_or_a_length() -> None:
    rng = random.Random(SEED + 2)
    for _ in range(3000):
        data = bytearray(rng.randbytes(rng.randrange(0, 120)))
        if data and rng.random() < 0.5:
            data[0] = 0x40 | (data[0] & 0x0F)
        try:
            total = check_ipv4(data, len(data))
        except DecodeError:
            continue
        assert IPV4_HEADER_LEN <= total <= len(data)


# --- decrement_ttl ----------------------------------------------------------------------


@pytest.mark.parametrize("ttl", range(2, 256))
def test_decrement_ttl_matches_scapy_for_every_ttl(ttl: int) -> None:
    rng = random.Random(SEED + ttl)
    for _ in range(8):
        packet = random_packet(rng, ttl=ttl)
        buf = bytearray(packet)
        assert decrement_ttl(buf) is True
        assert bytes(buf) == scapy_reencode(packet, ttl=ttl - 1)
        assert check_ipv4(buf, len(buf)) == len(packet)


def test_decrement_ttl_matches_scapy_on_random_headers() -> None:
    rng = random.Random(SEED + 3)
    for _ in range(2000):
        packet = random_packet(rng, ttl=rng.randrange(2, 256))
        buf = bytearray(packet)
        assert decrement_ttl(buf)
        assert bytes(buf) == scapy_reencode(packet, ttl=packet[8] - 1)


def header_with_checksum(target: int, ttl: int) -> bytes:
    """A 20-byte header whose checksum is `target`, found by solving for the ID field."""
    header = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20, 0, 0, ttl, 17, 0,
                                   addr("10.5.1.7"), addr("10.5.2.9")))
    base = checksum(header)  # ~S0; we want ~(S0 + id) == target, so id = ~target + ~S0
    ident = (~target & 0xFFFF) + base
    ident = (ident & 0xFFFF) + (ident >> 16)
    for candidate in (ident & 0xFFFF, ~ident & 0xFFFF, 0):  # either zero of ones' complement
        struct.pack_into("!H", header, 4, candidate)
        header[10:12] = b"\0\0"
        struct.pack_into("!H", header, 10, checksum(header))
        if (header[10] << 8) | header[11] == target:
            return bytes(header)
    raise AssertionError(f"no header with checksum {target:#06x}")


@pytest.mark.parametrize("target", [0xFEFF, 0xFF00, 0xFEFE, 0xFF01, 0xFFFE, 0xFF7F, 0x0000,
                                    0x0001, 0x00FF, 0x0100, 0xFDFF])
@pytest.mark.parametrize("ttl", [2, 3, 64, 128, 255])
def test_decrement_ttl_end_around_carry(target: int, ttl: int) -> None:
    """Checksums near 0xFFFF: adding 0x0100 wraps. RFC 1624 eqn. 3 gives what a full
    recomputation gives (never -0 = 0xFFFF where scapy and the kernel write 0x0000)."""
    packet = header_with_checksum(target, ttl)
    buf = bytearray(packet)
    assert decrement_ttl(buf)
    assert check_ipv4(buf, len(buf)) == 20
    assert bytes(buf) == scapy_reencode(packet, ttl=ttl - 1)


@pytest.mark.parametrize("ttl", [0, 1])
def test_decrement_ttl_refuses_expiring_packets(ttl: int) -> None:
    packet = bytes(with_header(tcp_packet(), ttl=ttl))
    buf = bytearray(packet)
    assert decrement_ttl(buf) is False
    assert bytes(buf) == packet


def test_decrement_ttl_on_a_memoryview_rewrites_the_underlying_buffer() -> None:
    packet = tcp_packet(ttl=30)
    buf = bytearray(packet) + bytearray(100)
    assert decrement_ttl(memoryview(buf)[: len(packet)])
    assert bytes(buf[: len(packet)]) == scapy_reencode(packet, ttl=29)
    assert buf[len(packet):] == bytearray(100)


def test_decrement_ttl_repeatedly_down_to_one() -> None:
    packet = tcp_packet(ttl=255)
    buf = bytearray(packet)
    for ttl in range(254, 0, -1):
        assert decrement_ttl(buf)
        assert bytes(buf) == scapy_reencode(packet, ttl=ttl)
    assert not decrement_ttl(buf)
    assert buf[8] == 1


# --- addresses and build_ipv4 -----------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), [
    ("10.5.1.7", "10.5.2.9"), ("0.0.0.0", "255.255.255.255"), ("255.0.0.1", "1.0.0.255"),
    ("192.168.100.200", "172.16.0.1"),
])
def test_source_and_destination(src: str, dst: str) -> None:
    packet = bytes(IP(src=src, dst=dst) / UDP())
    for buf in (packet, bytearray(packet), memoryview(packet)):
        assert source(buf) == addr(src)
        assert destination(buf) == addr(dst)


@pytest.mark.parametrize(("protocol", "payload", "ttl", "ident", "flags_offset", "tos"), [
    (17, b"", 64, 0, 0, 0),
    (1, b"\x08\x00\xf7\xff\x00\x00\x00\x00", 8, 0, 0, 0),
    (6, b"x" * 1000, 255, 0xBEEF, FLAG_DF, 0xB8),
    (17, b"odd", 1, 65535, FLAG_MF | 185, 1),
    (47, bytes(range(256)), 128, 1234, 0x1FFF, 0xFF),
])
def test_build_ipv4_matches_scapy(protocol: int, payload: bytes, ttl: int, ident: int,
                                  flags_offset: int, tos: int) -> None:
    packet = build_ipv4(addr("10.5.1.0"), addr("10.5.2.9"), protocol, payload, ttl=ttl,
                        ident=ident, flags_offset=flags_offset, tos=tos)
    parsed = IP(packet)
    assert (parsed.version, parsed.ihl, parsed.len) == (4, 5, 20 + len(payload))
    assert (parsed.src, parsed.dst, parsed.proto) == ("10.5.1.0", "10.5.2.9", protocol)
    assert (parsed.ttl, parsed.id, parsed.tos) == (ttl, ident, tos)
    assert (int(parsed.flags) << 13) | parsed.frag == flags_offset
    assert packet[20:] == payload
    assert header_checksum_ok(packet)
    expected = bytes(IP(src="10.5.1.0", dst="10.5.2.9", proto=protocol, ttl=ttl, id=ident,
                        tos=tos, flags=flags_offset >> 13, frag=flags_offset & OFFSET_MASK)
                     / payload)
    assert packet == expected


def test_build_ipv4_default_ttl_is_64() -> None:
    assert IP(build_ipv4(1, 2, 17, b"")).ttl == 64


# --- wants_icmp_error and icmp_error ----------------------------------------------------


@pytest.mark.parametrize(("packet", "wanted"), [
    (tcp_packet(), True),
    (bytes(IP(dst="10.5.2.9") / UDP()), True),
    (bytes(IP(dst="10.5.2.9", flags="MF") / UDP() / (b"x" * 64)), True),  # first fragment
    (bytes(IP(dst="10.5.2.9", flags="DF") / TCP()), True),
    (bytes(IP(dst="10.5.2.9", frag=1) / (b"x" * 8)), False),
    (bytes(IP(dst="10.5.2.9", frag=185, flags="MF") / (b"x" * 8)), False),
    (bytes(IP(dst="10.5.2.9", frag=0x1FFF) / (b"x" * 8)), False),
    (bytes(IP(dst="10.5.2.9") / ICMP(type=8)), False),
    (bytes(IP(dst="10.5.2.9") / ICMP(type=0)), False),
    (bytes(IP(dst="10.5.2.9", proto=1)), False),
])
def test_wants_icmp_error(packet: bytes, wanted: bool) -> None:
    assert wants_icmp_error(packet) is wanted


OFFENDERS: Final = [
    tcp_packet(ttl=17),
    bytes(IP(src="10.5.1.7", dst="10.9.3.4", ttl=1) / UDP(sport=5353, dport=53) / (b"q" * 40)),
    bytes(IP(src="10.5.1.7", dst="10.9.3.4", flags="DF") / UDP(sport=1, dport=2)
          / (b"z" * 1400)),
    bytes(IP(src="10.5.1.8", dst="10.9.3.4", options=[IPOption(b"\x94\x04\x00\x00")])
          / TCP(sport=1, dport=2) / b"opts"),
    bytes(IP(src="10.5.1.9", dst="10.9.3.4", flags="MF") / UDP() / (b"f" * 64)),
    bytes(IP(src="10.5.1.9", dst="10.9.3.4", proto=17) / b"abc"),  # shorter than IHL + 8
]

ERRORS: Final = [
    (ICMPType.DEST_UNREACHABLE, UnreachableCode.NET, 0),
    (ICMPType.TIME_EXCEEDED, 0, 0),
    (ICMPType.DEST_UNREACHABLE, UnreachableCode.FRAGMENTATION_NEEDED, 1472),
    (ICMPType.DEST_UNREACHABLE, UnreachableCode.FRAGMENTATION_NEEDED, 576),
]


@pytest.mark.parametrize("offender", OFFENDERS)
@pytest.mark.parametrize(("icmp_type", "code", "rest"), ERRORS)
def test_icmp_error_parsed_by_scapy(offender: bytes, icmp_type: ICMPType, code: int,
                                    rest: int) -> None:
    reply = icmp_error(offender, icmp_type, code, addr(GATEWAY), rest)
    assert reply is not None
    parsed = IP(reply)
    assert parsed.version == 4
    assert parsed.ttl == ICMP_ERROR_TTL == 8
    assert parsed.proto == PROTO_ICMP
    assert parsed.src == GATEWAY
    assert parsed.dst == IP(offender).src
    assert parsed.len == len(reply)
    assert header_checksum_ok(reply)
    assert check_ipv4(reply, len(reply)) == len(reply)
    message = reply[20:]
    assert parsed[ICMP].type == icmp_type
    assert parsed[ICMP].code == code
    assert scapy_checksum(message) == 0  # a valid ICMP checksum sums to zero
    rebuilt = IP(reply)
    rebuilt[ICMP].chksum = None
    assert bytes(rebuilt) == reply  # scapy recomputes the same ICMP checksum
    assert struct.unpack("!I", message[4:8])[0] == rest
    ihl = (offender[0] & 0x0F) * 4
    assert message[8:] == offender[: ihl + 8]


@pytest.mark.parametrize("mtu", [68, 576, 1450, 1472, 8972, 65507])
def test_fragmentation_needed_carries_next_hop_mtu(mtu: int) -> None:
    """RFC 1191: the next-hop MTU is the low 16 bits of the 'unused' word."""
    offender = OFFENDERS[2]
    reply = icmp_error(offender, ICMPType.DEST_UNREACHABLE,
                       UnreachableCode.FRAGMENTATION_NEEDED, addr(GATEWAY), mtu)
    assert reply is not None
    parsed = IP(reply)
    assert (parsed[ICMP].type, parsed[ICMP].code) == (3, 4)
    assert parsed[ICMP].nexthopmtu == mtu
    assert reply[24:26] == b"\0\0"
    assert reply[26:28] == struct.pack("!H", mtu)


@pytest.mark.parametrize("offender", [
    bytes(IP(src="10.5.1.7", dst="10.9.3.4") / ICMP(type=8) / b"ping"),
    bytes(IP(src="10.5.1.7", dst="10.9.3.4") / ICMP(type=3, code=1) / bytes(IP() / UDP())),
    bytes(IP(src="10.5.1.7", dst="10.9.3.4", frag=1) / (b"x" * 16)),
    bytes(IP(src="10.5.1.7", dst="10.9.3.4", frag=100, flags="MF") / (b"x" * 16)),
    bytes(IP(src="10.5.1.7", dst="10.9.3.4", frag=100, proto=1) / (b"x" * 16)),
])
@pytest.mark.parametrize(("icmp_type", "code", "rest"), ERRORS)
def test_no_icmp_error_about_icmp_or_later_fragments(offender: bytes, icmp_type: ICMPType,
                                                     code: int, rest: int) -> None:
    assert icmp_error(offender, icmp_type, code, addr(GATEWAY), rest) is None


def test_icmp_error_from_a_memoryview_slice() -> None:
    offender = tcp_packet()
    buf = bytearray(offender) + bytearray(b"\xee" * 50)
    reply = icmp_error(memoryview(buf)[: len(offender)], ICMPType.TIME_EXCEEDED, 0,
                       addr(GATEWAY))
    assert reply == icmp_error(offender, ICMPType.TIME_EXCEEDED, 0, addr(GATEWAY))


# --- fragment ---------------------------------------------------------------------------


def udp_packet(size: int, ident: int = 0x1234, **fields: Any) -> bytes:
    """A UDP packet of exactly `size` bytes with a recognisable payload."""
    payload = bytes(i % 251 for i in range(size - 28))
    packet = bytes(IP(src="10.5.1.7", dst="10.5.2.9", id=ident, **fields)
                   / UDP(sport=4000, dport=5000) / payload)
    assert len(packet) == size
    return packet


def check_fragments(original: bytes, pieces: list[bytes], mtu: int) -> None:
    """Everything RFC 791 asks of the fragments of `original` (DF clear)."""
    head = IP(original)
    ihl = head.ihl * 4
    payload = original[ihl:head.len]
    offset = head.frag * 8
    assert pieces
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        assert len(piece) <= mtu
        assert check_ipv4(piece, len(piece)) == len(piece)
        assert header_checksum_ok(piece)
        parsed = IP(piece)
        assert (parsed.src, parsed.dst, parsed.id, parsed.proto, parsed.ttl, parsed.tos) == (
            head.src, head.dst, head.id, head.proto, head.ttl, head.tos)
        assert piece[20:ihl] == original[20:ihl]  # options copied
        assert parsed.frag * 8 == offset
        assert not parsed.flags.DF
        chunk = piece[ihl:]
        if last:
            assert bool(parsed.flags.MF) == bool(head.flags.MF)
        else:
            assert parsed.flags.MF
            assert len(chunk) % 8 == 0
        offset += len(chunk)
    assert b"".join(piece[ihl:] for piece in pieces) == payload


@pytest.mark.parametrize(
    ("size", "mtu"),
    [(size, mtu)
     for size in (29, 100, 577, 1000, 1500, 1501, 3000, 9000, 65535)
     for mtu in (28, 68, 69, 75, 576, 1000, 1001, 1472)
     if not (size > 9000 and mtu < 500)],  # thousands of tiny fragments add nothing
)
def test_fragment_reassembles_with_scapy(size: int, mtu: int) -> None:
    original = udp_packet(size)
    pieces = fragment(original, mtu)
    check_fragments(original, pieces, mtu)
    assert reassemble(pieces) == original[20:]


def test_fragment_with_options_copies_them() -> None:
    original = bytes(IP(src="10.5.1.7", dst="10.5.2.9", id=77,
                        options=[IPOption(b"\x94\x04\x00\x00")]) / UDP() / (b"o" * 2000))
    pieces = fragment(original, 576)
    check_fragments(original, pieces, 576)
    assert reassemble(pieces) == original[24:]


def test_fragment_of_a_fragment_keeps_offset_and_more_flag() -> None:
    """A middle fragment (offset 100*8, MF) split again: offsets continue from 800, MF on all."""
    original = bytes(IP(src="10.5.1.7", dst="10.5.2.9", id=9, flags="MF", frag=100,
                        proto=17) / (b"m" * 1600))
    pieces = fragment(original, 576)
    check_fragments(original, pieces, 576)
    assert all(IP(piece).flags.MF for piece in pieces)
    assert IP(pieces[0]).frag == 100


def test_fragment_of_a_packet_that_fits_is_the_packet() -> None:
    original = udp_packet(1000)  # 980 bytes of payload
    assert fragment(original, 1004) == [original]
    assert fragment(original, 1500) == [original]
    assert fragment(memoryview(bytearray(original)), 65535) == [original]


def test_fragment_ignores_bytes_past_total_length() -> None:
    original = udp_packet(2000)
    buf = bytearray(original) + bytearray(b"\xff" * 300)
    assert fragment(memoryview(buf)[: len(buf)], 576) == fragment(original, 576)


def test_fragment_end_to_end_random() -> None:
    rng = random.Random(SEED + 4)
    for _ in range(100):
        size = rng.randrange(29, 6000)
        mtu = rng.randrange(68, 1600)
        original = udp_packet(size, ident=rng.randrange(65536), ttl=rng.randrange(1, 256))
        pieces = fragment(original, mtu)
        check_fragments(original, pieces, mtu)
        early = pieces[:-1]  # scapy reassembles when the last fragment arrives
        rng.shuffle(early)
        assert reassemble([*early, pieces[-1]]) == original[20:]


@pytest.mark.parametrize(("packet", "mtu"), [
    (udp_packet(1000), 27),
    (udp_packet(1000), 20),
    (udp_packet(1000), 0),
    (udp_packet(1000), -1),
    (bytes(IP(options=[IPOption(b"\x01" * 40)]) / (b"x" * 100)), 67),
])
def test_fragment_mtu_too_small(packet: bytes, mtu: int) -> None:
    with pytest.raises(DecodeError):
        fragment(packet, mtu)


@pytest.mark.parametrize("ihl", range(5))
@pytest.mark.parametrize("tail", [3, 100])
def test_fragment_rejects_an_ihl_below_five(ihl: int, tail: int) -> None:
    """Malformed input raises the decode error: neither struct.error (a last
    chunk too short to hold the fields it writes) nor silently mangled fragments."""
    step = (576 - ihl * 4) // 8 * 8
    packet = bytearray(udp_packet(ihl * 4 + 2 * step + tail))
    packet[0] = 0x40 | ihl
    with pytest.raises(DecodeError):
        fragment(packet, 576)


@pytest.mark.parametrize("seed", range(40))
def test_complete_partial_checksum_finishes_what_offload_left(seed: int) -> None:
    """A checksum field holding exactly the pseudo-header sum (CHECKSUM_PARTIAL's leftover)
    is finished to what scapy computes; a complete one is left as it is."""
    rng = random.Random(seed)
    payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 1400)))
    transport: Any = TCP(sport=rng.randrange(65536), dport=5201) if seed % 2 else \
        UDP(sport=rng.randrange(65536), dport=53)
    good = bytes(IP(src=f"10.5.{rng.randrange(256)}.7", dst="10.5.9.9") / transport / payload)
    proto, field_at = (6, 36) if seed % 2 else (17, 26)
    length = len(good) - 20
    pseudo = good[12:20] + bytes((0, proto, length >> 8, length & 0xFF))
    partial = reference_checksum(pseudo) ^ 0xFFFF  # the folded sum, not inverted
    packet = bytearray(good)
    packet[field_at:field_at + 2] = partial.to_bytes(2, "big")
    assert complete_partial_checksum(packet, len(packet))
    assert bytes(packet) == good
    untouched = bytearray(good)
    complete_partial_checksum(untouched, len(untouched))
    assert bytes(untouched) == good


def test_complete_partial_checksum_leaves_other_protocols_and_fragments() -> None:
    icmp = bytearray(bytes(IP(src="10.5.1.1", dst="10.5.2.2") / ICMP() / (b"x" * 40)))
    assert not complete_partial_checksum(icmp, len(icmp))
    fragment_ = bytearray(bytes(IP(src="10.5.1.1", dst="10.5.2.2", flags="MF") / UDP() / b"y"))
    assert not complete_partial_checksum(fragment_, len(fragment_))
