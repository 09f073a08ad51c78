"""The packet engine on real kernel sockets (loopback, no namespace needed): with GSO and GRO
on or off, a plain peer sees one ordinary datagram per packet, byte for byte, in order.

A SOCK_SEQPACKET socketpair stands in for the TUN: like a TUN, every read and write is
exactly one packet.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

import pytest
from scapy.layers.inet import IP, TCP

from backends._codec import Send, Verdict
from backends._datapath import Engine, PacketEngine, open_engine
from backends.udp import UDPCodec
from tests.segments import segment_tcp4
from tun.offload import GSO_TCPV4, NEEDS_CSUM, PLAIN_HDR, VNET_HDR
from tun.packet import build_ipv4, decrement_ttl

pytestmark = pytest.mark.usefixtures("engine")  # each test with both engines


@pytest.fixture
def engine_name(engine: str) -> str:
    return engine


@dataclass
class Rig:
    kernel: socket.socket  # our end of the fake TUN: what the kernel would write and read
    tun: socket.socket  # the engine's end
    sock: socket.socket  # the engine's UDP socket
    peer: socket.socket  # a plain UDP peer (no GSO, no GRO)
    codec: UDPCodec

    def engine(self, offload: bool, vnet_hdr: bool = False) -> Engine:
        """The engine FLANNELD_ENGINE picks (the `engine` fixture sets it)."""
        return open_engine(self.tun.fileno(), self.sock, self.codec, offload=offload,
                           vnet_hdr=vnet_hdr)


SO_SNDBUFFORCE = 32


def fake_tun() -> tuple[socket.socket, socket.socket]:
    """(kernel side, engine side); big send buffers so a whole burst can be queued."""
    kernel, tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (kernel, tun):
        end.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
    tun.setblocking(False)
    kernel.settimeout(5)
    return kernel, tun


@pytest.fixture
def rig() -> Iterator[Rig]:
    kernel, tun = fake_tun()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    codec = UDPCodec(IPv4Network("10.5.1.0/24"), 24, peer.getsockname()[1], 1472)
    codec.add_peer(IPv4Network("10.5.2.0/24"), IPv4Address("127.0.0.1"))
    yield Rig(kernel, tun, sock, peer, codec)
    for item in (kernel, tun, sock, peer):
        item.close()


def packet(size: int, seq: int, dst: str) -> bytes:
    rng = random.Random(seq)
    body = seq.to_bytes(4, "big") + bytes(rng.randrange(256) for _ in range(size - 24))
    return build_ipv4(int(IPv4Address("10.5.9.7")), int(IPv4Address(dst)), 17, body, ttl=64)


def one_hop(data: bytes) -> bytes:
    """What a hop through the codec does: TTL - 1 and the header checksum with it."""
    copy = bytearray(data)
    assert decrement_ttl(copy)
    return bytes(copy)


@pytest.mark.parametrize("offload", [True, False])
async def test_a_plain_peer_receives_ordinary_datagrams(rig: Rig, offload: bool) -> None:
    sizes = [1472] * 50 + [600] + [1472] * 20 + [1000, 1000, 90] + [1472] * 3
    sent = [packet(size, seq, "10.5.2.7") for seq, size in enumerate(sizes)]
    for data in sent:  # all queued before the engine looks: one burst, what GSO batches
        rig.kernel.send(data)
    engine = rig.engine(offload)
    engine.start()
    try:
        received = [await asyncio.to_thread(rig.peer.recv, 65536) for _ in sent]
    finally:
        engine.stop()
    assert received == [one_hop(data) for data in sent]
    counters = engine.counters()
    assert counters["tx_packets"] == len(sent)
    if offload:  # 50 + 20 + 2 + 3 same-size runs: a handful of sendmsg calls, not 77
        assert 1 <= counters["gso_sends"] <= 8
        assert counters["gso_segments"] >= 70
    else:
        assert counters["gso_sends"] == 0


async def test_a_flood_of_small_packets_leaves_in_gso_sends_and_a_lone_one_at_once(
        rig: Rig, engine_name: str) -> None:
    """200 packets of 92 bytes queued in one burst (what `iperf3 -u -l 64` makes) leave in
    4 GSO sends of up to 64 ordinary datagrams (the Python engine sends the first at once,
    not knowing yet whether more follow; the native one reads on until the TUN is empty);
    a ping on its own leaves at once too."""
    flood = [packet(92, seq, "10.5.2.7") for seq in range(200)]
    for data in flood:
        rig.kernel.send(data)
    engine = rig.engine(offload=True)
    engine.start()
    try:
        received = [await asyncio.to_thread(rig.peer.recv, 65536) for _ in flood]
        assert received == [one_hop(data) for data in flood]
        counters = engine.counters()
        assert (counters["gso_sends"], counters["gso_segments"]) == \
            (4, 199 if engine_name == "python" else 200)
        ping = packet(84, 999, "10.5.2.7")
        rig.kernel.send(ping)
        assert await asyncio.to_thread(rig.peer.recv, 65536) == one_hop(ping)
        assert engine.counters()["gso_sends"] == 4  # the ping went on its own
    finally:
        engine.stop()
    assert engine.counters()["tx_packets"] == 201


@pytest.mark.parametrize("offload", [True, False])
async def test_plain_datagrams_reach_the_tun_intact(rig: Rig, offload: bool) -> None:
    sizes = [1472] * 40 + [77] + [1472] * 10
    sent = [packet(size, seq, "10.5.1.9") for seq, size in enumerate(sizes)]
    for data in sent:
        rig.peer.sendto(data, rig.sock.getsockname())
    engine = rig.engine(offload)
    engine.start()
    try:
        written = [await asyncio.to_thread(rig.kernel.recv, 65536) for _ in sent]
    finally:
        engine.stop()
    assert written == [one_hop(data) for data in sent]
    assert engine.counters()["rx_packets"] == len(sent)


async def test_gso_batches_are_received_as_gro_batches_and_split_exactly(rig: Rig) -> None:
    """Engine to engine, both with offloads: what leaves as one GSO send arrives intact."""
    receiver_kernel, receiver_tun = fake_tun()
    rig.peer.close()
    peer_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer_sock.bind(("127.0.0.1", rig.codec.port))
    peer_sock.setblocking(False)
    receiver_codec = UDPCodec(IPv4Network("10.5.2.0/24"), 24, 0, 1472)
    receiver_codec.add_peer(IPv4Network("10.5.1.0/24"), IPv4Address("127.0.0.1"))
    receiver = open_engine(receiver_tun.fileno(), peer_sock, receiver_codec, offload=True)
    sender = rig.engine(offload=True)
    sent = [packet(1472, seq, "10.5.2.7") for seq in range(60)] + [packet(333, 60, "10.5.2.7")]
    for data in sent:
        rig.kernel.send(data)
    receiver.start()
    sender.start()
    try:
        written = [await asyncio.to_thread(receiver_kernel.recv, 65536) for _ in sent]
    finally:
        sender.stop()
        receiver.stop()
        for item in (receiver_kernel, receiver_tun, peer_sock):
            item.close()
    assert written == [one_hop(one_hop(data)) for data in sent]
    assert sender.counters()["gso_sends"] >= 1
    assert receiver.counters()["gro_batches"] >= 1


def super_packet(size: int, seq: int, sport: int, flags: str = "A",
                 ip_flags: str = "DF") -> bytes:
    """A TCP super-packet as a TUN with TSO hands it over (scapy builds it)."""
    payload = random.Random(seq).randbytes(size)
    return bytes(IP(src="10.5.1.9", dst="10.5.2.7", ttl=64, flags=ip_flags) / TCP(
        sport=sport, dport=5201, seq=seq, ack=1, flags=flags,
        options=[("Timestamp", (seq, 1))]) / payload)


async def test_a_burst_of_super_packets_is_cut_together_in_order(rig: Rig,
                                                                 engine_name: str) -> None:
    """Super-packets read in one burst go out cut as each would be alone and in the order
    read, a ping among them included; those that continue each other's shape share a
    numpy pass (a ping, a short last segment, or another header shape ends one)."""
    gso = 1000
    burst = [super_packet(3000, 1000, 4000), super_packet(3000, 4000, 4000, "PA"), None,
             super_packet(2500, 7000, 4000), super_packet(4000, 50, 4001),
             super_packet(2000, 4050, 4001, ip_flags="DF+evil")]
    ping = packet(84, 999, "10.5.2.7")
    expected: list[bytes] = []
    for data in burst:
        if data is None:
            rig.kernel.send(PLAIN_HDR + ping)
            expected.append(one_hop(ping))
            continue
        hl = 20 + (data[32] >> 4) * 4
        rig.kernel.send(VNET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, hl, gso, 20, 16) + data)
        out = bytearray(65536)
        cut = segment_tcp4(memoryview(one_hop(data)), len(data), gso, b"", out)
        assert cut is not None
        expected += [bytes(out[at:min(at + cut.stride, cut.used)])
                     for at in range(0, cut.used, cut.stride)]
    engine = rig.engine(offload=True, vnet_hdr=True)
    engine.start()
    try:
        received = [await asyncio.to_thread(rig.peer.recv, 65536) for _ in expected]
    finally:
        engine.stop()
    assert received == expected
    counters = engine.counters()
    assert (counters["tso_packets"], counters["tso_segments"]) == (5, 3 + 3 + 3 + 4 + 2)
    # Python: [first two] | ping | [third, short last] | [fourth] | [fifth: another IP flag
    # bit]; native: each one alone
    assert counters["tso_cuts"] == (4 if engine_name == "python" else 5)
    assert counters["drop_malformed"] == 0


class FlowSpread(UDPCodec):
    """The udp codec, but each TCP flow's source port picks the socket, as the userspace
    VXLAN plane spreads flows over source ports."""

    def from_tun(self, buf: bytearray | memoryview, n: int) -> Verdict:
        verdict = super().from_tun(buf, n)
        if isinstance(verdict, Send) and n >= 22:  # the flow picks the sending socket
            return Send(verdict.addr, (buf[20] << 8) | buf[21])
        return verdict


async def test_super_packets_of_flows_on_different_sockets_share_one_cut(rig: Rig) -> None:
    """Two flows, each on its own socket (source port), interleaved in one burst: all five
    super-packets are cut in one pass, and each run of one flow leaves in its own GSO send
    from its own socket, every segment as it would be cut alone, in order."""
    gso = 1000
    burst = [super_packet(3000, 1000, 4000), super_packet(3000, 4000, 4000),
             super_packet(3000, 50, 4001), super_packet(3000, 7000, 4000),
             super_packet(3000, 3050, 4001)]
    expected: dict[int, list[bytes]] = {4000: [], 4001: []}
    for data in burst:
        rig.kernel.send(VNET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, 52, gso, 20, 16) + data)
        out = bytearray(65536)
        cut = segment_tcp4(memoryview(one_hop(data)), len(data), gso, b"", out)
        assert cut is not None
        expected[int.from_bytes(data[20:22], "big")] += [
            bytes(out[at:min(at + cut.stride, cut.used)]) for at in range(0, cut.used, cut.stride)]
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for sender in senders:
        sender.bind(("127.0.0.1", 0))
        sender.setblocking(False)
    ports = {4000: senders[0].getsockname()[1], 4001: senders[1].getsockname()[1]}
    codec = FlowSpread(IPv4Network("10.5.1.0/24"), 24, rig.peer.getsockname()[1], 1472)
    codec.add_peer(IPv4Network("10.5.2.0/24"), IPv4Address("127.0.0.1"))
    engine = PacketEngine(rig.tun.fileno(), rig.sock, codec, offload=True, senders=senders,
                          vnet_hdr=True)
    engine.start()
    try:
        received = [await asyncio.to_thread(rig.peer.recvfrom, 65536) for _ in range(15)]
    finally:
        engine.stop()
        for sender in senders:
            sender.close()
    by_port: dict[int, list[bytes]] = {}
    for data, (_, port) in received:
        by_port.setdefault(port, []).append(data)
    assert {flow: by_port.get(port) for flow, port in ports.items()} == expected
    counters = engine.counters()
    assert (counters["tso_cuts"], counters["tso_packets"], counters["gso_sends"]) == (1, 5, 4)
    assert counters["drop_malformed"] == 0
