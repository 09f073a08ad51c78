"""Tests for the pure parts of backends/vxlan.py: VXLANConfig, random_vtep_mac, peer_of and
the userspace data plane's VXLANCodec (flannel's vxlan wire format and programming).

VXLANBackend programs the kernel or opens a TUN and is left to the integration tests.
Scapy builds the frames exactly as the Linux kernel's VXLAN device sends them and is the
second opinion on every frame the codec produces or rewrites.
"""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Final

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from backends._codec import Answer, Drop, Dropped, Send, Verdict, Write
from backends.vxlan import Peer, VXLANCodec, VXLANConfig, peer_of, random_vtep_mac
from lease.config import BackendSpec
from lease.errors import ConfigError
from lease.model import Lease, LeaseAttrs, backend_data_json
from tests.codecs import (
    MAC_B,
    MAC_C,
    OWN,
    OWN_MAC,
    OWN_PUBLIC,
    OWN_VTEP,
    PEER_B,
    PEER_C,
    PUBLIC_B,
    PUBLIC_C,
    VNI,
    VXLAN_MTU,
    make_vxlan_codec,
    outcome,
    typed,
)
from tests.scapy_ref import (
    assert_intact_but_ttl,
    header_checksum_ok,
    inner,
    pair_packets,
    scapy_reencode,
)
from tun.packet import checksum
from tun.vxlan import HEADROOM, VXLAN_PORT, flow_hash, format_mac, parse_mac

SEED: Final = 42
MTU: Final = VXLAN_MTU
SLACK: Final = 64  # the engine's buffer is larger than any packet: n, not len(buf), counts
FILL: Final = 0x5A  # what the headroom holds before the codec writes its header

make_codec = make_vxlan_codec


def inbound(src: str = "10.5.2.9", dst: str = "10.5.1.7", **kwargs: Any) -> bytes:
    return inner(src=src, dst=dst, **kwargs)


def load_tun(packet: bytes) -> tuple[bytearray, int]:
    """`packet` at HEADROOM in a larger buffer, as the engine reads the TUN; (buf, n)."""
    return bytearray([FILL] * HEADROOM) + bytearray(packet) + bytearray(b"\xa5" * SLACK), \
        len(packet)


def load_net(datagram: bytes) -> tuple[bytearray, int]:
    """A received datagram at the start of a larger buffer; (buf, n)."""
    return bytearray(datagram) + bytearray(b"\xa5" * SLACK), len(datagram)


def kernel_frame(payload: Any, vni: int = VNI, dst: str = OWN_MAC, src: str = MAC_B,
                 **ether: Any) -> bytes:
    """A VXLAN datagram as the kernel's flannel.<VNI> sends it: flags 0x08 (I only), the
    VNI, an Ethernet header (scapy fills the type from the payload) and the payload."""
    frame: Any = VXLAN(flags=0x08, vni=vni) / Ether(dst=dst, src=src, **ether)
    if isinstance(payload, bytes):
        return bytes(frame / IP(payload)) if payload else bytes(frame)
    return bytes(frame / payload)


def arp_request(target: str = OWN_VTEP, sender_ip: str = "10.5.2.0", sender_mac: str = MAC_B,
                op: int = 1) -> Any:
    """What the peer kernel's flannel.<VNI> asks when it has no neighbour for `target`."""
    return ARP(op=op, hwsrc=sender_mac, psrc=sender_ip, hwdst="00:00:00:00:00:00",
               pdst=target)


def rewrite(data: bytes, offset: int, value: bytes) -> bytes:
    buf = bytearray(data)
    buf[offset:offset + len(value)] = value
    return bytes(buf)


# --- VXLANConfig ------------------------------------------------------------------------


def config(**options: Any) -> VXLANConfig:
    return VXLANConfig.from_spec(BackendSpec("vxlan", options))


def test_config_defaults() -> None:
    default = config()
    assert default == VXLANConfig()
    assert (default.vni, default.port, default.udp_port) == (1, 0, 8472)
    assert (default.gbp, default.learning, default.direct_routing) == (False, False, False)
    assert default.mtu == 0
    assert (default.dataplane, default.programming) == ("kernel", "eager")
    assert default.idle_timeout_s == 300
    assert default.offload is True
    assert default.device == "flannel.1"


@pytest.mark.parametrize(("options", "name", "expected"), [
    ({"VNI": 42}, "vni", 42),
    ({"vni": 42}, "vni", 42),
    ({"Vni": 42}, "vni", 42),
    ({"VNI": 0}, "vni", 0),
    ({"VNI": (1 << 24) - 1}, "vni", (1 << 24) - 1),
    ({"VNI": None}, "vni", 1),
    ({"Port": 4789}, "port", 4789),
    ({"Port": 4789}, "udp_port", 4789),
    ({"port": 0}, "udp_port", 8472),
    ({"PORT": 65535}, "udp_port", 65535),
    ({"GBP": True}, "gbp", True),
    ({"gbp": False}, "gbp", False),
    ({"Learning": True}, "learning", True),
    ({"DirectRouting": True}, "direct_routing", True),
    ({"directrouting": True}, "direct_routing", True),
    ({"MTU": 1400}, "mtu", 1400),
    ({"mtu": 118}, "mtu", 118),  # the smallest that leaves a 68-byte inner packet
    ({"MTU": 0}, "mtu", 0),
    ({"Dataplane": "userspace"}, "dataplane", "userspace"),
    ({"dataplane": "Userspace"}, "dataplane", "userspace"),
    ({"Dataplane": "KERNEL"}, "dataplane", "kernel"),
    ({"Programming": "lazy"}, "programming", "lazy"),
    ({"programming": "Eager"}, "programming", "eager"),
    ({"IdleTimeout": 60}, "idle_timeout_s", 60),
    ({"idletimeout": 5}, "idle_timeout_s", 5),
    ({"Offload": False}, "offload", False),
    ({"offload": True}, "offload", True),
])
def test_config_option(options: dict[str, Any], name: str, expected: object) -> None:
    assert getattr(config(**options), name) == expected


@pytest.mark.parametrize(("vni", "device"), [(1, "flannel.1"), (42, "flannel.42"),
                                             (4096, "flannel.4096")])
def test_config_device_name(vni: int, device: str) -> None:
    assert config(VNI=vni).device == device
    assert config(vni=vni).device == device


def test_config_flannel_lease_style_options() -> None:
    """The Backend object as flannel users write it, with keys in mixed case."""
    parsed = config(Type="vxlan", VNI=4096, Port=4789, GBP=True, DirectRouting=True, MTU=9000)
    assert (parsed.vni, parsed.udp_port, parsed.gbp, parsed.direct_routing, parsed.mtu) == (
        4096, 4789, True, True, 9000)


@pytest.mark.parametrize(("options", "name"), [
    ({"VNI": 1 << 24}, "VNI"),
    ({"vni": 1 << 24}, "VNI"),
    ({"VNI": -1}, "VNI"),
    ({"VNI": "1"}, "VNI"),
    ({"VNI": 1.0}, "VNI"),
    ({"VNI": True}, "VNI"),
    ({"Port": -1}, "Port"),
    ({"Port": 65536}, "Port"),
    ({"Port": "8472"}, "Port"),
    ({"GBP": 1}, "GBP"),
    ({"Learning": "true"}, "Learning"),
    ({"DirectRouting": "yes"}, "DirectRouting"),
    ({"directrouting": 0}, "DirectRouting"),
    ({"MTU": 100}, "MTU"),  # too small: nothing left after 50 bytes of encapsulation
    ({"MTU": 117}, "MTU"),
    ({"MTU": -1}, "MTU"),
    ({"MTU": 65536}, "MTU"),
    ({"MTU": "1450"}, "MTU"),
    ({"Dataplane": "dpdk"}, "Dataplane"),
    ({"Dataplane": 1}, "Dataplane"),
    ({"Dataplane": ""}, "Dataplane"),
    ({"Programming": "sometimes"}, "Programming"),
    ({"IdleTimeout": 0}, "IdleTimeout"),
    ({"IdleTimeout": 4}, "IdleTimeout"),
    ({"IdleTimeout": "300"}, "IdleTimeout"),
    ({"Offload": "no"}, "Offload"),
])
def test_config_rejects_bad_options(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        config(**options)


# --- random_vtep_mac --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(64))
def test_random_vtep_mac_is_locally_administered_unicast(seed: int) -> None:
    mac = random_vtep_mac(random.Random(seed))
    assert isinstance(mac, bytes)
    assert len(mac) == 6
    assert mac[0] & 0x03 == 0x02  # multicast bit clear, locally administered bit set
    assert Ether(src=format_mac(mac)).src == format_mac(mac)


def test_random_vtep_mac_same_seed_same_mac() -> None:
    assert random_vtep_mac(random.Random(SEED)) == random_vtep_mac(random.Random(SEED))
    macs = {random_vtep_mac(random.Random(seed)) for seed in range(200)}
    assert len(macs) == 200


def test_random_vtep_mac_sets_bits_of_every_byte() -> None:
    rng = random.Random(SEED)
    macs = [random_vtep_mac(rng) for _ in range(200)]
    for index in range(6):
        assert len({mac[index] for mac in macs}) > 50
    assert {mac[0] & 0xFC for mac in macs} != {0}


# --- peer_of ----------------------------------------------------------------------------

LEASE_SUBNET: Final = IPv4Network("10.5.2.0/24")
LEASE_PUBLIC: Final = IPv4Address("192.168.0.2")


def make_lease(backend_type: str = "vxlan", data: dict[str, Any] | None = None,
               raw_data: str | None = None) -> Lease:
    if raw_data is None:
        raw_data = backend_data_json(
            {"VNI": 1, "VtepMAC": MAC_B} if data is None else data)
    attrs = LeaseAttrs(public_ip=LEASE_PUBLIC, backend_type=backend_type, backend_data=raw_data)
    return Lease(LEASE_SUBNET, attrs, etcd_lease=7)


def test_peer_of_a_vxlan_lease() -> None:
    lease = make_lease()
    assert lease.attrs.backend_data == '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}'
    assert peer_of(lease) == Peer(LEASE_SUBNET, LEASE_PUBLIC,
                                     bytes.fromhex("c6d2326f8f44"))


@pytest.mark.parametrize("data", [
    {"VNI": 1, "VtepMAC": "C6:D2:32:6F:8F:44"},
    {"vni": 1, "vtepmac": MAC_B},
    {"VtepMAC": MAC_B},
    {"VNI": 1, "VtepMAC": MAC_B, "Extra": [1, 2]},
])
def test_peer_of_variants(data: dict[str, Any]) -> None:
    peer = peer_of(make_lease(data=data))
    assert peer is not None
    assert (peer.subnet, peer.public_ip, peer.vtep_mac) == (
        LEASE_SUBNET, LEASE_PUBLIC, bytes.fromhex("c6d2326f8f44"))


@pytest.mark.parametrize("backend_type", ["", "udp", "host-gw", "ipip", "wireguard",
                                          "alloc", "vxlan "])
def test_peer_of_other_backend_types(backend_type: str) -> None:
    assert peer_of(make_lease(backend_type=backend_type)) is None


@pytest.mark.parametrize("data", [
    {"VNI": 1},
    {},
    {"VNI": 1, "VtepMAC": None},
    {"VNI": 1, "VtepMAC": 12},
    {"VNI": 1, "VtepMAC": ["c6", "d2", "32", "6f", "8f", "44"]},
    {"VNI": 1, "VtepMAC": ""},
    {"VNI": 1, "VtepMAC": "not a mac"},
    {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f"},
    {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44:00"},
    {"VNI": 1, "VtepMAC": "c6-d2-32-6f-8f-44"},
    {"VNI": 1, "VtepMAC": "zz:d2:32:6f:8f:44"},
])
def test_peer_of_missing_or_bad_vtep_mac(data: dict[str, Any]) -> None:
    assert peer_of(make_lease(data=data)) is None


@pytest.mark.parametrize("raw_data", ["", "null", "[]", "\"c6:d2:32:6f:8f:44\"", "42"])
def test_peer_of_backend_data_not_an_object(raw_data: str) -> None:
    assert peer_of(make_lease(raw_data=raw_data)) is None


# --- the codec: from_tun ----------------------------------------------------------------


def test_codec_headroom() -> None:
    assert make_codec().headroom == HEADROOM == 22


@pytest.mark.parametrize(("dst", "public_ip", "mac"), [
    ("10.5.2.9", PUBLIC_B, MAC_B),
    ("10.5.2.0", PUBLIC_B, MAC_B),
    ("10.5.2.255", PUBLIC_B, MAC_B),
    ("10.5.3.1", PUBLIC_C, MAC_C),
])
@pytest.mark.parametrize("ttl", [2, 64, 255])
@pytest.mark.parametrize("proto", ["udp", "tcp", "icmp"])
def test_from_tun_encapsulates_for_the_peer(dst: str, public_ip: str, mac: str, ttl: int,
                                            proto: str) -> None:
    packet = inner(dst=dst, ttl=ttl, proto=proto)
    buf, n = load_tun(packet)
    assert typed(make_codec().from_tun(buf, n)) == typed(Send((public_ip, VXLAN_PORT),
                                                              flow_hash(packet)))
    datagram = bytes(buf[:HEADROOM + n])
    parsed = VXLAN(datagram)
    assert (int(parsed.flags), parsed.vni) == (0x08, VNI)
    assert (parsed[Ether].dst, parsed[Ether].src, parsed[Ether].type) == (mac, OWN_MAC, 0x0800)
    assert parsed[IP].ttl == ttl - 1
    assert datagram[HEADROOM:] == scapy_reencode(packet, ttl=ttl - 1)
    assert header_checksum_ok(datagram[HEADROOM:])
    assert buf[HEADROOM + n:] == bytearray(b"\xa5" * SLACK)


@pytest.mark.parametrize("vni", [0, 1, 42, 0xABCDEF, (1 << 24) - 1])
def test_from_tun_header_is_the_kernels(vni: int) -> None:
    """Byte for byte what flannel.<VNI> sends: scapy builds the same 22 bytes."""
    packet = inner(size=300, proto="tcp")
    buf, n = load_tun(packet)
    assert isinstance(make_codec(vni=vni).from_tun(buf, n), Send)
    expected = kernel_frame(scapy_reencode(packet, ttl=63), vni=vni, dst=MAC_B, src=OWN_MAC)
    assert bytes(buf[:HEADROOM + n]) == expected


def test_from_tun_uses_the_configured_port() -> None:
    buf, n = load_tun(inner())
    verdict = make_codec(port=4789).from_tun(buf, n)
    assert isinstance(verdict, Send) and verdict.addr == (PUBLIC_B, 4789)


def test_from_tun_flow_hash_follows_the_flow() -> None:
    codec = make_codec()
    hashes = set()
    for sport in range(32768, 32868, 2):
        packet = bytes(IP(src="10.5.1.7", dst="10.5.2.9") / TCP(sport=sport, dport=443))
        buf, n = load_tun(packet)
        verdict = codec.from_tun(buf, n)
        assert isinstance(verdict, Send) and verdict.flow == flow_hash(packet)
        hashes.add(verdict.flow % 8)
    assert hashes == set(range(8))


@pytest.mark.parametrize("packet", [
    inner(proto="tcp"),
    inner(proto="udp", size=28),
    bytes(IP(src="10.5.1.7", dst="10.5.2.9", proto=6)),  # a TCP packet cut after the IP header
    bytes(IP(src="10.5.1.7", dst="10.5.2.9", proto=17) / b"\x10\x00"),  # half a UDP header
    bytes(IP(src="10.5.1.7", dst="10.5.2.9", options=b"\x01\x01\x01\x00", proto=6)),
], ids=["tcp", "udp", "tcp-no-header", "udp-half-header", "tcp-options-no-header"])
def test_from_tun_reads_nothing_beyond_n(packet: bytes) -> None:
    """The engine's buffer holds stale bytes after the packet: the verdict (the flow hash,
    which picks the source port, included) depends on buf[22:22 + n] only."""
    verdicts: set[Verdict] = set()
    for stale in (b"\x00", b"\xff", b"\x5a"):
        buf = bytearray([FILL] * HEADROOM) + bytearray(packet) + bytearray(stale * SLACK)
        verdicts.add(make_codec().from_tun(buf, len(packet)))
    assert len(verdicts) == 1
    verdict = verdicts.pop()
    assert isinstance(verdict, Send) and verdict.addr == (PUBLIC_B, VXLAN_PORT)


@pytest.mark.parametrize("size", [20, 28, 576, MTU])
def test_from_tun_packet_of_up_to_mtu_is_sent(size: int) -> None:
    packet = inner(size=size) if size >= 28 else bytes(IP(src="10.5.1.7", dst="10.5.2.9"))
    buf, n = load_tun(packet)
    assert isinstance(make_codec().from_tun(buf, n), Send)


def assert_dropped(codec: VXLANCodec, packet: bytes, reason: Drop, n: int | None = None) -> None:
    buf, size = load_tun(packet)
    before = bytes(buf)
    assert typed(codec.from_tun(buf, size if n is None else n)) == typed(Dropped(reason))
    assert bytes(buf) == before  # neither rewritten nor encapsulated


@pytest.mark.parametrize("n", range(20))
def test_from_tun_runt(n: int) -> None:
    assert_dropped(make_codec(), inner(), Drop.RUNT, n)
    exact = bytearray([FILL] * HEADROOM) + bytearray(inner()[:n])
    assert typed(make_codec().from_tun(exact, n)) == typed(Dropped(Drop.RUNT))


@pytest.mark.parametrize("packet", [
    bytes(IPv6(src="fd00::1", dst="fd00::2") / UDP() / (b"x" * 40)),
    rewrite(inner(), 0, b"\x65"),
    rewrite(inner(), 0, b"\x05"),
    bytes(100),
])
def test_from_tun_not_ipv4(packet: bytes) -> None:
    assert_dropped(make_codec(), packet, Drop.NOT_IPV4)


@pytest.mark.parametrize("dst", ["10.5.9.9", "10.5.4.0", "10.6.2.9", "8.8.8.8", "10.5.1.20",
                                 "10.5.1.0"])
def test_from_tun_no_route(dst: str) -> None:
    assert_dropped(make_codec(), inner(dst=dst), Drop.NO_ROUTE)


def test_from_tun_with_no_peers_at_all() -> None:
    assert_dropped(make_codec(peers=()), inner(), Drop.NO_ROUTE)


@pytest.mark.parametrize(("mtu", "size"), [(MTU, MTU + 1), (MTU, 1500), (1400, 1401),
                                           (576, 1000)])
def test_from_tun_oversized(mtu: int, size: int) -> None:
    assert_dropped(make_codec(mtu=mtu), inner(size=size), Drop.OVERSIZED)


@pytest.mark.parametrize("ttl", [0, 1])
@pytest.mark.parametrize("proto", ["udp", "tcp", "icmp"])
def test_from_tun_ttl_expired(ttl: int, proto: str) -> None:
    assert_dropped(make_codec(), inner(ttl=ttl, proto=proto), Drop.TTL_EXPIRED)


# --- the codec: from_net ----------------------------------------------------------------

VALID_INBOUND: Final = [
    inbound(),
    inbound(dst="10.5.1.0", proto="tcp", size=MTU),
    inbound(src="10.5.3.1", dst="10.5.1.255", proto="icmp", size=64),
    bytes(IP(src="10.5.2.9", dst="10.5.1.7")),
    bytes(IP(src="10.5.2.9", dst="10.5.1.7", options=[IPOption(b"\x94\x04\x00\x00")])
          / UDP() / b"opts"),
    bytes(IP(src="10.5.2.9", dst="10.5.1.7", flags="MF", frag=10, proto=17) / (b"f" * 64)),
]


@pytest.mark.parametrize("packet", VALID_INBOUND)
@pytest.mark.parametrize("dst_mac", [OWN_MAC, "ff:ff:ff:ff:ff:ff"])
@pytest.mark.parametrize(("sender", "src_mac"), [(PUBLIC_B, MAC_B), (PUBLIC_C, MAC_C)])
def test_from_net_accepts_the_kernels_frame(packet: bytes, dst_mac: str, sender: str,
                                            src_mac: str) -> None:
    datagram = kernel_frame(packet, dst=dst_mac, src=src_mac)
    assert datagram[:HEADROOM] == bytes.fromhex("0800000000000100") + parse_mac(dst_mac) \
        + parse_mac(src_mac) + b"\x08\x00"
    buf, n = load_net(datagram)
    assert typed(make_codec().from_net(buf, n, sender)) == typed(Write(len(packet)))
    out = bytes(buf[HEADROOM:HEADROOM + len(packet)])
    assert out == scapy_reencode(packet, ttl=IP(packet).ttl - 1)
    assert header_checksum_ok(out)
    assert buf[n:] == bytearray(b"\xa5" * SLACK)


@pytest.mark.parametrize("vni", [0, 42, 0xABCDEF])
def test_from_net_with_another_vni(vni: int) -> None:
    buf, n = load_net(kernel_frame(inbound(), vni=vni))
    assert isinstance(make_codec(vni=vni).from_net(buf, n, PUBLIC_B), Write)


@pytest.mark.parametrize("extra", [1, 7, 100])
def test_from_net_frame_longer_than_its_packet(extra: int) -> None:
    """Ethernet padding after the inner packet is not written into the TUN."""
    packet = inbound(size=28)
    buf, n = load_net(kernel_frame(packet) + b"\x00" * extra)
    assert typed(make_codec().from_net(buf, n, PUBLIC_B)) == typed(Write(len(packet)))


def test_from_net_of_a_memoryview_segment() -> None:
    """The engine hands over slices of its buffer (one per GRO segment)."""
    first, second = kernel_frame(inbound(size=200)), kernel_frame(inbound(size=200, ttl=9))
    whole = bytearray(first + second)
    segment = memoryview(whole)[len(first):]
    codec = make_codec()
    assert typed(codec.from_net(segment, len(second), PUBLIC_B)) == typed(Write(200))
    assert bytes(whole[:len(first)]) == first
    assert IP(bytes(whole[len(first) + HEADROOM:])).ttl == 8
    assert header_checksum_ok(bytes(whole[len(first) + HEADROOM:]))


def assert_net_dropped(datagram: bytes, reason: Drop, sender: str = PUBLIC_B,
                       codec: VXLANCodec | None = None) -> None:
    buf, n = load_net(datagram)
    before = bytes(buf)
    assert typed((codec or make_codec()).from_net(buf, n, sender)) == typed(Dropped(reason))
    assert bytes(buf) == before


@pytest.mark.parametrize("vni", [0, 2, 0xABCDEF, (1 << 24) - 1])
def test_from_net_wrong_vni(vni: int) -> None:
    assert_net_dropped(kernel_frame(inbound(), vni=vni), Drop.WRONG_VNI)
    assert_net_dropped(kernel_frame(arp_request(), vni=vni, dst="ff:ff:ff:ff:ff:ff"),
                       Drop.WRONG_VNI)


@pytest.mark.parametrize("dst_mac", [MAC_B, MAC_C, "7e:3a:01:02:03:02", "00:00:00:00:00:00",
                                     "fe:ff:ff:ff:ff:ff"])
def test_from_net_wrong_mac(dst_mac: str) -> None:
    assert_net_dropped(kernel_frame(inbound(), dst=dst_mac), Drop.WRONG_MAC)


@pytest.mark.parametrize("sender", ["192.168.0.99", OWN_PUBLIC, "10.5.2.0", "10.5.2.9",
                                    "0.0.0.0", "", "192.168.0.2 "])
def test_from_net_not_a_peer(sender: str) -> None:
    assert_net_dropped(kernel_frame(inbound()), Drop.NOT_PEER, sender)
    assert_net_dropped(kernel_frame(arp_request(), dst="ff:ff:ff:ff:ff:ff"), Drop.NOT_PEER,
                       sender)


@pytest.mark.parametrize("dst", ["10.5.2.9", "10.5.0.255", "10.5.2.0", "8.8.8.8", "10.4.1.7",
                                 "255.255.255.255"])
def test_from_net_not_our_subnet(dst: str) -> None:
    assert_net_dropped(kernel_frame(inbound(dst=dst)), Drop.NOT_OUR_SUBNET)


@pytest.mark.parametrize("ttl", [0, 1])
def test_from_net_ttl_expired(ttl: int) -> None:
    assert_net_dropped(kernel_frame(inbound(ttl=ttl)), Drop.TTL_EXPIRED)


GOOD_FRAME: Final = kernel_frame(inbound())
GOOD_IP: Final = inbound()
MALFORMED_FRAMES: Final = [
    *[(f"flags {flags:#04x}", rewrite(GOOD_FRAME, 0, bytes([flags])))
      for flags in (0x00, 0x04, 0x80, 0xF7)],
    ("bad inner checksum", rewrite(GOOD_FRAME, HEADROOM + 10, bytes([GOOD_IP[10] ^ 0x01]))),
    ("ttl changed, checksum not", rewrite(GOOD_FRAME, HEADROOM + 8, b"\x3f")),
    *[(f"IHL {ihl}", kernel_frame(rewrite(GOOD_IP, 0, bytes([0x40 | ihl]))))
      for ihl in range(5)],
    ("total length > frame", rewrite(GOOD_FRAME, HEADROOM + 2, struct.pack("!H", 101))),
    ("total length < IHL", rewrite(GOOD_FRAME, HEADROOM + 2, struct.pack("!H", 19))),
    ("header only", GOOD_FRAME[:HEADROOM]),
    ("short IPv4", GOOD_FRAME[:HEADROOM + 19]),
    ("short ARP", kernel_frame(arp_request(), dst="ff:ff:ff:ff:ff:ff")[:HEADROOM + 27]),
    ("ARP not Ethernet/IPv4",
     kernel_frame(ARP(hwtype=6, op=1, hwsrc=MAC_B, psrc="10.5.2.0", pdst=OWN_VTEP))),
]


@pytest.mark.parametrize(("case", "datagram"), MALFORMED_FRAMES,
                         ids=[case for case, _ in MALFORMED_FRAMES])
def test_from_net_malformed(case: str, datagram: bytes) -> None:
    assert_net_dropped(datagram, Drop.MALFORMED)


@pytest.mark.parametrize("payload", [
    IPv6(src="fd00::1", dst="fd00::2") / UDP() / b"six",
    Raw(b"LLDP" * 10),
])
def test_from_net_not_ipv4(payload: Any) -> None:
    ethertype = 0x86DD if isinstance(payload, IPv6) else 0x88CC
    datagram = kernel_frame(payload, type=ethertype)
    assert Ether(datagram[8:]).type == ethertype
    assert_net_dropped(datagram, Drop.NOT_IPV4)


# --- the codec: ARP for our VTEP --------------------------------------------------------


@pytest.mark.parametrize("dst_mac", ["ff:ff:ff:ff:ff:ff", OWN_MAC])
@pytest.mark.parametrize(("sender", "src_mac", "sender_ip"), [
    (PUBLIC_B, MAC_B, "10.5.2.0"),
    (PUBLIC_C, MAC_C, "10.5.3.0"),
])
@pytest.mark.parametrize("vni", [1, 0xABCDEF])
def test_from_net_answers_arp_for_our_vtep(dst_mac: str, sender: str, src_mac: str,
                                           sender_ip: str, vni: int) -> None:
    request = kernel_frame(arp_request(sender_ip=sender_ip, sender_mac=src_mac), vni=vni,
                           dst=dst_mac, src=src_mac)
    buf, n = load_net(request)
    verdict = make_codec(vni=vni).from_net(buf, n, sender)
    assert isinstance(verdict, Answer)
    address, frame = verdict.addr, verdict.frame
    assert address == (sender, VXLAN_PORT)
    assert isinstance(frame, bytes)
    parsed = VXLAN(frame)
    assert (int(parsed.flags), parsed.vni) == (0x08, vni)
    assert (parsed[Ether].dst, parsed[Ether].src, parsed[Ether].type) == (src_mac, OWN_MAC,
                                                                          0x0806)
    arp = parsed[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen) == (1, 0x0800, 6, 4)
    assert arp.op == 2  # is-at
    assert (arp.hwsrc, arp.psrc) == (OWN_MAC, OWN_VTEP)
    assert (arp.hwdst, arp.pdst) == (src_mac, sender_ip)
    assert frame == bytes(VXLAN(flags=0x08, vni=vni) / Ether(dst=src_mac, src=OWN_MAC)
                          / ARP(op=2, hwsrc=OWN_MAC, psrc=OWN_VTEP, hwdst=src_mac,
                                pdst=sender_ip))


def test_from_net_arp_answer_uses_the_configured_port() -> None:
    buf, n = load_net(kernel_frame(arp_request(), dst="ff:ff:ff:ff:ff:ff"))
    verdict = make_codec(port=4789).from_net(buf, n, PUBLIC_B)
    assert isinstance(verdict, Answer)
    assert verdict.addr == (PUBLIC_B, 4789)


def test_from_net_arp_answer_follows_the_own_subnet() -> None:
    own = IPv4Network("10.244.17.0/24")
    codec = make_codec(own=own)
    buf, n = load_net(kernel_frame(arp_request(target="10.244.17.0"), dst="ff:ff:ff:ff:ff:ff"))
    verdict = codec.from_net(buf, n, PUBLIC_B)
    assert isinstance(verdict, Answer)
    assert VXLAN(verdict.frame)[ARP].psrc == "10.244.17.0"


@pytest.mark.parametrize("target", ["10.5.1.7", "10.5.1.255", "10.5.2.0", "10.5.3.0",
                                    OWN_PUBLIC, "0.0.0.0"])
def test_from_net_arp_for_another_ip(target: str) -> None:
    assert_net_dropped(kernel_frame(arp_request(target=target), dst="ff:ff:ff:ff:ff:ff"),
                       Drop.NOT_FOR_US)


@pytest.mark.parametrize("op", [2, 3, 0])
def test_from_net_arp_that_is_not_a_request(op: int) -> None:
    assert_net_dropped(kernel_frame(arp_request(op=op)), Drop.NOT_FOR_US)


# --- the codec: truncation and garbage --------------------------------------------------

TRUNCATED: Final = [
    kernel_frame(inbound()),
    kernel_frame(inbound(proto="tcp", size=60)),
    kernel_frame(inbound(proto="icmp", size=84), dst="ff:ff:ff:ff:ff:ff"),
    kernel_frame(bytes(IP(src="10.5.2.9", dst="10.5.1.7", options=[IPOption(b"\x94\x04\x00\x00")])
                       / UDP() / b"opts")),
    kernel_frame(arp_request(), dst="ff:ff:ff:ff:ff:ff"),
]


@pytest.mark.parametrize("datagram", TRUNCATED)
def test_from_net_every_truncation_is_dropped(datagram: bytes) -> None:
    codec = make_codec()
    buf, n = load_net(datagram)
    assert isinstance(codec.from_net(bytearray(buf), n, PUBLIC_B), Write | Answer)
    for length in range(len(datagram)):
        expected = typed(Dropped(Drop.MALFORMED))
        assert typed(codec.from_net(bytearray(datagram[:length]), length, PUBLIC_B)) == expected
        assert typed(codec.from_net(buf, length, PUBLIC_B)) == expected
        assert typed(codec.from_net(memoryview(buf)[:length], length, PUBLIC_B)) == expected
    assert bytes(buf[:n]) == datagram


ROUTES: Final = {(PUBLIC_B, VXLAN_PORT), (PUBLIC_C, VXLAN_PORT)}


def check_tun_verdict(buf: bytearray, verdict: Verdict, n: int) -> None:
    match verdict:
        case Dropped(reason):
            assert reason in set(Drop) and reason != Drop.NONE
        case Send(addr, flow):
            assert addr in ROUTES
            assert isinstance(flow, int) and 0 <= flow <= 0xFFFFFFFF
            assert 20 <= n <= MTU
            mac = MAC_B if addr[0] == PUBLIC_B else MAC_C
            assert bytes(buf[:HEADROOM]) == kernel_frame(b"", dst=mac, src=OWN_MAC, type=0x0800)
        case _:
            raise AssertionError(f"not a from_tun verdict: {verdict!r}")


def check_net_verdict(verdict: Verdict, n: int) -> None:
    match verdict:
        case Dropped(reason):
            assert reason in set(Drop) and reason != Drop.NONE
        case Write(length):
            assert 20 <= length <= n - HEADROOM
        case Answer(address, frame):
            assert address == (PUBLIC_B, VXLAN_PORT)
            assert isinstance(frame, bytes) and len(frame) == HEADROOM + 28
            assert VXLAN(frame)[ARP].op == 2
        case _:
            raise AssertionError(f"not a from_net verdict: {verdict!r}")


def test_random_garbage_never_raises() -> None:
    rng = random.Random(SEED)
    codec = make_codec()
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(0, 1601))
        buf = bytearray(HEADROOM) + bytearray(data)
        check_tun_verdict(buf, codec.from_tun(buf, len(data)), len(data))
        buf, n = load_net(data)
        check_net_verdict(codec.from_net(buf, n, rng.choice([PUBLIC_B, "192.168.0.50"])), n)


def plausible_ipv4(rng: random.Random, length: int, dst_prefix: bytes) -> bytearray:
    """Random bytes that look enough like IPv4 to get past the first checks."""
    data = bytearray(rng.randbytes(length))
    data[0] = 0x40 | (data[0] & 0x0F)
    if rng.random() < 0.6:
        data[0] = 0x45 + rng.choice([0, 0, 0, 1, 10])
        struct.pack_into("!H", data, 2, rng.choice([length, length, rng.randrange(length + 1)]))
    data[16:19] = dst_prefix
    ihl = max((data[0] & 0x0F) * 4, 20)
    if rng.random() < 0.6 and ihl <= length:
        data[10:12] = b"\0\0"
        struct.pack_into("!H", data, 10, checksum(data[:ihl]))
    return data


def test_plausible_garbage_from_tun_never_raises() -> None:
    rng = random.Random(SEED + 1)
    codec = make_codec()
    seen: set[tuple[type[Verdict], Drop]] = set()
    for _ in range(3000):
        length = rng.randrange(0, 1601)
        data = plausible_ipv4(rng, length, bytes([10, 5, rng.choice([1, 2, 3, 4])])) \
            if length >= 20 else bytearray(rng.randbytes(length))
        buf = bytearray(HEADROOM) + data
        verdict = codec.from_tun(buf, length)
        check_tun_verdict(buf, verdict, length)
        seen.add(outcome(verdict))
    assert {(Send, Drop.NONE), (Dropped, Drop.RUNT), (Dropped, Drop.NO_ROUTE),
            (Dropped, Drop.OVERSIZED)} <= seen


def test_plausible_garbage_from_net_never_raises() -> None:
    """Valid VXLAN and Ethernet headers (mostly) in front of random IPv4- or ARP-like
    payloads: the checks after the header are exercised, not only the first one."""
    rng = random.Random(SEED + 2)
    codec = make_codec()
    seen: set[tuple[type[Verdict], Drop]] = set()
    for _ in range(4000):
        length = rng.randrange(0, 1601 - HEADROOM)
        ethertype = rng.choice([0x0800, 0x0800, 0x0806, 0x86DD, rng.randrange(65536)])
        if ethertype == 0x0800 and length >= 20:
            payload = plausible_ipv4(rng, length, bytes([10, 5, rng.choice([1, 1, 2])]))
        elif ethertype == 0x0806 and length >= 28:
            payload = bytearray(rng.randbytes(length))
            if rng.random() < 0.8:
                payload[:6] = bytes.fromhex("000108000604")
                payload[6:8] = bytes([0, rng.choice([1, 1, 2])])
                payload[24:28] = IPv4Address(rng.choice([OWN_VTEP, "10.5.1.1"])).packed
        else:
            payload = bytearray(rng.randbytes(length))
        header = bytearray(kernel_frame(b"", dst=rng.choice([OWN_MAC, "ff:ff:ff:ff:ff:ff"]),
                                        type=ethertype))
        if rng.random() < 0.1:
            header[rng.randrange(HEADROOM)] = rng.randrange(256)
        datagram = bytes(header + payload)
        cut = rng.choice([len(datagram), len(datagram), rng.randrange(len(datagram) + 1)])
        buf, n = load_net(datagram[:cut])
        verdict = codec.from_net(buf, n, PUBLIC_B)
        check_net_verdict(verdict, n)
        seen.add(outcome(verdict))
    assert {(Write, Drop.NONE), (Answer, Drop.NONE), (Dropped, Drop.MALFORMED),
            (Dropped, Drop.NOT_IPV4), (Dropped, Drop.NOT_OUR_SUBNET),
            (Dropped, Drop.NOT_FOR_US)} <= seen


# --- the pair test: A's from_tun feeds B's from_net -------------------------------------


def hosts(vni: int = VNI, mtu: int = MTU) -> tuple[VXLANCodec, VXLANCodec]:
    host_a = make_codec(own=OWN, own_mac=OWN_MAC, vni=vni, mtu=mtu,
                        peers=((PEER_B, PUBLIC_B, MAC_B),))
    host_b = make_codec(own=PEER_B, own_mac=MAC_B, vni=vni, mtu=mtu,
                        peers=((OWN, OWN_PUBLIC, OWN_MAC),))
    return host_a, host_b


@pytest.mark.parametrize("packet", pair_packets(MTU))
@pytest.mark.parametrize("vni", [1, 0xABCDEF])
def test_pair_a_to_b(packet: bytes, vni: int) -> None:
    host_a, host_b = hosts(vni=vni)
    buf_a, n = load_tun(packet)
    assert typed(host_a.from_tun(buf_a, n)) == typed(Send((PUBLIC_B, VXLAN_PORT),
                                                          flow_hash(packet)))
    datagram = bytes(buf_a[:HEADROOM + n])  # what goes on the wire after outer IPv4/UDP
    buf_b, m = load_net(datagram)
    assert typed(host_b.from_net(buf_b, m, OWN_PUBLIC)) == typed(Write(len(packet)))
    assert_intact_but_ttl(packet, bytes(buf_b[HEADROOM:HEADROOM + len(packet)]), 2)


@pytest.mark.parametrize("ttl", [3, 64, 255])
def test_pair_b_to_a(ttl: int) -> None:
    host_a, host_b = hosts()
    packet = inner(src="10.5.2.9", dst="10.5.1.7", proto="tcp", size=500, ttl=ttl)
    buf_b, n = load_tun(packet)
    assert typed(host_b.from_tun(buf_b, n)) == typed(Send((OWN_PUBLIC, VXLAN_PORT),
                                                          flow_hash(packet)))
    buf_a, m = load_net(bytes(buf_b[:HEADROOM + n]))
    assert typed(host_a.from_net(buf_a, m, PUBLIC_B)) == typed(Write(len(packet)))
    assert_intact_but_ttl(packet, bytes(buf_a[HEADROOM:HEADROOM + n]), 2)


def test_pair_ttl_two_expires_at_b() -> None:
    host_a, host_b = hosts()
    buf_a, n = load_tun(inner(ttl=2))
    assert isinstance(host_a.from_tun(buf_a, n), Send)
    buf_b, m = load_net(bytes(buf_a[:HEADROOM + n]))
    assert typed(host_b.from_net(buf_b, m, OWN_PUBLIC)) == typed(Dropped(Drop.TTL_EXPIRED))


def test_pair_b_refuses_what_a_sends_from_an_unknown_address() -> None:
    host_a, host_b = hosts()
    buf_a, n = load_tun(inner())
    assert isinstance(host_a.from_tun(buf_a, n), Send)
    buf_b, m = load_net(bytes(buf_a[:HEADROOM + n]))
    assert typed(host_b.from_net(buf_b, m, "192.168.0.66")) == typed(Dropped(Drop.NOT_PEER))


def test_pair_vni_mismatch() -> None:
    host_a, _ = hosts(vni=1)
    _, host_b = hosts(vni=2)
    buf_a, n = load_tun(inner())
    assert isinstance(host_a.from_tun(buf_a, n), Send)
    buf_b, m = load_net(bytes(buf_a[:HEADROOM + n]))
    assert typed(host_b.from_net(buf_b, m, OWN_PUBLIC)) == typed(Dropped(Drop.WRONG_VNI))


def test_pair_arp_answer_is_not_answered_again() -> None:
    """B's answer to a request, fed back to a codec, is a reply: dropped, no ping-pong."""
    host_a, host_b = hosts()
    buf, n = load_net(kernel_frame(arp_request(target="10.5.2.0", sender_ip=OWN_VTEP,
                                               sender_mac=OWN_MAC),
                                   dst="ff:ff:ff:ff:ff:ff", src=OWN_MAC))
    verdict = host_b.from_net(buf, n, OWN_PUBLIC)
    assert isinstance(verdict, Answer) and verdict.addr == (OWN_PUBLIC, VXLAN_PORT)
    frame = verdict.frame
    buf, n = load_net(frame)
    assert typed(host_a.from_net(buf, n, PUBLIC_B)) == typed(Dropped(Drop.NOT_FOR_US))


# --- the peer table ---------------------------------------------------------------------


def sends_to(codec: VXLANCodec, dst: str) -> tuple[Any, bytes]:
    """from_tun's route for a packet to `dst` (None if dropped) and the header written."""
    buf, n = load_tun(inner(dst=dst))
    verdict = codec.from_tun(buf, n)
    return (verdict.addr if isinstance(verdict, Send) else None), bytes(buf[:HEADROOM])


def accepts_from(codec: VXLANCodec, sender: str) -> bool:
    buf, n = load_net(kernel_frame(inbound()))
    verdict = codec.from_net(buf, n, sender)
    assert outcome(verdict) in {(Write, Drop.NONE), (Dropped, Drop.NOT_PEER)}
    return isinstance(verdict, Write)


def test_two_subnets_of_one_public_ip() -> None:
    codec = make_codec(peers=((PEER_B, PUBLIC_B, MAC_B), (PEER_C, PUBLIC_B, MAC_C)))
    assert sends_to(codec, "10.5.3.1")[0] == (PUBLIC_B, VXLAN_PORT)

    codec.remove_peer(PEER_B)
    assert accepts_from(codec, PUBLIC_B)
    assert sends_to(codec, "10.5.2.9")[0] is None
    route, header = sends_to(codec, "10.5.3.1")
    assert route == (PUBLIC_B, VXLAN_PORT)
    assert Ether(header[8:]).dst == MAC_C

    codec.remove_peer(PEER_C)
    assert not accepts_from(codec, PUBLIC_B)
    assert sends_to(codec, "10.5.3.1")[0] is None


def test_remove_peer_stops_both_directions() -> None:
    codec = make_codec()
    codec.remove_peer(PEER_B)
    assert not accepts_from(codec, PUBLIC_B)
    assert accepts_from(codec, PUBLIC_C)
    assert sends_to(codec, "10.5.2.9")[0] is None
    assert sends_to(codec, "10.5.3.9")[0] == (PUBLIC_C, VXLAN_PORT)


@pytest.mark.parametrize("subnet", ["10.5.2.0/25", "10.5.2.0/23", "10.5.0.0/16", "10.5.2.7/32"])
def test_add_peer_refuses_another_prefix_length(subnet: str) -> None:
    codec = make_codec(peers=())
    assert not codec.add_peer(IPv4Network(subnet), IPv4Address(PUBLIC_B), parse_mac(MAC_B))
    assert not accepts_from(codec, PUBLIC_B)
    assert sends_to(codec, "10.5.2.0")[0] is None


def test_add_peer_twice_is_idempotent() -> None:
    codec = make_codec(peers=())
    for _ in range(3):
        assert codec.add_peer(PEER_B, IPv4Address(PUBLIC_B), parse_mac(MAC_B))
    assert accepts_from(codec, PUBLIC_B)
    codec.remove_peer(PEER_B)
    assert not accepts_from(codec, PUBLIC_B)
    assert sends_to(codec, "10.5.2.9")[0] is None


def test_lease_moving_to_another_public_ip_and_mac() -> None:
    codec = make_codec()
    moved_ip, moved_mac = "192.168.0.9", "aa:bb:cc:dd:ee:02"
    assert codec.add_peer(PEER_B, IPv4Address(moved_ip), parse_mac(moved_mac))
    assert not accepts_from(codec, PUBLIC_B)
    assert accepts_from(codec, moved_ip)
    route, header = sends_to(codec, "10.5.2.9")
    assert route == (moved_ip, VXLAN_PORT)
    assert Ether(header[8:]).dst == moved_mac
    codec.remove_peer(PEER_B)
    assert not accepts_from(codec, moved_ip)


def test_remove_unknown_peer_is_a_no_op() -> None:
    codec = make_codec()
    codec.remove_peer(IPv4Network("10.5.9.0/24"))
    codec.remove_peer(IPv4Network("10.5.4.0/24"))
    assert accepts_from(codec, PUBLIC_B)
    assert accepts_from(codec, PUBLIC_C)
    assert sends_to(codec, "10.5.2.9")[0] == (PUBLIC_B, VXLAN_PORT)


@pytest.mark.parametrize("subnet", ["10.5.2.0/25", "10.5.2.0/23", "10.5.2.0/32"])
def test_remove_peer_of_another_prefix_length_is_a_no_op(subnet: str) -> None:
    """add_peer refuses these, so they are never peers: removing one leaves 10.5.2.0/24."""
    codec = make_codec()
    codec.remove_peer(IPv4Network(subnet))
    assert accepts_from(codec, PUBLIC_B)
    assert sends_to(codec, "10.5.2.9")[0] == (PUBLIC_B, VXLAN_PORT)
