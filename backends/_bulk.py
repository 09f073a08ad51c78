"""Kernel entries as raw rtnetlink requests: routes, neighbours and FDB entries, packed back
to back into large sends, each acknowledged (what `ip -batch` does). The one way every
backend changes them, from one entry to ten thousand.

pyroute2 costs most of a millisecond per request in Python, so a node joining a cluster of
thousands of peers would spend seconds programming them one by one; here the encoding is
a few struct calls per entry and the kernel takes a whole chunk per send. pyroute2 stays
for links (backends/_netlink.py).

Also raw, for the same reason: the route dump behind host-gw's periodic check, and the
vxlan backend's neighbour-miss socket (pyroute2 would parse every neighbour change on the
host; a socket filter lets only the misses through, and they are parsed here).

The encoders and parsers are pure (bytes in or out); send(), dump_routes() and
miss_socket() are the shell. rtnetlink: rtnetlink(7); socket filters: socket(7), bpf(4).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final

log = logging.getLogger(__name__)

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

NLMSG_ERROR: Final = 2
NLM_F_REQUEST: Final = 0x001
NLM_F_ACK: Final = 0x004
NLM_F_REPLACE: Final = 0x100
NLM_F_CREATE: Final = 0x400
RTM_NEWROUTE: Final = 24
RTM_DELROUTE: Final = 25
RTM_NEWNEIGH: Final = 28
RTM_DELNEIGH: Final = 29
RTA_DST: Final = 1
RTA_OIF: Final = 4
RTA_GATEWAY: Final = 5
RTA_TABLE: Final = 15
NDA_DST: Final = 1
NDA_LLADDR: Final = 2
AF_BRIDGE: Final = 7
RTN_UNICAST: Final = 1
RT_SCOPE_UNIVERSE: Final = 0
RT_SCOPE_NOWHERE: Final = 255  # in a delete: whatever the route's scope
RTNH_F_ONLINK: Final = 4
NUD_REACHABLE: Final = 0x02
NUD_PERMANENT: Final = 0x80
NTF_SELF: Final = 0x02
MAIN_TABLE: Final = 254
RTPROT_FLANNEL: Final = 70  # the protocol our routes carry (`ip route` shows "proto 70")
DELETE: Final = NLM_F_REQUEST | NLM_F_ACK
CHUNK: Final = 60 * 1024  # bytes of requests per send; their acks fit the receive buffer

_NLMSGHDR: Final = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_RTMSG: Final = struct.Struct("=BBBBBBBBI")
_NDMSG: Final = struct.Struct("=BBHiHBB")
_RTATTR: Final = struct.Struct("=HH")
_U32: Final = struct.Struct("=I")
_ERRNO: Final = struct.Struct("=i")


@dataclass(frozen=True, slots=True)
class Request:
    """One rtnetlink request: its message type and body (family header + attributes)."""

    kind: int
    body: bytes
    what: str  # for error messages: "route 10.5.3.0/24 via 10.5.3.0"
    flags: int = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _family(address: Network | Address) -> int:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _route(kind: int, dst: Network, gateway: Address, oif: int, proto: int,
           onlink: bool, flags: int) -> Request:
    """An IPv4 or (by `dst`) IPv6 route request; IPv6 onlink gateways need Linux >= 4.16."""
    scope, route_type = (RT_SCOPE_UNIVERSE, RTN_UNICAST) if kind == RTM_NEWROUTE \
        else (RT_SCOPE_NOWHERE, 0)
    body = (_RTMSG.pack(_family(dst), dst.prefixlen, 0, 0, MAIN_TABLE, proto, scope,
                        route_type, RTNH_F_ONLINK if onlink else 0)
            + _attr(RTA_TABLE, _U32.pack(MAIN_TABLE))
            + _attr(RTA_DST, dst.network_address.packed)
            + _attr(RTA_GATEWAY, gateway.packed)
            + _attr(RTA_OIF, _U32.pack(oif)))
    return Request(kind, body, f"route {dst} via {gateway}", flags)


def route_replace(dst: Network, gateway: Address, oif: int, proto: int,
                  onlink: bool = False) -> Request:
    """`ip route replace <dst> via <gateway> dev <oif> proto <proto> [onlink]`."""
    return _route(RTM_NEWROUTE, dst, gateway, oif, proto, onlink,
                  NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)


def route_delete(dst: Network, gateway: Address, oif: int, proto: int,
                 onlink: bool = False) -> Request:
    """`ip route del <dst> via <gateway> dev <oif> proto <proto>`: the kernel matches the
    protocol too, so a route somebody else added for the same subnet stays."""
    return _route(RTM_DELROUTE, dst, gateway, oif, proto, onlink, DELETE)


def neigh_replace(dst: Address, lladdr: bytes, ifindex: int,
                  state: int = NUD_PERMANENT) -> Request:
    """`ip neigh replace <dst> lladdr <lladdr> dev <ifindex> nud permanent` (or another
    state; `ip -6 neigh` for an IPv6 `dst`)."""
    body = (_NDMSG.pack(_family(dst), 0, 0, ifindex, state, 0, 0)
            + _attr(NDA_DST, dst.packed) + _attr(NDA_LLADDR, lladdr))
    return Request(RTM_NEWNEIGH, body, f"neighbour {dst}")


def neigh_delete(dst: Address, ifindex: int) -> Request:
    """`ip neigh del <dst> dev <ifindex>`."""
    body = _NDMSG.pack(_family(dst), 0, 0, ifindex, 0, 0, 0) + _attr(NDA_DST, dst.packed)
    return Request(RTM_DELNEIGH, body, f"neighbour {dst}", DELETE)


def fdb_replace(lladdr: bytes, dst: Address, ifindex: int) -> Request:
    """`bridge fdb replace <lladdr> dev <ifindex> dst <dst> self permanent`; an IPv6 `dst`
    (16 bytes of NDA_DST) for a VXLAN device with an IPv6 local address."""
    body = (_NDMSG.pack(AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT, NTF_SELF, 0)
            + _attr(NDA_LLADDR, lladdr) + _attr(NDA_DST, dst.packed))
    return Request(RTM_NEWNEIGH, body, f"fdb {lladdr.hex(':')} dst {dst}")


def fdb_delete(lladdr: bytes, dst: Address, ifindex: int) -> Request:
    """`bridge fdb del <lladdr> dev <ifindex> dst <dst> self`."""
    body = (_NDMSG.pack(AF_BRIDGE, 0, 0, ifindex, NUD_PERMANENT, NTF_SELF, 0)
            + _attr(NDA_LLADDR, lladdr) + _attr(NDA_DST, dst.packed))
    return Request(RTM_DELNEIGH, body, f"fdb {lladdr.hex(':')} dst {dst}", DELETE)


def encode(request: Request, sequence: int) -> bytes:
    """The netlink message: header (acknowledged; create or replace unless a delete) and
    body."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(request.body), request.kind, request.flags,
                          sequence, 0) + request.body


def parse_acks(data: bytes) -> dict[int, int]:
    """Sequence number -> errno (0: done) of the acknowledgements in `data`."""
    acks: dict[int, int] = {}
    at = 0
    while at + _NLMSGHDR.size <= len(data):
        length, kind, _flags, sequence, _port = _NLMSGHDR.unpack_from(data, at)
        if length < _NLMSGHDR.size:
            break
        if kind == NLMSG_ERROR and at + _NLMSGHDR.size + 4 <= len(data):
            acks[sequence] = -_ERRNO.unpack_from(data, at + _NLMSGHDR.size)[0]
        at += (length + 3) & ~3
    return acks


async def program(requests: Sequence[Request], who: str) -> tuple[list[Request], int] | None:
    """send() in a worker thread, for a backend: the requests that failed and how many
    deletes found their entry already gone (not a failure). Each failure is logged (the
    first five); None, with one line, if netlink itself could not be used."""
    try:
        failed = await asyncio.to_thread(send, requests)
    except OSError as exc:
        log.warning("%s: %d kernel entries: %s", who, len(requests), exc.strerror)
        return None
    real = [(request, code) for request, code in failed
            if not (request.kind in (RTM_DELNEIGH, RTM_DELROUTE)
                    and code in (errno.ENOENT, errno.ESRCH, errno.ENODEV))]
    for request, code in real[:5]:
        log.warning("%s: %s: %s", who, request.what, os.strerror(code))
    return [request for request, _ in real], len(failed) - len(real)


def send(requests: Sequence[Request]) -> list[tuple[Request, int]]:
    """Send `requests` in order, in chunks; the failed ones with their errno. Blocking (run
    it in a worker thread); OSError if netlink itself is unusable."""
    failed: list[tuple[Request, int]] = []
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
        sock.bind((0, 0))
        start = 0
        while start < len(requests):
            chunk: list[bytes] = []
            size, end = 0, start
            while end < len(requests) and (not chunk or size < CHUNK):
                message = encode(requests[end], end + 1)
                chunk.append(message)
                size += len(message)
                end += 1
            sock.sendall(b"".join(chunk))
            waiting = set(range(start + 1, end + 1))
            while waiting:
                for sequence, errno in parse_acks(sock.recv(1 << 20)).items():
                    if sequence in waiting:
                        waiting.discard(sequence)
                        if errno:
                            failed.append((requests[sequence - 1], errno))
            start = end
    finally:
        sock.close()
    return failed


RTM_GETROUTE: Final = 26
NLMSG_DONE: Final = 3
NLM_F_DUMP: Final = 0x300
SOL_NETLINK: Final = 270
NETLINK_GET_STRICT_CHK: Final = 12


@dataclass(frozen=True, slots=True)
class DumpedRoute:
    dst: Network
    gateway: Address | None
    oif: int
    onlink: bool


def dump_request(proto: int, sequence: int = 1, family: int = socket.AF_INET) -> bytes:
    """RTM_GETROUTE dump of the main table's IPv4 (or `family` AF_INET6: IPv6) routes with
    protocol `proto` (the kernel filters by it when the socket asks for strict checking,
    Linux >= 4.20)."""
    body = _RTMSG.pack(family, 0, 0, 0, MAIN_TABLE, proto, 0, 0, 0)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETROUTE,
                          NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + body


def parse_routes(data: bytes, proto: int,
                 family_wanted: int = socket.AF_INET) -> tuple[list[DumpedRoute], bool]:
    """The main-table IPv4 (or IPv6) routes with protocol `proto` in a dump's bytes, and
    whether the dump ended (NLMSG_DONE) in them."""
    width = 16 if family_wanted == socket.AF_INET6 else 4
    network, address = (_network6, _address6) if width == 16 else (_network, _address)
    routes: list[DumpedRoute] = []
    for kind, body, end in _messages(data):
        if kind == NLMSG_DONE:
            return routes, True
        if kind == RTM_NEWROUTE and end - body >= _RTMSG.size:
            family, dst_len, _, _, table, protocol, _, _, flags = _RTMSG.unpack_from(data, body)
            attrs = _attrs(data, body + _RTMSG.size, end)
            table = _U32.unpack(attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else table
            if family == family_wanted and protocol == proto and table == MAIN_TABLE:
                gateway = attrs.get(RTA_GATEWAY)
                oif = _U32.unpack(attrs[RTA_OIF][:4])[0] if RTA_OIF in attrs else 0
                dst = attrs.get(RTA_DST, bytes(width)).ljust(width, b"\0")[:width]
                routes.append(DumpedRoute(network(dst, dst_len),
                                          address(gateway[:width]) if gateway
                                          and len(gateway) >= width else None,
                                          oif, bool(flags & RTNH_F_ONLINK)))
    return routes, False


def _messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, where its body starts, where it ends) of each whole netlink message in
    `data`, in order; a message that claims more than is there ends the walk."""
    at = 0
    while at + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _sequence, _port = _NLMSGHDR.unpack_from(data, at)
        if length < _NLMSGHDR.size or at + length > len(data):
            return
        yield kind, at + _NLMSGHDR.size, at + length
        at += (length + 3) & ~3


@functools.lru_cache(maxsize=1 << 16)
def _network(packed: bytes, prefixlen: int) -> IPv4Network:
    """Cached: a resync sees the same few thousand networks every time."""
    return IPv4Network((IPv4Address(packed), prefixlen), strict=False)


@functools.lru_cache(maxsize=1 << 12)
def _address(packed: bytes) -> IPv4Address:
    return IPv4Address(packed)


@functools.lru_cache(maxsize=1 << 16)
def _network6(packed: bytes, prefixlen: int) -> IPv6Network:
    return IPv6Network((IPv6Address(packed), min(prefixlen, 128)), strict=False)


@functools.lru_cache(maxsize=1 << 12)
def _address6(packed: bytes) -> IPv6Address:
    return IPv6Address(packed)


def _attrs(data: bytes, at: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while at + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, at)
        if length < _RTATTR.size or at + length > end:
            break
        found[kind & 0x3FFF] = data[at + _RTATTR.size:at + length]
        at += (length + 3) & ~3
    return found


def dump_routes(proto: int, family: int = socket.AF_INET) -> list[DumpedRoute]:
    """Our routes (protocol `proto`, main table, IPv4 or `family`), read straight from the
    kernel. Blocking (run it in a worker thread); OSError if netlink is unusable."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        sock.bind((0, 0))
        sock.sendall(dump_request(proto, family=family))
        routes: list[DumpedRoute] = []
        done = False
        while not done:
            found, done = parse_routes(sock.recv(1 << 20), proto, family)
            routes += found
        return routes
    finally:
        sock.close()


# -- neighbour misses --------------------------------------------------------------------

RTM_GETNEIGH: Final = 30  # what a VXLAN device (and app_solicit) asks userspace with
RTMGRP_NEIGH: Final = 0x4
SO_ATTACH_FILTER: Final = 26
_BPF: Final = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


@dataclass(frozen=True, slots=True)
class Miss:
    """An RTM_GETNEIGH: the kernel wants a neighbour (dst set) or an FDB entry (lladdr)."""

    family: int
    ifindex: int
    dst: str | None
    lladdr: str | None


def parse_misses(data: bytes) -> list[Miss]:
    """The RTM_GETNEIGH messages in `data` (others are skipped): family, ifindex, NDA_DST
    as an address string (4 or 16 bytes), NDA_LLADDR as aa:bb:cc:dd:ee:ff."""
    misses: list[Miss] = []
    for kind, body, end in _messages(data):
        if kind == RTM_GETNEIGH and end - body >= _NDMSG.size:
            family, _, _, ifindex, _, _, _ = _NDMSG.unpack_from(data, body)
            attrs = _attrs(data, body + _NDMSG.size, end)
            raw_dst, raw_mac = attrs.get(NDA_DST), attrs.get(NDA_LLADDR)
            dst = None
            if raw_dst is not None and len(raw_dst) in (4, 16):
                dst = socket.inet_ntop(socket.AF_INET if len(raw_dst) == 4 else socket.AF_INET6,
                                       raw_dst)
            misses.append(Miss(family, ifindex, dst, raw_mac.hex(":") if raw_mac else None))
    return misses


def getneigh_filter() -> bytes:
    """A classic BPF program for a netlink socket: keep RTM_GETNEIGH, drop the rest (every
    neighbour and FDB change on the host would otherwise wake us, thousands at a time when
    peers are programmed in bulk). BPF reads the header's type field big-endian."""
    wanted = int.from_bytes(struct.pack("=H", RTM_GETNEIGH), "big")
    return b"".join((_BPF.pack(0x28, 0, 0, 4),  # ld h [4]: nlmsg_type
                     _BPF.pack(0x15, 0, 1, wanted),  # jeq wanted, next, drop
                     _BPF.pack(0x06, 0, 0, 0xFFFFFFFF),  # ret all of it
                     _BPF.pack(0x06, 0, 0, 0)))  # ret 0: dropped


def miss_socket() -> socket.socket:
    """A non-blocking rtnetlink socket on the neighbour group that sees only RTM_GETNEIGH;
    OSError if the kernel refuses it."""
    program_bytes = getneigh_filter()
    code = ctypes.create_string_buffer(program_bytes, len(program_bytes))
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, 33, 1 << 20)  # SO_RCVBUFFORCE
        fprog = struct.pack("@HP", len(program_bytes) // _BPF.size, ctypes.addressof(code))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.bind((0, RTMGRP_NEIGH))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
