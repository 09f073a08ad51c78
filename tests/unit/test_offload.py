"""Tests for tun/offload.py: TCP super-packets cut into segments (what a NIC's TSO does), the
segments of a UDP GRO batch joined back into one (what LRO does), and checksums finished
(CHECKSUM_PARTIAL), for a TUN device opened with IFF_VNET_HDR.

Byte vectors built with scapy, which is also the independent second opinion:
every segment cut and every packet joined is parsed by scapy, its checksums deleted and
recomputed, and compared byte for byte. The IPv4 ID follows RFC 6864 4.1 (the same ID in
every segment with DF set, as Linux's fixed-ID GSO does; +1 per segment without, wrapping
at 16 bits), sequence numbers wrap at 2**32 (RFC 9293 3.4), checksums are RFC 1071 and
RFC 768 (a computed UDP zero goes out as 0xFFFF), the virtio-net header is
the kernel's struct virtio_net_hdr.

plan_runs' precondition (the bytes after n up to a whole segment are zero) is kept by
`batch()`, which also puts garbage after the padding: nothing past the last row is read.
Each plan_runs case states the exact runs expected; where the contract allows two answers
(a conservative planner may leave a joinable run alone) both are listed, and every run
returned is checked row by row with scapy and joined against a packet scapy built.
"""

from __future__ import annotations

import random
import struct
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, IPOption
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

from tests.segments import segment_tcp4
from tun.offload import (
    ACK,
    CWR,
    FIN,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    MAX_IP_PACKET,
    NEEDS_CSUM,
    PLAIN_HDR,
    PSH,
    RST,
    SYN,
    TCP_CSUM_OFFSET,
    URG,
    VNET_HDR,
    VNET_HDR_LEN,
    Run,
    Segmented,
    _one_stream,
    finish_checksum,
    join_run,
    plan_runs,
    segment_tcp4_many,
)

SEED: Final = 6864
SRC: Final = "10.5.1.7"
DST: Final = "10.5.2.9"
MAC_A: Final = "c6:d2:32:6f:8f:44"
MAC_B: Final = "7e:3a:01:02:03:04"
VNI: Final = 1
SEQ: Final = 1000
IDENT: Final = 0x4242
ACK_NUMBER: Final = 0x01020304
WRAP: Final = 1 << 32

# the vxlan backend's headroom: VXLAN header (RFC 7348) + inner Ethernet; the udp one has none
OUTER: Final = bytes(VXLAN(flags=0x08, vni=VNI) / Ether(src=MAC_A, dst=MAC_B, type=0x0800))
PREFIXES: Final = {"udp": b"", "vxlan": OUTER}

OPTIONS: Final[dict[str, list[tuple[str, Any]]]] = {
    "none": [],
    "timestamps": [("NOP", None), ("NOP", None), ("Timestamp", (0x01020304, 0x0A0B0C0D))],
    "mss-sack": [("MSS", 1460), ("NOP", None), ("NOP", None), ("SAckOK", b"")],
    "all": [("MSS", 1460), ("NOP", None), ("WScale", 7), ("NOP", None), ("NOP", None),
            ("SAckOK", b""), ("Timestamp", (0xFFFFFFFF, 1)), ("NOP", None), ("NOP", None)],
}
OPTION_LEN: Final = {"none": 0, "timestamps": 12, "mss-sack": 8, "all": 24}

MSS: Final = 601  # odd on purpose: odd rows take the other summing path
ROWS: Final = 6
LAST: Final = 257  # the last datagram of a batch is shorter, and odd

ROUTER_ALERT: Final = IPOption(b"\x94\x04\x00\x00")  # RFC 2113: IHL 6

ROUND_TRIPS: Final = settings(max_examples=120, derandomize=True, deadline=None, database=None,
                              suppress_health_check=[HealthCheck.too_slow])


# --- packets, built with scapy ----------------------------------------------------------


def tcp_packet(payload: bytes, *, seq: int = SEQ, flags: str = "A", ident: int = IDENT,
               ip_flags: str | int = "DF", options: str = "none", ttl: int = 63,
               sport: int = 4000, tcp_chksum: int | None = None, ip_options: bool = False,
               **ip_fields: Any) -> bytes:
    """An IPv4/TCP packet with both checksums right (unless given)."""
    ip = IP(src=SRC, dst=DST, id=ident, flags=ip_flags, ttl=ttl,
            options=[ROUTER_ALERT] if ip_options else [], **ip_fields)
    tcp = TCP(sport=sport, dport=80, seq=seq, ack=ACK_NUMBER, flags=flags, window=501,
              options=OPTIONS[options], chksum=tcp_chksum)
    return bytes(ip / tcp / payload)


def super_packet(payload: bytes, **fields: Any) -> bytes:
    """A super-packet as a TUN with TSO hands it over: one header for the payload of many
    segments, its checksum fields not meaningful (here: garbage)."""
    return tcp_packet(payload, chksum=0xDEAD, tcp_chksum=0xBEEF, **fields)


def payload_of(size: int, seed: int = SEED) -> bytes:
    return random.Random(seed).randbytes(size)


def header_len(packet: bytes) -> int:
    """IPv4 (no options) + TCP header length."""
    return 20 + (packet[32] >> 4) * 4


def scapy_valid(packet: bytes) -> bytes:
    """`packet` with the IPv4 and the TCP/UDP checksums scapy computes (deleted, rebuilt)."""
    parsed: Any = IP(packet)
    del parsed.chksum
    del parsed.payload.chksum
    return bytes(parsed)


def pseudo_sum(packet: bytes) -> int:
    """The pseudo-header (addresses, protocol, transport length; RFC 9293 3.1, RFC 768)
    summed and folded but not inverted: what CHECKSUM_PARTIAL leaves in the field."""
    ihl = (packet[0] & 0x0F) * 4
    total: int = sum(struct.unpack("!4H", packet[12:20])) + packet[9]
    total += int.from_bytes(packet[2:4], "big") - ihl
    return (total - 1) % 0xFFFF + 1


def flags_of(packet: bytes) -> int:
    return int(IP(packet)[TCP].flags)


# --- segmentation -----------------------------------------------------------------------


def cut(packet: bytes, gso_size: int, prefix: bytes = b"") -> tuple[Segmented, bytearray]:
    """segment_tcp4 into a buffer of exactly the room it needs (plus a sentinel tail that
    must stay untouched), the packet given in a longer view (n ends it), left unchanged."""
    hl = header_len(packet)
    count = -(-(len(packet) - hl) // gso_size)
    room = count * (len(prefix) + hl + gso_size)
    out = bytearray(b"\xaa" * (room + 64))
    source = bytearray(packet + b"\xee" * 7)
    result = segment_tcp4(memoryview(source), len(packet), gso_size, memoryview(prefix), out)
    assert result is not None
    assert out[room:] == b"\xaa" * 64
    assert source == packet + b"\xee" * 7
    return result, out


def rows_of(result: Segmented, out: bytearray | bytes) -> list[bytes]:
    return [bytes(out[i * result.stride:min((i + 1) * result.stride, result.used)])
            for i in range(result.count)]


def expected_flags(flags: int, i: int, count: int) -> int:
    """TSO: CWR on the first segment only, FIN and PSH on the last only, the rest on all."""
    if count == 1:
        return flags
    kept = flags & ~(FIN | PSH | CWR)
    if i == 0:
        kept |= flags & CWR
    if i == count - 1:
        kept |= flags & (FIN | PSH)
    return kept


def assert_segments(packet: bytes, gso_size: int, prefix: bytes, result: Segmented,
                    rows: list[bytes]) -> None:
    """Every row is prefix + a segment scapy accepts, each field as TSO sets it, the rest
    of the header copied, and the payloads concatenate to the super-packet's."""
    h, hl = len(prefix), header_len(packet)
    payload = packet[hl:]
    chunks = [payload[at:at + gso_size] for at in range(0, len(payload), gso_size)]
    count = len(chunks)
    assert (result.count, result.stride) == (count, h + hl + gso_size)
    assert result.used == (count - 1) * result.stride + h + hl + len(chunks[-1])
    ident, seq, flags = IP(packet).id, IP(packet)[TCP].seq, flags_of(packet)
    fixed_id = bool(packet[6] & 0x40)
    for i, (row, chunk) in enumerate(zip(rows, chunks, strict=True)):
        assert row[:h] == prefix
        segment = row[h:]
        assert segment[hl:] == chunk
        assert int.from_bytes(segment[2:4], "big") == len(segment) == hl + len(chunk)
        assert scapy_valid(segment) == segment  # both checksums as scapy computes them
        parsed: Any = IP(segment)
        assert parsed.id == (ident if fixed_id else (ident + i) & 0xFFFF)
        assert parsed[TCP].seq == (seq + i * gso_size) % WRAP
        assert int(parsed[TCP].flags) == expected_flags(flags, i, count)
        # the rest as in the super-packet: version/IHL, TOS, DF/offset, TTL, protocol,
        # addresses; ports, ack, data offset, window, urgent pointer, options
        assert segment[:2] == packet[:2]
        assert segment[6:10] == packet[6:10]
        assert segment[12:24] == packet[12:24]
        assert segment[28:33] == packet[28:33]
        assert segment[34:36] == packet[34:36]
        assert segment[38:hl] == packet[38:hl]
    assert b"".join(row[h + hl:] for row in rows) == payload


SIZES: Final = [  # (payload length, gso_size)
    pytest.param(4 * 1000, 1000, id="multiple"),
    pytest.param(3 * 1000 + 500, 1000, id="short-last"),
    pytest.param(1000, 1000, id="one-full"),
    pytest.param(300, 1000, id="smaller-than-gso"),
    pytest.param(5 * 1001 + 7, 1001, id="odd"),
    pytest.param(5, 1, id="one-byte-gso"),
]


@pytest.mark.parametrize("prefix", PREFIXES.values(), ids=PREFIXES.keys())
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize(("size", "gso_size"), SIZES)
def test_segments_agree_with_scapy(size: int, gso_size: int, options: str,
                                   prefix: bytes) -> None:
    packet = super_packet(payload_of(size), options=options, flags="PA")
    result, out = cut(packet, gso_size, prefix)
    assert_segments(packet, gso_size, prefix, result, rows_of(result, out))


def test_a_single_segment_shorter_than_gso_size_has_its_own_length() -> None:
    packet = super_packet(payload_of(300), flags="PA")
    result, out = cut(packet, 1000, b"")
    assert (result.count, result.used) == (1, len(packet))
    assert out[:result.used] == scapy_valid(packet)  # the super-packet itself, made valid


def test_ids_count_up_without_df_and_wrap() -> None:
    packet = super_packet(payload_of(3500), ident=0xFFFE, ip_flags=0)
    result, out = cut(packet, 1000, OUTER)
    rows = rows_of(result, out)
    assert [IP(row[len(OUTER):]).id for row in rows] == [0xFFFE, 0xFFFF, 0, 1]
    assert_segments(packet, 1000, OUTER, result, rows)


@pytest.mark.parametrize("ident", [0, IDENT, 0xFFFF])
def test_ids_stay_the_same_with_df(ident: int) -> None:
    packet = super_packet(payload_of(3500), ident=ident)
    result, out = cut(packet, 1000)
    rows = rows_of(result, out)
    assert [IP(row).id for row in rows] == [ident] * 4
    assert_segments(packet, 1000, b"", result, rows)


def test_sequence_numbers_wrap() -> None:
    packet = super_packet(payload_of(3999), seq=WRAP - 1500, options="timestamps")
    result, out = cut(packet, 1000)
    rows = rows_of(result, out)
    assert [IP(row)[TCP].seq for row in rows] == [WRAP - 1500, WRAP - 500, 500, 1500]
    assert_segments(packet, 1000, b"", result, rows)


@pytest.mark.parametrize(("flags", "expected"), [
    ("A", ["A", "A", "A"]),
    ("PA", ["A", "A", "PA"]),
    ("FA", ["A", "A", "FA"]),
    ("FPA", ["A", "A", "FPA"]),
    ("CA", ["CA", "A", "A"]),
    ("CEFPA", ["CEA", "EA", "EFPA"]),
])
def test_fin_and_psh_on_the_last_segment_cwr_on_the_first(flags: str,
                                                          expected: list[str]) -> None:
    packet = super_packet(payload_of(2500), flags=flags)
    result, out = cut(packet, 1000, OUTER)
    rows = rows_of(result, out)
    assert [flags_of(row[len(OUTER):]) for row in rows] == [
        int(TCP(flags=want).flags) for want in expected]
    assert_segments(packet, 1000, OUTER, result, rows)


def test_a_single_segment_keeps_all_its_flags() -> None:
    packet = super_packet(payload_of(1000), flags="CEFPA")
    result, out = cut(packet, 1000)
    assert result.count == 1
    assert flags_of(bytes(out[:result.used])) == int(TCP(flags="CEFPA").flags)
    assert_segments(packet, 1000, b"", result, rows_of(result, out))


def staged(packets: list[bytes], prefix: bytes, slot: int = 70_000) -> bytearray:
    """Super-packets as the engine stages a burst of TUN reads: packet j at j * slot, after
    its outer header; garbage in between."""
    stage = bytearray(b"\xee" * (slot * len(packets)))
    for j, packet in enumerate(packets):
        stage[j * slot:j * slot + len(prefix) + len(packet)] = prefix + packet
    return stage


def cut_alone(packets: list[bytes], gso_size: int, prefix: bytes) -> bytes:
    """Each super-packet cut on its own, the segments back to back."""
    out = b""
    for packet in packets:
        result, rows = cut(packet, gso_size, prefix)
        out += bytes(rows[:result.used])
    return out


BURSTS: Final = {  # super-packets of one burst: (payload size, fields) each
    "one-flow": [(3000, {"seq": SEQ, "options": "timestamps"}),
                 (3000, {"seq": SEQ + 3000, "options": "timestamps", "flags": "PA"}),
                 (2500, {"seq": SEQ + 6000, "options": "timestamps", "flags": "CEA"})],
    "wrapping": [(2000, {"seq": WRAP - 1000}), (2000, {"seq": WRAP + 1000 - WRAP}),
                 (999, {"seq": 3000, "flags": "FPA"})],
    "no-df-ids": [(3000, {"ident": 0xFFFE, "ip_flags": 0}),
                  (5000, {"ident": 7, "ip_flags": 0, "seq": SEQ + 3000}),
                  (1000, {"ident": 0xFFFF, "ip_flags": 0, "seq": SEQ + 8000})],
    "two-flows": [(4000, {"sport": 4000}), (2000, {"sport": 4001, "seq": 77}),
                  (4000, {"sport": 4000, "seq": SEQ + 4000}), (1, {"sport": 4001})],
    "single-rows": [(1000, {"flags": "PA"}), (1000, {"flags": "CEFPA", "seq": SEQ + 1000})],
}


@pytest.mark.parametrize("prefix", PREFIXES.values(), ids=PREFIXES.keys())
@pytest.mark.parametrize("burst", BURSTS.values(), ids=BURSTS.keys())
def test_a_burst_cut_in_one_pass_is_each_cut_alone(burst: list[tuple[int, dict[str, Any]]],
                                                  prefix: bytes) -> None:
    """The segments of a burst cut together equal, byte for byte, those of each super-packet
    cut on its own (which test_segments_agree_with_scapy checks against scapy)."""
    packets = [super_packet(payload_of(size, SEED + j), **fields)
               for j, (size, fields) in enumerate(burst)]
    stage = staged(packets, prefix)
    out = bytearray(b"\xaa" * 70_000)
    result = segment_tcp4_many(stage, 0, 70_000, [len(p) for p in packets], 1000, len(prefix),
                               out)
    assert result is not None
    expected = cut_alone(packets, 1000, prefix)
    assert bytes(out[:result.used]) == expected
    assert result.count == sum(-(-(len(p) - header_len(p)) // 1000) for p in packets)
    assert out[result.used:result.count * result.stride].strip(b"\x00") == b""  # padding
    assert out[result.count * result.stride:] == b"\xaa" * (len(out) - result.count
                                                               * result.stride)


def test_a_burst_may_start_at_any_slot() -> None:
    packets = [super_packet(payload_of(2000)), super_packet(payload_of(1500), seq=SEQ + 2000)]
    stage = staged([super_packet(payload_of(10)), *packets], OUTER)  # slot 0 is not part
    out = bytearray(20_000)
    result = segment_tcp4_many(stage, 70_000, 70_000, [len(p) for p in packets], 1000,
                               len(OUTER), out)
    assert result is not None
    assert bytes(out[:result.used]) == cut_alone(packets, 1000, OUTER)


@pytest.mark.parametrize(("first", "second"), [
    pytest.param({"options": "none"}, {"options": "timestamps"}, id="header-length"),
    pytest.param({}, {"ip_flags": 0}, id="df-and-not"),
])
def test_a_burst_of_different_shapes_is_refused(first: dict[str, Any],
                                                second: dict[str, Any]) -> None:
    """One template shape per pass: the engine cuts such a burst in two."""
    packets = [super_packet(payload_of(2000), **first), super_packet(payload_of(2000), **second)]
    out = bytearray(20_000)
    assert segment_tcp4_many(staged(packets, b""), 0, 70_000, [len(p) for p in packets], 1000,
                             0, out) is None


def test_only_the_last_of_a_burst_may_end_short() -> None:
    """Every datagram of a GSO send but the last is full: a short segment in the middle
    would break the batch."""
    packets = [super_packet(payload_of(1500)), super_packet(payload_of(2000), seq=SEQ + 1500)]
    out = bytearray(20_000)
    assert segment_tcp4_many(staged(packets, b""), 0, 70_000, [len(p) for p in packets], 1000,
                             0, out) is None
    assert segment_tcp4_many(staged(packets[::-1], b""), 0, 70_000,
                             [len(p) for p in packets[::-1]], 1000, 0, out) is not None


def test_a_burst_with_a_bare_header_is_refused() -> None:
    packets = [super_packet(payload_of(2000)), super_packet(b"", seq=SEQ + 2000)]
    out = bytearray(20_000)
    assert segment_tcp4_many(staged(packets, b""), 0, 70_000, [len(p) for p in packets], 1000,
                             0, out) is None


def test_a_burst_that_does_not_fit_is_refused() -> None:
    packets = [super_packet(payload_of(2000)), super_packet(payload_of(2000), seq=SEQ + 2000)]
    out = bytearray(4 * (40 + 1000) - 1)
    assert segment_tcp4_many(staged(packets, b""), 0, 70_000, [len(p) for p in packets], 1000,
                             0, out) is None


def test_segments_go_anywhere_in_a_larger_buffer() -> None:
    """The outbox appends after what it holds: an odd offset into a shared buffer."""
    packet = super_packet(payload_of(2 * 1001 + 1), options="all", ip_flags=0)
    big = bytearray(b"\x55" * 8000)
    result = segment_tcp4(memoryview(packet), len(packet), 1001, OUTER, memoryview(big)[13:])
    assert result is not None
    assert big[:13] == b"\x55" * 13
    assert big[13 + result.count * result.stride:] == b"\x55" * (
        len(big) - 13 - result.count * result.stride)
    out = big[13:]
    assert_segments(packet, 1001, OUTER, result, rows_of(result, out))


def patched(packet: bytes, at: int, value: int) -> bytes:
    changed = bytearray(packet)
    changed[at] = value
    return bytes(changed)


PLAIN: Final = super_packet(payload_of(3000))
REFUSED: Final = [  # (packet, n, gso_size, room)
    pytest.param(super_packet(payload_of(3000), ip_options=True), None, 1000, 8000,
                 id="ip-options"),
    pytest.param(bytes(IP(src=SRC, dst=DST) / UDP() / payload_of(3000)), None, 1000, 8000,
                 id="udp"),
    pytest.param(super_packet(payload_of(3000), ip_flags="MF"), None, 1000, 8000,
                 id="more-fragments"),
    pytest.param(super_packet(payload_of(3000), ip_flags=0, frag=100), None, 1000, 8000,
                 id="fragment-offset"),
    pytest.param(patched(PLAIN, 0, 0x65), None, 1000, 8000, id="not-ipv4"),
    pytest.param(PLAIN, None, 0, 8000, id="gso-size-0"),
    pytest.param(PLAIN, None, -1000, 8000, id="gso-size-negative"),
    pytest.param(super_packet(b""), None, 1000, 8000, id="no-payload"),
    pytest.param(patched(PLAIN, 32, 0x40), None, 1000, 8000, id="tcp-header-too-short"),
    pytest.param(patched(PLAIN, 32, 0xF0), 50, 1000, 8000, id="tcp-header-past-the-end"),
    pytest.param(PLAIN, 39, 1, 8000, id="shorter-than-40"),
    pytest.param(super_packet(payload_of(8193)), None, 1, 400000, id="too-many-segments"),
    pytest.param(PLAIN, None, 1000, 3 * 40 + 3000 - 1, id="out-too-small"),
]


@pytest.mark.parametrize(("packet", "n", "gso_size", "room"), REFUSED)
def test_what_is_not_a_super_packet_is_refused(packet: bytes, n: int | None, gso_size: int,
                                               room: int) -> None:
    out = bytearray(b"\xaa" * room)
    assert segment_tcp4(memoryview(packet), n or len(packet), gso_size, b"", out) is None
    assert out == b"\xaa" * room  # nothing written


def test_exactly_enough_room_is_enough() -> None:
    packet = super_packet(payload_of(3000))
    out = bytearray(3 * 1040)
    result = segment_tcp4(memoryview(packet), len(packet), 1000, b"", out)
    assert result is not None
    assert_segments(packet, 1000, b"", result, rows_of(result, out))


def test_1024_segments_are_cut() -> None:
    """The most segments one call cuts (1025 are refused above). Scapy on every row would
    take seconds: it judges a sample, the rest is payloads and sequence numbers."""
    packet = super_packet(payload_of(1024), seq=WRAP - 512)
    out = bytearray(1024 * 41)
    result = segment_tcp4(memoryview(packet), len(packet), 1, b"", out)
    assert result == Segmented(1024, 41, 1024 * 41)
    rows = rows_of(result, out)
    assert b"".join(row[40:] for row in rows) == packet[40:]
    assert [int.from_bytes(row[24:28], "big") for row in rows] == [
        (WRAP - 512 + i) % WRAP for i in range(1024)]
    for row in rows[::97] + rows[-2:]:
        assert scapy_valid(row) == row


# --- planning and joining: helpers ------------------------------------------------------


def stream(count: int = ROWS, mss: int = MSS, *, last: int | None = LAST, seq: int = SEQ,
           flags: dict[int, str] | None = None, outer: bytes = b"", options: str = "none",
           sport: int = 4000, seed: int = SEED, fixed_id: bool = False) -> list[bytes]:
    """`count` datagrams of one TCP stream as they arrive: `outer` + IPv4/TCP + `mss`
    bytes of payload (`last` for the last one), sequence numbers consecutive, IDs + 1
    (or all the same, as from a sender with fixed IDs), checksums right."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        size = last if i == count - 1 and last is not None else mss
        rows.append(outer + tcp_packet(rng.randbytes(size), seq=(seq + i * mss) % WRAP,
                                       flags=(flags or {}).get(i, "A"),
                                       ident=IDENT if fixed_id else IDENT + i,
                                       options=options, sport=sport))
    return rows


def batch(rows: list[bytes], segment: int) -> tuple[bytearray, int]:
    """A GRO batch of `rows` (all `segment` bytes but the last), zero-padded to a whole
    segment as plan_runs requires, then garbage that must not be read."""
    assert all(len(row) == segment for row in rows[:-1])
    assert 0 < len(rows[-1]) <= segment
    data = b"".join(rows)
    padded = -(-len(data) // segment) * segment
    return bytearray(data + bytes(padded - len(data)) + b"\xee" * 64), len(data)


def join(buf: bytearray, n: int, segment: int, headroom: int, run: Run) -> tuple[bytes, bytes]:
    out = bytearray(b"\xaa" * (MAX_IP_PACKET + 64))
    header, total = join_run(buf, n, segment, headroom, run, out)
    assert out[total:] == b"\xaa" * (len(out) - total)
    return header, bytes(out[:total])


def datagrams(buf: bytearray, n: int, segment: int) -> list[bytes]:
    return [bytes(buf[at:min(at + segment, n)]) for at in range(0, n, segment)]


def inner_packet(row: bytes, headroom: int) -> bytes:
    """The IPv4 packet in a datagram, as long as its total length says."""
    return row[headroom:headroom + int.from_bytes(row[headroom + 2:headroom + 4], "big")]


def reference_join(inners: list[bytes]) -> bytes:
    """What joining `inners` must give, built by scapy: the first's headers with the total
    length set and the last's PSH/FIN, all the payloads, both checksums valid."""
    hl = header_len(inners[0])
    payload = b"".join(inner[header_len(inner):] for inner in inners)
    header = bytearray(inners[0][:hl])
    header[2:4] = (hl + len(payload)).to_bytes(2, "big")
    header[33] |= inners[-1][33] & (PSH | FIN)
    return scapy_valid(bytes(header) + payload)


def assert_joined(header: bytes, packet: bytes, expected: bytes, mss: int) -> None:
    """`packet` is `expected` but for the TCP checksum, which holds the pseudo-header sum
    (NEEDS_CSUM); finishing it gives `expected`; the virtio-net header asks for TSO."""
    assert len(packet) == len(expected) <= MAX_IP_PACKET
    assert packet[:36] == expected[:36]  # the IP checksum as scapy's
    assert packet[38:] == expected[38:]
    assert int.from_bytes(packet[36:38], "big") == pseudo_sum(packet)
    finished = bytearray(packet)
    assert finish_checksum(finished, len(finished), 20, TCP_CSUM_OFFSET)
    assert finished == expected
    # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (virtio_net.h)
    assert header == struct.pack("<BBHHHH", 1, 1, header_len(expected), mss, 20, 16)


def assert_run_joins(buf: bytearray, n: int, segment: int, headroom: int, run: Run) -> None:
    inners = [inner_packet(row, headroom)
              for row in datagrams(buf, n, segment)[run.first:run.first + run.count]]
    mss = segment - headroom - header_len(inners[0])
    header, packet = join(buf, n, segment, headroom, run)
    assert_joined(header, packet, reference_join(inners), mss)


def assert_sound(buf: bytearray, n: int, segment: int, headroom: int, runs: list[Run]) -> None:
    """Every run is two or more datagrams of one TCP stream in sequence (judged by scapy
    on each, checksums included), and joins into what scapy builds from them."""
    rows = datagrams(buf, n, segment)
    done = 0
    for run in runs:
        assert run.first >= done and run.count >= 2
        done = run.first + run.count
        assert done <= len(rows)
        members = rows[run.first:done]
        assert len({row[:headroom] for row in members}) == 1
        inners = [inner_packet(row, headroom) for row in members]
        first: Any = IP(inners[0])
        expected_seq = first[TCP].seq
        for i, inner in enumerate(inners):
            assert len(inner) == int.from_bytes(inner[2:4], "big")  # all of it is here
            assert scapy_valid(inner) == inner
            parsed: Any = IP(inner)
            tcp = parsed[TCP]
            assert (parsed.ihl, parsed.proto, parsed.frag, int(parsed.flags) & 1) == (5, 6, 0, 0)
            assert (parsed.src, parsed.dst, tcp.sport, tcp.dport) == (
                first.src, first.dst, first[TCP].sport, first[TCP].dport)
            assert tcp.seq == expected_seq
            expected_seq = (expected_seq + len(inner) - header_len(inner)) % WRAP
            allowed = ACK | PSH | FIN if i == len(inners) - 1 else ACK
            assert int(tcp.flags) & ACK and not int(tcp.flags) & ~allowed
        assert_run_joins(buf, n, segment, headroom, run)


def check_plan(rows: list[bytes], headroom: int, *acceptable: list[Run]) -> list[Run]:
    """plan_runs on a batch of `rows` returns one of the `acceptable` answers, sound."""
    segment = len(rows[0])
    buf, n = batch(rows, segment)
    before = bytes(buf)
    runs = plan_runs(buf, n, segment, headroom)
    assert bytes(buf) == before
    assert runs in acceptable
    assert_sound(buf, n, segment, headroom, runs)
    return runs


def damaged(row: bytes, at: int, mask: int = 0x5A) -> bytes:
    changed = bytearray(row)
    changed[at] ^= mask
    return bytes(changed)


OUTERS: Final = pytest.mark.parametrize("outer", PREFIXES.values(), ids=PREFIXES.keys())


# --- constants ---------------------------------------------------------------------------


def test_constants_match_linux_and_scapy() -> None:
    assert VNET_HDR_LEN == 10  # struct virtio_net_hdr
    assert VNET_HDR.format == "<BBHHHH"
    assert (NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_ECN) == (1, 0, 1, 0x80)
    assert bytes(10) == PLAIN_HDR
    assert MAX_IP_PACKET == 65535
    assert TCP_CSUM_OFFSET == 16
    for name, value in (("F", FIN), ("S", SYN), ("R", RST), ("P", PSH), ("A", ACK),
                        ("U", URG), ("C", CWR)):
        assert int(TCP(flags=name).flags) == value


# --- round trips: segment, plan, join ---------------------------------------------------


def segmented_batch(packet: bytes, gso_size: int,
                    prefix: bytes) -> tuple[bytearray, int, Segmented]:
    """The segments of `packet` as a GRO batch arrives on the other side."""
    result, out = cut(packet, gso_size, prefix)
    data = bytes(out[:result.used])
    padded = result.count * result.stride
    return bytearray(data + bytes(padded - len(data)) + b"\xee" * 64), result.used, result


@pytest.mark.parametrize("prefix", PREFIXES.values(), ids=PREFIXES.keys())
@pytest.mark.parametrize("options", ["none", "timestamps", "all"])
@pytest.mark.parametrize(("size", "gso_size"), [
    pytest.param(10 * 1000, 1000, id="multiple"),
    pytest.param(9 * 1000 + 1, 1000, id="one-byte-last"),
    pytest.param(5 * 1001 + 7, 1001, id="odd"),
    pytest.param(2 * 1448, 1448, id="two"),
])
def test_segments_join_back_into_the_super_packet(size: int, gso_size: int, options: str,
                                                  prefix: bytes) -> None:
    packet = super_packet(payload_of(size), options=options, flags="PA")
    buf, n, result = segmented_batch(packet, gso_size, prefix)
    runs = plan_runs(buf, n, result.stride, len(prefix))
    assert runs == [Run(0, result.count)]
    header, joined = join(buf, n, result.stride, len(prefix), runs[0])
    assert joined[header_len(packet):] == packet[header_len(packet):]
    assert VNET_HDR.unpack(header) == (NEEDS_CSUM, GSO_TCPV4, header_len(packet), gso_size,
                                       20, TCP_CSUM_OFFSET)
    assert_joined(header, joined, scapy_valid(packet), gso_size)


@pytest.mark.parametrize("flags", ["A", "PA", "FA", "FPA"])
@pytest.mark.parametrize(("ip_flags", "ident", "seq"), [
    pytest.param("DF", 0xFFFF, WRAP - 2500, id="df-seq-wraps"),
    pytest.param(0, 0xFFFE, 7, id="no-df-id-wraps"),
])
def test_round_trips_keep_flags_ids_and_sequence(flags: str, ip_flags: str | int, ident: int,
                                                 seq: int) -> None:
    packet = super_packet(payload_of(4321), flags=flags, ip_flags=ip_flags, ident=ident,
                          seq=seq, options="mss-sack")
    buf, n, result = segmented_batch(packet, 1000, OUTER)
    runs = plan_runs(buf, n, result.stride, len(OUTER))
    assert runs == [Run(0, 5)]
    header, joined = join(buf, n, result.stride, len(OUTER), runs[0])
    assert flags_of(joined) == int(TCP(flags=flags).flags)
    assert IP(joined).id == ident
    assert_joined(header, joined, scapy_valid(packet), 1000)


@pytest.mark.parametrize("size", [1000, 300, 1])
def test_one_segment_is_not_a_run(size: int) -> None:
    buf, n, result = segmented_batch(super_packet(payload_of(size)), 1000, b"")
    assert result.count == 1
    assert plan_runs(buf, n, result.stride, 0) == []


# --- planning: what is joined and what is not -------------------------------------------


@OUTERS
@pytest.mark.parametrize("options", ["none", "timestamps"])
def test_one_stream_is_one_run(outer: bytes, options: str) -> None:
    check_plan(stream(outer=outer, options=options, mss=MSS - OPTION_LEN[options]),
               len(outer), [Run(0, ROWS)])


def test_a_batch_of_full_rows_is_one_run() -> None:
    check_plan(stream(last=None), 0, [Run(0, ROWS)])


@OUTERS
@pytest.mark.parametrize(("k", "expected"), [
    (0, [Run(1, 5)]),
    (1, [Run(2, 4)]),
    (2, [Run(0, 2), Run(3, 3)]),
    (4, [Run(0, 4)]),
    (5, [Run(0, 5)]),
])
def test_a_corrupted_payload_byte_is_never_joined(outer: bytes, k: int,
                                                  expected: list[Run]) -> None:
    rows = stream(outer=outer)
    rows[k] = damaged(rows[k], len(rows[k]) - 100)
    check_plan(rows, len(outer), expected)


@pytest.mark.parametrize("at", [
    pytest.param(27, id="seq"),
    pytest.param(34, id="window"),
    pytest.param(37, id="tcp-checksum"),
    pytest.param(41, id="first-payload-byte"),
])
def test_a_corrupted_tcp_segment_is_never_joined(at: int) -> None:
    rows = stream(outer=OUTER)
    rows[3] = damaged(rows[3], len(OUTER) + at)
    check_plan(rows, len(OUTER), [Run(0, 3), Run(4, 2)])


@pytest.mark.parametrize("corrupted", [False, True])
def test_a_different_ttl_breaks_a_run(corrupted: bool) -> None:
    """Row 2 came another way (its TTL and checksum differ) or its TTL byte was hit."""
    rows = stream()
    rows[2] = damaged(rows[2], 8, 0x01) if corrupted else tcp_packet(
        IP(rows[2])[TCP].payload.load, seq=SEQ + 2 * MSS, ident=IDENT + 2, ttl=62)
    check_plan(rows, 0, [Run(0, 2), Run(3, 3)])


ID_MODES: Final = pytest.mark.parametrize("fixed_id", [False, True], ids=["ids-count", "ids-fixed"])


@OUTERS
@ID_MODES
@pytest.mark.parametrize("at", [pytest.param(10, id="checksum"), pytest.param(5, id="id")])
@pytest.mark.parametrize(("row", "expected"), [
    pytest.param(2, [Run(0, 2), Run(3, 3)], id="middle"),
    pytest.param(0, [Run(1, 5)], id="first"),
    pytest.param(5, [Run(0, 5)], id="last"),
])
def test_a_bad_ip_header_checksum_is_never_joined(outer: bytes, fixed_id: bool, at: int,
                                                  row: int, expected: list[Run]) -> None:
    """The TCP checksum does not cover the IP header: a row whose header checksum does not
    hold (a byte of the checksum or of the ID hit, which rows may differ in) is one the
    kernel would drop. With fixed IDs the first and the last row vouch for the rest."""
    rows = stream(outer=outer, fixed_id=fixed_id)
    rows[row] = damaged(rows[row], len(outer) + at)
    check_plan(rows, len(outer), expected)


@pytest.mark.parametrize("last", [LAST, None], ids=["short-last", "full-last"])
def test_rows_alike_down_to_a_bad_ip_header_checksum_are_never_joined(last: int | None) -> None:
    """Every full row alike, their header checksum wrong (a broken sender with fixed IDs);
    the last row right."""
    rows = stream(fixed_id=True, last=last)
    rows[:-1] = [damaged(row, 10) for row in rows[:-1]]
    check_plan(rows, 0, [])


def test_errors_in_the_ip_header_and_the_payload_do_not_cancel_out() -> None:
    """Row 2's IP ID is one more than its header checksum says and one payload word one
    less than its TCP checksum says: both checksums are wrong, though their sum is not."""
    rows = stream()
    row = bytearray(rows[2])
    row[5] += 1
    at = next(at for at in range(40, len(row), 2) if row[at] | row[at + 1])  # not 0 - 1
    row[at:at + 2] = (int.from_bytes(row[at:at + 2], "big") - 1).to_bytes(2, "big")
    rows[2] = bytes(row)
    assert scapy_valid(rows[2])[10:12] != rows[2][10:12]
    assert scapy_valid(rows[2])[36:38] != rows[2][36:38]
    check_plan(rows, 0, [Run(0, 2), Run(3, 3)])


@pytest.mark.parametrize(("order", "expected"), [
    pytest.param([0, 1, 3, 2, 4, 5, 6], [Run(0, 2), Run(4, 3)], id="swapped"),
    pytest.param([0, 1, 2, 4, 5, 6], [Run(0, 3), Run(3, 3)], id="gap"),
    pytest.param([0, 1, 2, 2, 3, 4, 5, 6], [Run(0, 3), Run(3, 5)], id="duplicate"),
    pytest.param([6, 0, 1, 2, 3, 4, 5], [Run(1, 6)], id="last-first"),
    pytest.param([5, 4, 3, 2, 1, 0], [], id="backwards"),
])
def test_out_of_order_segments_break_runs(order: list[int], expected: list[Run]) -> None:
    rows = stream(7, last=None)
    check_plan([rows[i] for i in order], 0, expected)


@OUTERS
def test_two_flows_interleaved_are_never_mixed(outer: bytes) -> None:
    one = stream(3, last=None, outer=outer)
    two = stream(3, outer=outer, sport=4001, seed=SEED + 1)
    check_plan([row for pair in zip(one, two, strict=True) for row in pair], len(outer), [])


@OUTERS
def test_two_flows_in_blocks_are_two_runs(outer: bytes) -> None:
    one = stream(3, last=None, outer=outer)
    two = stream(3, outer=outer, sport=4001, seed=SEED + 1, seq=SEQ + 3 * MSS)
    check_plan(one + two, len(outer), [Run(0, 3), Run(3, 3)])


@OUTERS
@pytest.mark.parametrize("field", ["timestamp", "ack", "window", "flow", "gap"])
def test_the_next_super_packet_starts_a_new_run(outer: bytes, field: str) -> None:
    """Rows 3-5 are cut from the sender's next super-packet (a later timestamp, ACK or
    window), from another flow between the same hosts, or after a gap in the sequence. The
    one-pass planner (the path busy streams take) splits there instead of leaving the
    batch to the detailed one."""
    rows = stream(outer=outer, options="timestamps", mss=MSS - 12)
    for i in range(3, ROWS):
        packet = IP(rows[i][len(outer):])
        if field == "timestamp":
            packet[TCP].options = [("NOP", None), ("NOP", None), ("Timestamp", (0x01020305, 7))]
        elif field == "ack":
            packet[TCP].ack += 1448
        elif field == "window":
            packet[TCP].window += 1
        elif field == "flow":
            packet[TCP].sport, packet[TCP].seq = 4001, 77 + i * (MSS - 12)
        else:
            packet[TCP].seq = (packet[TCP].seq + MSS - 12) % WRAP
        del packet[TCP].chksum
        rows[i] = outer + bytes(packet)
    check_plan(rows, len(outer), [Run(0, 3), Run(3, 3)])
    buf, _ = batch(rows, len(rows[0]))
    hl = 20 + 32
    assert _one_stream(buf, ROWS, len(rows[0]), len(outer), hl, len(rows[-1]) - len(outer)) \
        == [0, 3, ROWS]


def test_two_flows_with_different_header_lengths_are_never_mixed() -> None:
    """The second flow carries timestamps: the same datagram size, 12 bytes less payload.
    Joining it too would be right; leaving it alone is allowed."""
    one = stream(3, last=None)
    two = stream(3, mss=MSS - 12, last=None, options="timestamps", sport=4001)
    check_plan(one + two, 0, [Run(0, 3), Run(3, 3)], [Run(0, 3)])


@pytest.mark.parametrize(("flags", "expected"), [
    pytest.param({2: "PA"}, [Run(0, 3), Run(3, 3)], id="psh-in-the-middle"),
    pytest.param({3: "FPA"}, [Run(0, 4), Run(4, 2)], id="fin-psh-in-the-middle"),
    pytest.param({0: "PA"}, [Run(1, 5)], id="psh-first"),
    pytest.param({5: "PA"}, [Run(0, 6)], id="psh-last"),
    pytest.param({1: "PA", 3: "PA"}, [Run(0, 2), Run(2, 2), Run(4, 2)], id="psh-twice"),
    pytest.param({2: "FA"}, [Run(0, 3), Run(3, 3)], id="fin-in-the-middle"),
    pytest.param({5: "FPA"}, [Run(0, 6)], id="fin-last"),
    pytest.param({i: "PA" for i in range(ROWS)}, [], id="psh-everywhere"),
])
@OUTERS
def test_psh_and_fin_end_a_run(outer: bytes, flags: dict[int, str],
                               expected: list[Run]) -> None:
    check_plan(stream(outer=outer, flags=flags), len(outer), expected)


def test_psh_ends_a_run_in_an_irregular_batch_too() -> None:
    rows = stream(flags={1: "PA"})
    rows[4] = damaged(rows[4], 100)
    check_plan(rows, 0, [Run(0, 2), Run(2, 2)])


@pytest.mark.parametrize("flags", ["SA", "RA", "UA", "CA", "EA", "R", "FS", "P"])
@pytest.mark.parametrize(("k", "expected"), [
    (0, [Run(1, 5)]),
    (3, [Run(0, 3), Run(4, 2)]),
])
def test_other_flags_are_never_joined(flags: str, k: int, expected: list[Run]) -> None:
    check_plan(stream(flags={k: flags}), 0, expected)


@pytest.mark.parametrize("flags", ["SA", "RA", "UA", "CA", "EA", "", "FA"])
def test_a_batch_of_such_segments_is_never_joined(flags: str) -> None:
    check_plan(stream(flags={i: flags for i in range(ROWS)}), 0, [])


def udp_row(size: int, outer: bytes = b"") -> bytes:
    return outer + bytes(IP(src=SRC, dst=DST, flags="DF") / UDP(sport=4000, dport=80)
                         / payload_of(size - 28))


@OUTERS
def test_a_udp_packet_in_the_batch_is_never_joined(outer: bytes) -> None:
    rows = stream(outer=outer)
    rows[2] = udp_row(len(rows[2]) - len(outer), outer)
    check_plan(rows, len(outer), [Run(0, 2), Run(3, 3)])
    rows = stream(outer=outer)
    rows[-1] = udp_row(LAST + 40, outer)
    check_plan(rows, len(outer), [Run(0, 5)])


def test_a_udp_packet_first_is_never_joined() -> None:
    """Joining the TCP segments after it would be right; leaving the batch alone is allowed."""
    rows = stream()
    rows[0] = udp_row(len(rows[0]))
    check_plan(rows, 0, [Run(1, 5)], [])


def arp_frame() -> bytes:
    return bytes(VXLAN(flags=0x08, vni=VNI) / Ether(src=MAC_A, dst=MAC_B)
                 / ARP(op=1, hwsrc=MAC_A, psrc="10.5.1.0", pdst="10.5.2.0"))


def test_an_arp_frame_in_the_batch_is_never_joined() -> None:
    rows = stream(outer=OUTER)
    rows[-1] = arp_frame()
    check_plan(rows, len(OUTER), [Run(0, 5)])
    rows = stream(outer=OUTER)
    rows[2] = arp_frame().ljust(len(rows[2]), b"\0")  # Ethernet padding
    check_plan(rows, len(OUTER), [Run(0, 2), Run(3, 3)])


@pytest.mark.parametrize(("k", "at", "expected"), [
    pytest.param(2, 6, [Run(0, 2), Run(3, 3)], id="vni"),
    pytest.param(4, 8 + 6 + 5, [Run(0, 4)], id="inner-source-mac"),
    pytest.param(0, 8 + 12, [Run(1, 5)], id="ethertype"),
])
def test_a_different_outer_header_breaks_a_run(k: int, at: int, expected: list[Run]) -> None:
    rows = stream(outer=OUTER)
    rows[k] = damaged(rows[k], at, 0x01)
    check_plan(rows, len(OUTER), expected)


@pytest.mark.parametrize("padding", [b"\0", b"\x5a"])
def test_a_short_row_in_the_middle_is_joined_only_as_long_as_it_is(padding: bytes) -> None:
    """Row 2 holds 100 bytes less than a full segment, padded: its padding is no payload.
    The stream goes on after its real end. Ending a run with it is right if the run is
    joined with its real length; leaving it alone is right too."""
    rows = stream(3, last=None)
    rows[2] = tcp_packet(payload_of(MSS - 100), seq=SEQ + 2 * MSS,
                         ident=IDENT + 2).ljust(len(rows[0]), padding)
    rows += stream(3, seq=SEQ + 3 * MSS - 100, seed=SEED + 1)
    check_plan(rows, 0, [Run(0, 2), Run(3, 3)], [Run(0, 3), Run(3, 3)])


def test_a_row_claiming_more_than_it_holds_is_never_joined() -> None:
    rows = stream(3, last=None)
    rows[2] = tcp_packet(payload_of(MSS + 8), seq=SEQ + 2 * MSS)[:len(rows[0])]
    rows += stream(3, seq=SEQ + 3 * MSS + 8, seed=SEED + 1)
    check_plan(rows, 0, [Run(0, 2), Run(3, 3)])


@pytest.mark.parametrize("last", [
    pytest.param(tcp_packet(payload_of(LAST), seq=SEQ + 5 * MSS)[:-10], id="truncated"),
    pytest.param(tcp_packet(payload_of(LAST), seq=SEQ + 5 * MSS) + bytes(8), id="trailer"),
    pytest.param(tcp_packet(payload_of(LAST), seq=SEQ + 5 * MSS) + b"\xff\xff", id="ones"),
])
def test_a_last_row_whose_length_does_not_match_is_never_joined(last: bytes) -> None:
    rows = stream()
    rows[-1] = last
    check_plan(rows, 0, [Run(0, 5)])


def ip_options_row(size: int, seq: int) -> bytes:
    return tcp_packet(payload_of(size - 44), seq=seq, ip_options=True)


def test_ip_options_are_never_joined() -> None:
    rows = stream()
    rows[3] = ip_options_row(len(rows[3]), SEQ + 3 * MSS)
    check_plan(rows, 0, [Run(0, 3), Run(4, 2)])
    rows = [ip_options_row(len(row), SEQ + i * (MSS - 4)) for i, row in enumerate(stream())]
    check_plan(rows, 0, [])


def test_fragments_are_never_joined() -> None:
    rows = stream()
    rows[3] = tcp_packet(payload_of(MSS), seq=SEQ + 3 * MSS, ip_flags="MF")
    check_plan(rows, 0, [Run(0, 3), Run(4, 2)])
    rows = [tcp_packet(IP(row)[TCP].payload.load, seq=SEQ + i * MSS, ip_flags="MF")
            for i, row in enumerate(stream())]
    check_plan(rows, 0, [])


@pytest.mark.parametrize(("outer", "change", "expected"), [
    pytest.param(b"", "none", [Run(0, 65), Run(65, 5)], id="udp"),
    pytest.param(OUTER, "none", [Run(0, 65), Run(65, 5)], id="vxlan"),
    pytest.param(OUTER, "psh", [Run(0, 65), Run(65, 3), Run(68, 2)], id="psh"),
    pytest.param(b"", "damage", [Run(0, 2), Run(3, 65), Run(68, 2)], id="irregular"),
])
def test_runs_are_cut_at_64k(outer: bytes, change: str, expected: list[Run]) -> None:
    """mss 1000: (65535 - 40) // 1000 = 65 segments fit in one packet."""
    rows = stream(70, 1000, last=None, outer=outer, flags={67: "PA"} if change == "psh" else {})
    if change == "damage":
        rows[2] = damaged(rows[2], len(rows[2]) - 1)
    check_plan(rows, len(outer), expected)


def test_more_than_1024_rows() -> None:
    """A group of GRO batches of small segments (60 bytes of payload) can be 1100 rows:
    (65535 - 40) // 60 = 1091 fit in one packet."""
    payload = payload_of(1100 * 60)
    halves = [super_packet(payload[:550 * 60]), super_packet(payload[550 * 60:],
                                                              seq=SEQ + 550 * 60)]
    rows: list[bytes] = []
    for half in halves:
        result, out = cut(half, 60)
        rows += rows_of(result, out)
    buf, n = batch(rows, 100)
    runs = plan_runs(buf, n, 100, 0)
    assert runs == [Run(0, 1091), Run(1091, 9)]
    for run in runs:
        assert_run_joins(buf, n, 100, 0, run)


@OUTERS
def test_fewer_than_two_rows_are_no_run(outer: bytes) -> None:
    row = stream(1, last=MSS, outer=outer)[0]
    for cut_at in (len(row), len(row) - 1, 41 + len(outer)):
        buf, n = batch([row[:cut_at]], len(row))
        assert plan_runs(buf, n, len(row), len(outer)) == []
    assert plan_runs(bytearray(len(row)), 0, len(row), len(outer)) == []


def test_segments_without_payload_are_no_run() -> None:
    """Pure ACKs (40 bytes each) and a segment size too small to hold the headers."""
    acks = [tcp_packet(b"", seq=SEQ) for _ in range(4)]
    check_plan(acks, 0, [])
    buf, n = batch([row[:30] for row in acks], 30)
    assert plan_runs(buf, n, 30, 0) == []


# --- join_run on its own ----------------------------------------------------------------


@OUTERS
def test_join_takes_the_first_rows_header_and_the_last_rows_flags(outer: bytes) -> None:
    rows = stream(outer=outer, flags={5: "FPA"})
    buf, n = batch(rows, len(rows[0]))
    header, joined = join(buf, n, len(rows[0]), len(outer), Run(2, 4))
    parsed: Any = IP(joined)
    assert parsed.len == len(joined) == 40 + 3 * MSS + LAST
    assert parsed.id == IDENT + 2
    assert parsed[TCP].seq == SEQ + 2 * MSS
    assert int(parsed[TCP].flags) == int(TCP(flags="FPA").flags)
    assert VNET_HDR.unpack(header) == (NEEDS_CSUM, GSO_TCPV4, 40, MSS, 20, TCP_CSUM_OFFSET)
    inners = [inner_packet(row, len(outer)) for row in rows[2:]]
    assert_joined(header, joined, reference_join(inners), MSS)


# --- finish_checksum --------------------------------------------------------------------


def transport_packet(proto: str, payload: bytes, ip_options: bool = False) -> bytes:
    """An IPv4 + TCP/UDP packet with every checksum right, as scapy builds it."""
    options = [ROUTER_ALERT] if ip_options else []
    layer: Any = TCP(sport=4000, dport=80, seq=SEQ, flags="PA") if proto == "tcp" else UDP(
        sport=4000, dport=8472)
    return bytes(IP(src=SRC, dst=DST, options=options) / layer / payload)


def partial(packet: bytes, offset: int) -> bytes:
    """`packet` as CHECKSUM_PARTIAL leaves it: the pseudo-header sum in the field."""
    ihl = (packet[0] & 0x0F) * 4
    changed = bytearray(packet)
    changed[ihl + offset:ihl + offset + 2] = pseudo_sum(packet).to_bytes(2, "big")
    return bytes(changed)


OFFSETS: Final = {"tcp": 16, "udp": 6}


@pytest.mark.parametrize("ip_options", [False, True])
@pytest.mark.parametrize("size", [0, 1, 2, 13, 1000, 1401])
@pytest.mark.parametrize("proto", OFFSETS)
def test_finish_checksum_agrees_with_scapy(proto: str, size: int, ip_options: bool) -> None:
    expected = transport_packet(proto, payload_of(size), ip_options)
    ihl = (expected[0] & 0x0F) * 4
    buf = bytearray(OUTER + partial(expected, OFFSETS[proto]) + b"\xee" * 9)
    assert finish_checksum(memoryview(buf)[len(OUTER):], len(expected), ihl, OFFSETS[proto])
    assert buf == OUTER + expected + b"\xee" * 9


def packet_summing_to_zero(proto: str) -> bytes:
    """A packet whose checksum computes to zero: the last payload word chosen so."""
    probe = transport_packet(proto, payload_of(20) + b"\0\0")
    field = 20 + OFFSETS[proto]
    word = int.from_bytes(probe[field:field + 2], "big")  # ~sum with a zero word
    return transport_packet(proto, payload_of(20) + word.to_bytes(2, "big"))


@pytest.mark.parametrize(("proto", "value"), [("udp", 0xFFFF), ("tcp", 0)])
def test_a_computed_zero_is_all_ones_for_udp_only(proto: str, value: int) -> None:
    expected = packet_summing_to_zero(proto)
    field = 20 + OFFSETS[proto]
    assert int.from_bytes(expected[field:field + 2], "big") == value  # as scapy sends it
    packet = bytearray(partial(expected, OFFSETS[proto]))
    assert finish_checksum(packet, len(packet), 20, OFFSETS[proto])
    assert packet == expected


def test_finish_checksum_refuses_a_field_past_the_end() -> None:
    expected = transport_packet("tcp", b"")  # 40 bytes: the field is bytes 36 and 37
    packet = bytearray(partial(expected, 16))
    before = bytes(packet)
    for n, start, offset in ((37, 20, 16), (40, 30, 9), (40, 40, 0), (40, -1, 16)):
        assert not finish_checksum(packet, n, start, offset)
        assert packet == before
    assert finish_checksum(packet, 40, 20, 16)  # the field ends exactly at n
    assert packet == expected


# --- the property: segment, plan, join --------------------------------------------------


@ROUND_TRIPS
@given(st.data())
def test_any_super_packet_survives_segment_plan_join(data: st.DataObject) -> None:
    options = data.draw(st.sampled_from(sorted(OPTIONS)), label="options")
    prefix = data.draw(st.sampled_from([b"", OUTER]), label="prefix")
    hl = 40 + OPTION_LEN[options]
    mss = data.draw(st.integers(1, 9000), label="mss")
    count = data.draw(st.integers(2, min(1024, (MAX_IP_PACKET - hl) // mss)), label="count")
    last = data.draw(st.integers(1, mss), label="last")
    payload = payload_of((count - 1) * mss + last, data.draw(st.integers(0, 2**32), label="seed"))
    packet = super_packet(payload, options=options,
                          flags=data.draw(st.sampled_from(["A", "PA", "FA", "FPA"]), label="flags"),
                          seq=data.draw(st.integers(0, WRAP - 1), label="seq"),
                          ident=data.draw(st.integers(0, 0xFFFF), label="ident"),
                          ip_flags=data.draw(st.sampled_from(["DF", 0]), label="ip_flags"))
    buf, n, result = segmented_batch(packet, mss, prefix)
    assert (result.count, result.stride) == (count, len(prefix) + hl + mss)
    runs = plan_runs(buf, n, result.stride, len(prefix))
    assert runs == [Run(0, count)]
    header, joined = join(buf, n, result.stride, len(prefix), runs[0])
    assert joined[hl:] == payload
    assert_joined(header, joined, scapy_valid(packet), mss)
