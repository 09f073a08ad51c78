"""Tests for tun/vxlan.py: the RFC 7348 header, Ethernet II, ARP (RFC 826), MACs, the flow
hash and the constants of the userspace VXLAN data plane.

flannel's vxlan wire format. Vector tables are checked in both
directions; scapy is the independent second opinion on every encoding.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from typing import Any, Final

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

from lease.errors import DecodeError
from tun.vxlan import (
    ARP_LEN,
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST,
    ETH_HEADER_LEN,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    HEADROOM,
    OUTER_OVERHEAD,
    VXLAN_FLAG_I,
    VXLAN_HEADER_LEN,
    VXLAN_PORT,
    ARPPacket,
    decode_arp,
    decode_ethernet,
    decode_vxlan_header,
    encode_arp,
    encode_ethernet,
    encode_vxlan_header,
    flow_hash,
    format_mac,
    parse_mac,
)

SEED: Final = 7348
MAC_A: Final = "c6:d2:32:6f:8f:44"
MAC_B: Final = "7e:3a:01:02:03:04"
BUCKETS: Final = 8  # the userspace plane spreads flows over 8 sender sockets


# --- constants --------------------------------------------------------------------------


def test_constants() -> None:
    assert VXLAN_PORT == 8472  # Linux's and flannel's default, not IANA's 4789
    assert VXLAN_HEADER_LEN == 8
    assert ETH_HEADER_LEN == 14
    assert HEADROOM == 22
    assert OUTER_OVERHEAD == 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14
    assert VXLAN_FLAG_I == 0x08
    assert (ETHERTYPE_IPV4, ETHERTYPE_ARP) == (0x0800, 0x0806)
    assert BROADCAST == b"\xff" * 6
    assert (ARP_REQUEST, ARP_REPLY, ARP_LEN) == (1, 2, 28)


# --- VXLAN header -----------------------------------------------------------------------

VXLAN_VECTORS: Final = [
    (0, "0800000000000000"),
    (1, "0800000000000100"),
    (42, "0800000000002a00"),
    (0x123456, "0800000012345600"),
    (0xABCDEF, "08000000abcdef00"),
    ((1 << 24) - 1, "08000000ffffff00"),
]


@pytest.mark.parametrize(("vni", "wire"), VXLAN_VECTORS)
def test_vxlan_header_vectors(vni: int, wire: str) -> None:
    assert encode_vxlan_header(vni) == bytes.fromhex(wire)
    assert decode_vxlan_header(bytes.fromhex(wire)) == vni


@pytest.mark.parametrize(("vni", "wire"), VXLAN_VECTORS)
def test_vxlan_header_equals_scapys(vni: int, wire: str) -> None:
    ours = encode_vxlan_header(vni)
    assert ours == bytes(VXLAN(flags=0x08, vni=vni))
    parsed = VXLAN(ours)
    assert (int(parsed.flags), parsed.vni, parsed.reserved1, parsed.reserved2) == (0x08, vni, 0, 0)
    assert decode_vxlan_header(bytes(VXLAN(flags=0x08, vni=vni))) == vni


@pytest.mark.parametrize("vni", [-1, 1 << 24, 1 << 32])
def test_encode_vxlan_header_rejects_a_vni_beyond_24_bits(vni: int) -> None:
    with pytest.raises(ValueError, match=str(vni)):
        encode_vxlan_header(vni)


@pytest.mark.parametrize(("wire", "vni"), [
    ("08ffffff000001ff", 1),  # reserved bits set: ignored on receipt (RFC 7348 §5)
    ("08000000abcdefff", 0xABCDEF),
    ("0c00000300000500", 5),  # VXLAN-GPE style flags with I set, as scapy builds by default
    ("ff00000000000700", 7),  # every flag set, I among them
    ("88000000000009aa", 9),
])
def test_decode_vxlan_header_ignores_reserved_bits(wire: str, vni: int) -> None:
    assert decode_vxlan_header(bytes.fromhex(wire)) == vni


@pytest.mark.parametrize("flags", [0x00, 0x04, 0x80, 0xF7])
def test_decode_vxlan_header_rejects_a_clear_i_flag(flags: int) -> None:
    wire = bytes([flags]) + bytes.fromhex("00000000000100")
    with pytest.raises(DecodeError, match="I flag"):
        decode_vxlan_header(wire)


@pytest.mark.parametrize("length", range(VXLAN_HEADER_LEN))
def test_decode_vxlan_header_rejects_short_input(length: int) -> None:
    wire = encode_vxlan_header(0x123456)[:length]
    with pytest.raises(DecodeError, match="8 bytes"):
        decode_vxlan_header(wire)
    with pytest.raises(DecodeError):
        decode_vxlan_header(bytearray(wire))
    with pytest.raises(DecodeError):
        decode_vxlan_header(memoryview(wire))


def test_decode_vxlan_header_reads_only_the_first_8_bytes() -> None:
    frame = bytearray(encode_vxlan_header(77) + b"\x08\x00\x00\x00\xff\xff\xff\x00")
    assert decode_vxlan_header(frame) == 77
    assert decode_vxlan_header(memoryview(frame)) == 77


def test_vxlan_header_round_trip_random() -> None:
    rng = random.Random(SEED)
    for _ in range(1000):
        vni = rng.randrange(1 << 24)
        assert decode_vxlan_header(encode_vxlan_header(vni)) == vni


# --- Ethernet ---------------------------------------------------------------------------

ETHERNET_VECTORS: Final = [
    ("ff:ff:ff:ff:ff:ff", MAC_A, 0x0806, "ffffffffffffc6d2326f8f440806"),
    (MAC_A, MAC_B, 0x0800, "c6d2326f8f447e3a010203040800"),
    (MAC_B, MAC_A, 0x86DD, "7e3a01020304c6d2326f8f4486dd"),
    ("00:00:00:00:00:00", "00:00:00:00:00:01", 0xFFFF, "000000000000000000000001ffff"),
]


@pytest.mark.parametrize(("dst", "src", "ethertype", "wire"), ETHERNET_VECTORS)
def test_ethernet_vectors(dst: str, src: str, ethertype: int, wire: str) -> None:
    encoded = encode_ethernet(parse_mac(dst), parse_mac(src), ethertype)
    assert encoded == bytes.fromhex(wire)
    assert encoded == bytes(Ether(dst=dst, src=src, type=ethertype))
    decoded = decode_ethernet(bytes.fromhex(wire))
    assert decoded == (parse_mac(dst), parse_mac(src), ethertype)
    assert all(type(part) is bytes for part in decoded[:2])
    parsed = Ether(encoded)
    assert (parsed.dst, parsed.src, parsed.type) == (dst, src, ethertype)


def test_decode_ethernet_of_a_longer_frame() -> None:
    frame = bytes(Ether(dst=MAC_A, src=MAC_B) / IP(src="10.5.1.7", dst="10.5.2.9") / UDP())
    for data in (frame, bytearray(frame), memoryview(frame)):
        assert decode_ethernet(data) == (parse_mac(MAC_A), parse_mac(MAC_B), 0x0800)


@pytest.mark.parametrize("length", range(ETH_HEADER_LEN))
def test_decode_ethernet_rejects_short_input(length: int) -> None:
    wire = encode_ethernet(parse_mac(MAC_A), parse_mac(MAC_B), 0x0800)[:length]
    with pytest.raises(DecodeError, match="14 bytes"):
        decode_ethernet(wire)
    with pytest.raises(DecodeError):
        decode_ethernet(memoryview(wire))


# --- ARP --------------------------------------------------------------------------------

ARP_VECTORS: Final = [
    (ARP_REQUEST, MAC_A, "10.5.2.0", "00:00:00:00:00:00", "10.5.1.0"),
    (ARP_REPLY, MAC_B, "10.5.1.0", MAC_A, "10.5.2.0"),
    (ARP_REQUEST, "02:00:00:00:00:01", "192.168.0.1", "ff:ff:ff:ff:ff:ff", "192.168.0.254"),
    (7, MAC_B, "0.0.0.0", MAC_A, "255.255.255.255"),
]


def make_arp(op: int, hwsrc: str, psrc: str, hwdst: str, pdst: str) -> ARPPacket:
    return ARPPacket(op, parse_mac(hwsrc), IPv4Address(psrc), parse_mac(hwdst),
                     IPv4Address(pdst))


@pytest.mark.parametrize(("op", "hwsrc", "psrc", "hwdst", "pdst"), ARP_VECTORS)
def test_arp_equals_scapys(op: int, hwsrc: str, psrc: str, hwdst: str, pdst: str) -> None:
    ours = make_arp(op, hwsrc, psrc, hwdst, pdst)
    reference = bytes(ARP(op=op, hwsrc=hwsrc, psrc=psrc, hwdst=hwdst, pdst=pdst))
    assert len(reference) == ARP_LEN
    assert encode_arp(ours) == reference
    assert decode_arp(reference) == ours
    parsed = ARP(encode_arp(ours))
    assert (parsed.hwtype, parsed.ptype, parsed.hwlen, parsed.plen) == (1, 0x0800, 6, 4)
    assert (parsed.op, parsed.hwsrc, parsed.psrc, parsed.hwdst, parsed.pdst) == (
        op, hwsrc, psrc, hwdst, pdst)


def test_arp_vector() -> None:
    arp = make_arp(ARP_REQUEST, MAC_A, "10.5.2.0", "00:00:00:00:00:00", "10.5.1.0")
    wire = bytes.fromhex("0001 0800 06 04 0001 c6d2326f8f44 0a050200 000000000000 0a050100")
    assert encode_arp(arp) == wire
    assert decode_arp(wire) == arp
    decoded = decode_arp(bytearray(wire))
    assert type(decoded.sender_mac) is bytes
    assert type(decoded.target_mac) is bytes


def test_decode_arp_ignores_ethernet_padding() -> None:
    arp = make_arp(ARP_REQUEST, MAC_A, "10.5.2.0", "00:00:00:00:00:00", "10.5.1.0")
    padded = encode_arp(arp) + bytes(18)  # to the 60-byte minimum Ethernet frame
    assert decode_arp(padded) == arp
    assert decode_arp(memoryview(padded)) == arp


@pytest.mark.parametrize("length", range(ARP_LEN))
def test_decode_arp_rejects_short_input(length: int) -> None:
    wire = bytes(ARP(op=1, hwsrc=MAC_A, psrc="10.5.2.0", pdst="10.5.1.0"))[:length]
    with pytest.raises(DecodeError, match="28 bytes"):
        decode_arp(wire)


@pytest.mark.parametrize(("offset", "value"), [
    (0, b"\x00\x06"),  # htype IEEE 802
    (0, b"\x00\x00"),
    (2, b"\x86\xdd"),  # ptype IPv6
    (2, b"\x08\x06"),
    (4, b"\x08"),  # hlen
    (5, b"\x10"),  # plen
])
def test_decode_arp_rejects_anything_but_ethernet_ipv4(offset: int, value: bytes) -> None:
    wire = bytearray(bytes(ARP(op=1, hwsrc=MAC_A, psrc="10.5.2.0", pdst="10.5.1.0")))
    wire[offset:offset + len(value)] = value
    with pytest.raises(DecodeError, match="Ethernet/IPv4"):
        decode_arp(wire)


# --- MAC addresses ----------------------------------------------------------------------

MAC_VECTORS: Final = [
    ("c6:d2:32:6f:8f:44", "c6d2326f8f44"),
    ("00:00:00:00:00:00", "000000000000"),
    ("ff:ff:ff:ff:ff:ff", "ffffffffffff"),
    ("02:42:ac:11:00:02", "0242ac110002"),
]


@pytest.mark.parametrize(("text", "raw"), MAC_VECTORS)
def test_mac_vectors(text: str, raw: str) -> None:
    assert parse_mac(text) == bytes.fromhex(raw)
    assert format_mac(bytes.fromhex(raw)) == text


@pytest.mark.parametrize(("text", "raw"), [
    ("C6:D2:32:6F:8F:44", "c6d2326f8f44"),
    ("Fe:dC:bA:98:76:54", "fedcba987654"),
])
def test_parse_mac_accepts_upper_case_and_format_mac_writes_lower_case(text: str,
                                                                      raw: str) -> None:
    assert parse_mac(text) == bytes.fromhex(raw)
    assert format_mac(parse_mac(text)) == text.lower()


def test_format_mac_round_trip_random() -> None:
    rng = random.Random(SEED)
    for _ in range(500):
        mac = bytes(rng.getrandbits(8) for _ in range(6))
        text = format_mac(mac)
        assert text == Ether(src=mac).src  # scapy's spelling: lower case, colons
        assert parse_mac(text) == mac


@pytest.mark.parametrize("text", [
    "",
    "c6:d2:32:6f:8f",
    "c6:d2:32:6f:8f:44:00",
    "c6:d2:32:6f:8f:44:",
    "c6-d2-32-6f-8f-44",
    "c6d2.326f.8f44",
    "c6d2326f8f44",
    "c6:d2:32:6f:8f:4",
    "c6:d2:32:6f:8f:444",
    "c:d2:32:6f:8f:44:4",
    "zz:d2:32:6f:8f:44",
    "c6:d2:32:6f:8f:4g",
    "-1:d2:32:6f:8f:44",
    "+1:d2:32:6f:8f:44",  # int() would take a sign
    " 1:d2:32:6f:8f:44",  # ... and surrounding whitespace
    "c6:d2:32:6f:8f:4 ",
    "\u0661\u0661:d2:32:6f:8f:44",  # ... and non-ASCII digits (ARABIC-INDIC DIGIT ONE)
    "0x:d2:32:6f:8f:44",
    "c6::d2:32:6f:8f44",
])
def test_parse_mac_rejects_bad_text(text: str) -> None:
    with pytest.raises(DecodeError, match="MAC"):
        parse_mac(text)


# --- flow hash --------------------------------------------------------------------------


def flow(src: str = "10.5.1.7", dst: str = "10.5.2.9", proto: str = "tcp", sport: int = 40000,
         dport: int = 80, payload: bytes = b"flannel", **fields: Any) -> bytes:
    """An inner IPv4 packet of one flow (scapy computes lengths and checksums)."""
    layer: Any = {"tcp": TCP(sport=sport, dport=dport), "udp": UDP(sport=sport, dport=dport),
                  "icmp": ICMP(type=8, id=sport, seq=dport)}[proto]
    return bytes(IP(src=src, dst=dst, **fields) / layer / payload)


def test_flow_hash_is_deterministic() -> None:
    packet = flow()
    first = flow_hash(packet)
    assert isinstance(first, int)
    assert 0 <= first <= 0xFFFFFFFF
    assert flow_hash(packet) == first
    assert flow_hash(bytearray(packet)) == first
    assert flow_hash(memoryview(packet)) == first
    assert flow_hash(flow()) == first


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_flow_hash_ignores_everything_but_the_flow(proto: str) -> None:
    base = flow_hash(flow(proto=proto))
    assert flow_hash(flow(proto=proto, payload=b"other payload, longer")) == base
    assert flow_hash(flow(proto=proto, ttl=3, id=999, tos=0x10)) == base


def test_flow_hash_at_an_offset() -> None:
    packet = flow()
    assert flow_hash(b"\xa5" * HEADROOM + packet, HEADROOM) == flow_hash(packet)
    assert flow_hash(bytearray(HEADROOM) + packet, HEADROOM) == flow_hash(packet)


@pytest.mark.parametrize("changes", [
    {"src": "10.5.1.8"},
    {"src": "10.6.1.7"},
    {"dst": "10.5.2.10"},
    {"dst": "10.5.3.9"},
    {"proto": "udp"},
    {"sport": 40001},
    {"sport": 40002},
    {"dport": 81},
    {"dport": 443},
    {"sport": 80, "dport": 40000},
])
def test_flow_hash_depends_on_addresses_protocol_and_ports(changes: dict[str, Any]) -> None:
    assert flow_hash(flow(**changes)) != flow_hash(flow())


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_flow_hash_depends_on_each_port(proto: str) -> None:
    hashes = {flow_hash(flow(proto=proto, sport=port)) for port in range(30000, 30100)}
    assert len(hashes) == 100
    hashes = {flow_hash(flow(proto=proto, dport=port)) for port in range(30000, 30100)}
    assert len(hashes) == 100


def test_flow_hash_of_icmp_uses_no_ports() -> None:
    """ICMP has no ports: id and sequence sit where ports would be and must not count."""
    assert flow_hash(flow(proto="icmp", sport=1, dport=1)) == flow_hash(
        flow(proto="icmp", sport=2, dport=9))


def test_flow_hash_skips_ip_options() -> None:
    """The ports are found after the options (IHL), not at a fixed offset."""
    plain = flow(sport=1234, dport=80)
    with_options = bytes(IP(src="10.5.1.7", dst="10.5.2.9", options=b"\x01\x01\x01\x00")
                         / TCP(sport=1234, dport=80) / b"flannel")
    assert with_options[0] == 0x46
    assert flow_hash(with_options) == flow_hash(plain)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_flow_hash_of_a_packet_cut_before_its_ports(proto: str) -> None:
    """Up to the end of the ports nothing but addresses and protocol count, and nothing
    raises; from there on the ports count."""
    packet = flow(proto=proto, sport=5555, dport=6666)
    cut_hashes = {flow_hash(packet[:length]) for length in range(20, 24)}
    assert len(cut_hashes) == 1
    assert flow_hash(packet[:24]) == flow_hash(packet)
    assert flow_hash(packet[:24]) not in cut_hashes


@pytest.mark.parametrize(("proto", "ports"), [
    ("tcp", range(32768, 33768)),  # 1000 consecutive source ports
    ("tcp", range(32768, 34768, 2)),  # 1000 even ones: Linux prefers even local ports
    ("udp", range(32768, 34768, 2)),
    ("tcp", range(1024, 65536, 64)),  # a coarse sweep: every port a multiple of 64
])
def test_flow_hash_spreads_source_ports_over_the_senders(proto: str, ports: range) -> None:
    counts = [0] * BUCKETS
    for port in ports:
        counts[flow_hash(flow(proto=proto, sport=port, dport=443)) % BUCKETS] += 1
    assert all(counts), counts
    expected = len(ports) / BUCKETS
    assert max(counts) < 2 * expected, counts  # no bucket gets a lion's share


def test_flow_hash_spreads_flows_between_two_hosts() -> None:
    """Many flows between one pair of hosts (the common case) use all sender sockets."""
    rng = random.Random(SEED)
    counts = [0] * BUCKETS
    for _ in range(1000):
        packet = flow(sport=rng.randrange(32768, 61000) & ~1, dport=rng.choice([80, 443, 5201]))
        counts[flow_hash(packet) % BUCKETS] += 1
    assert all(count > 60 for count in counts), counts
