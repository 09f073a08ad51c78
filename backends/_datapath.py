"""The userspace data-path engines shared by the udp backend and the userspace VXLAN data
plane: one TUN fd, UDP sockets, a codec that decides what happens to each packet.

Two engines, one behaviour:

- NativeEngine (the default): the C extension backends._fastpath (backends/_native/) moves
  the packets in a thread of its own, both directions, with the GIL released: TUN
  reads and writes with the virtio-net header, TCP segmentation and joining, the udp and
  VXLAN encapsulation, the peer table, GSO/GRO. What it does not decide (ICMP errors, ARP
  for the VTEP, fragments, odd super-packets) comes back here as a slow packet, and the
  Python codec decides it exactly as PacketEngine would.
- PacketEngine: the same in Python and numpy, from `loop.add_reader` callbacks. It is the
  fallback where the extension is not built, and the specification the native path is held
  to (tests/unit/test_native.py: byte-identical datagrams, TUN writes and verdicts).

`FLANNELD_ENGINE` chooses: `auto` (the default: native where it is built and the codec has
a native twin), `native` (refuse to start without it) or `python`.

Shell: the only place packets touch fds. In PacketEngine both fds are non-blocking and read
into preallocated buffers; each callback drains its fd until EAGAIN, at most MAX_BURST
packets per wake-up so neither direction starves the other (the fd stays readable, so the
loop calls back at once). A full queue drops and counts; nothing here ever spins, logs, or
allocates per packet beyond the codec's verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import importlib
import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from types import ModuleType
from typing import Any, Final, Protocol

from lease.errors import BackendError
from tun.offload import (
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    NEEDS_CSUM,
    PLAIN_HDR,
    VNET_HDR,
    VNET_HDR_LEN,
    Run,
    finish_checksum,
    join_run,
    plan_runs,
    segment_tcp4_many,
    tso_header_len,
    tso_shape,
)

from ._codec import (
    Answer,
    Codec,
    Drop,
    Dropped,
    NativeCodec,
    Reply,
    Send,
    SendMany,
    Verdict,
    Write,
    engine_choice,
)

SOCKET_BUFFER: Final = 4 << 20
MAX_BURST: Final = 256
BUFFER_SIZE: Final = 65536 + 4096  # a TUN packet and headroom; a padded GRO batch
STAGE_SLOTS: Final = 8  # TUN super-packets of a burst cut in one pass (numpy's cost is per call)
CUT_ROOM: Final = 65536 + 8192  # a 64 KB super-packet cut at an MSS near the MTU
SEGMENT_BUFFER: Final = (STAGE_SLOTS + 2) * CUT_ROOM  # a staged burst cut + what waits
# UDP GSO/GRO (Python 3.11 lacks the names): SOL_UDP, UDP_SEGMENT, UDP_GRO
SOL_UDP: Final = 17
UDP_SEGMENT: Final = 103
UDP_GRO: Final = 104
MAX_SEGMENTS: Final = 64
NET_GROUP: Final = 8 * 65536  # GRO batches gathered for one planning pass (numpy: per call)
MIN_JOIN: Final = 4  # fewer segments cost less one by one than through the planner
SMALL: Final = 512  # received datagrams this small (pings, ACKs) are not gathered for joining
MAX_GSO_BYTES: Final = 65507 - 8  # one UDP datagram's payload limit, as the kernel sees it
_U16: Final = struct.Struct("=H")
_GRO_CMSG_SPACE: Final = socket.CMSG_SPACE(4)
log = logging.getLogger(__name__)


class Engine(Protocol):
    """What a backend holds: started once, stopped once, counted any time."""

    name: str  # "native" or "python"
    gso: bool  # UDP GSO sends in use
    gro: bool  # UDP GRO receives in use
    vnet_hdr: bool  # the TUN hands over super-packets (offloads on)

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def counters(self) -> Mapping[str, int]: ...


def segments_per_send(datagram: int) -> int:
    """How many datagrams of `datagram` bytes one UDP GSO send can carry."""
    return max(1, min(MAX_SEGMENTS, MAX_GSO_BYTES // datagram))


def open_udp_socket(address: str, port: int, ipv6: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to address:port with buffers of SOCKET_BUFFER bytes
    (the FORCE options need root; without it the kernel's maximum applies); with `ipv6`,
    an AF_INET6 socket for IPv6 only. OSError if the address is taken or not ours."""
    sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if ipv6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for option in (33, 32):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class PacketEngine:
    """Moves packets between the TUN and the UDP socket through a codec, in Python.

    With `offload` (the default, when the kernel allows it), consecutive packets of one
    burst bound for the same peer with the same size leave in one `sendmsg` with
    UDP_SEGMENT (GSO), and the socket takes coalesced batches with UDP_GRO. With a TUN
    opened with offloads (`vnet_hdr`), the kernel hands over 64 KB TCP super-packets, cut
    here into segments that leave in one GSO send, and the segments of a GRO batch that
    continue one TCP stream go back into the TUN joined, their checksums verified. On the
    wire nothing changes: every segment is an ordinary datagram of at most the underlay
    MTU, so a plain peer (flannel's C proxy, socat, a kernel VXLAN device) sends and
    receives exactly what it always did.
    """

    def __init__(self, tun_fd: int, sock: socket.socket, codec: Codec,
                 offload: bool = True, senders: Sequence[socket.socket] = (),
                 vnet_hdr: bool = False) -> None:
        self._tun_fd, self._sock, self.codec = tun_fd, sock, codec
        self._senders = list(senders) or [sock]
        self._headroom = codec.headroom
        self._vnet_in = bytearray(VNET_HDR_LEN)
        # TUN reads land in slots; a burst's super-packets stay there until cut together
        self._stage = bytearray(STAGE_SLOTS * BUFFER_SIZE)
        stage = memoryview(self._stage)
        self._slots: list[bytearray | memoryview] = [
            self._stage, *(stage[i * BUFFER_SIZE:] for i in range(1, STAGE_SLOTS))]
        self._packets = [stage[i * BUFFER_SIZE + self._headroom:(i + 1) * BUFFER_SIZE]
                         for i in range(STAGE_SLOTS)]
        self._reads = [(self._vnet_in, packet) if vnet_hdr else (packet,)
                       for packet in self._packets]
        self._staged: list[int] = []  # lengths of the super-packets staged, in slot order
        self._stage_first = self._stage_hl = self._stage_gso = 0
        self._stage_keys: list[Any] = []  # (peer address, socket) of each staged one
        self._stage_shape: Any = None  # what all staged super-packets share
        self._net_buf = bytearray(NET_GROUP + 2 * 65536)  # a group, a batch, its padding
        self._batch = bytearray(SEGMENT_BUFFER)  # the outbox: datagrams for GSO sends
        self._out_key: Any = None  # (peer address, socket) of what the outbox holds
        self._out_size = self._out_used = self._out_count = 0
        self._out_start = 0  # the outbox is _batch[_out_start:_out_used]
        self._first = True  # nothing of this burst queued yet
        self._joined = bytearray(BUFFER_SIZE)
        self._zeros = bytes(65536)
        self.drops = [0] * len(Drop)
        self.tx_packets = self.tx_bytes = 0  # encapsulated, sent to peers
        self.rx_packets = self.rx_bytes = 0  # decapsulated, written to the TUN
        self.icmp_sent = 0
        self.gso_sends = self.gso_segments = 0
        self.gro_batches = self.gro_segments = 0
        self.tso_packets = self.tso_segments = 0  # TUN super-packets cut into segments
        self.tso_cuts = 0  # numpy passes that cut them (a burst's super-packets share one)
        self.joined_packets = self.joined_segments = 0  # segments joined for the TUN
        self.checksums_finished = 0
        self.vnet_hdr = vnet_hdr
        self.gso = offload and all(_enable(s, "gso") for s in self._senders)
        self.gro = offload and _enable(sock, "gro")
        self._loop: asyncio.AbstractEventLoop | None = None

    name = "python"

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._tun_fd, self._on_tun)
        self._loop.add_reader(self._sock.fileno(), self._on_net)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._tun_fd)
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None

    def counters(self) -> Mapping[str, int]:
        counts = {
            "tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes,
            "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
            "icmp_sent": self.icmp_sent,
            "gso_sends": self.gso_sends, "gso_segments": self.gso_segments,
            "gro_batches": self.gro_batches, "gro_segments": self.gro_segments,
            "tso_packets": self.tso_packets, "tso_segments": self.tso_segments,
            "tso_cuts": self.tso_cuts,
            "joined_packets": self.joined_packets, "joined_segments": self.joined_segments,
            "checksums_finished": self.checksums_finished,
            "offload_gso": int(self.gso), "offload_gro": int(self.gro),
            "offload_tun": int(self.vnet_hdr), "engine_native": 0, "slow_packets": 0,
        }
        completed = getattr(self.codec, "checksums_completed", None)
        if completed is not None:
            counts["checksums_completed"] = completed
        counts.update({f"drop_{reason.name.lower()}": self.drops[reason]
                       for reason in Drop if reason is not Drop.NONE})
        return counts

    def _write_tun(self, data: bytes | memoryview) -> int:
        try:
            if self.vnet_hdr:
                os.writev(self._tun_fd, (PLAIN_HDR, data))
            else:
                os.write(self._tun_fd, data)
        except BlockingIOError:
            return Drop.TUN_QUEUE_FULL
        except OSError:
            return Drop.TUN_WRITE_ERROR
        return Drop.NONE

    # -- TUN -> network ------------------------------------------------------------------

    def _send(self, view: memoryview, addr: Any, size: int, count: int,
              sock: socket.socket) -> None:
        """Send `count` datagrams of `size` bytes (the last may be shorter) held in view."""
        try:
            if count == 1:
                sock.sendto(view, addr)
            else:
                sock.sendmsg([view], [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0, addr)
                self.gso_sends += 1
                self.gso_segments += count
        except BlockingIOError:
            self.drops[Drop.SOCKET_QUEUE_FULL] += count
            return
        except OSError as exc:
            if count > 1 and exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT):
                self.gso = False  # the kernel or the path said no: plain sends from now on
                log.warning("UDP GSO refused by the kernel (%s); sending datagrams one by one",
                            exc.strerror)
                for start in range(0, len(view), size):
                    self._send(view[start:start + size], addr, size, 1, sock)
                return
            self.drops[Drop.SEND_ERROR] += count
            return
        self.tx_packets += count
        self.tx_bytes += len(view)

    def _send_rows(self, view: memoryview, addr: Any, stride: int, count: int,
                   sock: socket.socket) -> None:
        """Send `count` datagrams of `stride` bytes (the last may be shorter), in as few GSO
        sends as the limits allow."""
        if not self.gso:
            for start in range(0, len(view), stride):
                self._send(view[start:start + stride], addr, stride, 1, sock)
            return
        per_send = segments_per_send(stride)
        for first in range(0, count, per_send):
            chunk = view[first * stride:(first + per_send) * stride]
            self._send(chunk, addr, stride, min(per_send, count - first), sock)

    def _stage_tso(self, slot: int, n: int, gso_size: int) -> bool:
        """A TCP super-packet of n bytes read into `slot`: the codec decides on its headers
        as if it were its first segment; if it is to be sent, it stays in its slot, staged
        with the others of the burst that have the same shape and outer header (they are
        cut in one pass, whatever peer or socket each goes to). False if the slot is free
        again (dropped or answered)."""
        packet = self._packets[slot]
        hl = tso_header_len(packet, n, gso_size)
        if not hl:
            self.drops[Drop.MALFORMED] += 1
            return False
        buf, h = self._slots[slot], self._headroom
        verdict = self.codec.from_tun(buf, min(n, hl + gso_size))
        if type(verdict) is not Send:
            self._not_sent(verdict, -(-(n - hl) // gso_size))
            return False
        key = (verdict.addr, self._senders[verdict.flow % len(self._senders)])
        # cut together only what segment_tcp4_many takes together: the same segment size,
        # outer header and header shape
        shape = (gso_size, bytes(buf[:h]), tso_shape(packet))
        staged = self._staged
        if staged and (shape != self._stage_shape
                       or (staged[-1] - hl) % gso_size):  # a short last segment ended it
            self._cut_stage()
            staged = self._staged
        if not staged:
            self._stage_first, self._stage_shape = slot, shape
            self._stage_hl, self._stage_gso = hl, gso_size
        staged.append(n)
        self._stage_keys.append(key)
        return True

    def _cut_stage(self) -> None:
        """Cut the staged super-packets into the outbox in one pass; the outbox sends whole
        GSO batches and keeps the rest for the next cut of the burst. A cut whose
        super-packets go to different sockets (flows spread over source ports) or peers is
        sent at once, each run of one destination in its own GSO sends."""
        lengths, self._staged = self._staged, []
        keys, self._stage_keys = self._stage_keys, []
        hl, gso_size, key = self._stage_hl, self._stage_gso, keys[0]
        mixed = keys.count(key) != len(keys)
        stride = self._headroom + hl + gso_size
        counts = [-(-(n - hl) // gso_size) for n in lengths]  # segments of each
        segments = sum(counts)
        if mixed or key != self._out_key or stride != self._out_size:
            self._flush()
            self._out_key, self._out_size = key, stride
        if self._out_used + segments * stride > len(self._batch):  # what waits to the front
            rest = self._out_used - self._out_start
            self._batch[:rest] = self._batch[self._out_start:self._out_used]
            self._out_start, self._out_used = 0, rest
        cut = segment_tcp4_many(self._stage, self._stage_first * BUFFER_SIZE, BUFFER_SIZE,
                                lengths, gso_size, self._headroom,
                                memoryview(self._batch)[self._out_used:])
        if cut is None:  # _stage_tso let in only what cuts; never expected
            self.drops[Drop.MALFORMED] += segments
            return
        self.tso_cuts += 1
        self.tso_packets += len(lengths)
        self.tso_segments += cut.count
        self._out_used += cut.used
        self._out_count += cut.count
        if mixed:
            self._send_runs(counts, keys)
            return
        if cut.used < cut.count * stride or not self.gso:  # a short last segment ends it
            self._flush()
            return
        per_send = segments_per_send(stride)
        if self._out_count >= per_send:
            whole = self._out_count // per_send * per_send
            start, sent = self._out_start, whole * stride
            self._send_rows(memoryview(self._batch)[start:start + sent], key[0], stride, whole,
                            key[1])
            self._out_start += sent
            self._out_count -= whole

    def _send_runs(self, counts: list[int], keys: list[Any]) -> None:
        """Send the whole outbox (one cut of super-packets of counts[j] segments each, each
        to its own key), a run of consecutive super-packets with the same key at a time."""
        view, stride = memoryview(self._batch), self._out_size
        start, j = self._out_start, 0
        while j < len(keys):
            rows, end = 0, j
            while end < len(keys) and keys[end] == keys[j]:
                rows += counts[end]
                end += 1
            stop = min(start + rows * stride, self._out_used)  # the last row may be short
            self._send_rows(view[start:stop], keys[j][0], stride, rows, keys[j][1])
            start, j = stop, end
        self._out_key, self._out_start, self._out_used, self._out_count = None, 0, 0, 0

    def _queue(self, datagram: memoryview, key: tuple[Any, socket.socket]) -> None:
        """An ordinary datagram into the outbox: it leaves with the others of the burst for
        the same peer and of the same size (the last may be shorter) in one GSO send.

        The first datagram of a burst to come here leaves at once if it is small and nothing
        waits before it (order is kept): it is most likely a lone one (a ping, an ACK), and
        a cold daemon takes tens of microseconds to find out that nothing follows. The rest
        of a burst of small ones (a flood) is batched: one send per 64."""
        total = len(datagram)
        first, self._first = self._first, False
        if not self.gso or (first and total < SMALL and not self._out_count):
            self._send(datagram, key[0], total, 1, key[1])
            return
        if key != self._out_key or total > self._out_size \
                or self._out_count >= segments_per_send(self._out_size) \
                or self._out_used + total > len(self._batch):
            self._flush()
            self._out_key, self._out_size = key, total
        self._batch[self._out_used:self._out_used + total] = datagram
        self._out_used += total
        self._out_count += 1
        if total < self._out_size:  # a short datagram can only be the last one
            self._flush()

    def _flush(self) -> None:
        """Send what the outbox holds."""
        if self._out_count:
            addr, sock = self._out_key
            self._send_rows(memoryview(self._batch)[self._out_start:self._out_used], addr,
                            self._out_size, self._out_count, sock)
        self._out_key, self._out_start, self._out_used, self._out_count = None, 0, 0, 0

    def _not_sent(self, verdict: Verdict, weight: int = 1) -> None:
        """Everything but Send for a packet from the TUN: count, answer, or fragment."""
        if type(verdict) is Dropped:
            self.drops[verdict.reason] += weight
        elif type(verdict) is Reply:
            self.drops[verdict.reason] += weight
            failed = self._write_tun(verdict.packet)
            if failed:
                self.drops[failed] += 1
            else:
                self.icmp_sent += 1
        elif type(verdict) is SendMany:
            self.drops[verdict.reason] += weight
            for datagram in verdict.datagrams:
                self._send(memoryview(datagram), verdict.addr, len(datagram), 1,
                           self._senders[0])
        else:  # a codec bug: Write or Answer for a packet from the TUN
            self.drops[Drop.MALFORMED] += weight

    def _on_tun(self) -> None:
        fd, vnet, reads = self._tun_fd, self.vnet_hdr, self._reads
        skip = VNET_HDR_LEN if vnet else 0
        self._first = True
        slot = 0  # where the next read lands: the slots before it hold staged super-packets
        for _ in range(MAX_BURST):
            try:
                n = os.readv(fd, reads[slot]) - skip
            except BlockingIOError:
                break
            except OSError:
                self.drops[Drop.MALFORMED] += 1
                break
            slot = self._tun_packet(slot, n)
        self._end_burst()

    def _end_burst(self) -> None:
        if self._staged:
            self._cut_stage()
        self._flush()

    def _tun_packet(self, slot: int, n: int) -> int:
        """One read from the TUN (its virtio-net header in _vnet_in, the packet of n bytes in
        `slot`); where the next read lands."""
        meta, drops = self._vnet_in, self.drops
        if self.vnet_hdr and meta[0] | meta[1]:
            flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HDR.unpack(meta)
            if gso_type & ~GSO_ECN == GSO_TCPV4:
                if self._stage_tso(slot, n, gso_size):
                    slot += 1
                    if slot == STAGE_SLOTS:
                        self._cut_stage()
                        slot = 0
                return slot
            if gso_type != GSO_NONE:  # never offered to the kernel (UDP, IPv6)
                drops[Drop.MALFORMED] += 1
                return slot
            if flags & NEEDS_CSUM:
                if not finish_checksum(self._packets[slot], n, csum_start, csum_offset):
                    drops[Drop.MALFORMED] += 1
                    return slot
                self.checksums_finished += 1
        if self._staged:  # what was read before leaves before
            self._cut_stage()
        buf = self._slots[slot]
        verdict = self.codec.from_tun(buf, n)
        if type(verdict) is Send:
            senders = self._senders
            self._queue(memoryview(buf)[:self._headroom + n],
                        (verdict.addr, senders[verdict.flow % len(senders)]))
        else:
            self._not_sent(verdict)
        return 0

    def slow_tun(self, meta: bytes, packet: bytes) -> None:
        """A TUN read the native path did not decide (its virtio-net header and packet): as
        if this engine had read it."""
        self._first = True
        if self.vnet_hdr:
            self._vnet_in[:] = meta
        self._packets[0][:len(packet)] = packet
        self._tun_packet(0, len(packet))
        self._end_burst()

    def slow_net(self, datagram: bytes, src: str) -> None:
        """A datagram the native path did not decide: as if this engine had received it."""
        data = bytearray(datagram)
        self._net_rows(memoryview(data), len(data), max(1, len(data)), 0, 1, src)

    # -- network -> TUN ------------------------------------------------------------------

    def _on_net(self) -> None:
        """Drain the socket. With joining on, GRO batches of whole segments from one sender
        gather in the buffer (up to NET_GROUP bytes) so that one planning pass covers
        several; a batch that ends short, another sender or segment size, or the end of
        the burst hands the group on."""
        view = memoryview(self._net_buf)
        drops, gro, join = self.drops, self.gro, self.vnet_hdr
        sock = self._sock
        used, group_segment, group_src = 0, 0, ""
        for _ in range(MAX_BURST):
            try:
                if gro:
                    n, ancdata, _flags, addr = sock.recvmsg_into((view[used:],),
                                                                 _GRO_CMSG_SPACE)
                    segment = n
                    for level, kind, value in ancdata:
                        if level == SOL_UDP and kind == UDP_GRO:
                            segment = int.from_bytes(value[:4], sys.byteorder)
                else:
                    n, addr = sock.recvfrom_into(view[used:])
                    segment = n
            except BlockingIOError:
                break
            except OSError:
                drops[Drop.MALFORMED] += 1
                break
            if not segment:  # an empty datagram
                drops[Drop.MALFORMED] += 1
                continue
            src = addr[0]
            if n > segment:
                self.gro_batches += 1
                self.gro_segments += -(-n // segment)
            if used and (segment != group_segment or src != group_src):
                self._deliver(used, group_segment, group_src)
                view[:n] = view[used:used + n]
                used = 0
            if not join:
                self._net_rows(view, n, segment, 0, -(-n // segment), src)
                continue
            used += n
            group_segment, group_src = segment, src
            if n % segment or used > NET_GROUP or segment < SMALL:
                self._deliver(used, segment, src)
                used = 0
        if used:
            self._deliver(used, group_segment, group_src)

    def _deliver(self, n: int, segment: int, src: str) -> None:
        """buf[:n], datagrams of `segment` bytes (the last maybe shorter) from `src`, into
        the TUN: runs that continue a TCP stream joined, the rest one by one."""
        view = memoryview(self._net_buf)
        rows = -(-n // segment)
        if rows < MIN_JOIN or segment < SMALL:  # too few, or no data to join (e.g. ACKs)
            self._net_rows(view, n, segment, 0, rows, src)
            return
        padded = rows * segment
        view[n:padded] = self._zeros[:padded - n]
        done = 0
        for run in plan_runs(self._net_buf, n, segment, self._headroom):
            if run.first > done:
                self._net_rows(view, n, segment, done, run.first, src)
            self._join(n, segment, run, src)
            done = run.first + run.count
        if done < rows:
            self._net_rows(view, n, segment, done, rows, src)

    def _join(self, n: int, segment: int, run: Run, src: str) -> None:
        """Hand a run of segments that continue one TCP stream to the TUN as one packet;
        the codec decides on the first (peer, VNI, destination, TTL) for all of them."""
        start = run.first * segment
        verdict = self.codec.from_net(memoryview(self._net_buf)[start:], segment, src)
        if type(verdict) is not Write:
            self.drops[verdict.reason if type(verdict) is Dropped else Drop.MALFORMED] += run.count
            return
        header, total = join_run(self._net_buf, n, segment, self._headroom, run, self._joined)
        try:
            os.writev(self._tun_fd, (header, memoryview(self._joined)[:total]))
        except BlockingIOError:
            self.drops[Drop.TUN_QUEUE_FULL] += run.count
            return
        except OSError:
            self.drops[Drop.TUN_WRITE_ERROR] += run.count
            return
        self.joined_packets += 1
        self.joined_segments += run.count
        self.rx_packets += run.count
        self.rx_bytes += total + (run.count - 1) * VNET_HDR.unpack(header)[2]  # as if unjoined

    def _net_rows(self, view: memoryview, n: int, segment: int, first: int, last: int,
                  src: str) -> None:
        """Datagrams first..last-1 of a batch (each `segment` bytes, the last maybe shorter),
        one at a time through the codec."""
        fd, decide, drops, headroom = self._tun_fd, self.codec.from_net, self.drops, \
            self._headroom
        prefix = (PLAIN_HDR,) if self.vnet_hdr else ()
        packets = octets = 0
        for start in range(first * segment, min(last * segment, n), segment):
            length = min(segment, n - start)
            packet = view[start:start + length]
            verdict = decide(packet, length, src)
            if type(verdict) is Write:
                size = verdict.length
                try:
                    os.writev(fd, (*prefix, packet[headroom:headroom + size]))
                except BlockingIOError:
                    drops[Drop.TUN_QUEUE_FULL] += 1
                except OSError:
                    drops[Drop.TUN_WRITE_ERROR] += 1
                else:
                    packets += 1
                    octets += size
            elif type(verdict) is Dropped:
                drops[verdict.reason] += 1
            elif type(verdict) is Answer:
                try:
                    self._sock.sendto(verdict.frame, verdict.addr)
                except OSError:
                    drops[Drop.SEND_ERROR] += 1
            else:  # a codec bug: a verdict for the TUN side
                drops[Drop.MALFORMED] += 1
        self.rx_packets += packets
        self.rx_bytes += octets


def _enable(sock: socket.socket, what: str) -> bool:
    """Probe UDP GSO (a zero-length-segment cmsg is accepted by kernels that know it) or
    switch on UDP GRO; False where the kernel says no."""
    try:
        if what == "gro":
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        else:
            sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError as exc:
        log.info("UDP %s not available (%s); one datagram per syscall", what.upper(),
                 exc.strerror)
        return False
    return True


class NativeEngine:
    """The native fast path (backends._fastpath) behind PacketEngine's interface.

    Its thread reads the TUN and the socket itself; this object pushes nothing per
    packet. Peer changes reach the native table through the codec's PeerTable; the slow
    packets come back through an eventfd and go through a PacketEngine that is never
    started, so that they meet exactly the Python engine's code; counters are the sum of
    both."""

    name = "native"

    def __init__(self, native: ModuleType, tun_fd: int, sock: socket.socket,
                 codec: NativeCodec, offload: bool = True,
                 senders: Sequence[socket.socket] = (), vnet_hdr: bool = False) -> None:
        self._python = PacketEngine(tun_fd, sock, codec, offload, senders, vnet_hdr)
        self.gso, self.gro, self.vnet_hdr = self._python.gso, self._python.gro, vnet_hdr
        spec = codec.native_spec()
        self._codec = native.Codec(int(spec.kind), spec.own_net, spec.subnet_len, spec.mtu,
                                   spec.vni, spec.own_mac)
        codec.table.mirror(self._codec)
        self._slow_tun = native.SLOW_TUN
        fds = [s.fileno() for s in (senders or [sock])]
        self._engine = native.Engine(self._codec, tun_fd, sock.fileno(), fds, vnet_hdr,
                                     self.gso, self.gro)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._engine.slow_fd, self._on_slow)
        self._engine.start()

    def stop(self) -> None:
        self._engine.stop()
        if self._loop is not None:
            self._loop.remove_reader(self._engine.slow_fd)
            self._loop = None

    def _on_slow(self) -> None:
        if self._engine.take_events() & 1 and self.gso:
            self.gso = False
            log.warning("UDP GSO refused by the kernel; sending datagrams one by one")
        python = self._python
        for kind, meta, data, src in self._engine.take_slow():
            if kind == self._slow_tun:
                python.slow_tun(meta, data)
            else:
                python.slow_net(data, str(IPv4Address(src)))

    def counters(self) -> Mapping[str, int]:
        native: dict[str, Any] = self._engine.counters()
        drops = native.pop("drops")
        counts = dict(self._python.counters())
        for key, value in native.items():
            counts[key] = counts.get(key, 0) + value
        for reason in Drop:
            if reason is not Drop.NONE:
                counts[f"drop_{reason.name.lower()}"] += drops[reason]
        counts.update(offload_gso=int(self.gso), offload_gro=int(self.gro),
                      offload_tun=int(self.vnet_hdr), engine_native=1)
        if "checksums_completed" not in self._python.counters():
            counts.pop("checksums_completed", None)  # the udp codec has none
        return counts


@functools.cache
def load_native() -> tuple[ModuleType | None, str]:
    """backends._fastpath, or None and why (it is not built, or will not load)."""
    try:
        return importlib.import_module("backends._fastpath"), ""
    except ImportError as exc:
        return None, str(exc) or type(exc).__name__


_FALLBACK_SAID: Final[set[str]] = set()  # the fallback is logged once per process


def open_engine(tun_fd: int, sock: socket.socket, codec: Codec, offload: bool = True,
                senders: Sequence[socket.socket] = (), vnet_hdr: bool = False) -> Engine:
    """The engine FLANNELD_ENGINE asks for: native where it is built (and the codec has a
    native twin), else the Python engine, with one log line saying why."""
    choice = engine_choice(os.environ)
    if choice != "python" and hasattr(codec, "native_spec"):
        native, why = load_native()
        if native is not None:
            return NativeEngine(native, tun_fd, sock, codec,  # type: ignore[arg-type]
                                offload, senders, vnet_hdr)
        if choice == "native":
            raise BackendError("FLANNELD_ENGINE=native, but the native fast path is not "
                               f"available ({why}); reinstall flanneld-py with gcc and the "
                               "Python headers present")
        if why not in _FALLBACK_SAID:
            _FALLBACK_SAID.add(why)
            log.warning("the native fast path is not available (%s); the Python engine moves "
                        "the packets", why)
    return PacketEngine(tun_fd, sock, codec, offload, senders, vnet_hdr)
