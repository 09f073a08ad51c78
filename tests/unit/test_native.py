"""The native fast path (backends._fastpath) against the Python path, its specification.

On the fuzz corpus and on random inputs (hypothesis, derandomized), the two must agree byte
for byte: every datagram sent (its sender socket, destination and bytes), every TUN write
(virtio-net header included), every verdict and every counter that does not describe
batching. "The native path" is what the C code does plus what it hands to the Python codec
as a slow packet (ICMP errors, ARP, odd super-packets): those must come back untouched and
then meet exactly the Python engine's code, as backends/_datapath.py's NativeEngine does.

Both sides run their real code: the C entry points `from_tun`, `from_net`, `tun_read` and
`deliver` call the same functions as the native threads, with their output captured; the
Python engine runs unchanged over a socketpair (its TUN) and sockets that record what the
kernel would put on the wire instead of sending it.
"""

from __future__ import annotations

import importlib
import random
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from backends._codec import (
    Answer,
    Drop,
    Dropped,
    NativeCodec,
    Reply,
    Send,
    SendMany,
    Write,
)
from backends._datapath import SOL_UDP, UDP_SEGMENT, PacketEngine
from backends.udp import UDPCodec
from backends.vxlan import VXLANCodec
from tests.codecs import MAC_B, OWN_MAC, PUBLIC_B, PUBLIC_C, make_udp_codec, make_vxlan_codec
from tests.segments import segment_tcp4
from tests.unit.test_fuzz import (
    FRAME_CORPUS,
    FRAMES,
    INBOUND,
    OUTBOUND,
    PACKET_CORPUS,
    VXLAN_HOT,
    mutated,
    swap_addresses,
    vxlan_frame,
)
from tun.offload import GSO_ECN, GSO_TCPV4, NEEDS_CSUM, PLAIN_HDR, VNET_HDR
from tun.vxlan import HEADROOM

native: Any = importlib.import_module("backends._fastpath")  # built by `pip install`

DIFF: Final = settings(max_examples=600, derandomize=True, deadline=None, database=None,
                       suppress_health_check=[HealthCheck.too_slow])
SLACK: Final = 128  # the engines' buffers are larger than any packet
SOURCES: Final = (PUBLIC_B, PUBLIC_C, "192.168.0.1", "10.5.2.9", "0.0.0.0")
SENDERS: Final = 3  # sockets the VXLAN plane spreads flows over, in these tests
# what the counters say about batching (how many sends, passes, batches) differs by design
BATCHING: Final = frozenset({"gso_sends", "gso_segments", "gro_batches", "gro_segments",
                             "tso_cuts", "slow_packets", "engine_native", "offload_gso",
                             "offload_gro", "offload_tun"})

Factory = Callable[[], UDPCodec | VXLANCodec]
CODECS: Final[dict[str, Factory]] = {"udp": make_udp_codec, "vxlan": make_vxlan_codec}


def twin(codec: NativeCodec) -> Any:
    """The native codec for `codec`, its peer table mirrored."""
    spec = codec.native_spec()
    built = native.Codec(int(spec.kind), spec.own_net, spec.subnet_len, spec.mtu, spec.vni,
                         spec.own_mac)
    codec.table.mirror(built)
    return built


# --- the Python path, its output recorded -------------------------------------------------


class RecordingSocket(socket.socket):
    """A UDP socket that records what the kernel would put on the wire instead of sending."""

    def __init__(self, index: int, sent: list[tuple[int, tuple[str, int], bytes]]) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.index, self.sent = index, sent

    def sendto(self, data: Any, address: Any, *_: Any) -> int:
        self.sent.append((self.index, tuple(address), bytes(data)))
        return len(data)

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0,
                address: Any = None) -> int:
        data = b"".join(bytes(b) for b in buffers)
        size = len(data)
        for level, kind, value in ancdata:
            if (level, kind) == (SOL_UDP, UDP_SEGMENT):
                size = struct.unpack("=H", value)[0]
        for at in range(0, len(data), size):
            self.sent.append((self.index, tuple(address), data[at:at + size]))
        return len(data)


@dataclass
class Output:
    """What a path did with its input."""

    sent: list[tuple[int, tuple[str, int], bytes]] = field(default_factory=list)
    written: list[bytes] = field(default_factory=list)  # TUN writes, virtio-net header first
    counters: dict[str, int] = field(default_factory=dict)


@contextmanager
def python_engine(codec: UDPCodec | VXLANCodec, vnet_hdr: bool,
                  out: Output) -> Iterator[PacketEngine]:
    """A PacketEngine that is never started: its TUN a socketpair, its sockets recording."""
    kernel, tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (kernel, tun):
        end.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE: a burst fits
    tun.setblocking(False)
    kernel.setblocking(False)
    count = SENDERS if isinstance(codec, VXLANCodec) else 1
    sockets = [RecordingSocket(i, out.sent) for i in range(count)]
    listener = RecordingSocket(0, out.sent)
    try:
        yield PacketEngine(tun.fileno(), listener, codec, offload=True, senders=sockets,
                           vnet_hdr=vnet_hdr)
        while True:
            try:
                data = kernel.recv(1 << 17)
            except BlockingIOError:
                break
            out.written.append(data)
    finally:
        for item in (kernel, tun, listener, *sockets):
            item.close()


def semantic(counters: dict[str, Any]) -> dict[str, int]:
    return {key: value for key, value in counters.items()
            if key not in BATCHING and not key.startswith("offload")}


def python_tun_read(kind: str, meta: bytes, packet: bytes) -> Output:
    out = Output()
    codec = CODECS[kind]()
    with python_engine(codec, True, out) as engine:
        engine.slow_tun(meta, packet)
    out.counters = semantic(dict(engine.counters()))
    return out


def native_counters(counters: dict[str, Any]) -> dict[str, int]:
    """The native counters named as the Python engine names them."""
    drops = counters.pop("drops")
    named = {key: value for key, value in counters.items()}
    for reason in Drop:
        if reason is not Drop.NONE:
            named[f"drop_{reason.name.lower()}"] = drops[reason]
    return named


def merged(native_counts: dict[str, int], python_counts: dict[str, int]) -> dict[str, int]:
    total = dict(python_counts)
    for key, value in native_counts.items():
        if key in total:
            total[key] += value
    return semantic(total)


def native_tun_read(kind: str, meta: bytes, packet: bytes) -> Output:
    """The native path: the C code, then the Python engine for what it hands over."""
    codec = CODECS[kind]()
    native_codec = twin(codec)
    h = codec.headroom
    buf = bytearray(h) + bytearray(packet) + bytearray(SLACK)
    senders = SENDERS if kind == "vxlan" else 1
    sends, writes, slow, counters = native_codec.tun_read(meta, buf, len(packet), senders, True,
                                                          True)
    out = Output()
    for sock, ip, port, seg, count, data in sends:
        assert len(data) <= seg * count and count >= 1
        for at in range(0, len(data), seg):
            out.sent.append((sock, (str(IPv4Address(ip)), port), data[at:at + seg]))
    assert writes == []  # nothing from the TUN goes back into it natively
    python_out = Output(sent=out.sent)
    with python_engine(CODECS[kind](), True, python_out) as engine:
        for what, slow_meta, data, _ in slow:
            assert what == native.SLOW_TUN
            assert (slow_meta, data) == (meta, packet)  # handed over untouched
            engine.slow_tun(slow_meta, data)
    out.written = python_out.written
    out.counters = merged(native_counters(counters), dict(engine.counters()))
    return out


def python_deliver(kind: str, group: bytes, segment: int, src: str) -> Output:
    out = Output()
    codec = CODECS[kind]()
    with python_engine(codec, True, out) as engine:
        engine._net_buf[:len(group)] = group
        engine._deliver(len(group), segment, src)
    out.counters = semantic(dict(engine.counters()))
    return out


def native_deliver(kind: str, group: bytes, segment: int, src: str) -> Output:
    codec = CODECS[kind]()
    native_codec = twin(codec)
    rows = -(-len(group) // segment)
    buf = bytearray(group) + bytearray(rows * segment - len(group) + SLACK)
    sends, writes, slow, counters = native_codec.deliver(buf, len(group), segment,
                                                         int(IPv4Address(src)), True)
    assert sends == []
    out = Output(written=list(writes))
    with python_engine(CODECS[kind](), True, out) as engine:
        for what, _, data, source in slow:
            assert what == native.SLOW_NET and source == int(IPv4Address(src))
            engine.slow_net(data, str(IPv4Address(source)))
    out.counters = merged(native_counters(counters), dict(engine.counters()))
    return out


def assert_same(python: Output, native_out: Output) -> None:
    assert native_out.sent == python.sent
    assert native_out.written == python.written
    assert native_out.counters == python.counters


# --- single decisions ---------------------------------------------------------------------

ACTIONS: Final = {Send: 0, Reply: 1, Dropped: 2, SendMany: 3, Write: 4, Answer: 5}


def check_from_tun(kind: str, packet: bytes) -> None:
    codec = CODECS[kind]()
    native_codec = twin(codec)
    h = codec.headroom
    original = bytearray(b"\x5a" * h) + bytearray(packet) + bytearray(b"\xa5" * SLACK)
    ours, theirs = bytearray(original), bytearray(original)
    action, reason, flow, ip, port = native_codec.from_tun(ours, len(packet))
    verdict = codec.from_tun(theirs, len(packet))
    if action == native.SLOW:  # the Python codec decides, on untouched bytes
        assert ours == original
        assert type(verdict) is not Send  # never a plain forward: that is the fast path's
        return
    assert action == ACTIONS[type(verdict)]
    match verdict:
        case Send(addr, verdict_flow):
            assert (str(IPv4Address(ip)), port, flow, reason) == (*addr, verdict_flow, 0)
        case Dropped(verdict_reason):
            assert reason == verdict_reason
    assert ours == theirs


def check_from_net(kind: str, datagram: bytes, src: str) -> None:
    codec = CODECS[kind]()
    native_codec = twin(codec)
    original = bytearray(datagram) + bytearray(b"\xa5" * SLACK)
    ours, theirs = bytearray(original), bytearray(original)
    action, reason, length, completed = native_codec.from_net(ours, len(datagram),
                                                              int(IPv4Address(src)))
    verdict = codec.from_net(theirs, len(datagram), src)
    if action == native.SLOW:  # ARP for the VTEP: the Python codec answers or drops it
        assert ours == original and kind == "vxlan"
        assert type(verdict) in (Answer, Dropped)
        return
    assert action == ACTIONS[type(verdict)]
    match verdict:
        case Write(verdict_length):
            assert length == verdict_length
        case Dropped(verdict_reason):
            assert reason == verdict_reason
    assert ours == theirs
    assert completed == getattr(codec, "checksums_completed", 0)


@DIFF
@given(st.sampled_from(sorted(CODECS)), st.one_of(st.binary(max_size=64), mutated(OUTBOUND)))
def test_from_tun_decides_as_the_python_codec(kind: str, packet: bytes) -> None:
    check_from_tun(kind, packet)


@DIFF
@given(st.one_of(st.binary(max_size=64), mutated(INBOUND)), st.sampled_from(SOURCES))
def test_udp_from_net_decides_as_the_python_codec(datagram: bytes, src: str) -> None:
    check_from_net("udp", datagram, src)


@DIFF
@given(st.one_of(st.binary(max_size=96), mutated(FRAMES, hot=VXLAN_HOT, ip_at=HEADROOM)),
       st.sampled_from(SOURCES))
def test_vxlan_from_net_decides_as_the_python_codec(datagram: bytes, src: str) -> None:
    check_from_net("vxlan", datagram, src)


@pytest.mark.parametrize("packet", [v for _, v in PACKET_CORPUS],
                         ids=[k for k, _ in PACKET_CORPUS])
def test_packet_corpus(packet: bytes) -> None:
    for kind in CODECS:
        check_from_tun(kind, swap_addresses(packet))
        check_from_tun(kind, packet)
    for src in (PUBLIC_B, "192.168.0.9"):
        check_from_net("udp", packet, src)
        check_from_net("vxlan", vxlan_frame(packet), src)


@pytest.mark.parametrize("frame", [v for _, v in FRAME_CORPUS], ids=[k for k, _ in FRAME_CORPUS])
def test_frame_corpus(frame: bytes) -> None:
    for src in (PUBLIC_B, PUBLIC_C, "192.168.0.9"):
        check_from_net("vxlan", frame, src)


def test_the_peer_table_follows_the_python_one() -> None:
    """Adds, moves and removals (5,000 peers, open addressing with deletions) leave the
    native table answering exactly as the Python one."""
    rng = random.Random(5)
    codec = make_udp_codec(peers=())
    native_codec = twin(codec)
    subnets = [f"10.{a}.{b}.0/24" for a in range(6, 26) for b in range(250)]
    live: dict[str, str] = {}
    for step in range(20000):
        subnet = rng.choice(subnets)
        if subnet in live and rng.random() < 0.5:
            codec.remove_peer(IPv4Network(subnet))
            del live[subnet]
        else:
            live[subnet] = f"192.0.2.{rng.randrange(1, 40)}"
            codec.add_peer(IPv4Network(subnet), IPv4Address(live[subnet]))
        if step % 2000 == 0 or step == 19999:
            assert len(native_codec) == len(codec.routes) == len(live)
            for probe in rng.sample(subnets, 300):
                packet = bytearray(bytes(IP(src="10.5.1.7", dst=probe.replace(".0/24", ".9"),
                                            ttl=9) / (b"x" * 4)))
                theirs = codec.from_tun(bytearray(packet), len(packet))
                action, _, _, ip, _ = native_codec.from_tun(bytearray(packet), len(packet))
                if probe in live:
                    assert action == 0 and str(IPv4Address(ip)) == live[probe]
                    assert type(theirs) is Send and theirs == Send((live[probe], codec.port))
                else:
                    assert action == native.SLOW and isinstance(theirs, Reply)
            for ip in {f"192.0.2.{i}" for i in range(1, 41)}:
                packet = bytearray(bytes(IP(src="10.5.9.9", dst="10.5.1.7") / b"y"))
                action = native_codec.from_net(packet, len(packet), int(IPv4Address(ip)))[0]
                assert (action != 2) == (ip in codec.peers)


# --- whole TUN reads: plain packets and super-packets -------------------------------------


def super_packet(payload: bytes, *, dst: str = "10.5.2.9", flags: str = "A", ident: int = 7,
                 df: bool = True, ttl: int = 64, seq: int = 1000, options: int = 0) -> bytes:
    tcp_options = [("Timestamp", (seq, 1))] if options == 1 else \
        [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b"")] if options == 2 else []
    return bytes(IP(src="10.5.1.7", dst=dst, id=ident, flags="DF" if df else 0, ttl=ttl,
                    chksum=0xDEAD) / TCP(sport=4000, dport=5201, seq=seq, ack=77,
                                         flags=flags, options=tcp_options, chksum=0xBEEF)
                 / payload)


@st.composite
def tun_reads(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(virtio-net header, packet): plain packets (the fuzz seeds, mutated) with an empty
    or random header, and TCP super-packets of every shape, sometimes mutated."""
    if draw(st.booleans()):
        packet = draw(st.one_of(st.binary(max_size=64), mutated(OUTBOUND)))
        meta = draw(st.sampled_from([PLAIN_HDR, None]))
        if meta is None:
            flags = draw(st.sampled_from([0, NEEDS_CSUM, 0xFF]))
            gso_type = draw(st.sampled_from([0, 0, 3, 4, GSO_ECN]))
            meta = VNET_HDR.pack(flags, gso_type, 0, 0, draw(st.integers(0, 80)),
                                 draw(st.sampled_from([6, 10, 16, 40, 2000])))
        return meta, packet
    mss = draw(st.sampled_from([1, 88, 536, 1000, 1448, 1460, 9000]))
    count = draw(st.integers(1, 70 if mss >= 536 else 4))
    last = draw(st.integers(1, mss))
    size = min((count - 1) * mss + last, 65535 - 100)
    payload = random.Random(draw(st.integers(0, 1 << 30))).randbytes(size)
    packet = super_packet(payload, dst=draw(st.sampled_from(["10.5.2.9", "10.5.3.1",
                                                             "10.9.9.9"])),
                          flags=draw(st.sampled_from(["A", "PA", "FPA", "CA", "CEPA", "SA"])),
                          ident=draw(st.integers(0, 0xFFFF)), df=draw(st.booleans()),
                          ttl=draw(st.sampled_from([1, 2, 64])),
                          seq=draw(st.integers(0, (1 << 32) - 1)),
                          options=draw(st.integers(0, 2)))
    hl = 20 + (packet[32] >> 4) * 4
    gso_type = GSO_TCPV4 | draw(st.sampled_from([0, GSO_ECN]))
    meta = VNET_HDR.pack(NEEDS_CSUM, gso_type, hl, mss, 20, 16)
    if draw(st.integers(0, 4)) == 0:
        edited = bytearray(packet)
        at = draw(st.integers(0, min(len(edited), 60) - 1))
        edited[at] = draw(st.integers(0, 255))
        packet = bytes(edited)
    return meta, packet


@DIFF
@given(st.sampled_from(sorted(CODECS)), tun_reads())
def test_a_tun_read_leaves_as_the_python_engine_sends_it(kind: str,
                                                         read: tuple[bytes, bytes]) -> None:
    meta, packet = read
    assert_same(python_tun_read(kind, meta, packet), native_tun_read(kind, meta, packet))


@pytest.mark.parametrize("kind", sorted(CODECS))
@pytest.mark.parametrize(("size", "mss"), [(64000, 0), (44 * 1410, 0), (1, 0), (5000, 536),
                                           (20000, 88), (65000, 1000), (3000, 2000)])
def test_super_packets_are_cut_as_the_python_engine_cuts_them(kind: str, size: int,
                                                              mss: int) -> None:
    """At the MSS the TUN's MTU gives (0), smaller ones (88-byte segments: more than the
    native path cuts, so to Python) and one too large for the MTU (dropped)."""
    mss = mss or CODECS[kind]().mtu - 40
    packet = super_packet(random.Random(size).randbytes(size), flags="PA")
    hl = 20 + (packet[32] >> 4) * 4
    meta = VNET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, hl, mss, 20, 16)
    python, native_out = python_tun_read(kind, meta, packet), native_tun_read(kind, meta, packet)
    assert_same(python, native_out)
    if mss + 40 <= CODECS[kind]().mtu:
        assert python.counters["tso_segments"] == -(-size // mss)
        assert len(python.sent) == -(-size // mss)
    else:
        assert python.counters["drop_oversized"] == -(-size // mss) and not python.sent


# --- whole received groups: GRO batches, joined or one by one -----------------------------


def inbound_stream(payload: bytes, mss: int, *, seq: int, flags: str, ttl: int,
                   df: bool, options: int) -> bytes:
    """A TCP super-packet from a peer's container to ours, to be cut into a GRO batch."""
    options_list = [("Timestamp", (seq, 1))] if options else []
    return bytes(IP(src="10.5.2.9", dst="10.5.1.7", id=99, flags="DF" if df else 0, ttl=ttl)
                 / TCP(sport=5201, dport=4000, seq=seq, ack=5, flags=flags,
                       options=options_list) / payload)


OUTER_HEADER: Final = bytes(VXLAN(flags=0x08, vni=1) / Ether(src=MAC_B, dst=OWN_MAC,
                                                            type=0x0800))


@st.composite
def groups(draw: st.DrawFn, kind: str) -> tuple[bytes, int, str]:
    """(datagrams back to back, segment size, source): a TCP stream cut as our peer's GSO
    sends it, with rows damaged, swapped or cut short; or single datagrams from the seeds."""
    src = draw(st.sampled_from(SOURCES[:3]))
    if draw(st.integers(0, 3)) == 0:
        if kind == "udp":
            datagram = draw(mutated(INBOUND))
        else:
            datagram = draw(mutated(FRAMES, hot=VXLAN_HOT, ip_at=HEADROOM))
        return datagram, max(1, len(datagram)), src
    mss = draw(st.sampled_from([536, 600, 601, 1000, 1448]))
    count = draw(st.integers(2, 44))
    last = draw(st.integers(1, mss))
    payload = random.Random(draw(st.integers(0, 1 << 30))).randbytes((count - 1) * mss + last)
    packet = inbound_stream(payload, mss, seq=draw(st.integers(0, (1 << 32) - 1)),
                            flags=draw(st.sampled_from(["A", "PA", "FA", "UA", "RA"])),
                            ttl=draw(st.sampled_from([1, 2, 64])), df=draw(st.booleans()),
                            options=draw(st.integers(0, 1)))
    prefix = OUTER_HEADER if kind == "vxlan" else b""
    out = bytearray(70000)
    cut = segment_tcp4(memoryview(packet), len(packet), mss, prefix, out)
    assert cut is not None
    rows = [bytes(out[at:min(at + cut.stride, cut.used)]) for at in range(0, cut.used,
                                                                          cut.stride)]
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.integers(0, 3))
        i = draw(st.integers(0, len(rows) - 1))
        row = bytearray(rows[i])
        if edit == 0 and row:  # a byte damaged (header or payload)
            at = draw(st.integers(0, len(row) - 1))
            row[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == 1 and len(rows) > 1:  # reordered
            j = draw(st.integers(0, len(rows) - 1))
            rows[i], rows[j] = rows[j], rows[i]
            continue
        elif edit == 2:  # a middle row cut short (its IP length still says full)
            row = row[:draw(st.integers(0, len(row)))]
        elif edit == 3:  # the outer header of one row differs
            row[0:1] = b"\x09"
        rows[i] = bytes(row)
    stride = cut.stride
    # a GRO batch holds equal rows but the last: pad the short ones with garbage
    body = b"".join(row.ljust(stride, b"\xee") for row in rows[:-1]) + rows[-1]
    return body, stride, src


@DIFF
@given(st.data())
def test_a_received_group_reaches_the_tun_as_the_python_engine_writes_it(
        data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(CODECS)), label="kind")
    group, segment, src = data.draw(groups(kind), label="group")
    python, native_out = python_deliver(kind, group, segment, src), \
        native_deliver(kind, group, segment, src)
    assert_same(python, native_out)


@pytest.mark.parametrize("kind", sorted(CODECS))
def test_a_clean_stream_is_joined_by_both(kind: str) -> None:
    payload = random.Random(1).randbytes(43 * 1448 + 100)
    packet = inbound_stream(payload, 1448, seq=(1 << 32) - 5000, flags="PA", ttl=64,
                            df=True, options=1)
    prefix = OUTER_HEADER if kind == "vxlan" else b""
    out = bytearray(70000)
    cut = segment_tcp4(memoryview(packet), len(packet), 1448, prefix, out)
    assert cut is not None
    group = bytes(out[:cut.used])
    python, native_out = python_deliver(kind, group, cut.stride, PUBLIC_B), \
        native_deliver(kind, group, cut.stride, PUBLIC_B)
    assert_same(python, native_out)
    assert python.counters["joined_segments"] == 44 and len(python.written) == 1
    header = VNET_HDR.unpack(python.written[0][:10])
    assert header[:2] == (NEEDS_CSUM, GSO_TCPV4) and header[3] == 1448
