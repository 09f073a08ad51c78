"""Tests for backends/udp.py: the pure UDPCodec and UDPConfig (flannel's udp data path).

UDPBackend opens a TUN and a socket and is left to the integration tests. Scapy builds the
inner packets and is the second opinion on every packet the codec produces or rewrites.
"""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Final

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPOption
from scapy.layers.inet6 import IPv6

from backends._codec import Drop, Dropped, Reply, Route, Send, SendMany, Verdict, Write
from backends.udp import DEFAULT_PORT, UDPCodec, UDPConfig
from lease.config import BackendSpec
from lease.errors import ConfigError
from tests.codecs import (
    OWN,
    OWN_PUBLIC,
    PEER_B,
    PEER_C,
    PUBLIC_B,
    PUBLIC_C,
    UDP_MTU,
    make_udp_codec,
    outcome,
    typed,
)
from tests.scapy_ref import (
    assert_intact_but_ttl,
    header_checksum_ok,
    inner,
    pair_packets,
    reassemble,
    scapy_reencode,
)
from tun.packet import check_ipv4, checksum

SEED: Final = 8285
MTU: Final = UDP_MTU
SLACK: Final = 64  # the engine's buffer is larger than any packet: n, not len(buf), counts

FORWARDED: Final = {Send, SendMany, Write}


make_codec = make_udp_codec


def load(packet: bytes) -> tuple[bytearray, int]:
    """`packet` at the start of a larger buffer, as the engine reads it; (buf, n)."""
    return bytearray(packet) + bytearray(b"\xa5" * SLACK), len(packet)


def icmp_checksum_ok(reply: bytes) -> bool:
    rebuilt = IP(reply)
    rebuilt[ICMP].chksum = None
    return bytes(rebuilt) == reply and checksum(reply[20:]) == 0


# --- from_tun: routed -------------------------------------------------------------------


@pytest.mark.parametrize(("dst", "route"), [
    ("10.5.2.9", (PUBLIC_B, DEFAULT_PORT)),
    ("10.5.2.0", (PUBLIC_B, DEFAULT_PORT)),
    ("10.5.2.255", (PUBLIC_B, DEFAULT_PORT)),
    ("10.5.3.1", (PUBLIC_C, DEFAULT_PORT)),
])
@pytest.mark.parametrize("ttl", [2, 3, 64, 255])
@pytest.mark.parametrize("proto", ["udp", "tcp", "icmp"])
def test_from_tun_sends_to_the_peer_with_ttl_decremented(dst: str, route: tuple[str, int],
                                                         ttl: int, proto: str) -> None:
    packet = inner(dst=dst, ttl=ttl, proto=proto)
    buf, n = load(packet)
    assert typed(make_codec().from_tun(buf, n)) == typed(Send(route))
    assert bytes(buf[:n]) == scapy_reencode(packet, ttl=ttl - 1)
    assert buf[n:] == bytearray(b"\xa5" * SLACK)


def test_from_tun_uses_the_configured_port() -> None:
    buf, n = load(inner())
    assert typed(make_codec(port=9000).from_tun(buf, n)) == typed(Send((PUBLIC_B, 9000)))


@pytest.mark.parametrize("size", [20, 28, 576, MTU])
def test_from_tun_packet_of_up_to_mtu_is_one_datagram(size: int) -> None:
    packet = inner(size=size) if size >= 28 else bytes(IP(src="10.5.1.7", dst="10.5.2.9"))
    buf, n = load(packet)
    verdict = make_codec().from_tun(buf, n)
    assert isinstance(verdict, Send) and verdict.flow == 0


# --- from_tun: no route -----------------------------------------------------------------


@pytest.mark.parametrize("dst", ["10.5.9.9", "10.5.4.0", "10.6.2.9", "8.8.8.8", "10.5.1.20"])
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_from_tun_no_route_replies_net_unreachable(dst: str, proto: str) -> None:
    packet = inner(dst=dst, proto=proto, ttl=30)
    buf, n = load(packet)
    verdict = make_codec().from_tun(buf, n)
    assert isinstance(verdict, Reply) and verdict.reason == Drop.NO_ROUTE
    reply = verdict.packet
    assert isinstance(reply, bytes)
    parsed = IP(reply)
    assert (parsed.src, parsed.dst, parsed.ttl, parsed.proto) == ("10.5.1.0", "10.5.1.7", 8, 1)
    assert (parsed[ICMP].type, parsed[ICMP].code) == (3, 0)
    assert header_checksum_ok(reply)
    assert icmp_checksum_ok(reply)
    assert reply[28:] == packet[:28]  # the offender's header + 8 bytes, as it came in
    assert bytes(buf[:n]) == packet  # not forwarded, not rewritten


def test_from_tun_no_route_reply_comes_from_own_subnet_address() -> None:
    codec = make_codec(own=IPv4Network("10.244.17.0/24"),
                       peers=((IPv4Network("10.244.18.0/24"), PUBLIC_B),))
    buf, n = load(inner(src="10.244.17.33", dst="10.244.99.1"))
    verdict = codec.from_tun(buf, n)
    assert isinstance(verdict, Reply) and verdict.reason == Drop.NO_ROUTE
    reply = verdict.packet
    assert (IP(reply).src, IP(reply).dst) == ("10.244.17.0", "10.244.17.33")


@pytest.mark.parametrize("packet", [
    inner(dst="10.5.9.9", proto="icmp"),
    bytes(IP(src="10.5.1.7", dst="10.5.9.9") / ICMP(type=3, code=1) / bytes(IP() / UDP())),
    bytes(IP(src="10.5.1.7", dst="10.5.9.9", frag=100, proto=17) / (b"x" * 40)),
])
def test_from_tun_no_route_without_icmp_error_drops(packet: bytes) -> None:
    buf, n = load(packet)
    assert typed(make_codec().from_tun(buf, n)) == typed(Dropped(Drop.NO_ROUTE))


def test_from_tun_with_no_peers_at_all() -> None:
    buf, n = load(inner())
    assert outcome(make_codec(peers=()).from_tun(buf, n)) == (Reply, Drop.NO_ROUTE)


# --- from_tun: TTL ----------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [0, 1])
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_from_tun_ttl_expired_replies_time_exceeded(ttl: int, proto: str) -> None:
    packet = inner(ttl=ttl, proto=proto)
    buf, n = load(packet)
    verdict = make_codec().from_tun(buf, n)
    assert isinstance(verdict, Reply) and verdict.reason == Drop.TTL_EXPIRED
    reply = verdict.packet
    parsed = IP(reply)
    assert (parsed.src, parsed.dst, parsed.ttl) == ("10.5.1.0", "10.5.1.7", 8)
    assert (parsed[ICMP].type, parsed[ICMP].code) == (11, 0)
    assert header_checksum_ok(reply)
    assert icmp_checksum_ok(reply)
    assert reply[28:] == packet[:28]
    assert bytes(buf[:n]) == packet


def test_from_tun_ttl_expired_icmp_is_dropped() -> None:
    buf, n = load(inner(ttl=1, proto="icmp"))
    assert typed(make_codec().from_tun(buf, n)) == typed(Dropped(Drop.TTL_EXPIRED))


# --- from_tun: runts, not IPv4 ----------------------------------------------------------


@pytest.mark.parametrize("n", range(20))
def test_from_tun_runt(n: int) -> None:
    buf, _ = load(inner())
    assert typed(make_codec().from_tun(buf, n)) == typed(Dropped(Drop.RUNT))
    assert typed(make_codec().from_tun(bytearray(inner()[:n]), n)) == typed(Dropped(Drop.RUNT))


@pytest.mark.parametrize("packet", [
    bytes(IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2) / b"six"),
    bytes([0x05]) + inner()[1:],
    bytes([0x65]) + inner()[1:],
    bytes([0xF5]) + inner()[1:],
    bytes(40),
])
def test_from_tun_not_ipv4(packet: bytes) -> None:
    buf, n = load(packet)
    assert typed(make_codec().from_tun(buf, n)) == typed(Dropped(Drop.NOT_IPV4))


# --- from_tun: larger than one datagram may carry ---------------------------------------


@pytest.mark.parametrize("mtu", [576, 1000, 1400])
def test_from_tun_oversized_with_df_replies_fragmentation_needed(mtu: int) -> None:
    packet = inner(size=1472, flags="DF", ttl=40)
    buf, n = load(packet)
    verdict = make_codec(mtu=mtu).from_tun(buf, n)
    assert isinstance(verdict, Reply) and verdict.reason == Drop.OVERSIZED
    reply = verdict.packet
    parsed = IP(reply)
    assert (parsed.src, parsed.dst, parsed.ttl) == ("10.5.1.0", "10.5.1.7", 8)
    assert (parsed[ICMP].type, parsed[ICMP].code) == (3, 4)
    assert parsed[ICMP].nexthopmtu == mtu  # RFC 1191
    assert struct.unpack("!HH", reply[24:28]) == (0, mtu)
    assert header_checksum_ok(reply)
    assert icmp_checksum_ok(reply)
    quoted = IP(reply[28:48])
    assert (quoted.src, quoted.dst, quoted.id, quoted.proto) == ("10.5.1.7", "10.5.2.9",
                                                                 0x4242, 17)
    assert reply[48:56] == packet[20:28]  # the first 8 bytes after the header


@pytest.mark.parametrize("mtu", [68, 576, 1000, 1400])
@pytest.mark.parametrize("size", [1472, 3000, 9000])
def test_from_tun_oversized_without_df_sends_fragments(mtu: int, size: int) -> None:
    packet = inner(size=size, ttl=40)
    buf, n = load(packet)
    verdict = make_codec(mtu=mtu).from_tun(buf, n)
    if size <= mtu:
        assert isinstance(verdict, Send) and verdict.flow == 0
        return
    assert isinstance(verdict, SendMany) and verdict.reason == Drop.OVERSIZED
    route, pieces = verdict.addr, verdict.datagrams
    assert route == (PUBLIC_B, DEFAULT_PORT)
    assert len(pieces) >= 2
    offset = 0
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        assert isinstance(piece, bytes)
        assert len(piece) <= mtu
        assert check_ipv4(piece, len(piece)) == len(piece)
        assert header_checksum_ok(piece)
        parsed = IP(piece)
        assert (parsed.ttl, parsed.id, parsed.src, parsed.dst) == (39, 0x4242, "10.5.1.7",
                                                                   "10.5.2.9")
        assert parsed.frag * 8 == offset
        assert bool(parsed.flags.MF) == (not last)
        assert last or (len(piece) - 20) % 8 == 0  # offsets stay multiples of 8
        offset += len(piece) - 20
    assert offset == size - 20
    assert reassemble(pieces) == packet[20:]


def test_from_tun_one_byte_over_mtu() -> None:
    buf, n = load(inner(size=MTU + 1))
    verdict = make_codec().from_tun(buf, n)
    assert isinstance(verdict, SendMany)
    assert (verdict.reason, verdict.addr) == (Drop.OVERSIZED, (PUBLIC_B, 8285))
    assert len(verdict.datagrams) == 2


def test_from_tun_oversized_ttl_expired_and_no_route_come_first() -> None:
    buf, n = load(inner(size=3000, ttl=1))
    assert outcome(make_codec().from_tun(buf, n)) == (Reply, Drop.TTL_EXPIRED)
    buf, n = load(inner(size=3000, dst="10.5.9.9"))
    assert outcome(make_codec().from_tun(buf, n)) == (Reply, Drop.NO_ROUTE)


def oversized_with_ihl(ihl: int, tail: int) -> bytearray:
    """A routed packet whose IHL field is `ihl` (< 5: malformed), longer than MTU 576."""
    step = (576 - ihl * 4) // 8 * 8
    packet = bytearray(inner(size=ihl * 4 + 2 * step + tail, ttl=40))
    packet[0] = 0x40 | ihl
    return packet


@pytest.mark.parametrize("packet", [
    *[oversized_with_ihl(ihl, tail) for ihl in range(5) for tail in (3, 100)],
    bytearray(inner(size=1000)[:2] + struct.pack("!H", 12) + inner(size=1000)[4:]),
], ids=[*[f"ihl{ihl}-tail{tail}" for ihl in range(5) for tail in (3, 100)],
        "total-length-below-ihl"])
def test_from_tun_malformed_oversized_packet_is_dropped(packet: bytearray) -> None:
    """The kernel never writes such packets, but a codec never raises nor sends garbage."""
    buf, n = load(bytes(packet))
    assert typed(make_codec(mtu=576).from_tun(buf, n)) == typed(Dropped(Drop.MALFORMED))


# --- from_net ---------------------------------------------------------------------------


VALID_INBOUND: Final = [
    inner(src="10.5.2.9", dst="10.5.1.7"),
    inner(src="10.5.2.9", dst="10.5.1.0", proto="tcp", size=1472),
    inner(src="10.5.3.1", dst="10.5.1.255", proto="icmp", size=64),
    bytes(IP(src="10.5.2.9", dst="10.5.1.7")),
    bytes(IP(src="10.5.2.9", dst="10.5.1.7", options=[IPOption(b"\x94\x04\x00\x00")])
          / UDP() / b"opts"),
    bytes(IP(src="10.5.2.9", dst="10.5.1.7", flags="MF", frag=10, proto=17) / (b"f" * 64)),
]


@pytest.mark.parametrize("packet", VALID_INBOUND)
@pytest.mark.parametrize("sender", [PUBLIC_B, PUBLIC_C])
def test_from_net_writes_with_ttl_decremented(packet: bytes, sender: str) -> None:
    buf, n = load(packet)
    assert typed(make_codec().from_net(buf, n, sender)) == typed(Write(len(packet)))
    assert bytes(buf[:n]) == scapy_reencode(packet, ttl=IP(packet).ttl - 1)


@pytest.mark.parametrize("extra", [1, 7, 100])
def test_from_net_datagram_longer_than_its_packet(extra: int) -> None:
    packet = inner(src="10.5.2.9", dst="10.5.1.7")
    buf = bytearray(packet + b"\x00" * extra)
    assert typed(make_codec().from_net(buf, len(buf), PUBLIC_B)) == typed(Write(len(packet)))


@pytest.mark.parametrize("sender", ["192.168.0.99", "10.5.2.9", "192.168.0.20", "0.0.0.0",
                                    "", "192.168.0.2 "])
def test_from_net_unknown_sender(sender: str) -> None:
    packet = inner(src="10.5.2.9", dst="10.5.1.7")
    buf, n = load(packet)
    assert typed(make_codec().from_net(buf, n, sender)) == typed(Dropped(Drop.NOT_PEER))
    assert bytes(buf[:n]) == packet


@pytest.mark.parametrize("dst", ["10.5.2.9", "10.5.0.255", "10.5.2.0", "8.8.8.8",
                                 "10.4.1.7", "255.255.255.255"])
def test_from_net_not_our_subnet(dst: str) -> None:
    packet = inner(src="10.5.2.9", dst=dst)
    buf, n = load(packet)
    assert typed(make_codec().from_net(buf, n, PUBLIC_B)) == typed(Dropped(Drop.NOT_OUR_SUBNET))
    assert bytes(buf[:n]) == packet


def rewrite(packet: bytes, offset: int, value: bytes, fix_checksum: bool = True) -> bytes:
    buf = bytearray(packet)
    buf[offset:offset + len(value)] = value
    if fix_checksum:
        ihl = max((buf[0] & 0x0F) * 4, 20)
        buf[10:12] = b"\0\0"
        struct.pack_into("!H", buf, 10, checksum(buf[:ihl]))
    return bytes(buf)


GOOD: Final = inner(src="10.5.2.9", dst="10.5.1.7")
MALFORMED: Final = [
    ("bad checksum", rewrite(GOOD, 8, b"\x3f", fix_checksum=False)),
    ("checksum flipped", rewrite(GOOD, 10, bytes([GOOD[10] ^ 0x80]), fix_checksum=False)),
    ("version 6", rewrite(GOOD, 0, b"\x65")),
    ("ipv6", bytes(IPv6(src="fd00::1", dst="fd00::2") / UDP() / (b"x" * 40))),
    *[(f"IHL {ihl}", rewrite(GOOD, 0, bytes([0x40 | ihl]))) for ihl in range(5)],
    ("IHL 15", rewrite(GOOD[:40], 0, b"\x4f")),
    ("total length > n", rewrite(GOOD, 2, struct.pack("!H", len(GOOD) + 1))),
    ("total length < IHL", rewrite(GOOD, 2, struct.pack("!H", 19))),
    ("zeros", bytes(100)),
]


@pytest.mark.parametrize(("case", "packet"), MALFORMED, ids=[case for case, _ in MALFORMED])
def test_from_net_malformed(case: str, packet: bytes) -> None:
    buf, n = load(packet)
    assert typed(make_codec().from_net(buf, n, PUBLIC_B)) == typed(Dropped(Drop.MALFORMED))


@pytest.mark.parametrize("packet", VALID_INBOUND)
def test_from_net_every_truncation_is_dropped(packet: bytes) -> None:
    codec = make_codec()
    for n in range(len(packet)):
        assert typed(codec.from_net(bytearray(packet[:n]), n, PUBLIC_B)) == typed(
            Dropped(Drop.MALFORMED))
        buf, _ = load(packet)
        assert typed(codec.from_net(buf, n, PUBLIC_B)) == typed(Dropped(Drop.MALFORMED))


@pytest.mark.parametrize("ttl", [0, 1])
def test_from_net_ttl_expired(ttl: int) -> None:
    packet = inner(src="10.5.2.9", dst="10.5.1.7", ttl=ttl)
    buf, n = load(packet)
    assert typed(make_codec().from_net(buf, n, PUBLIC_B)) == typed(Dropped(Drop.TTL_EXPIRED))
    assert bytes(buf[:n]) == packet


# --- the peer table ---------------------------------------------------------------------


def test_add_peer_fills_routes_and_peers() -> None:
    codec = make_codec()
    assert codec.routes == {
        int(PEER_B.network_address): Route((PUBLIC_B, 8285), b"", Send((PUBLIC_B, 8285))),
        int(PEER_C.network_address): Route((PUBLIC_C, 8285), b"", Send((PUBLIC_C, 8285)))}
    assert codec.peers == {PUBLIC_B: 1, PUBLIC_C: 1}


def test_two_subnets_of_one_public_ip() -> None:
    second = IPv4Network("10.5.7.0/24")
    codec = make_codec(peers=((PEER_B, PUBLIC_B), (second, PUBLIC_B)))
    assert codec.peers == {PUBLIC_B: 2}
    inbound = inner(src="10.5.2.9", dst="10.5.1.7")

    codec.remove_peer(PEER_B)
    assert PUBLIC_B in codec.peers
    buf, n = load(inbound)
    assert isinstance(codec.from_net(buf, n, PUBLIC_B), Write)
    buf, n = load(inner(dst="10.5.7.1"))
    assert typed(codec.from_tun(buf, n)) == typed(Send((PUBLIC_B, 8285)))
    buf, n = load(inner(dst="10.5.2.9"))
    assert outcome(codec.from_tun(buf, n)) == (Reply, Drop.NO_ROUTE)

    codec.remove_peer(second)
    assert codec.peers == {}
    assert codec.routes == {}
    buf, n = load(inbound)
    assert typed(codec.from_net(buf, n, PUBLIC_B)) == typed(Dropped(Drop.NOT_PEER))


@pytest.mark.parametrize("subnet", ["10.5.4.0/25", "10.5.0.0/16", "10.5.4.0/23",
                                    "10.5.4.7/32"])
def test_add_peer_refuses_another_prefix_length(subnet: str) -> None:
    codec = make_codec()
    routes, peers = dict(codec.routes), dict(codec.peers)
    assert codec.add_peer(IPv4Network(subnet), IPv4Address("192.168.0.9")) is False
    assert (codec.routes, codec.peers) == (routes, peers)
    buf, n = load(inner(src="10.5.4.1", dst="10.5.1.7"))
    assert typed(codec.from_net(buf, n, "192.168.0.9")) == typed(Dropped(Drop.NOT_PEER))


def test_lease_moving_to_another_public_ip() -> None:
    codec = make_codec()
    assert codec.add_peer(PEER_B, IPv4Address("192.168.0.22"))
    assert codec.peers == {"192.168.0.22": 1, PUBLIC_C: 1}
    buf, n = load(inner(dst="10.5.2.9"))
    assert typed(codec.from_tun(buf, n)) == typed(Send(("192.168.0.22", 8285)))
    buf, n = load(inner(src="10.5.2.9", dst="10.5.1.7"))
    assert typed(codec.from_net(buf, n, PUBLIC_B)) == typed(Dropped(Drop.NOT_PEER))


def test_add_peer_twice_is_idempotent() -> None:
    codec = make_codec()
    assert codec.add_peer(PEER_B, IPv4Address(PUBLIC_B))
    assert codec.peers == {PUBLIC_B: 1, PUBLIC_C: 1}
    codec.remove_peer(PEER_B)
    assert codec.peers == {PUBLIC_C: 1}


def test_remove_unknown_peer_is_a_no_op() -> None:
    codec = make_codec()
    codec.remove_peer(IPv4Network("10.5.99.0/24"))
    codec.remove_peer(PEER_B)
    codec.remove_peer(PEER_B)
    assert codec.peers == {PUBLIC_C: 1}
    assert list(codec.routes) == [int(PEER_C.network_address)]


# --- random garbage ---------------------------------------------------------------------


def check_tun_verdict(codec: UDPCodec, verdict: Verdict, n: int) -> None:
    addrs = {route.addr for route in codec.routes.values()}
    match verdict:
        case Dropped(reason):
            assert reason in set(Drop) and reason != Drop.NONE
        case Reply(data, reason):
            assert reason in set(Drop)
            assert isinstance(data, bytes)
            assert check_ipv4(data, len(data)) == len(data)
            assert IP(data).proto == 1
        case Send(addr, flow):
            assert addr in addrs and flow == 0 and n <= codec.mtu
        case SendMany(route, pieces, reason):
            assert reason in set(Drop)
            assert route in addrs
            assert all(isinstance(piece, bytes) and len(piece) <= codec.mtu for piece in pieces)
        case _:
            raise AssertionError(f"not a from_tun verdict: {verdict!r}")


def check_net_verdict(verdict: Verdict, n: int) -> None:
    match verdict:
        case Dropped(reason):
            assert reason != Drop.NONE
        case Write(length):
            assert 20 <= length <= n
        case _:
            raise AssertionError(f"not a from_net verdict: {verdict!r}")


@pytest.mark.parametrize("mtu", [MTU, 576])
def test_random_garbage_never_raises(mtu: int) -> None:
    rng = random.Random(SEED + mtu)
    codec = make_codec(mtu=mtu)
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(0, 1601))
        buf, n = load(data)
        check_tun_verdict(codec, codec.from_tun(buf, n), n)
        buf, n = load(data)
        check_net_verdict(codec.from_net(buf, n, rng.choice([PUBLIC_B, "192.168.0.50"])), n)


@pytest.mark.parametrize("mtu", [MTU, 576, 100])
def test_plausible_garbage_never_raises(mtu: int) -> None:
    """Random bytes that get past the first checks: version 4, a routed (from_tun) or own
    (from_net) destination, half of them with a correct header checksum."""
    rng = random.Random(SEED * 3 + mtu)
    codec = make_codec(mtu=mtu)
    for _ in range(3000):
        length = rng.randrange(20, 1601)
        data = bytearray(rng.randbytes(length))
        data[0] = 0x40 | (data[0] & 0x0F)
        if rng.random() < 0.5:
            data[0] = 0x45 + rng.choice([0, 0, 0, 1, 10])
            struct.pack_into("!H", data, 2, rng.choice([length, rng.randrange(length + 1)]))
        data[16:19] = bytes([10, 5, rng.choice([1, 2, 3])])
        if rng.random() < 0.5:
            ihl = max((data[0] & 0x0F) * 4, 20)
            if ihl <= length:
                data[10:12] = b"\0\0"
                struct.pack_into("!H", data, 10, checksum(data[:ihl]))
        buf, n = load(bytes(data))
        check_tun_verdict(codec, codec.from_tun(buf, n), n)
        buf, n = load(bytes(data))
        check_net_verdict(codec.from_net(buf, n, PUBLIC_B), n)


# --- the pair test: A's from_tun feeds B's from_net -------------------------------------


def hosts(mtu: int = MTU) -> tuple[UDPCodec, UDPCodec]:
    host_a = make_codec(own=OWN, mtu=mtu, peers=((PEER_B, PUBLIC_B),))
    host_b = make_codec(own=PEER_B, mtu=mtu, peers=((OWN, OWN_PUBLIC),))
    return host_a, host_b


@pytest.mark.parametrize("packet", pair_packets(MTU))
def test_pair_a_to_b(packet: bytes) -> None:
    host_a, host_b = hosts()
    buf_a, n = load(packet)
    assert typed(host_a.from_tun(buf_a, n)) == typed(Send((PUBLIC_B, DEFAULT_PORT)))
    datagram = bytes(buf_a[:n])  # what goes on the wire: the bare inner packet
    buf_b, m = load(datagram)
    assert typed(host_b.from_net(buf_b, m, OWN_PUBLIC)) == typed(Write(len(packet)))
    out = bytes(buf_b[: len(packet)])
    assert_intact_but_ttl(packet, out, 2)
    assert out == scapy_reencode(packet, ttl=packet[8] - 2)


@pytest.mark.parametrize("ttl", [4, 64, 255])
def test_pair_b_to_a(ttl: int) -> None:
    host_a, host_b = hosts()
    packet = inner(src="10.5.2.9", dst="10.5.1.7", proto="tcp", size=500, ttl=ttl)
    buf_b, n = load(packet)
    assert typed(host_b.from_tun(buf_b, n)) == typed(Send((OWN_PUBLIC, DEFAULT_PORT)))
    buf_a, m = load(bytes(buf_b[:n]))
    assert typed(host_a.from_net(buf_a, m, PUBLIC_B)) == typed(Write(len(packet)))
    assert_intact_but_ttl(packet, bytes(buf_a[:n]), 2)


def test_pair_ttl_two_expires_at_b() -> None:
    host_a, host_b = hosts()
    buf_a, n = load(inner(ttl=2))
    assert isinstance(host_a.from_tun(buf_a, n), Send)
    buf_b, m = load(bytes(buf_a[:n]))
    assert typed(host_b.from_net(buf_b, m, OWN_PUBLIC)) == typed(Dropped(Drop.TTL_EXPIRED))


def test_pair_b_refuses_what_a_sends_from_an_unknown_address() -> None:
    host_a, host_b = hosts()
    buf_a, n = load(inner())
    host_a.from_tun(buf_a, n)
    buf_b, m = load(bytes(buf_a[:n]))
    assert typed(host_b.from_net(buf_b, m, "192.168.0.66")) == typed(Dropped(Drop.NOT_PEER))


@pytest.mark.parametrize("mtu", [576, 1000])
def test_pair_fragments_reassemble_at_b(mtu: int) -> None:
    host_a, host_b = hosts(mtu=mtu)
    packet = inner(size=3000, ttl=50)
    buf_a, n = load(packet)
    verdict = host_a.from_tun(buf_a, n)
    assert isinstance(verdict, SendMany)
    assert (verdict.reason, verdict.addr) == (Drop.OVERSIZED, (PUBLIC_B, 8285))
    pieces = verdict.datagrams
    written: list[bytes] = []
    for piece in pieces:
        buf_b, m = load(piece)
        assert typed(host_b.from_net(buf_b, m, OWN_PUBLIC)) == typed(Write(len(piece)))
        out = bytes(buf_b[:m])
        assert IP(out).ttl == 48
        assert header_checksum_ok(out)
        written.append(out)
    assert reassemble(written) == packet[20:]


# --- UDPConfig.from_spec ----------------------------------------------------------------


@pytest.mark.parametrize(("options", "port"), [
    ({}, 8285),
    ({"Type": "udp"}, 8285),
    ({"Type": "udp", "Port": 9000}, 9000),
    ({"port": 9000}, 9000),
    ({"PORT": 1}, 1),
    ({"pOrT": 65535}, 65535),
    ({"Port": 0}, 8285),
    ({"Port": 8285}, 8285),
])
def test_udp_config_port(options: dict[str, Any], port: int) -> None:
    assert UDPConfig.from_spec(BackendSpec("udp", options)) == UDPConfig(port=port)
    assert UDPConfig.from_spec(BackendSpec("udp", options)).port == port


def test_udp_config_default() -> None:
    assert UDPConfig().port == DEFAULT_PORT == 8285


@pytest.mark.parametrize("value", [-1, 65536, 1 << 32, True, False, "8285", "", 8285.0,
                                   [8285], {"Port": 1}])
@pytest.mark.parametrize("key", ["Port", "port"])
def test_udp_config_rejects_bad_port(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match="Port"):
        UDPConfig.from_spec(BackendSpec("udp", {key: value}))


@pytest.mark.parametrize(
    ("options", "offload"),
    [({}, True), ({"Offload": False}, False), ({"offload": True}, True), ({"Offload": None}, True)],
)
def test_offload_option(options: dict[str, object], offload: bool) -> None:
    assert UDPConfig.from_spec(BackendSpec("udp", options)).offload is offload


def test_offload_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="Offload"):
        UDPConfig.from_spec(BackendSpec("udp", {"Offload": "yes"}))
