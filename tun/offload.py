"""TCP segmentation and coalescing for a TUN device opened with IFF_VNET_HDR. Pure: numpy
arrays over caller-owned buffers, no I/O.

With offloads on, the kernel hands the TUN reader one TCP "super-packet" of up to 64 KB
(one IPv4 + TCP header, then the payload of many segments) and accepts the same back. The
wire still carries ordinary segments, so on the way out a super-packet is cut into
segments, each with its own IP total length, IP ID, sequence number, flags and both
checksums (what a NIC's TSO would do); on the way in, the segments of a UDP GRO batch that
continue one TCP stream are joined into one super-packet for the kernel (what a NIC's LRO
would do). A joined segment's checksums are verified first: the kernel trusts a
super-packet marked NEEDS_CSUM, so a corrupted segment must never be joined. Anything
irregular (IP options, fragments, SYN/RST/URG, a broken checksum, a gap in the sequence)
is left to the plain path, where the kernel checks every packet itself.

numpy costs about a microsecond per call whatever the size, so the work is a few calls per
super-packet on all segments at once: one broadcast of the header template, one column
write per changing field, one row sum for all checksums.

virtio-net header: the kernel's struct virtio_net_hdr. TCP: RFC 9293. Checksums: RFC 1071.
"""

from __future__ import annotations

import functools
import itertools
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

from tun.packet import checksum, pseudo_header_sum

VNET_HDR: Final = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_*
VNET_HDR_LEN: Final = VNET_HDR.size
_ADDRESSES: Final = struct.Struct("=4H")  # source and destination, native words
NEEDS_CSUM: Final = 1  # VIRTIO_NET_HDR_F_NEEDS_CSUM
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_ECN: Final = 0x80
PLAIN_HDR: Final = bytes(VNET_HDR_LEN)  # "an ordinary packet; check it yourself"
MAX_IP_PACKET: Final = 65535
TCP_CSUM_OFFSET: Final = 16  # the TCP checksum field, from the start of the TCP header

# IPv4 header fields (RFC 791) and, in an IPv4 packet without options, TCP's (RFC 9293)
IP_HEADER_LEN: Final = 20
IPV4_NO_OPTIONS: Final = 0x45  # version 4, header length 5 words
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
IP_TOTAL_LENGTH: Final = 2
IP_ID: Final = 4
IP_FLAGS: Final = 6  # flags and fragment offset, 16 bits
IP_PROTOCOL: Final = 9
IP_CHECKSUM: Final = 10
IP_ADDRESSES: Final = 12  # source, then destination
IP_DF_BYTE: Final = 0x40  # DF in the first byte of IP_FLAGS
IP_FRAGMENT_BITS: Final = 0x3FFF  # MF and the offset
TCP_SEQ: Final = IP_HEADER_LEN + 4
TCP_DATA_OFFSET: Final = IP_HEADER_LEN + 12  # its high nibble: header length in words
TCP_FLAGS: Final = IP_HEADER_LEN + 13
TCP_CHECKSUM: Final = IP_HEADER_LEN + TCP_CSUM_OFFSET

# TCP flags (byte 13 of the header)
FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
CWR: Final = 0x80

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]  # aliases: a subscripted type costs microseconds per call
_NATIVE16: Final = np.dtype("=u2")
_NATIVE32: Final = np.dtype("=u4")
_LITTLE: Final = sys.byteorder == "little"
_INDEX: Final = np.arange(8192, dtype=np.int64)  # rows numbered without a new array
_ZEROS: Final = bytes(65536)


def _swap16(value: int) -> int:
    """A 16-bit word as the other byte order sees it."""
    return ((value & 0xFF) << 8) | (value >> 8) if _LITTLE else value


_PROTO_TCP: Final = _swap16(6)  # the pseudo-header's zero + protocol word, native order
# numpy scalars: a Python int operand costs a ufunc a microsecond more
_FFFF: Final = np.uint32(0xFFFF)
_ALL_ONES: Final = np.uint32(0xFFFFFFFF)
_PUSHED: Final = np.uint8(PSH | FIN)
_KEPT: Final = 0xFF & ~(FIN | PSH | CWR)  # the flags every segment keeps


@functools.lru_cache(maxsize=64)
def _row_fields(headroom: int, stride: int) -> np.dtype[np.void]:
    """The header fields that change from segment to segment, as one record per row (rows
    `stride` bytes apart, the IPv4 header at `headroom`). `*_n` read and write the same
    bytes in native order, the order the checksum sums are taken in."""
    h = headroom
    fields = {"tot": (">u2", h + IP_TOTAL_LENGTH), "tot_n": ("=u2", h + IP_TOTAL_LENGTH),
              "id": (">u2", h + IP_ID), "ipsum": (">u2", h + IP_CHECKSUM),
              "seq": (">u4", h + TCP_SEQ), "flags": ("u1", h + TCP_FLAGS)}
    return np.dtype({"names": list(fields), "formats": [f for f, _ in fields.values()],
                     "offsets": [o for _, o in fields.values()], "itemsize": stride})


def _native_sums(rows: U8, start: int, end: int | None = None) -> npt.NDArray[np.uint32]:
    """Per row, the unfolded sum of the 16-bit words in columns [start, end) (to the row's
    end by default), read in native byte order (the ones'-complement sum commutes with a
    byte swap, RFC 1071 2(B)); an odd last column counts as the first byte of a zero-padded
    word. Rows are at most 64 KB, so 32 bits hold the sum. A short last datagram is summed
    as a whole row: the caller zero-pads it."""
    width = rows.shape[1]
    stop = width if end is None else end
    if (stop - start) % 2 == 0 and rows.strides[1] == 1:  # one view of words, one reduction
        words = rows[:, start:stop].view(_NATIVE16)  # numpy reads words at odd addresses too
        return cast(U32, np.add.reduce(words, axis=1, dtype=np.uint32))
    first_bytes = rows[:, start:stop:2].sum(axis=1, dtype=np.uint32)
    second_bytes = rows[:, start + 1:stop:2].sum(axis=1, dtype=np.uint32)
    if _LITTLE:
        return cast(U32, first_bytes + (second_bytes << 8))
    return cast(U32, (first_bytes << 8) + second_bytes)


def _native_pseudo(header: bytes | bytearray | memoryview) -> int:
    """The native-order sum of the pseudo-header words that do not depend on the length:
    the addresses and the protocol."""
    words: tuple[int, ...] = _ADDRESSES.unpack_from(header, 12)
    return sum(words) + _PROTO_TCP


def finish_checksum(packet: bytearray | memoryview, n: int, start: int, offset: int) -> bool:
    """NEEDS_CSUM on an ordinary packet: the field at start + offset holds the pseudo-header
    sum; sum from `start` to the end into it, as a NIC would. False if it does not fit."""
    field = start + offset
    if start < 0 or field + 2 > n:
        return False
    value = checksum(memoryview(packet)[start:n])  # no larger than the MTU: plain Python
    if value == 0 and packet[0] >> 4 == 4 and packet[IP_PROTOCOL] == PROTO_UDP:
        value = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    _put16(packet, field, value)
    return True


def _put16(buf: bytearray | memoryview, at: int, value: int) -> None:
    buf[at], buf[at + 1] = value >> 8, value & 0xFF


def _u16(buf: bytes | bytearray | memoryview, at: int) -> int:
    return buf[at] << 8 | buf[at + 1]


def _tcp_header_len(packet: bytes | bytearray | memoryview, at: int = 0) -> int:
    """The TCP header's length of the IPv4 packet (no options) at `at`."""
    return (packet[at + TCP_DATA_OFFSET] >> 4) * 4


def _set_ip_checksum(buf: bytearray | memoryview, at: int) -> None:
    """The IPv4 header checksum of the 20-byte header at `at`, written in place."""
    buf[at + IP_CHECKSUM] = buf[at + IP_CHECKSUM + 1] = 0
    _put16(buf, at + IP_CHECKSUM, checksum(memoryview(buf)[at:at + IP_HEADER_LEN]))


@functools.lru_cache(maxsize=16)
def _sequence(mss: int) -> npt.NDArray[np.uint32]:
    """Each row's sequence-number offset for segments of `mss` bytes, as TCP's 32 bits."""
    offsets: npt.NDArray[np.uint32] = (_INDEX * mss).astype(np.uint32)
    return offsets


@dataclass(slots=True)  # not frozen: a frozen one costs a microsecond to build
class Segmented:
    count: int  # segments written
    stride: int  # bytes per segment; the last may be shorter
    used: int  # bytes written in all


def _column(buf: Any, dtype: Any, count: int, at: int, stride: int) -> npt.NDArray[Any]:
    """One field of `count` rows `stride` bytes apart, the first at buf[at], as an array
    over buf (no copy)."""
    column: npt.NDArray[Any] = np.ndarray((count,), dtype, buf, at, (stride,))
    return column


def _fold_into(sums: npt.NDArray[np.uint32], target: npt.NDArray[Any]) -> None:
    """target = the Internet checksum of each positive sum, in the sums' byte order:
    -sum mod 0xFFFF, computed as (0xFFFFFFFF - sum) % 0xFFFF since 0xFFFFFFFF is a
    multiple of 0xFFFF (sums stay below 2**32)."""
    np.subtract(_ALL_ONES, sums, out=sums)
    np.remainder(sums, _FFFF, out=target, casting="unsafe")


def tso_header_len(packet: bytes | bytearray | memoryview, n: int, gso_size: int) -> int:
    """The IPv4 + TCP header length of packet[:n] if it is a super-packet we can cut into
    segments of `gso_size` payload bytes, else 0: IP options, not TCP, a fragment, header
    lengths that do not fit, no payload."""
    if n < 2 * IP_HEADER_LEN or packet[0] != IPV4_NO_OPTIONS \
            or packet[IP_PROTOCOL] != PROTO_TCP or gso_size <= 0:
        return 0
    if _u16(packet, IP_FLAGS) & IP_FRAGMENT_BITS:  # MF or an offset: not a TSO packet
        return 0
    thl = _tcp_header_len(packet)
    hl = IP_HEADER_LEN + thl
    return hl if thl >= 20 and hl < n else 0


def tso_shape(buf: bytearray | memoryview, at: int = 0) -> tuple[int, int, int, int, int]:
    """What all super-packets of one cut share (the IPv4 header at buf[at]): version and
    header length, DF and the fragment fields, protocol, the TCP header's length."""
    return (buf[at], buf[at + IP_FLAGS], buf[at + IP_FLAGS + 1], buf[at + IP_PROTOCOL],
            buf[at + TCP_DATA_OFFSET] >> 4)


@dataclass(slots=True)
class _Burst:
    """A burst of super-packets to cut in one pass, and what each segment starts from."""

    first: int  # where the first super-packet's outer header is in buf
    slot: int  # bytes from one super-packet to the next
    h: int  # outer header bytes in front of each IP header
    hl: int  # IPv4 + TCP header bytes
    gso_size: int
    counts: list[int]  # segments of each super-packet
    last: int  # payload bytes of the very last segment
    templates: list[bytearray]  # per super-packet: its header as a full segment has it
    flags: list[int]  # per super-packet: its TCP flags as the kernel gave them
    seqs: list[int]  # per super-packet: its sequence number
    pseudos: list[int]  # per super-packet: its native pseudo-header sum for a full segment
    df: bool

    @property
    def stride(self) -> int:
        return self.h + self.hl + self.gso_size

    @property
    def rows(self) -> int:
        return sum(self.counts)

    @property
    def full(self) -> int:  # a full segment's IP total length
        return self.hl + self.gso_size

    @property
    def short(self) -> int:  # the very last segment's
        return self.hl + self.last


def _plan_burst(buf: bytearray | memoryview, first: int, slot: int, lengths: Sequence[int],
                gso_size: int, h: int, room: int) -> _Burst | None:
    """Check that the burst can be cut in one pass into `room` bytes and build each
    super-packet's template header (total length of a full segment, no FIN/PSH/CWR, TCP
    checksum zero, the IP checksum that goes with it): a few headers, so plain Python,
    cheaper than numpy's per-call cost."""
    k = len(lengths)
    base = first + h  # the first IP header
    if k == 0 or slot <= 0 or gso_size <= 0:
        return None
    hl = tso_header_len(memoryview(buf)[base:], lengths[0], gso_size)
    if not hl:
        return None
    counts = [-(-(n - hl) // gso_size) for n in lengths]
    if lengths[-1] <= hl or any(n <= hl or (n - hl) % gso_size for n in lengths[:-1]):
        return None  # no payload, or a short last segment before the end
    rows, stride = sum(counts), h + hl + gso_size
    if rows * stride > room or rows > len(_INDEX):
        return None
    full = hl + gso_size
    shape = tso_shape(buf, base)
    templates, flags, seqs, pseudos = [], [], [], []
    for j in range(k):
        at = first + j * slot
        if j and tso_shape(buf, at + h) != shape:
            return None  # another header length, IP version, protocol, DF or fragment field
        header = bytearray(buf[at:at + h + hl])
        flags.append(header[h + TCP_FLAGS])
        _put16(header, h + IP_TOTAL_LENGTH, full)
        header[h + TCP_FLAGS] &= _KEPT
        header[h + TCP_CHECKSUM] = header[h + TCP_CHECKSUM + 1] = 0
        _set_ip_checksum(header, h)
        templates.append(header)
        seqs.append(int.from_bytes(header[h + TCP_SEQ:h + TCP_SEQ + 4], "big"))
        pseudos.append(_native_pseudo(memoryview(header)[h:]) + _swap16(full - IP_HEADER_LEN))
    last = lengths[-1] - hl - (counts[-1] - 1) * gso_size
    return _Burst(first, slot, h, hl, gso_size, counts, last, templates, flags, seqs,
                  pseudos, bool(shape[1] & IP_DF_BYTE))


def _copy_headers(rows: U8, burst: _Burst) -> None:
    """Every row gets its super-packet's template header."""
    width, templates = burst.h + burst.hl, burst.templates
    if templates.count(templates[0]) == len(templates):  # one flow, the same ACK and window
        rows[:, :width] = np.frombuffer(templates[0], np.uint8)
    else:
        rows[:, :width] = np.repeat(np.frombuffer(b"".join(templates), np.uint8).reshape(
            len(templates), width), burst.counts, axis=0)


def _copy_payloads(rows: U8, out: bytearray | memoryview, buf: bytearray | memoryview,
                   burst: _Burst) -> None:
    """Every row's payload: whole blocks of segments, in one copy when the super-packets are
    alike; the very last row's own length and its zero padding (summed as a whole row)."""
    h, hl, gso, counts, k = burst.h, burst.hl, burst.gso_size, burst.counts, len(burst.counts)
    base, slot, stride = burst.first + h, burst.slot, burst.stride
    whole = burst.rows - 1  # every row but the last is a full segment
    if k > 1 and counts[:-1].count(counts[0]) == k - 1:
        c = counts[0]
        blocks = rows[:(k - 1) * c].reshape(k - 1, c, stride)
        blocks[:, :, h + hl:] = np.ndarray((k - 1, c, gso), np.uint8, buf, base + hl,
                                           (slot, gso, 1))
        done = (k - 1) * c
    else:
        done = 0
        for j in range(k - 1):
            c = counts[j]
            rows[done:done + c, h + hl:] = np.ndarray((c, gso), np.uint8, buf,
                                                      base + j * slot + hl)
            done += c
    at_last = base + (k - 1) * slot + hl  # the last super-packet's payload
    if whole > done:
        rows[done:whole, h + hl:] = np.ndarray((whole - done, gso), np.uint8, buf, at_last)
    at, short = whole * stride, burst.short
    payload_end = at_last + (counts[-1] - 1) * gso
    out[at + h + hl:at + h + short] = buf[payload_end:payload_end + burst.last]
    out[at + h + short:at + stride] = _ZEROS[:stride - h - short]
    if short != burst.full:
        _put16(out, at + h + IP_TOTAL_LENGTH, short)
        _set_ip_checksum(out, at + h)


def _set_flags(out: bytearray | memoryview, burst: _Burst) -> None:
    """FIN and PSH on the last row of each super-packet, CWR on the first."""
    at, stride = burst.h + TCP_FLAGS, burst.stride
    end = 0
    for flags, count in zip(burst.flags, burst.counts, strict=True):
        end += count
        out[(end - 1) * stride + at] = flags & (0xFF & ~CWR)
        if flags & CWR:
            out[(end - count) * stride + at] |= CWR


def _set_sequences(out: bytearray | memoryview, burst: _Burst) -> None:
    """Row i of super-packet j: its sequence + (i - where j starts) * gso_size; one number
    for all when each super-packet continues the one before. uint32 sums wrap as TCP's do;
    byte-swapped, then one strided copy."""
    counts, rows = burst.counts, burst.rows
    ends = list(itertools.accumulate(counts))
    bases = [(seq - (end - count) * burst.gso_size) & 0xFFFFFFFF
             for seq, end, count in zip(burst.seqs, ends, counts, strict=True)]
    if bases.count(bases[0]) == len(bases):
        seqs = _sequence(burst.gso_size)[:rows] + np.uint32(bases[0])
    else:
        seqs = _sequence(burst.gso_size)[:rows] + np.repeat(np.array(bases, np.uint32), counts)
    _column(out, _NATIVE32, rows, burst.h + TCP_SEQ, burst.stride)[:] = \
        seqs.byteswap() if _LITTLE else seqs


def _set_tcp_checksums(rows: U8, out: bytearray | memoryview, burst: _Burst) -> None:
    """Every word of each row (checksum field zero) plus the pseudo-header (one flow's
    super-packets share it), folded; the last row's pseudo-header has its own length."""
    h, pseudos = burst.h, burst.pseudos
    sums = _native_sums(rows, h + IP_HEADER_LEN)
    if pseudos.count(pseudos[0]) == len(pseudos):
        sums += np.uint32(pseudos[0])
    else:
        sums += np.repeat(np.array(pseudos, np.uint32), burst.counts)
    if burst.short != burst.full:
        sums[-1] += _swap16(burst.short - IP_HEADER_LEN) + 0xFFFF \
            - _swap16(burst.full - IP_HEADER_LEN)
    _fold_into(sums, _column(out, _NATIVE16, burst.rows, h + TCP_CHECKSUM, burst.stride))


def segment_tcp4_many(buf: bytearray | memoryview, first: int, slot: int,
                      lengths: Sequence[int], gso_size: int, h: int,
                      out: bytearray | memoryview) -> Segmented | None:
    """Cut a burst of IPv4/TCP super-packets into segments of `gso_size` payload bytes, all
    in one pass: super-packet j lies at buf[first + j * slot:], `h` bytes of outer header
    (the prefix every segment gets) and then its IP packet of lengths[j] bytes.

    Each segment gets every field a NIC's TSO sets (total length, sequence, FIN/PSH on the
    last only, CWR on the first only, both checksums; the IP ID + i, or, with DF set, the
    same ID in every segment as Linux's GSO does for TCP with fixed IDs, RFC 6864 4.1).
    Outer header, TTL, addresses and options are copied as they are (the caller has
    already written the one and decremented the other).

    The segments lie back to back in `out` (`stride` bytes each but the last), ready for
    UDP GSO sends: so every super-packet but the last must carry whole segments only, and
    all must have the same tso_shape (tso_header_len checks one). None if they do not, or
    if `out` is too small."""
    burst = _plan_burst(buf, first, slot, lengths, gso_size, h, len(out))
    if burst is None:
        return None
    rows = np.ndarray((burst.rows, burst.stride), np.uint8, out)
    _copy_headers(rows, burst)
    _copy_payloads(rows, out, buf, burst)
    _set_flags(out, burst)
    if not burst.df:
        _number_ids(out, burst.templates, burst.counts, h, burst.stride)
        if burst.short != burst.full:
            _set_ip_checksum(out, (burst.rows - 1) * burst.stride + h)
    _set_sequences(out, burst)
    _set_tcp_checksums(rows, out, burst)
    return Segmented(burst.rows, burst.stride, (burst.rows - 1) * burst.stride + h + burst.short)


def _number_ids(out: bytearray | memoryview, templates: list[bytearray], counts: list[int],
                h: int, stride: int) -> None:
    """Without DF: IP ID + i in segment i of each super-packet, and the IP checksum that
    goes with it (the rows hold their super-packet's template header)."""
    rows_total = sum(counts)
    record = np.frombuffer(out, _row_fields(h, stride), rows_total)
    done = 0
    for j, count in enumerate(counts):
        words = struct.unpack_from("!10H", templates[j], h)
        ident, full = words[2], words[1]
        fixed = int(sum(words)) - words[1] - words[2] - words[5]  # but length, ID, checksum
        index = _INDEX[:count]
        part = record[done:done + count]
        part["id"] = index + ident  # the cast wraps at 16 bits, as the field does
        ip_sums = ((index + ident) & 0xFFFF) + (fixed + full)
        _fold_into(ip_sums.astype(np.uint32), part["ipsum"])
        done += count


@dataclass(frozen=True, slots=True)
class Run:
    first: int  # index of the first segment
    count: int  # segments joined (>= 2)


def plan_runs(buf: bytearray | memoryview, n: int, segment: int, headroom: int) -> list[Run]:
    """Which segments of a UDP GRO batch (buf[:n], datagrams of `segment` bytes, the last
    maybe shorter, each an inner IPv4 packet at `headroom`) can be joined: runs of two or
    more that continue one TCP stream, checksums verified, ending at PSH or FIN.

    The bytes of buf after n up to a whole segment must be zero (the caller clears them):
    the last datagram is summed as a padded row."""
    count = -(-n // segment)
    h, t = headroom, headroom + IP_HEADER_LEN
    if count < 2 or segment < t + 20:  # room for an IP and a TCP header at least
        return []
    # the first row decides the shape every row of a run shares (`same` below)
    first = memoryview(buf)[h:t + 20]
    thl = _tcp_header_len(first)
    hl = IP_HEADER_LEN + thl
    if first[0] != IPV4_NO_OPTIONS or first[IP_PROTOCOL] != PROTO_TCP or thl < 20 \
            or hl >= segment - h or _u16(first, IP_FLAGS) & IP_FRAGMENT_BITS:
        return []
    last = n - (count - 1) * segment - h
    mss = segment - h - hl
    limit = max(2, (MAX_IP_PACKET - hl) // max(mss, 1))
    at = (count - 1) * segment + h  # the last row's IP header
    # the common case first, in few numpy calls: the whole batch is one run
    if _regular(first, thl) and _u16(buf, at + IP_TOTAL_LENGTH) == last > hl:
        ends = _one_stream(buf, count, segment, h, hl, last)
        if ends is not None:
            return [run for run in _runs(ends, limit)
                    if run.first == 0 or _regular(memoryview(buf)[run.first * segment + h:], thl)]
    rows = np.ndarray((count, segment), np.uint8, buf)
    record = np.frombuffer(buf, _row_fields(h, segment), count)
    # a row continues the one before: same outer header, same IP header but for length,
    # ID and checksum, same TCP header but for sequence, PSH/FIN and checksum
    head = rows[:, :h + hl]
    same = ~((head[1:] ^ head[:-1]) & _same_mask(h, hl)).any(axis=1)
    # the pseudo-header's length (total - 20) in native order is swap(total) - swap(20)
    pseudo = _native_pseudo(first) + 0xFFFF - _swap16(20)
    tcp_ok = ((_native_sums(rows, t).astype(np.int64) + record["tot_n"] + pseudo) % 0xFFFF == 0) \
        & (_native_sums(rows, h, t) % 0xFFFF == 0)  # and the IP header
    seq = record["seq"].astype(np.int64)
    flags = record["flags"]
    link = (same & (((seq[1:] - seq[:-1]) & 0xFFFFFFFF) == mss)
            & (record["tot"][:-1] == segment - h) & (record["tot"][1:] <= segment - h)
            & ((flags[:-1] & (PSH | FIN)) == 0)
            & tcp_ok[:-1] & tcp_ok[1:])
    if record["tot"][-1] != last or last <= hl:
        link[-1] = False
    breaks = [0, *(np.flatnonzero(~link) + 1).tolist(), count]
    return [run for run in _runs(breaks, limit)
            if _regular(memoryview(buf)[run.first * segment + h:], thl)]


def _runs(breaks: list[int], limit: int) -> list[Run]:
    """Runs of two or more rows between consecutive breaks, at most `limit` rows each."""
    runs: list[Run] = []
    for start, end in itertools.pairwise(breaks):
        at = start
        while end - at >= 2:
            size = min(end - at, limit)
            runs.append(Run(at, size))
            at += size
    return runs


def _one_stream(buf: bytearray | memoryview, count: int, segment: int, h: int, hl: int,
                last: int) -> list[int] | None:
    """If all rows are regular (the same outer and IP headers, full segments but the last,
    every row's checksums verified), where the runs start and end: a run ends after a PSH
    or FIN and before a row that does not continue it (another flow, a sequence gap, a new
    timestamp, ACK or window: the next super-packet). None if the batch is irregular.

    The headers are copied out once, padded to whole 64-bit words, so that the checks run
    on a small contiguous array."""
    strict, variable = _stream_masks(h, hl)
    width = len(strict) * 8
    if width > segment:
        return None
    full = segment - h
    mss = full - hl
    head = np.empty((count, width), np.uint8)
    head[:] = np.ndarray((count, width), np.uint8, buf, 0, (segment, 1))
    words = head.view(np.uint64)
    change = words[1:] ^ words[:-1]
    # the outer header, the IP header and the TCP header's length hold for the whole batch
    # (so one pseudo-header serves every row); where the TCP header changes in more than
    # the fields that change per segment (another flow, a new timestamp, ACK or window,
    # other flags) or the sequence does not go on, a new run starts
    if np.count_nonzero(change & strict):
        return None
    if np.count_nonzero(_column(head, _NATIVE16, count - 1, h + 2, width) != _swap16(full)):
        return None
    seq = _column(head, ">u4", count, h + TCP_SEQ, width)
    jumped = np.subtract(seq[1:], seq[:-1], dtype=np.uint32) != np.uint32(mss)  # wraps as TCP's
    if np.count_nonzero(_native_sums(head, h, h + IP_HEADER_LEN) % _FFFF):
        return None  # an IP header checksum that does not hold: the kernel would drop it
    # the pseudo-header: addresses, protocol, TCP length (total - 20), native order
    sums = _native_sums(np.ndarray((count, segment), np.uint8, buf), h + IP_HEADER_LEN)
    sums += _native_pseudo(buf[h:h + IP_HEADER_LEN]) + _swap16(full - IP_HEADER_LEN)
    sums[-1] += _swap16(last - IP_HEADER_LEN) + 0xFFFF - _swap16(full - IP_HEADER_LEN)
    if np.count_nonzero(sums % _FFFF):
        return None
    moved = np.bitwise_or.reduce(change & variable, axis=1)
    ends = (moved | (head[:-1, h + TCP_FLAGS] & _PUSHED) | jumped).nonzero()[0]
    return [0, *(ends + 1).tolist(), count] if len(ends) else [0, count]


@functools.lru_cache(maxsize=64)
def _stream_masks(h: int, hl: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """_same_mask split in two, padded to whole 64-bit words: the bits that must hold for a
    whole batch (outer header, IP header, the TCP header's length) and the rest of the TCP
    header's, whose change starts a new run."""
    t = h + 20
    same = np.zeros(-(-(h + hl) // 8) * 8, np.uint8)
    same[:h + hl] = _same_mask(h, hl)
    strict = same.copy()
    strict[t:] = 0
    strict[t + 12] = same[t + 12]
    variable = same & ~strict
    return strict.view(np.uint64), variable.view(np.uint64)


def _regular(packet: memoryview, thl: int) -> bool:
    """The first segment of a run (the rest equal it): IPv4 without options, not a
    fragment, TCP with this header length, flags ACK (+PSH/FIN), some payload."""
    return (packet[0] == IPV4_NO_OPTIONS and packet[IP_PROTOCOL] == PROTO_TCP
            and not _u16(packet, IP_FLAGS) & IP_FRAGMENT_BITS
            and _tcp_header_len(packet) == thl
            and packet[TCP_FLAGS] & (0xFF & ~(PSH | FIN)) == ACK)


@functools.lru_cache(maxsize=64)
def _same_mask(h: int, hl: int) -> U8:
    """The header bits (outer header, IP, TCP) that must not change from row to row."""
    mask = np.zeros(h + hl, dtype=np.uint8)
    mask[_same_columns(h, hl)] = 0xFF
    mask[h + TCP_FLAGS] = 0xFF & ~(PSH | FIN)
    return mask


@functools.lru_cache(maxsize=64)
def _same_columns(h: int, hl: int) -> npt.NDArray[np.intp]:
    t = h + 20
    columns: npt.NDArray[np.intp] = np.r_[0:h, h:h + 2, h + 6:h + 10, h + 12:h + 20, t:t + 4,
                                          t + 8:t + 13, t + 14:t + 16, t + 18:h + hl]
    return columns


def join_run(buf: bytearray | memoryview, n: int, segment: int, headroom: int, run: Run,
             out: bytearray) -> tuple[bytes, int]:
    """Join the segments of `run` (as plan_runs found them) into one super-packet in `out`:
    the first segment's headers (as the caller left them, e.g. with the TTL decremented)
    with the total length and IP checksum fixed, the last segment's PSH/FIN, and the TCP
    checksum field holding the pseudo-header sum for NEEDS_CSUM. Returns the virtio-net
    header and the packet's length."""
    h = headroom
    first = run.first * segment + h
    final = (run.first + run.count - 1) * segment + h
    hl = IP_HEADER_LEN + _tcp_header_len(buf, first)
    mss = segment - h - hl
    last_len = _u16(buf, final + IP_TOTAL_LENGTH) - hl  # as plan_runs checked it
    middle = mss * (run.count - 1)
    total = hl + middle + last_len
    out[:hl] = buf[first:first + hl]
    np.ndarray((run.count - 1, mss), np.uint8, out, hl)[:] = np.ndarray(
        (run.count - 1, mss), np.uint8, buf, first + hl, (segment, 1))
    out[hl + middle:total] = buf[final + hl:final + hl + last_len]
    out[TCP_FLAGS] |= buf[final + TCP_FLAGS] & (PSH | FIN)
    _put16(out, IP_TOTAL_LENGTH, total)
    _set_ip_checksum(out, 0)
    _put16(out, TCP_CHECKSUM, pseudo_header_sum(out, PROTO_TCP, total - IP_HEADER_LEN))
    header = VNET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, hl, mss, 20, TCP_CSUM_OFFSET)
    return header, total
