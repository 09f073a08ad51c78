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
import enum
import os
import socket
from collections.abc import Mapping
from typing import Any, Final, Protocol

MAX_BURST: Final = 256
BUFFER_SIZE: Final = 65536 + 64


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
    """Pure per-packet decisions. May rewrite `buf` in place (TTL, encapsulation)."""

    def from_tun(self, buf: bytearray, n: int) -> Verdict: ...

    def from_net(self, buf: bytearray, n: int, src_ip: str) -> Verdict: ...


class PacketEngine:
    def __init__(self, tun_fd: int, sock: socket.socket, codec: Codec) -> None:
        self._tun_fd, self._sock, self.codec = tun_fd, sock, codec
        self._tun_buf = bytearray(BUFFER_SIZE)
        self._net_buf = bytearray(BUFFER_SIZE)
        self.drops = [0] * len(Drop)
        self.tx_packets = self.tx_bytes = 0  # encapsulated, sent to peers
        self.rx_packets = self.rx_bytes = 0  # decapsulated, written to the TUN
        self.icmp_sent = 0
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

    def _on_tun(self) -> None:
        buf, view, fd = self._tun_buf, memoryview(self._tun_buf), self._tun_fd
        sendto, decide, drops = self._sock.sendto, self.codec.from_tun, self.drops
        packets = octets = 0
        for _ in range(MAX_BURST):
            try:
                n = os.readv(fd, (buf,))
            except BlockingIOError:
                break
            except OSError:
                drops[Drop.MALFORMED] += 1
                break
            action, reason, data = decide(buf, n)
            if action == Action.SEND:
                try:
                    sendto(view[:n], data)
                except BlockingIOError:
                    drops[Drop.SOCKET_QUEUE_FULL] += 1
                except OSError:
                    drops[Drop.SEND_ERROR] += 1
                else:
                    packets += 1
                    octets += n
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
                    try:
                        sendto(datagram, addr)
                    except OSError:
                        drops[Drop.SEND_ERROR] += 1
                    else:
                        packets += 1
                        octets += len(datagram)
        self.tx_packets += packets
        self.tx_bytes += octets

    def _on_net(self) -> None:
        buf, view, fd = self._net_buf, memoryview(self._net_buf), self._tun_fd
        recv, decide, drops = self._sock.recvfrom_into, self.codec.from_net, self.drops
        packets = octets = 0
        for _ in range(MAX_BURST):
            try:
                n, addr = recv(buf)
            except BlockingIOError:
                break
            except OSError:
                drops[Drop.MALFORMED] += 1
                break
            action, reason, data = decide(buf, n, addr[0])
            if action == Action.WRITE:
                try:
                    os.write(fd, view[:data])
                except BlockingIOError:
                    drops[Drop.TUN_QUEUE_FULL] += 1
                except OSError:
                    drops[Drop.TUN_WRITE_ERROR] += 1
                else:
                    packets += 1
                    octets += data
            elif action == Action.ANSWER:
                try:
                    self._sock.sendto(data[1], data[0])
                except OSError:
                    drops[Drop.SEND_ERROR] += 1
            else:
                drops[reason] += 1
        self.rx_packets += packets
        self.rx_bytes += octets
