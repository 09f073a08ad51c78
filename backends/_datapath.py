"""The userspace data-path engine shared by the udp backend and the userspace VXLAN data
plane: one TUN fd, one UDP socket, a codec that decides what happens to each packet.

Shell: the only place packets touch fds. Both fds are non-blocking and read from
`loop.add_reader` callbacks into preallocated buffers; each callback drains its fd until
EAGAIN, at most MAX_BURST packets per wake-up so neither direction starves the other (the
fd stays readable, so the loop calls back at once). A full queue drops and counts; nothing
here ever spins, logs, or allocates per packet beyond the codec's verdict tuple.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Final, Generic, Protocol, TypeVar

V = TypeVar("V")
SOCKET_BUFFER: Final = 4 << 20
MAX_BURST: Final = 256
BUFFER_SIZE: Final = 65536 + 64
# UDP GSO/GRO (Python 3.11 lacks the names): SOL_UDP, UDP_SEGMENT, UDP_GRO
SOL_UDP: Final = 17
UDP_SEGMENT: Final = 103
UDP_GRO: Final = 104
MAX_SEGMENTS: Final = 64
MAX_GSO_BYTES: Final = 65507 - 8  # one UDP datagram's payload limit, as the kernel sees it
_U16: Final = struct.Struct("=H")
_GRO_CMSG_SPACE: Final = socket.CMSG_SPACE(4)
log = logging.getLogger(__name__)


class Action(enum.IntEnum):
    SEND = 0  # send buf[:n] (possibly rewritten in place) as one datagram to `data` (addr)
    REPLY = 1  # write `data` (bytes, e.g. an ICMP error) into the TUN
    DROP = 2
    SEND_MANY = 3  # send each datagram of `data` = (addr, [bytes, ...])
    WRITE = 4  # write buf[:data] into the TUN
    ANSWER = 5  # send `data` = (addr, bytes) back over the network (e.g. an ARP reply)


class Drop(enum.IntEnum):
    """Why a packet was not forwarded. Counted per reason, never logged per packet."""

    NONE = 0
    RUNT = 1
    NOT_IPV4 = 2
    MALFORMED = 3
    NO_ROUTE = 4
    TTL_EXPIRED = 5
    NOT_PEER = 6
    NOT_OUR_SUBNET = 7
    OVERSIZED = 8
    TUN_QUEUE_FULL = 9
    SOCKET_QUEUE_FULL = 10
    SEND_ERROR = 11
    TUN_WRITE_ERROR = 12
    WRONG_VNI = 13
    WRONG_MAC = 14
    NOT_FOR_US = 15


Verdict = tuple[int, int, Any]


class Codec(Protocol):
    """Pure per-packet decisions. May rewrite `buf` in place (TTL, encapsulation).

    The inner packet sits at `headroom` in both directions: the engine reads the TUN into
    buf[headroom:] so that an encapsulating codec writes its header in front, in place, and
    a received datagram's inner packet starts at `headroom`. For SEND the verdict's middle
    slot is a flow hash that picks the sending socket (the UDP source port)."""

    headroom: int

    def from_tun(self, buf: bytearray, n: int) -> Verdict: ...

    def from_net(self, buf: bytearray | memoryview, n: int, src_ip: str) -> Verdict: ...


class PeerTable(Generic[V]):
    """What a codec keeps per peer subnet (`routes`, keyed by the subnet's network address
    as an int: all leases share SubnetLen, so a lookup is one mask and one probe) and how
    many subnets each PublicIP holds (`peers`: "is this sender a peer?" in O(1))."""

    def __init__(self, subnet_len: int) -> None:
        self.subnet_len = subnet_len
        self.routes: dict[int, V] = {}
        self.peers: dict[str, int] = {}
        self._owners: dict[int, str] = {}

    def add(self, subnet: IPv4Network, public_ip: IPv4Address, value: V) -> bool:
        """False (and nothing stored) for a subnet of another prefix length."""
        if subnet.prefixlen != self.subnet_len:
            return False
        self.remove(subnet)
        key, ip = int(subnet.network_address), str(public_ip)
        self.routes[key], self._owners[key] = value, ip
        self.peers[ip] = self.peers.get(ip, 0) + 1
        return True

    def remove(self, subnet: IPv4Network) -> None:
        if subnet.prefixlen != self.subnet_len:
            return  # add() never took it
        key = int(subnet.network_address)
        ip = self._owners.pop(key, None)
        if ip is None:
            return
        del self.routes[key]
        left = self.peers[ip] - 1
        if left:
            self.peers[ip] = left
        else:
            del self.peers[ip]


def open_udp_socket(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to address:port with buffers of SOCKET_BUFFER bytes
    (the FORCE options need root; without it the kernel's maximum applies). OSError if the
    address is taken or not ours."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
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
    """Moves packets between the TUN and the UDP socket through a codec.

    With `offload` (the default, when the kernel allows it), consecutive packets of one
    burst bound for the same peer with the same size leave in one `sendmsg` with
    UDP_SEGMENT (GSO), and the socket takes coalesced batches with UDP_GRO. On the wire
    nothing changes: every segment is an ordinary datagram of at most the underlay MTU, so
    a plain peer (flannel's C proxy, socat) sends and receives exactly what it always did.
    """

    def __init__(self, tun_fd: int, sock: socket.socket, codec: Codec,
                 offload: bool = True, senders: Sequence[socket.socket] = ()) -> None:
        self._tun_fd, self._sock, self.codec = tun_fd, sock, codec
        self._senders = list(senders) or [sock]
        self._headroom = codec.headroom
        self._tun_buf = bytearray(BUFFER_SIZE)
        self._net_buf = bytearray(BUFFER_SIZE)
        self._batch = bytearray(BUFFER_SIZE)
        self.drops = [0] * len(Drop)
        self.tx_packets = self.tx_bytes = 0  # encapsulated, sent to peers
        self.rx_packets = self.rx_bytes = 0  # decapsulated, written to the TUN
        self.icmp_sent = 0
        self.gso_sends = self.gso_segments = 0
        self.gro_batches = self.gro_segments = 0
        self.gso = offload and all(_enable(s, "gso") for s in self._senders)
        self.gro = offload and _enable(sock, "gro")
        self._loop: asyncio.AbstractEventLoop | None = None

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
            "offload_gso": int(self.gso), "offload_gro": int(self.gro),
        }
        counts.update({f"drop_{reason.name.lower()}": self.drops[reason]
                       for reason in Drop if reason is not Drop.NONE})
        return counts

    def _write_tun(self, data: bytes | memoryview) -> int:
        try:
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

    def _on_tun(self) -> None:
        buf, view, fd = self._tun_buf, memoryview(self._tun_buf), self._tun_fd
        into = (view[self._headroom:],)
        batch, batch_view = self._batch, memoryview(self._batch)
        decide, drops, gso = self.codec.from_tun, self.drops, self.gso
        senders, headroom = self._senders, self._headroom
        pending: Any = None  # (peer, socket) the batch is for
        size = used = count = 0
        for _ in range(MAX_BURST):
            try:
                n = os.readv(fd, into)
            except BlockingIOError:
                break
            except OSError:
                drops[Drop.MALFORMED] += 1
                break
            action, reason, data = decide(buf, n)
            if action == Action.SEND:
                key = (data, senders[reason % len(senders)])
                total = headroom + n
                if gso and key == pending and total <= size and count < MAX_SEGMENTS \
                        and used + total <= MAX_GSO_BYTES:
                    batch[used:used + total] = view[:total]
                    used += total
                    count += 1
                    if total < size:  # a short segment can only be the last one
                        self._send(batch_view[:used], pending[0], size, count, pending[1])
                        pending, used, count = None, 0, 0
                    continue
                if count:
                    self._send(batch_view[:used], pending[0], size, count, pending[1])
                if gso:
                    batch[:total] = view[:total]
                    pending, size, used, count = key, total, total, 1
                else:
                    self._send(view[:total], data, total, 1, key[1])
                    count = 0
                continue
            if reason:
                drops[reason] += 1
            if action == Action.REPLY:
                failed = self._write_tun(data)
                if failed:
                    drops[failed] += 1
                else:
                    self.icmp_sent += 1
            elif action == Action.SEND_MANY:
                addr, datagrams = data
                for datagram in datagrams:
                    self._send(memoryview(datagram), addr, len(datagram), 1, senders[0])
        if count:
            self._send(batch_view[:used], pending[0], size, count, pending[1])

    # -- network -> TUN ------------------------------------------------------------------

    def _on_net(self) -> None:
        buf, view, fd = self._net_buf, memoryview(self._net_buf), self._tun_fd
        decide, drops, gro = self.codec.from_net, self.drops, self.gro
        sock, headroom = self._sock, self._headroom
        packets = octets = 0
        for _ in range(MAX_BURST):
            try:
                if gro:
                    n, ancdata, _flags, addr = sock.recvmsg_into((buf,), _GRO_CMSG_SPACE)
                    segment = n
                    for level, kind, value in ancdata:
                        if level == SOL_UDP and kind == UDP_GRO:
                            segment = int.from_bytes(value[:4], sys.byteorder)
                else:
                    n, addr = sock.recvfrom_into(buf)
                    segment = n
            except BlockingIOError:
                break
            except OSError:
                drops[Drop.MALFORMED] += 1
                break
            if segment < n:
                self.gro_batches += 1
                self.gro_segments += (n + segment - 1) // segment
            src = addr[0]
            for start in range(0, n, segment) if segment else (0,):
                length = min(segment, n - start) if segment else 0
                packet = view[start:start + length]
                action, reason, data = decide(packet, length, src)
                if action == Action.WRITE:
                    try:
                        os.write(fd, packet[headroom:headroom + data])
                    except BlockingIOError:
                        drops[Drop.TUN_QUEUE_FULL] += 1
                    except OSError:
                        drops[Drop.TUN_WRITE_ERROR] += 1
                    else:
                        packets += 1
                        octets += data
                elif action == Action.ANSWER:
                    try:
                        sock.sendto(data[1], data[0])
                    except OSError:
                        drops[Drop.SEND_ERROR] += 1
                else:
                    drops[reason] += 1
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
