"""The IPv6 side of the vxlan backend's kernel data plane: `flannel-v6.<VNI>`.

With EnableIPv6, Go flannel makes a second VXLAN device (backends/vxlan.py keeps the IPv4
one, `flannel.<VNI>`) and programs it as it programs the IPv4 one (flannel's
pkg/backend/vxlan/vxlan.go, device.go and vxlan_network.go; FLANNEL.md §3):

- device `flannel-v6.<VNI>`: the same VNI and port, local = the interface's IPv6 address,
  its own random VtepMAC (published as BackendV6Data `{"VNI":…,"VtepMAC":"…"}`), learning
  off, accept_ra 0, address `<IPv6 subnet>/128` (the subnet's first address, no +1), up.
  MTU (Backend.MTU or the interface's) - 70, the IPv6 outer header being 20 bytes longer
  than IPv4's (what the kernel gives Go flannel's device, which sets none);
- per dual-stack vxlan peer: neighbour `<its IPv6 subnet> lladdr <its v6 VtepMAC> nud
  permanent`, FDB `<v6 VtepMAC> dst <its PublicIPv6> self permanent`, route `<its IPv6
  subnet> via <its IPv6 subnet> dev flannel-v6.<VNI> onlink`; with DirectRouting and a
  PublicIPv6 reachable without a gateway, `route <its IPv6 subnet> via <PublicIPv6> dev
  <iface>` instead;
- beyond flannel, as on the IPv4 device: `l2miss l3miss proxy` and IPv6 app_solicit, and
  the misses answered from the lease table, so flushed entries heal themselves.

An IPv4-only peer (a key without `&<v6>-<len>`, or no PublicIPv6 / BackendV6Data) gets
nothing here; backends/vxlan.py programs its IPv4 side. Entries are sent as raw rtnetlink
requests (backends/_bulk.py), one batch per lease batch.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any, Final

from pyroute2.netlink.exceptions import NetlinkError

from lease.errors import BackendError, DecodeError
from lease.model import (
    EventKind,
    Lease,
    LeaseAttrs,
    LeaseEvent,
    backend_data_json,
    backend_v6_data,
)
from tun.device import set_sysctl
from tun.vxlan import format_mac, parse_mac

from ._base import ExternalInterface
from ._bulk import (
    Request,
    fdb_delete,
    fdb_replace,
    neigh_delete,
    neigh_replace,
    program,
    route_delete,
    route_replace,
)
from ._netlink import RTPROT_FLANNEL, Netlink, collect, device_lost

if TYPE_CHECKING:
    from .vxlan import VXLANConfig

log = logging.getLogger(__name__)

BACKEND_TYPE: Final = "vxlan"
OUTER_OVERHEAD6: Final = 70  # outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14
NUD_REACHABLE: Final = 0x02
NUD_PERMANENT: Final = 0x80
NTF_SELF: Final = 0x02


def device_name(vni: int) -> str:
    return f"flannel-v6.{vni}"


@dataclass(frozen=True, slots=True)
class Peer6:
    subnet: IPv6Network
    public_ipv6: IPv6Address
    vtep_mac: bytes


def peer6_of(lease: Lease, subnet_len: int) -> Peer6 | None:
    """The IPv6 VTEP a dual-stack vxlan lease describes, or None (not vxlan, IPv4-only, no
    usable BackendV6Data, or an IPv6 subnet of another length)."""
    attrs = lease.attrs
    if attrs.backend_type != BACKEND_TYPE or lease.ipv6_subnet is None \
            or attrs.public_ipv6 is None or lease.ipv6_subnet.prefixlen != subnet_len:
        return None
    mac = backend_v6_data(attrs).get("vtepmac")
    if not isinstance(mac, str):
        return None
    try:
        return Peer6(lease.ipv6_subnet, attrs.public_ipv6, parse_mac(mac))
    except DecodeError:
        return None


def install_requests(peer: Peer6, index: int) -> list[Request]:
    """Neighbour, FDB entry and onlink route for one peer, in flannel's order (the route
    last: the kernel would solicit the gateway otherwise)."""
    gateway = peer.subnet.network_address
    return [neigh_replace(gateway, peer.vtep_mac, index),
            fdb_replace(peer.vtep_mac, peer.public_ipv6, index),
            route_replace(peer.subnet, gateway, index, RTPROT_FLANNEL, onlink=True)]


def removal_requests(peer: Peer6, index: int) -> list[Request]:
    gateway = peer.subnet.network_address
    return [route_delete(peer.subnet, gateway, index, RTPROT_FLANNEL, onlink=True),
            fdb_delete(peer.vtep_mac, peer.public_ipv6, index),
            neigh_delete(gateway, index)]


class KernelVXLAN6:
    """flannel-v6.<VNI>: made in start(), peers programmed in apply(), misses answered in
    answer(). Shares the IPv4 side's netlink thread."""

    def __init__(self, config: VXLANConfig, iface: ExternalInterface, network: IPv6Network,
                 subnet_len: int, netlink: Netlink) -> None:
        if iface.address6 is None:
            raise BackendError(f"vxlan: EnableIPv6 needs an IPv6 address on {iface.name}")
        self.config, self._iface, self._network = config, iface, network
        self._address6: IPv6Address = iface.address6
        self._subnet_len = subnet_len
        self._netlink = netlink
        self.name = device_name(config.vni)
        self.mac = b""
        self.index = 0
        self._peers: dict[IPv6Network, Peer6] = {}
        self._by_mac: dict[bytes, Peer6] = {}
        self._direct: dict[IPv6Network, bool] = {}
        self._counters = dict.fromkeys((
            "v6_entries_installed", "v6_entries_removed", "v6_program_errors",
            "v6_l3_misses_answered", "v6_l2_misses_answered", "v6_misses_unknown",
            "v6_leases_skipped"), 0)

    @property
    def mtu(self) -> int:
        return (self.config.mtu or self._iface.mtu) - OUTER_OVERHEAD6

    # -- lease ---------------------------------------------------------------------------

    async def choose_mac(self, previous: LeaseAttrs | None) -> None:
        """Keep the v6 VtepMAC our last lease advertised, else the existing device's, else
        a new random one (as backends/vxlan.py does for the IPv4 VTEP)."""
        mac = b""
        if previous is not None and previous.backend_type == BACKEND_TYPE:
            text = backend_v6_data(previous).get("vtepmac")
            with contextlib.suppress(DecodeError):
                mac = parse_mac(text) if isinstance(text, str) else b""
        if not mac:
            mac = await self._netlink.call(self._existing_mac)
        if not mac:
            from .vxlan import random_vtep_mac
            mac = random_vtep_mac(random.Random())
        self.mac = mac

    def backend_v6_data(self) -> str:
        return backend_data_json({"VNI": self.config.vni, "VtepMAC": format_mac(self.mac)})

    async def _existing_mac(self, ipr: Any) -> bytes:
        found = await ipr.link_lookup(ifname=self.name)
        if not found:
            return b""
        links = await collect(await ipr.link("get", index=found[0]))
        address = links[0].get("IFLA_ADDRESS") if links else None
        return parse_mac(address) if isinstance(address, str) else b""

    # -- the device ----------------------------------------------------------------------

    async def start(self, lease: Lease) -> None:
        if lease.ipv6_subnet is None:
            raise BackendError("vxlan: EnableIPv6 is set but our lease has no IPv6 subnet")
        subnet6 = lease.ipv6_subnet
        try:
            self.index = await self._netlink.call(lambda ipr: self._setup(ipr, subnet6))
        except NetlinkError as exc:
            raise BackendError(f"vxlan: configuring {self.name}: {exc.args[-1]}") from None
        log.info("vxlan ipv6 device ready device=%s local=%s vtep_mac=%s mtu=%d address=%s/128",
                 self.name, self._address6, format_mac(self.mac), self.mtu,
                 subnet6.network_address)

    async def _setup(self, ipr: Any, subnet6: IPv6Network) -> int:
        config = self.config
        wanted = {"IFLA_VXLAN_ID": config.vni, "IFLA_VXLAN_PORT": config.udp_port,
                  "IFLA_VXLAN_LOCAL6": str(self._address6),
                  "IFLA_VXLAN_LINK": self._iface.index,
                  "IFLA_VXLAN_LEARNING": int(config.learning), "IFLA_VXLAN_PROXY": 1,
                  "IFLA_VXLAN_L2MISS": 1, "IFLA_VXLAN_L3MISS": 1}
        found = await ipr.link_lookup(ifname=self.name)
        if found:
            links = await collect(await ipr.link("get", index=found[0]))
            if _matches(links[0], wanted, config.gbp, format_mac(self.mac)):
                log.info("keeping existing device %s (same parameters)", self.name)
            else:
                log.info("recreating device %s: its parameters differ", self.name)
                await ipr.link("del", index=found[0])
                found = []
        if not found:
            await ipr.link("add", ifname=self.name, kind="vxlan", vxlan_id=config.vni,
                           vxlan_port=config.udp_port, vxlan_local6=str(self._address6),
                           vxlan_link=self._iface.index, vxlan_learning=config.learning,
                           vxlan_proxy=True, vxlan_l2miss=True, vxlan_l3miss=True,
                           **({"vxlan_gbp": True} if config.gbp else {}))
        index = int((await ipr.link_lookup(ifname=self.name))[0])
        set_sysctl(f"net/ipv6/conf/{self.name}/disable_ipv6", "0")
        set_sysctl(f"net/ipv6/conf/{self.name}/accept_ra", "0")  # as flannel's device.go
        set_sysctl(f"net/ipv6/neigh/{self.name}/app_solicit", "3")
        await ipr.link("set", index=index, address=format_mac(self.mac), mtu=self.mtu,
                       state="up")
        await ipr.addr("replace", index=index, address=str(subnet6.network_address),
                       prefixlen=128)
        return index

    def lost(self) -> BackendError | None:
        return device_lost(self.name, self.index)

    # -- peers ---------------------------------------------------------------------------

    async def apply(self, events: Sequence[LeaseEvent]) -> None:
        """Bring the device to the batch's final state: per IPv6 subnet, the entries its
        last event asks for, or none. Removals first, then installs, in one bulk send."""
        stale: list[Request] = []
        fresh: dict[IPv6Network, Peer6] = {}
        gone: list[Peer6] = []
        for event in events:
            subnet6 = event.lease.ipv6_subnet
            if subnet6 is None:
                continue  # an IPv4-only peer: its IPv4 side is programmed elsewhere
            old = self._peers.pop(subnet6, None)
            if old is not None and self._by_mac.get(old.vtep_mac) == old:
                del self._by_mac[old.vtep_mac]
            new = peer6_of(event.lease, self._subnet_len) \
                if event.kind is EventKind.ADDED else None
            if event.kind is EventKind.ADDED and new is None \
                    and event.lease.attrs.backend_type == BACKEND_TYPE:
                self._counters["v6_leases_skipped"] += 1
                log.warning("not programming IPv6 of vxlan lease %s: no usable PublicIPv6 "
                            "and BackendV6Data VtepMAC", event.lease.key)
            fresh.pop(subnet6, None)
            if old is not None and new != old:
                stale += await self._removal(old)  # sent before the new entries
                if new is None:
                    gone.append(old)
            if new is not None:
                self._peers[subnet6] = new
                self._by_mac[new.vtep_mac] = new
                if new != old:
                    fresh[subnet6] = new
        installs: list[Request] = []
        for peer in fresh.values():
            installs += await self._install(peer)
        if stale or installs:
            await self._send(stale, installs)
        for peer in fresh.values():
            log.info("peer ipv6 added subnet=%s public_ipv6=%s vtep_mac=%s direct=%s",
                     peer.subnet, peer.public_ipv6, format_mac(peer.vtep_mac),
                     self._direct.get(peer.subnet, False))
        for peer in gone:
            log.info("peer ipv6 removed subnet=%s public_ipv6=%s", peer.subnet,
                     peer.public_ipv6)

    async def _install(self, peer: Peer6) -> list[Request]:
        direct = await self._is_direct(peer) if self.config.direct_routing else False
        self._direct[peer.subnet] = direct
        if direct:  # DirectRouting: the peer is on our L2 segment, no encapsulation
            return [route_replace(peer.subnet, peer.public_ipv6, self._iface.index,
                                  RTPROT_FLANNEL)]
        return install_requests(peer, self.index)

    async def _removal(self, peer: Peer6) -> list[Request]:
        if self._direct.pop(peer.subnet, False):  # flannel deletes the IPv4 route here
            return [route_delete(peer.subnet, peer.public_ipv6, self._iface.index,
                                 RTPROT_FLANNEL)]
        return removal_requests(peer, self.index)

    async def _is_direct(self, peer: Peer6) -> bool:
        """Is the peer's PublicIPv6 reachable with no gateway, through our interface?"""
        async def lookup(ipr: Any) -> bool:
            try:
                routes = await collect(await ipr.route("get", dst=str(peer.public_ipv6)))
            except NetlinkError:
                return False
            return bool(routes) and routes[0].get("RTA_GATEWAY") is None \
                and routes[0].get("RTA_OIF") == self._iface.index

        return await self._netlink.call(lookup)

    async def _send(self, stale: Sequence[Request], installs: Sequence[Request]) -> None:
        result = await program([*stale, *installs], "vxlan ipv6")
        if result is None:
            self._counters["v6_program_errors"] += len(stale) + len(installs)
            return
        failed, already_gone = result
        failed_stale = sum(1 for request in failed if request in stale)
        self._counters["v6_program_errors"] += len(failed)
        self._counters["v6_entries_removed"] += len(stale) - already_gone - failed_stale
        self._counters["v6_entries_installed"] += len(installs) - (len(failed) - failed_stale)

    # -- misses --------------------------------------------------------------------------

    async def answer(self, dst: str | None, lladdr: str | None) -> None:
        """A miss on flannel-v6.<VNI>: an IPv6 neighbour (L3) or a v6 VtepMAC (L2)."""
        if dst is not None:
            try:
                ip = IPv6Address(dst)
            except ValueError:
                self._counters["v6_misses_unknown"] += 1
                return
            peer = next((p for p in self._peers.values() if ip in p.subnet), None) \
                if ip in self._network else None
            if peer is None or self._direct.get(peer.subnet):
                self._counters["v6_misses_unknown"] += 1
                return
            state = NUD_PERMANENT if ip == peer.subnet.network_address else NUD_REACHABLE
            mac = format_mac(peer.vtep_mac)
            await self._netlink.call(lambda ipr: ipr.neigh(
                "replace", family=socket.AF_INET6, dst=str(ip), lladdr=mac, ifindex=self.index,
                state=state))
            self._counters["v6_l3_misses_answered"] += 1
        elif lladdr is not None:
            try:
                owner = self._by_mac.get(parse_mac(lladdr))
            except DecodeError:
                owner = None
            if owner is None:
                self._counters["v6_misses_unknown"] += 1
                return
            public = str(owner.public_ipv6)
            await self._netlink.call(lambda ipr: ipr.fdb(
                "replace", ifindex=self.index, lladdr=lladdr, dst=public,
                state=NUD_PERMANENT, flags=NTF_SELF))
            self._counters["v6_l2_misses_answered"] += 1
        else:
            self._counters["v6_misses_unknown"] += 1

    def counters(self) -> Mapping[str, int]:
        return {**self._counters, "v6_peers": len(self._peers)}


def _matches(link: Any, wanted: Mapping[str, Any], gbp: bool, mac: str) -> bool:
    info = link.get("IFLA_LINKINFO")
    if info is None or info.get("IFLA_INFO_KIND") != "vxlan":
        return False
    data = info.get("IFLA_INFO_DATA")
    if data is None or any(data.get(key) != value for key, value in wanted.items()):
        return False
    return bool(data.get("IFLA_VXLAN_GBP") is not None) == gbp and \
        link.get("IFLA_ADDRESS") == mac
