"""What the userspace data planes' codecs share: the verdict a codec returns for a packet,
the reasons a packet is dropped, and the peer table. Pure: no I/O, no clock.

A codec (backends/udp.py's UDPCodec, backends/vxlan.py's VXLANCodec) makes every
per-packet decision; an engine (backends/_datapath.py) moves the bytes and carries the
verdicts out. The native fast path (backends/_native/) makes the same decisions in C: a
codec says how to build its native twin (`native_spec`), and its peer table mirrors every
change into that twin.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Final, NamedTuple, Protocol

from lease.errors import ConfigError, DecodeError
from tun.packet import check_ipv4, decrement_ttl

ENGINE_VARIABLE: Final = "FLANNELD_ENGINE"
ENGINES: Final = ("auto", "native", "python")


class Drop(enum.IntEnum):
    """Why a packet was not forwarded. Counted per reason, never logged per packet. The
    native fast path counts with the same numbers (backends/_native/fastpath.h)."""

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
    SLOW_QUEUE_FULL = 16  # the native path had more for the Python codec than it could hold


Address = tuple[str, int]  # (PublicIP, UDP port)


class Send(NamedTuple):
    """Send the packet (rewritten in place: TTL, and for VXLAN the header in front) as one
    datagram to `addr`; `flow` picks the sending socket (the UDP source port)."""

    addr: Address
    flow: int = 0


class Write(NamedTuple):
    """Write the inner packet, `length` bytes at the codec's headroom, into the TUN."""

    length: int


class Reply(NamedTuple):
    """Write `packet` (an ICMP error about the packet) into the TUN; the packet itself is
    counted as dropped for `reason`."""

    packet: bytes
    reason: Drop


class SendMany(NamedTuple):
    """Send each of `datagrams` (the packet's fragments) to `addr`; counted under `reason`."""

    addr: Address
    datagrams: list[bytes]
    reason: Drop


class Answer(NamedTuple):
    """Send `frame` (e.g. an ARP reply) back over the network to `addr`."""

    addr: Address
    frame: bytes


class Dropped(NamedTuple):
    reason: Drop


Verdict = Send | Write | Reply | SendMany | Answer | Dropped

DROPPED: Final = {reason: Dropped(reason) for reason in Drop}  # built once, never per packet
# the drops the codecs return, by name
RUNT: Final = DROPPED[Drop.RUNT]
NOT_IPV4: Final = DROPPED[Drop.NOT_IPV4]
MALFORMED: Final = DROPPED[Drop.MALFORMED]
NO_ROUTE: Final = DROPPED[Drop.NO_ROUTE]
TTL_EXPIRED: Final = DROPPED[Drop.TTL_EXPIRED]
NOT_PEER: Final = DROPPED[Drop.NOT_PEER]
NOT_OUR_SUBNET: Final = DROPPED[Drop.NOT_OUR_SUBNET]
OVERSIZED: Final = DROPPED[Drop.OVERSIZED]
WRONG_VNI: Final = DROPPED[Drop.WRONG_VNI]
WRONG_MAC: Final = DROPPED[Drop.WRONG_MAC]
NOT_FOR_US: Final = DROPPED[Drop.NOT_FOR_US]


class Route(NamedTuple):
    """What a codec keeps per peer subnet."""

    addr: Address
    header: bytes  # what goes in front of every inner packet (VXLAN + Ethernet), or b""
    send: Send  # the verdict for the peer, built once (flow 0)


class NativeTable(Protocol):
    """The native codec's peer table (backends._fastpath.Codec), kept in step."""

    def add(self, net: int, ip: int, port: int, header: bytes = b"") -> None: ...

    def remove(self, net: int) -> None: ...


class PeerTable:
    """What a codec keeps per peer subnet (`routes`, keyed by the subnet's network address
    as an int: all leases share SubnetLen, so a lookup is one mask and one probe) and how
    many subnets each PublicIP holds (`peers`: "is this sender a peer?" in O(1))."""

    def __init__(self, subnet_len: int) -> None:
        self.subnet_len = subnet_len
        self.routes: dict[int, Route] = {}
        self.peers: dict[str, int] = {}
        self._owners: dict[int, str] = {}
        self._mirror: NativeTable | None = None

    def add(self, subnet: IPv4Network, public_ip: IPv4Address, port: int,
            header: bytes = b"") -> bool:
        """False (and nothing stored) for a subnet of another prefix length."""
        if subnet.prefixlen != self.subnet_len:
            return False
        self.remove(subnet)
        key, ip = int(subnet.network_address), str(public_ip)
        addr = (ip, port)
        self.routes[key], self._owners[key] = Route(addr, header, Send(addr)), ip
        self.peers[ip] = self.peers.get(ip, 0) + 1
        if self._mirror is not None:
            self._mirror.add(key, int(public_ip), port, header)
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
        if self._mirror is not None:
            self._mirror.remove(key)

    def entries(self) -> Iterator[tuple[int, int, int, bytes]]:
        """(network, PublicIP, port, header) of every peer subnet, as the native table
        takes them."""
        for key, route in self.routes.items():
            yield key, int(IPv4Address(route.addr[0])), route.addr[1], route.header

    def mirror(self, table: NativeTable) -> None:
        """Fill `table` with every peer and keep it in step from now on."""
        for key, ip, port, header in self.entries():
            table.add(key, ip, port, header)
        self._mirror = table


@dataclass(slots=True)
class SubnetCodec:
    """What every codec keeps: our subnet, the peer table, and the views of it the hot path
    reads (a peer subnet's route in one mask and one probe: all leases share SubnetLen)."""

    own_subnet: IPv4Network
    subnet_len: int
    table: PeerTable = field(init=False)
    routes: dict[int, Route] = field(init=False)  # the table's, for the hot path
    peers: dict[str, int] = field(init=False)  # PublicIP -> number of subnets
    mask: int = field(init=False)
    own_net: int = field(init=False)

    def __post_init__(self) -> None:
        self.table = PeerTable(self.subnet_len)
        self.routes, self.peers = self.table.routes, self.table.peers
        self.mask = (0xFFFFFFFF << (32 - self.subnet_len)) & 0xFFFFFFFF
        self.own_net = int(self.own_subnet.network_address)

    def remove_peer(self, subnet: IPv4Network) -> None:
        self.table.remove(subnet)

    def deliverable(self, packet: bytearray | memoryview, n: int) -> int | Dropped:
        """What every codec checks of a packet from the network before it goes into the TUN:
        a valid IPv4 header, a destination in our subnet, TTL left (decremented in place).
        The packet's total length, or why it is dropped."""
        try:
            total = check_ipv4(packet, n)
        except DecodeError:
            return MALFORMED
        dst = (packet[16] << 24) | (packet[17] << 16) | (packet[18] << 8) | packet[19]
        if dst & self.mask != self.own_net:
            return NOT_OUR_SUBNET
        if not decrement_ttl(packet):
            return TTL_EXPIRED
        return total


class NativeKind(enum.IntEnum):
    """Which codec the native fast path runs (backends/_native/fastpath.h's fp_kind)."""

    UDP = 0
    VXLAN = 1


@dataclass(frozen=True, slots=True)
class NativeSpec:
    """How to build a codec's native twin: the same parameters, the same decisions."""

    kind: NativeKind
    own_net: int
    subnet_len: int
    mtu: int
    vni: int = 0
    own_mac: bytes = bytes(6)


class Codec(Protocol):
    """Pure per-packet decisions. May rewrite `buf` in place (TTL, encapsulation).

    The inner packet sits at `headroom` in both directions: the engine reads the TUN into
    buf[headroom:] so that an encapsulating codec writes its header in front, in place, and
    a received datagram's inner packet starts at `headroom`."""

    headroom: int

    def from_tun(self, buf: bytearray | memoryview, n: int) -> Verdict: ...

    def from_net(self, buf: bytearray | memoryview, n: int, src_ip: str) -> Verdict: ...


class NativeCodec(Codec, Protocol):
    """A codec the native fast path can stand in for."""

    table: PeerTable

    def native_spec(self) -> NativeSpec: ...


def engine_choice(environ: Mapping[str, str]) -> str:
    """FLANNELD_ENGINE: auto (the default: native where it is built), native (required) or
    python; ConfigError for anything else."""
    value = environ.get(ENGINE_VARIABLE, "").strip().lower() or "auto"
    if value not in ENGINES:
        raise ConfigError(f"{ENGINE_VARIABLE} must be one of {', '.join(ENGINES)}, "
                          f"not {environ[ENGINE_VARIABLE]!r}")
    return value
