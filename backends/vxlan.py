"""vxlan: `flannel.<VNI>`, Ethernet frames in UDP (port 8472), RFC 7348.

Two data planes behind one lease format (BackendType `vxlan`, BackendData
`{"VNI":…,"VtepMAC":"…"}`, exactly as flannel writes it):

- kernel (default): a Linux VXLAN device. Per peer, as flannel >= 0.9 programs it:
  neighbour `<subnet>.0 -> VtepMAC`, FDB `VtepMAC -> PublicIP`, route `<subnet> via
  <subnet>.0 onlink`. The device also reports L2/L3 misses (`l2miss l3miss proxy`,
  `app_solicit`), which the daemon answers from its lease table: the node heals itself
  when entries are flushed, and peers that route the whole Network onto the device
  (flannel 0.5-0.8 style) are served. `"Programming": "lazy"` installs nothing up front:
  every entry comes from a miss and idle ones age out, so kernel state grows with the
  peers a host talks to, not with the cluster. `DirectRouting` sends to peers on the same
  L2 segment unencapsulated (`route <subnet> via <PublicIP>`).
- userspace (`"Dataplane": "userspace"`, or automatically when the kernel cannot create a
  VXLAN link): a TUN named `flannel.<VNI>` and the shared packet engine with the codec
  below; frames are wire-identical to the kernel's, flow-hashed source port included.

With EnableIPv6 the kernel data plane also runs Go flannel's second device,
`flannel-v6.<VNI>` (backends/_vxlan6.py), and the lease carries PublicIPv6 and
BackendV6Data. The userspace data plane is IPv4-only and refuses EnableIPv6.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Final

from pyroute2.netlink.exceptions import NetlinkError

from lease.config import BackendSpec
from lease.errors import BackendError, ConfigError, DecodeError
from lease.model import EventKind, Lease, LeaseAttrs, LeaseEvent, backend_data, backend_data_json
from tun.device import TunDevice, configure_tun, set_sysctl
from tun.packet import check_ipv4, complete_partial_checksum, decrement_ttl
from tun.vxlan import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    HEADROOM,
    OUTER_OVERHEAD,
    VXLAN_HEADER_LEN,
    VXLAN_PORT,
    ARPPacket,
    decode_arp,
    decode_ethernet,
    decode_vxlan_header,
    encode_arp,
    encode_ethernet,
    encode_vxlan_header,
    flow_hash,
    format_mac,
    parse_mac,
)

from ._base import BackendContext
from ._bulk import (
    DELETE,
    Request,
    fdb_delete,
    fdb_replace,
    miss_socket,
    neigh_delete,
    neigh_replace,
    parse_misses,
    program,
    route_delete,
    route_replace,
)
from ._codec import (
    DROPPED,
    Answer,
    Drop,
    NativeKind,
    NativeSpec,
    PeerTable,
    Route,
    Send,
    Verdict,
    Write,
)
from ._datapath import Engine, open_engine, open_udp_socket
from ._netlink import (
    DEVICE_CHECK_S,
    RTPROT_FLANNEL,
    Netlink,
    collect,
    device_lost,
    watch_device,
)
from ._vxlan6 import KernelVXLAN6

log = logging.getLogger(__name__)

BACKEND_TYPE: Final = "vxlan"
MAX_INNER: Final = 65535 - OUTER_OVERHEAD  # the largest inner packet a 64 KB underlay MTU allows
RESYNC_S: Final = 10.0
SENDERS: Final = 8  # sockets the userspace plane spreads flows over (source ports)
NUD_REACHABLE: Final = 0x02
NUD_PERMANENT: Final = 0x80
BULK: Final = 32  # lease events in one batch from which peers are (un)programmed in bulk
NTF_SELF: Final = 0x02
AF_BRIDGE: Final = 7
RTNH_F_ONLINK: Final = 4
MISS_ON_V6_DEVICE: Final = -6  # the family slot of a queued miss that came from flannel-v6.N


@dataclass(frozen=True, slots=True)
class VXLANConfig:
    """flannel's options (defaults as flannel's), then ours (Dataplane, Programming...)."""

    vni: int = 1
    port: int = 0  # 0 = the kernel's default, 8472
    gbp: bool = False
    learning: bool = False
    mtu: int = 0  # 0 = the interface's
    direct_routing: bool = False
    dataplane: str = "kernel"
    programming: str = "eager"
    idle_timeout_s: int = 300  # lazy programming: entries unused this long are removed
    offload: bool = True  # userspace plane: UDP GSO/GRO

    @property
    def udp_port(self) -> int:
        return self.port or VXLAN_PORT

    @property
    def device(self) -> str:
        return f"flannel.{self.vni}"

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> VXLANConfig:
        def integer(name: str, default: int, low: int, high: int) -> int:
            value = spec.option(name, default)
            value = default if value is None else value
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"vxlan backend: {name} must be an integer {low}..{high}, "
                                  f"not {value!r}")
            return value

        def boolean(name: str, default: bool) -> bool:
            value = spec.option(name, default)
            value = default if value is None else value
            if not isinstance(value, bool):
                raise ConfigError(f"vxlan backend: {name} must be true or false, not {value!r}")
            return value

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = spec.option(name, default)
            value = default if value is None else value
            if not isinstance(value, str) or value.lower() not in allowed:
                raise ConfigError(f"vxlan backend: {name} must be one of {', '.join(allowed)}, "
                                  f"not {value!r}")
            return value.lower()

        mtu = integer("MTU", 0, 0, 65535)
        if 0 < mtu < 68 + OUTER_OVERHEAD:
            raise ConfigError(f"vxlan backend: MTU {mtu} leaves no room for a packet")
        return cls(
            vni=integer("VNI", 1, 0, (1 << 24) - 1),
            port=integer("Port", 0, 0, 65535),
            gbp=boolean("GBP", False),
            learning=boolean("Learning", False),
            mtu=mtu,
            direct_routing=boolean("DirectRouting", False),
            dataplane=choice("Dataplane", "kernel", ("kernel", "userspace")),
            programming=choice("Programming", "eager", ("eager", "lazy")),
            idle_timeout_s=integer("IdleTimeout", 300, 5, 86400),
            offload=boolean("Offload", True),
        )


def random_vtep_mac(rng: random.Random) -> bytes:
    """A random locally administered unicast MAC, as flannel makes one."""
    mac = bytearray(rng.getrandbits(8) for _ in range(6))
    mac[0] = (mac[0] & 0xFE) | 0x02
    return bytes(mac)


@dataclass(frozen=True, slots=True)
class Peer:
    subnet: IPv4Network
    public_ip: IPv4Address
    vtep_mac: bytes


def peer_of(lease: Lease, vni: int) -> Peer | None:
    """The VTEP a lease describes, or None if it is not a (usable) vxlan lease."""
    if lease.attrs.backend_type != BACKEND_TYPE:
        return None
    data = backend_data(lease.attrs)
    mac = data.get("vtepmac")
    if not isinstance(mac, str):
        return None
    try:
        return Peer(lease.subnet, lease.attrs.public_ip, parse_mac(mac))
    except DecodeError:
        return None


_RUNT: Final = DROPPED[Drop.RUNT]
_NOT_IPV4: Final = DROPPED[Drop.NOT_IPV4]
_NO_ROUTE: Final = DROPPED[Drop.NO_ROUTE]
_OVERSIZED: Final = DROPPED[Drop.OVERSIZED]
_TTL_EXPIRED: Final = DROPPED[Drop.TTL_EXPIRED]
_NOT_PEER: Final = DROPPED[Drop.NOT_PEER]
_MALFORMED: Final = DROPPED[Drop.MALFORMED]
_WRONG_VNI: Final = DROPPED[Drop.WRONG_VNI]
_WRONG_MAC: Final = DROPPED[Drop.WRONG_MAC]
_NOT_OUR_SUBNET: Final = DROPPED[Drop.NOT_OUR_SUBNET]
_NOT_FOR_US: Final = DROPPED[Drop.NOT_FOR_US]


@dataclass(slots=True)
class VXLANCodec:
    """Per-packet logic of the userspace VXLAN data plane (implements _codec.NativeCodec)."""

    own_subnet: IPv4Network
    subnet_len: int
    vni: int
    own_mac: bytes
    port: int = VXLAN_PORT
    mtu: int = 1450  # the largest inner packet (underlay MTU - 50)
    headroom: int = HEADROOM
    table: PeerTable = field(init=False)
    routes: dict[int, Route] = field(init=False)  # the table's
    peers: dict[str, int] = field(init=False)  # PublicIP -> number of subnets
    checksums_completed: int = 0  # inner checksums a peer's offload left unfinished
    mask: int = field(init=False)
    own_net: int = field(init=False)
    vtep_ip: IPv4Address = field(init=False)
    _vxlan: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.table = PeerTable(self.subnet_len)
        self.routes, self.peers = self.table.routes, self.table.peers
        self.mask = (0xFFFFFFFF << (32 - self.subnet_len)) & 0xFFFFFFFF
        self.own_net = int(self.own_subnet.network_address)
        self.vtep_ip = self.own_subnet.network_address  # flannel.<VNI> carries <subnet>.0
        self._vxlan = encode_vxlan_header(self.vni)

    def native_spec(self) -> NativeSpec:
        return NativeSpec(NativeKind.VXLAN, self.own_net, self.subnet_len, self.mtu, self.vni,
                          self.own_mac)

    def add_peer(self, subnet: IPv4Network, public_ip: IPv4Address, vtep_mac: bytes) -> bool:
        header = self._vxlan + encode_ethernet(vtep_mac, self.own_mac, ETHERTYPE_IPV4)
        return self.table.add(subnet, public_ip, self.port, header)

    def remove_peer(self, subnet: IPv4Network) -> None:
        self.table.remove(subnet)

    def from_tun(self, buf: bytearray | memoryview, n: int) -> Verdict:
        """The inner packet is at buf[22:22+n]; on Send the header is written in front of it
        and the flow hash picks the UDP source port."""
        h = HEADROOM
        if n < 20:
            return _RUNT
        if buf[h] >> 4 != 4:
            return _NOT_IPV4
        dst = (buf[h + 16] << 24) | (buf[h + 17] << 16) | (buf[h + 18] << 8) | buf[h + 19]
        route = self.routes.get(dst & self.mask)
        if route is None:
            return _NO_ROUTE
        if n > self.mtu:
            return _OVERSIZED
        if not decrement_ttl(memoryview(buf)[h:]):
            return _TTL_EXPIRED
        buf[:h] = route.header
        return Send(route.addr, flow_hash(buf, h, n))

    def from_net(self, buf: bytearray | memoryview, n: int, src_ip: str) -> Verdict:
        """A datagram that reached our VXLAN port: an inner IPv4 packet for us (Write, its
        length; it starts at HEADROOM), an ARP request for our VTEP (Answer), or a drop."""
        if src_ip not in self.peers:
            return _NOT_PEER
        if n < HEADROOM:
            return _MALFORMED
        if n > HEADROOM + MAX_INNER:  # a super-packet no wire carries (a veth's tunnel GSO)
            return _OVERSIZED
        try:
            vni = decode_vxlan_header(buf)
            dst_mac, src_mac, ethertype = decode_ethernet(memoryview(buf)[VXLAN_HEADER_LEN:])
        except DecodeError:
            return _MALFORMED
        if vni != self.vni:
            return _WRONG_VNI
        if dst_mac not in (self.own_mac, BROADCAST):
            return _WRONG_MAC
        inner = memoryview(buf)[HEADROOM:n]
        if ethertype == ETHERTYPE_ARP:
            return self._arp(inner, src_mac, src_ip)
        if ethertype != ETHERTYPE_IPV4:
            return _NOT_IPV4
        try:
            total = check_ipv4(inner, n - HEADROOM)
        except DecodeError:
            return _MALFORMED
        dst = (inner[16] << 24) | (inner[17] << 16) | (inner[18] << 8) | inner[19]
        if dst & self.mask != self.own_net:
            return _NOT_OUR_SUBNET
        if not decrement_ttl(inner):
            return _TTL_EXPIRED
        if complete_partial_checksum(inner, total):
            self.checksums_completed += 1
        return Write(total)

    def _arp(self, inner: memoryview, src_mac: bytes, src_ip: str) -> Verdict:
        try:
            arp = decode_arp(inner)
        except DecodeError:
            return _MALFORMED
        if arp.op != ARP_REQUEST or arp.target_ip != self.vtep_ip:
            return _NOT_FOR_US
        reply = ARPPacket(ARP_REPLY, self.own_mac, self.vtep_ip, arp.sender_mac, arp.sender_ip)
        frame = (self._vxlan + encode_ethernet(src_mac, self.own_mac, ETHERTYPE_ARP)
                 + encode_arp(reply))
        return Answer((src_ip, self.port), frame)


class VXLANBackend:
    def __init__(self, context: BackendContext) -> None:
        self.config = VXLANConfig.from_spec(context.network.backend)
        self._iface = context.iface
        self._network = context.network
        self.dataplane = self.config.dataplane
        self._netlink = Netlink()
        self._mac = b""
        self._lease: Lease | None = None
        self._peers: dict[IPv4Network, Peer] = {}
        self._by_mac: dict[bytes, Peer] = {}
        self._mask = (0xFFFFFFFF << (32 - context.network.subnet_len)) & 0xFFFFFFFF
        self._by_net: dict[int, Peer] = {}
        self._direct: dict[IPv4Network, bool] = {}
        self._index = 0
        self._misses: asyncio.Queue[tuple[int, str | None, str | None]] = asyncio.Queue()
        self._miss_sock: socket.socket | None = None
        self._lazy_used: dict[IPv4Address, float] = {}
        self._tun: TunDevice | None = None
        self._sockets: list[socket.socket] = []
        self._engine: Engine | None = None
        self.codec: VXLANCodec | None = None
        self._counters = dict.fromkeys((
            "l3_misses_answered", "l2_misses_answered", "misses_unknown", "misses_lost",
            "entries_installed", "entries_removed", "entries_aged_out", "program_errors",
            "leases_skipped", "routes_repaired"), 0)
        self._v6 = self._ipv6_side(context)

    def _ipv6_side(self, context: BackendContext) -> KernelVXLAN6 | None:
        """flannel-v6.<VNI> with EnableIPv6 (kernel data plane only), else None."""
        network = context.network
        if not network.enable_ipv6:
            return None
        if self.dataplane == "userspace":
            raise ConfigError("vxlan backend: the userspace data plane is IPv4-only; "
                              "EnableIPv6 needs Dataplane kernel")
        assert network.ipv6_network is not None
        return KernelVXLAN6(self.config, context.iface, network.ipv6_network,
                            network.ipv6_subnet_len, self._netlink)

    @property
    def mtu(self) -> int:
        return (self.config.mtu or self._iface.mtu) - OUTER_OVERHEAD

    async def lease_attrs(self, previous: LeaseAttrs | None) -> LeaseAttrs:
        """Keep the VtepMAC our last lease advertised (peers have it programmed), else the
        existing device's, else a new random one."""
        mac = b""
        if previous is not None and previous.backend_type == BACKEND_TYPE:
            text = backend_data(previous).get("vtepmac")
            with contextlib.suppress(DecodeError):
                mac = parse_mac(text) if isinstance(text, str) else b""
        if not mac:
            mac = await self._netlink.call(self._existing_mac)
        self._mac = mac or random_vtep_mac(random.Random())
        data = backend_data_json({"VNI": self.config.vni, "VtepMAC": format_mac(self._mac)})
        if self._v6 is not None:  # flannel's newSubnetAttrs with a v6 device
            await self._v6.choose_mac(previous)
            return LeaseAttrs(public_ip=self._iface.public_ip, backend_type=BACKEND_TYPE,
                              backend_data=data, public_ipv6=self._iface.public_ipv6,
                              backend_v6_data=self._v6.backend_v6_data())
        return LeaseAttrs(public_ip=self._iface.public_ip, backend_type=BACKEND_TYPE,
                          backend_data=data)

    async def _existing_mac(self, ipr: Any) -> bytes:
        found = await ipr.link_lookup(ifname=self.config.device)
        if not found:
            return b""
        links = await collect(await ipr.link("get", index=found[0]))
        address = links[0].get("IFLA_ADDRESS") if links else None
        return parse_mac(address) if isinstance(address, str) else b""

    # -- start ---------------------------------------------------------------------------

    async def start(self, lease: Lease) -> None:
        self._lease = lease
        if self.dataplane == "kernel":
            try:
                await self._start_kernel(lease)
                if self._v6 is not None:
                    await self._v6.start(lease)
                return
            except _NoKernelVXLAN as exc:
                if self._v6 is not None:
                    raise BackendError(f"vxlan: the kernel cannot create a VXLAN link ({exc}) "
                                       "and the userspace data plane is IPv4-only") from None
                log.warning("the kernel cannot create a VXLAN link (%s); using the userspace "
                            "VXLAN data plane instead", exc)
                self.dataplane = "userspace"
        await self._start_userspace(lease)

    async def _start_kernel(self, lease: Lease) -> None:
        config, name = self.config, self.config.device
        wanted = {
            "IFLA_VXLAN_ID": config.vni, "IFLA_VXLAN_PORT": config.udp_port,
            "IFLA_VXLAN_LOCAL": str(self._iface.address), "IFLA_VXLAN_LINK": self._iface.index,
            "IFLA_VXLAN_LEARNING": int(config.learning), "IFLA_VXLAN_PROXY": 1,
            "IFLA_VXLAN_L2MISS": 1, "IFLA_VXLAN_L3MISS": 1, "IFLA_VXLAN_UDP_CSUM": 0,
        }

        async def setup(ipr: Any) -> int:
            found = await ipr.link_lookup(ifname=name)
            if found:
                links = await collect(await ipr.link("get", index=found[0]))
                if _vxlan_matches(links[0], wanted, config.gbp, format_mac(self._mac)):
                    log.info("keeping existing device %s (same parameters)", name)
                else:
                    log.info("recreating device %s: its parameters differ", name)
                    await ipr.link("del", index=found[0])
                    found = []
            if not found:
                try:
                    await ipr.link(
                        "add", ifname=name, kind="vxlan", vxlan_id=config.vni,
                        vxlan_port=config.udp_port, vxlan_local=str(self._iface.address),
                        vxlan_link=self._iface.index, vxlan_learning=config.learning,
                        vxlan_proxy=True, vxlan_l2miss=True, vxlan_l3miss=True,
                        vxlan_udp_csum=False,  # outer checksum 0, as Go flannel's devices
                        **({"vxlan_gbp": True} if config.gbp else {}))
                except NetlinkError as exc:
                    raise _NoKernelVXLAN(exc.args[-1]) from None
            index = int((await ipr.link_lookup(ifname=name))[0])
            set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
            set_sysctl(f"net/ipv4/neigh/{name}/app_solicit", "3")
            await ipr.link("set", index=index, address=format_mac(self._mac), mtu=self.mtu,
                           state="up")
            await ipr.addr("replace", index=index, address=str(lease.subnet.network_address),
                           prefixlen=32)
            network_route = {"dst": str(self._network.network), "oif": index,
                             "proto": RTPROT_FLANNEL, "scope": 253}
            if config.programming == "lazy":
                await ipr.route("replace", **network_route)
            else:
                with contextlib.suppress(NetlinkError):
                    await ipr.route("del", **network_route)
            return index

        try:
            self._index = await self._netlink.call(setup)
        except (_NoKernelVXLAN, BackendError):
            raise
        except NetlinkError as exc:
            raise BackendError(f"vxlan: configuring {name}: {exc.args[-1]}") from None
        try:
            self._miss_sock = miss_socket()
        except OSError as exc:
            raise BackendError(f"vxlan: a netlink socket for neighbour misses: {exc.strerror}") \
                from None
        asyncio.get_running_loop().add_reader(self._miss_sock.fileno(), self._on_misses)
        log.info("vxlan backend ready dataplane=kernel device=%s vtep_mac=%s mtu=%d port=%d "
                 "programming=%s direct_routing=%s", name, format_mac(self._mac), self.mtu,
                 config.udp_port, config.programming, config.direct_routing)

    def _on_misses(self) -> None:
        """Drain the miss socket (it passes nothing but RTM_GETNEIGH): the misses on our
        device go to run(). A full socket buffer loses misses; the kernel asks again."""
        assert self._miss_sock is not None
        while True:
            try:
                data = self._miss_sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:  # ENOBUFS: the buffer overflowed, misses were lost
                self._counters["misses_lost"] += 1
                if exc.errno == errno.ENOBUFS:
                    continue
                return
            for miss in parse_misses(data):
                if miss.ifindex == self._index:
                    self._misses.put_nowait((miss.family, miss.dst, miss.lladdr))
                elif self._v6 is not None and miss.ifindex == self._v6.index:
                    self._misses.put_nowait((MISS_ON_V6_DEVICE, miss.dst, miss.lladdr))

    async def _start_userspace(self, lease: Lease) -> None:
        config = self.config
        self.codec = VXLANCodec(lease.subnet, self._network.subnet_len, config.vni, self._mac,
                                config.udp_port, self.mtu)
        address = str(self._iface.address)
        try:
            listener = open_udp_socket(address, config.udp_port)
            self._sockets.append(listener)
            self._sockets += [open_udp_socket(address, 0) for _ in range(SENDERS)]
        except OSError as exc:
            raise BackendError(f"vxlan: cannot bind {self._iface.address}:{config.udp_port}: "
                               f"{exc.strerror}") from None
        self._tun = TunDevice.open(config.device, offload=config.offload)
        await configure_tun(self._netlink, self._tun.name, lease.subnet.network_address,
                            self.mtu, self._network.network, RTPROT_FLANNEL)
        self._engine = open_engine(self._tun.fd, listener, self.codec, config.offload,
                                   senders=self._sockets[1:], vnet_hdr=self._tun.vnet_hdr)
        self._engine.start()
        for peer in self._peers.values():
            self.codec.add_peer(peer.subnet, peer.public_ip, peer.vtep_mac)
        log.info("vxlan backend ready dataplane=userspace device=%s vtep_mac=%s mtu=%d port=%d "
                 "engine=%s gso=%s gro=%s tun_offload=%s", config.device, format_mac(self._mac),
                 self.mtu, config.udp_port, self._engine.name, self._engine.gso,
                 self._engine.gro, self._tun.vnet_hdr)

    # -- peers ---------------------------------------------------------------------------

    async def apply(self, events: Sequence[LeaseEvent]) -> None:
        if self._v6 is not None:
            await self._v6.apply(events)
        # a large batch (a node joining a big cluster, many peers moving or leaving at
        # once) goes to the kernel in bulk after the loop, with a log line for all
        bulk = len(events) >= BULK and self.dataplane == "kernel" \
            and self.config.programming == "eager" and not self.config.direct_routing
        fresh: dict[IPv4Network, Peer] = {}
        stale: list[Request] = []  # changed peers' FDB entries, removed peers' entries
        removed = 0
        for event in events:
            old = self._peers.pop(event.lease.subnet, None)
            if old is not None:
                self._forget(old)
            new = peer_of(event.lease, self.config.vni) if event.kind is EventKind.ADDED \
                else None
            if event.kind is EventKind.ADDED and new is None \
                    and event.lease.attrs.backend_type == BACKEND_TYPE:
                self._counters["leases_skipped"] += 1
                log.warning("ignoring vxlan lease %s: no usable VtepMAC", event.lease.subnet)
            usable = new is not None and new.subnet.prefixlen == self._network.subnet_len
            if old is not None and (new is None or new != old):
                if bulk and new is not None and usable:
                    if (old.vtep_mac, old.public_ip) != (new.vtep_mac, new.public_ip):
                        stale.append(fdb_delete(old.vtep_mac, old.public_ip, self._index))
                elif bulk:
                    stale += self._removal(old)
                    removed += 1
                    await self._forget_lazy_in(old)
                else:
                    await self._unprogram(old)
            fresh.pop(event.lease.subnet, None)
            if new is not None and usable:
                self._remember(new)
                if bulk and new != old:
                    fresh[new.subnet] = new
                    continue
                if new != old:
                    await self._program(new)
                log.info("peer %s subnet=%s public_ip=%s vtep_mac=%s",
                         "updated" if old else "added", new.subnet, new.public_ip,
                         format_mac(new.vtep_mac))
            elif old is not None and not bulk:
                log.info("peer removed subnet=%s public_ip=%s", old.subnet, old.public_ip)
        if fresh or stale:
            await self._program_many(list(fresh.values()), stale, removed)

    def _removal(self, peer: Peer) -> list[Request]:
        """What _unprogram deletes one by one (route, FDB entry, neighbour), as requests."""
        self._direct.pop(peer.subnet, None)
        gateway = peer.subnet.network_address
        return [route_delete(peer.subnet, gateway, self._index, RTPROT_FLANNEL, onlink=True),
                fdb_delete(peer.vtep_mac, peer.public_ip, self._index),
                neigh_delete(gateway, self._index)]

    async def _program_many(self, peers: Sequence[Peer], stale: Sequence[Request],
                            removed: int) -> None:
        """First the stale entries (removed peers', changed peers' old FDB entries) go;
        then neighbour, FDB entry and route for each new or changed peer, in that order,
        all in bulk."""
        requests = list(stale)
        for peer in peers:
            gateway = peer.subnet.network_address
            requests += [neigh_replace(gateway, peer.vtep_mac, self._index),
                         fdb_replace(peer.vtep_mac, peer.public_ip, self._index),
                         route_replace(peer.subnet, gateway, self._index, RTPROT_FLANNEL,
                                       onlink=True)]
            self._direct[peer.subnet] = False
        result = await program(requests, "vxlan")
        if result is None:
            self._counters["program_errors"] += len(peers) + removed
            return
        failed, gone = result
        not_removed = sum(1 for request in failed if request.flags == DELETE)
        self._counters["program_errors"] += len(failed)
        self._counters["entries_removed"] += len(stale) - gone - not_removed
        self._counters["entries_installed"] += len(requests) - len(stale) - (
            len(failed) - not_removed)
        if removed:
            log.info("peers removed count=%d entries=%d failed=%d", removed,
                     len(stale) - gone - not_removed, not_removed)
        if peers:
            log.info("peers added or changed count=%d entries=%d failed=%d", len(peers),
                     len(requests) - len(stale), len(failed) - not_removed)

    def _remember(self, peer: Peer) -> None:
        self._peers[peer.subnet] = peer
        self._by_mac[peer.vtep_mac] = peer
        self._by_net[int(peer.subnet.network_address)] = peer

    def _forget(self, peer: Peer) -> None:
        if self._by_mac.get(peer.vtep_mac) == peer:
            del self._by_mac[peer.vtep_mac]
        self._by_net.pop(int(peer.subnet.network_address), None)

    async def _program(self, peer: Peer) -> None:
        if self.dataplane == "userspace":
            assert self.codec is not None
            self.codec.add_peer(peer.subnet, peer.public_ip, peer.vtep_mac)
            return
        if self.config.programming == "lazy":
            return  # everything comes from misses
        try:
            await self._netlink.call(lambda ipr: self._install(ipr, peer))
        except NetlinkError as exc:
            self._counters["program_errors"] += 1
            log.warning("vxlan: programming %s: %s", peer.subnet, exc.args[-1])
        except Exception:  # a bug must not take the data plane down: say it, count it
            self._counters["program_errors"] += 1
            log.exception("vxlan: programming %s failed", peer.subnet)

    async def _is_direct(self, ipr: Any, peer: Peer) -> bool:
        """DirectRouting: is the peer's PublicIP reachable with no gateway (same L2)?"""
        if not self.config.direct_routing:
            return False
        try:
            routes = await collect(await ipr.route("get", dst=str(peer.public_ip)))
        except NetlinkError:
            return False
        return bool(routes) and routes[0].get("RTA_GATEWAY") is None \
            and routes[0].get("RTA_OIF") == self._iface.index

    async def _install(self, ipr: Any, peer: Peer) -> None:
        gateway = str(peer.subnet.network_address)
        direct = await self._is_direct(ipr, peer)
        self._direct[peer.subnet] = direct
        if direct:
            await ipr.route("replace", dst=str(peer.subnet), gateway=str(peer.public_ip),
                            oif=self._iface.index, proto=RTPROT_FLANNEL)
            self._counters["entries_installed"] += 1
            return
        mac = format_mac(peer.vtep_mac)
        await ipr.neigh("replace", dst=gateway, lladdr=mac, ifindex=self._index,
                        state=NUD_PERMANENT)
        await ipr.fdb("replace", ifindex=self._index, lladdr=mac, dst=str(peer.public_ip),
                      state=NUD_PERMANENT, flags=NTF_SELF)
        await ipr.route("replace", dst=str(peer.subnet), gateway=gateway, oif=self._index,
                        flags=RTNH_F_ONLINK, proto=RTPROT_FLANNEL)
        self._counters["entries_installed"] += 3

    async def _unprogram(self, peer: Peer) -> None:
        if self.dataplane == "userspace":
            assert self.codec is not None
            self.codec.remove_peer(peer.subnet)
            return
        direct = self._direct.pop(peer.subnet, False)

        async def remove(ipr: Any) -> int:
            removed = 0
            gateway = str(peer.public_ip) if direct else str(peer.subnet.network_address)
            oif = self._iface.index if direct else self._index
            steps: list[tuple[str, dict[str, Any]]] = [
                ("route", {"dst": str(peer.subnet), "gateway": gateway, "oif": oif,
                           "proto": RTPROT_FLANNEL})]  # ours only, as in bulk
            if not direct:
                steps += [("fdb", {"ifindex": self._index, "lladdr": format_mac(peer.vtep_mac),
                                   "dst": str(peer.public_ip), "flags": NTF_SELF}),
                          ("neigh", {"dst": str(peer.subnet.network_address),
                                     "ifindex": self._index})]
            for kind, args in steps:
                try:
                    await getattr(ipr, kind)("del", **args)
                    removed += 1
                except NetlinkError:
                    pass  # already gone (flushed, or never installed in lazy mode)
            return removed

        self._counters["entries_removed"] += await self._netlink.call(remove)
        await self._forget_lazy_in(peer)

    async def _forget_lazy_in(self, peer: Peer) -> None:
        """Entries installed for misses inside a peer's subnet go with the peer."""
        for ip in [ip for ip in self._lazy_used if ip in peer.subnet]:
            await self._forget_lazy(ip, peer)

    # -- misses --------------------------------------------------------------------------

    async def _answer(self, family: int, dst: str | None, lladdr: str | None) -> None:
        if family == MISS_ON_V6_DEVICE and self._v6 is not None:
            await self._v6.answer(dst, lladdr)
            return
        if dst is not None and family == socket.AF_INET:
            ip = IPv4Address(dst)
            peer = self._by_net.get(int(ip) & self._mask)
            if peer is None or self._direct.get(peer.subnet):
                self._counters["misses_unknown"] += 1
                return
            lazy = self.config.programming == "lazy"
            permanent = not lazy and ip == peer.subnet.network_address
            mac = format_mac(peer.vtep_mac)

            async def answer_l3(ipr: Any) -> None:
                await ipr.neigh("replace", dst=str(ip), lladdr=mac, ifindex=self._index,
                                state=NUD_PERMANENT if permanent else NUD_REACHABLE)
                if lazy:  # the FDB entry too, or the next packet is an L2 miss
                    await ipr.fdb("replace", ifindex=self._index, lladdr=mac,
                                  dst=str(peer.public_ip), state=NUD_PERMANENT, flags=NTF_SELF)

            await self._netlink.call(answer_l3)
            if lazy:
                self._lazy_used.setdefault(ip, time.monotonic())  # when it was installed
            self._counters["l3_misses_answered"] += 1
        elif lladdr is not None:  # an L2 miss: a MAC, no IP (AF_BRIDGE or AF_UNSPEC)
            try:
                owner = self._by_mac.get(parse_mac(lladdr))
            except DecodeError:
                owner = None
            if owner is None:
                self._counters["misses_unknown"] += 1
                return
            public_ip = str(owner.public_ip)
            await self._netlink.call(lambda ipr: ipr.fdb(
                "replace", ifindex=self._index, lladdr=lladdr, dst=public_ip,
                state=NUD_PERMANENT, flags=NTF_SELF))
            self._counters["l2_misses_answered"] += 1
        else:
            self._counters["misses_unknown"] += 1

    async def _forget_lazy(self, ip: IPv4Address, peer: Peer) -> None:
        self._lazy_used.pop(ip, None)
        still_used = any(other in peer.subnet for other in self._lazy_used)

        async def remove(ipr: Any) -> None:
            with contextlib.suppress(NetlinkError):
                await ipr.neigh("del", dst=str(ip), ifindex=self._index)
            if not still_used:
                with contextlib.suppress(NetlinkError):
                    await ipr.fdb("del", ifindex=self._index, lladdr=format_mac(peer.vtep_mac),
                                  dst=str(peer.public_ip), flags=NTF_SELF)

        await self._netlink.call(remove)

    async def _age_out(self) -> None:
        """Lazy programming: an entry lives IdleTimeout seconds from its installation. A
        flow still using it resolves it again through a miss (its packets wait in the
        neighbour queue for the answer: milliseconds, nothing lost); one that stopped
        leaves nothing behind. (The kernel's own neighbour timers cannot tell us: the
        probes of an unused entry look like use.)"""
        deadline = time.monotonic() - self.config.idle_timeout_s
        for ip, installed in list(self._lazy_used.items()):
            peer = self._by_net.get(int(ip) & self._mask)
            if installed < deadline and peer is not None:
                await self._forget_lazy(ip, peer)
                self._counters["entries_aged_out"] += 1

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Answer misses and age lazy entries out; ends (BackendError) only if our device
        goes away. The userspace engine runs from reader callbacks."""
        if self.dataplane == "userspace":
            assert self._tun is not None
            await watch_device(self._tun.name, self._tun.index)
        period_s = min(RESYNC_S, self.config.idle_timeout_s / 2)
        next_sweep = time.monotonic() + period_s
        next_check = time.monotonic() + DEVICE_CHECK_S
        while True:  # the checks come first, so that a flood of misses cannot hold them off
            now = time.monotonic()
            if now >= next_check:
                next_check = now + DEVICE_CHECK_S
                lost = device_lost(self.config.device, self._index)
                if lost is None and self._v6 is not None:
                    lost = self._v6.lost()
                if lost is not None:
                    raise lost
            if now >= next_sweep:
                next_sweep = now + period_s
                if self.config.programming == "lazy":
                    await self._age_out()
            try:
                async with asyncio.timeout(max(0.0, min(next_sweep, next_check) - now)):
                    family, dst, lladdr = await self._misses.get()
            except TimeoutError:
                continue
            try:
                await self._answer(family, dst, lladdr)
            except NetlinkError as exc:
                self._counters["program_errors"] += 1
                log.debug("vxlan: answering a miss: %s", exc)

    def counters(self) -> Mapping[str, int]:
        counts: dict[str, Any] = dict(self._counters)
        counts["peers"] = len(self._peers)
        counts["dataplane_userspace"] = int(self.dataplane == "userspace")
        if self._engine is not None:
            counts.update(self._engine.counters())
        if self.codec is not None:
            counts["checksums_completed"] = self.codec.checksums_completed
        if self._v6 is not None:
            counts.update(self._v6.counters())
        return counts

    async def close(self) -> None:
        if self._miss_sock is not None:
            asyncio.get_running_loop().remove_reader(self._miss_sock.fileno())
            self._miss_sock.close()
        if self._engine is not None:
            self._engine.stop()
        for sock in self._sockets:
            sock.close()
        if self._tun is not None:
            self._tun.close()
        self._netlink.close()


class _NoKernelVXLAN(BackendError):
    """The kernel refused to create a VXLAN link (no module, not permitted)."""


def _vxlan_matches(link: Any, wanted: Mapping[str, Any], gbp: bool, mac: str) -> bool:
    info = link.get("IFLA_LINKINFO")
    if info is None or info.get("IFLA_INFO_KIND") != "vxlan":
        return False
    data = info.get("IFLA_INFO_DATA")
    if data is None:
        return False
    if any(data.get(key) != value for key, value in wanted.items()):
        return False
    return bool(data.get("IFLA_VXLAN_GBP") is not None) == gbp and \
        link.get("IFLA_ADDRESS") == mac
