"""udp: TUN `flannel0`, each IPv4 packet carried bare in one UDP datagram (port 8285).

flannel's original backend, encapsulated in userspace. The wire format is flannel's: the
UDP payload is the inner IPv4 packet, nothing else. Leases carry no BackendType, and every
lease under the prefix is a peer (as in flannel). Beyond flannel: datagrams are accepted
only from a current peer's PublicIP and only for our own subnet (upstream accepts anything
that reaches port 8285), and a TTL that runs out gets an ICMP Time Exceeded.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Final

from lease.config import BackendSpec
from lease.errors import BackendError, ConfigError, DecodeError
from lease.model import EventKind, Lease, LeaseAttrs, LeaseEvent
from tun.device import TunDevice, configure_tun
from tun.packet import (
    FLAG_DF,
    ICMPType,
    UnreachableCode,
    decrement_ttl,
    fragment,
    icmp_error,
)

from ._base import BackendContext
from ._bulk import RTPROT_FLANNEL
from ._codec import (
    DROPPED,
    MALFORMED,
    NOT_IPV4,
    NOT_PEER,
    RUNT,
    Drop,
    Dropped,
    NativeKind,
    NativeSpec,
    Reply,
    Route,
    SendMany,
    SubnetCodec,
    Verdict,
    Write,
)
from ._datapath import Engine, open_engine, open_udp_socket
from ._netlink import Netlink, watch_device

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 8285
ENCAP_OVERHEAD: Final = 28  # outer IPv4 + UDP headers
DEVICE: Final = "flannel0"


@dataclass(frozen=True, slots=True)
class UDPConfig:
    port: int = DEFAULT_PORT
    offload: bool = True  # ours: UDP GSO/GRO batching (the wire is the same either way)

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> UDPConfig:
        port = spec.option("Port", 0)
        if port is None:  # JSON null: Go keeps the zero value
            port = 0
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"udp backend: Port must be an integer 0..65535, not {port!r}")
        offload = spec.option("Offload", True)
        if offload is None:
            offload = True
        if not isinstance(offload, bool):
            raise ConfigError(f"udp backend: Offload must be true or false, not {offload!r}")
        return cls(port=port or DEFAULT_PORT, offload=offload)


@dataclass(slots=True)
class UDPCodec(SubnetCodec):
    """Pure per-packet logic of the udp backend (implements _codec.NativeCodec)."""

    port: int
    mtu: int  # the largest inner packet one datagram may carry (underlay MTU - 28)
    headroom: int = 0  # the datagram is the bare inner packet
    own_address: int = field(init=False)

    def __post_init__(self) -> None:
        SubnetCodec.__post_init__(self)  # (a slotted dataclass cannot call super() bare)
        self.own_address = self.own_net  # flannel0 carries <subnet>.0/32

    def native_spec(self) -> NativeSpec:
        return NativeSpec(NativeKind.UDP, self.own_net, self.subnet_len, self.mtu)

    # -- the peer table ----------------------------------------------------------------

    def add_peer(self, subnet: IPv4Network, public_ip: IPv4Address) -> bool:
        return self.table.add(subnet, public_ip, self.port)

    # -- packets -----------------------------------------------------------------------

    def _icmp(self, packet: memoryview | bytearray, kind: ICMPType, code: int, reason: Drop,
              rest: int = 0) -> Verdict:
        reply = icmp_error(packet, kind, code, self.own_address, rest)
        return Reply(reply, reason) if reply else DROPPED[reason]

    def from_tun(self, buf: bytearray | memoryview, n: int) -> Verdict:
        """A packet the kernel routed into flannel0: to which peer, or what instead."""
        if n < 20:
            return RUNT
        if buf[0] >> 4 != 4:
            return NOT_IPV4
        dst = (buf[16] << 24) | (buf[17] << 16) | (buf[18] << 8) | buf[19]
        route = self.routes.get(dst & self.mask)
        if route is None:
            return self._icmp(memoryview(buf)[:n], ICMPType.DEST_UNREACHABLE,
                              UnreachableCode.NET, Drop.NO_ROUTE)
        if buf[8] <= 1:
            return self._icmp(memoryview(buf)[:n], ICMPType.TIME_EXCEEDED, 0, Drop.TTL_EXPIRED)
        if n > self.mtu:
            return self._oversized(buf, n, route)
        decrement_ttl(buf)
        return route.send

    def _oversized(self, buf: bytearray | memoryview, n: int, route: Route) -> Verdict:
        """Bigger than one datagram may carry (only with a wrong MTU somewhere): DF set ->
        Fragmentation Needed with our MTU (RFC 1191), quoting the packet as it came; else
        fragment it (RFC 791)."""
        packet = memoryview(buf)[:n]
        if (packet[6] << 8) & FLAG_DF:
            return self._icmp(packet, ICMPType.DEST_UNREACHABLE,
                              UnreachableCode.FRAGMENTATION_NEEDED, Drop.OVERSIZED, self.mtu)
        decrement_ttl(buf)
        try:
            pieces = fragment(packet, self.mtu)
        except DecodeError:
            return MALFORMED
        return SendMany(route.addr, pieces, Drop.OVERSIZED)

    def from_net(self, buf: bytearray | memoryview, n: int, src_ip: str) -> Verdict:
        """A datagram that reached our port: write its packet into flannel0, or drop it."""
        if src_ip not in self.peers:
            return NOT_PEER
        total = self.deliverable(buf, n)
        return total if isinstance(total, Dropped) else Write(total)


class UDPBackend:
    def __init__(self, context: BackendContext) -> None:
        self._context = context
        self._iface = context.iface
        self.config = UDPConfig.from_spec(context.network.backend)
        self._netlink = Netlink()
        self._tun: TunDevice | None = None
        self._sock: socket.socket | None = None
        self._engine: Engine | None = None
        self.codec: UDPCodec | None = None
        self._skipped = 0

    @property
    def mtu(self) -> int:
        return self._iface.mtu - ENCAP_OVERHEAD

    async def lease_attrs(self, previous: LeaseAttrs | None) -> LeaseAttrs:
        return LeaseAttrs(public_ip=self._iface.public_ip)  # no BackendType, as flannel

    def _open_socket(self) -> socket.socket:
        try:
            return open_udp_socket(str(self._iface.address), self.config.port)
        except OSError as exc:
            raise BackendError(f"udp backend: cannot bind {self._iface.address}:"
                               f"{self.config.port}: {exc.strerror}") from None

    async def start(self, lease: Lease) -> None:
        network = self._context.network
        self.codec = UDPCodec(lease.subnet, network.subnet_len, self.config.port, self.mtu)
        self._sock = self._open_socket()
        self._tun = TunDevice.open(DEVICE, offload=self.config.offload)
        await configure_tun(self._netlink, self._tun.name, lease.subnet.network_address,
                            self.mtu, network.network, RTPROT_FLANNEL)
        self._engine = open_engine(self._tun.fd, self._sock, self.codec,
                                   offload=self.config.offload, vnet_hdr=self._tun.vnet_hdr)
        self._engine.start()
        log.info("udp backend ready device=%s address=%s/32 mtu=%d port=%d engine=%s gso=%s "
                 "gro=%s tun_offload=%s", self._tun.name, lease.subnet.network_address,
                 self.mtu, self.config.port, self._engine.name, self._engine.gso,
                 self._engine.gro, self._tun.vnet_hdr)

    async def apply(self, events: Sequence[LeaseEvent]) -> None:
        assert self.codec is not None
        for event in events:
            lease = event.lease
            if event.kind is EventKind.REMOVED:
                self.codec.remove_peer(lease.subnet)
                log.info("peer removed subnet=%s public_ip=%s", lease.subnet,
                         lease.attrs.public_ip)
            elif self.codec.add_peer(lease.subnet, lease.attrs.public_ip):
                log.info("peer added subnet=%s public_ip=%s", lease.subnet,
                         lease.attrs.public_ip)
            else:
                self._skipped += 1
                log.warning("ignoring lease %s: its prefix length is not SubnetLen /%d",
                            lease.subnet, self.codec.subnet_len)

    async def run(self) -> None:
        """The engine runs from reader callbacks; this only ends if flannel0 goes away."""
        assert self._tun is not None
        await watch_device(self._tun.name, self._tun.index)

    def counters(self) -> Mapping[str, int]:
        counts: dict[str, Any] = dict(self._engine.counters()) if self._engine else {}
        counts["peers"] = len(self.codec.routes) if self.codec else 0
        counts["leases_skipped"] = self._skipped
        return counts

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.stop()
        if self._sock is not None:
            self._sock.close()
        if self._tun is not None:
            self._tun.close()
        self._netlink.close()
