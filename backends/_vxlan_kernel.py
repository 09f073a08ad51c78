"""The vxlan backend's kernel data plane: a Linux VXLAN device per address family.

Shell. `flannel.<VNI>` carries IPv4 (local = the interface's IPv4 address, address
`<subnet>.0/32`, outer UDP checksum 0 as Go flannel's devices), and with EnableIPv6
`flannel-v6.<VNI>` carries IPv6 (local = the interface's IPv6 address, address
`<IPv6 subnet>/128`, accept_ra 0), each with its own VtepMAC, learning off and, beyond
flannel, `l2miss l3miss proxy` with app_solicit: the misses the kernel reports are answered
from the lease table, so flushed entries heal themselves, and with `"Programming": "lazy"`
(IPv4) nothing is installed up front at all. The device is made and kept with pyroute2;
every neighbour, FDB entry and route goes to the kernel as a raw rtnetlink request
(backends/_bulk.py's program), one batch per lease batch whatever its size.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import TYPE_CHECKING, Any, Final

from pyroute2.netlink.exceptions import NetlinkError

from lease.errors import BackendError, DecodeError
from lease.model import (
    Lease,
    LeaseAttrs,
    LeaseEvent,
    backend_data,
    backend_data_json,
    backend_v6_data,
)
from tun.device import set_sysctl
from tun.vxlan import OUTER_OVERHEAD, format_mac, parse_mac

from ._base import ExternalInterface
from ._bulk import DELETE, RTPROT_FLANNEL, Miss, Request, fdb_delete, program
from ._netlink import Netlink, collect, device_lost
from ._vxlan_plan import (
    BACKEND_TYPE,
    Device,
    LazyEntries,
    Network,
    Peer,
    VTEPPlan,
    answer_l2,
    answer_l3,
    install,
    random_vtep_mac,
    removal,
    superseded,
)

if TYPE_CHECKING:
    from .vxlan import VXLANConfig

log = logging.getLogger(__name__)

OUTER_OVERHEAD6: Final = OUTER_OVERHEAD + 20  # the outer IPv6 header is 20 bytes longer
BULK: Final = 32  # changes in one batch from which one log line says them all
COUNTERS: Final = ("l3_misses_answered", "l2_misses_answered", "misses_unknown",
                   "entries_installed", "entries_removed", "entries_aged_out",
                   "program_errors", "leases_skipped")


class NoKernelVXLAN(BackendError):
    """The kernel refused to create a VXLAN link (no module, not permitted)."""


class KernelVTEP:
    """One VXLAN device: made in start(), peers programmed in apply(), misses answered in
    answer(), lazy entries aged out in sweep(). The IPv6 one counts under `v6_` names."""

    def __init__(self, config: VXLANConfig, ipv6: bool, iface: ExternalInterface,
                 network: IPv4Network | IPv6Network, subnet_len: int, netlink: Netlink,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ipv6 and iface.address6 is None:
            raise BackendError(f"vxlan: EnableIPv6 needs an IPv6 address on {iface.name}")
        self.config, self.ipv6, self._iface, self._network = config, ipv6, iface, network
        self._netlink, self._clock = netlink, clock
        self.name = f"flannel-v6.{config.vni}" if ipv6 else config.device
        self.plan = VTEPPlan(ipv6, subnet_len)
        lazy = config.programming == "lazy" and not ipv6
        self.lazy = LazyEntries(config.idle_timeout_s) if lazy else None
        self.mac = b""
        self.index = 0
        self._direct: dict[Network, bool] = {}
        self._prefix = "v6_" if ipv6 else ""
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._label, self._ip_name = ("peer ipv6", "public_ipv6") if ipv6 else ("peer",
                                                                                "public_ip")

    @property
    def mtu(self) -> int:
        return (self.config.mtu or self._iface.mtu) - (OUTER_OVERHEAD6 if self.ipv6
                                                       else OUTER_OVERHEAD)

    @property
    def device(self) -> Device:
        return Device(self.index, self._iface.index)

    # -- the lease ------------------------------------------------------------------------

    async def choose_mac(self, previous: LeaseAttrs | None) -> None:
        """Keep the VtepMAC our last lease advertised for this device (peers have it
        programmed), else the existing device's, else a new random one."""
        mac = b""
        if previous is not None and previous.backend_type == BACKEND_TYPE:
            data = backend_v6_data(previous) if self.ipv6 else backend_data(previous)
            text = data.get("vtepmac")
            with contextlib.suppress(DecodeError):
                mac = parse_mac(text) if isinstance(text, str) else b""
        if not mac:
            mac = await self._netlink.call(self._existing_mac)
        self.mac = mac or random_vtep_mac(random.Random())

    def backend_data(self) -> str:
        """This device's BackendData (or BackendV6Data), exactly as flannel writes it."""
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
        subnet = lease.ipv6_subnet if self.ipv6 else lease.subnet
        if subnet is None:
            raise BackendError("vxlan: EnableIPv6 is set but our lease has no IPv6 subnet")
        try:
            self.index = await self._netlink.call(lambda ipr: self._setup(ipr, subnet))
        except (NoKernelVXLAN, BackendError):
            raise
        except NetlinkError as exc:
            raise BackendError(f"vxlan: configuring {self.name}: {exc.args[-1]}") from None
        log.info("vxlan device ready device=%s vtep_mac=%s mtu=%d port=%d address=%s/%d "
                 "programming=%s direct_routing=%s", self.name, format_mac(self.mac),
                 self.mtu, self.config.udp_port, subnet.network_address,
                 subnet.max_prefixlen, "lazy" if self.lazy else "eager",
                 self.config.direct_routing)

    def _wanted(self) -> dict[str, Any]:
        config, iface = self.config, self._iface
        wanted: dict[str, Any] = {
            "IFLA_VXLAN_ID": config.vni, "IFLA_VXLAN_PORT": config.udp_port,
            "IFLA_VXLAN_LINK": iface.index, "IFLA_VXLAN_LEARNING": int(config.learning),
            "IFLA_VXLAN_PROXY": 1, "IFLA_VXLAN_L2MISS": 1, "IFLA_VXLAN_L3MISS": 1}
        if self.ipv6:
            wanted["IFLA_VXLAN_LOCAL6"] = str(iface.address6)
        else:
            wanted |= {"IFLA_VXLAN_LOCAL": str(iface.address), "IFLA_VXLAN_UDP_CSUM": 0}
        return wanted

    async def _setup(self, ipr: Any, subnet: Network) -> int:
        config, name = self.config, self.name
        found = await ipr.link_lookup(ifname=name)
        if found:
            links = await collect(await ipr.link("get", index=found[0]))
            if _matches(links[0], self._wanted(), config.gbp, format_mac(self.mac)):
                log.info("keeping existing device %s (same parameters)", name)
            else:
                log.info("recreating device %s: its parameters differ", name)
                await ipr.link("del", index=found[0])
                found = []
        if not found:
            local = {"vxlan_local6": str(self._iface.address6)} if self.ipv6 else {
                "vxlan_local": str(self._iface.address),
                "vxlan_udp_csum": False}  # outer checksum 0, as Go flannel's devices
            try:
                await ipr.link("add", ifname=name, kind="vxlan", vxlan_id=config.vni,
                               vxlan_port=config.udp_port, vxlan_link=self._iface.index,
                               vxlan_learning=config.learning, vxlan_proxy=True,
                               vxlan_l2miss=True, vxlan_l3miss=True, **local,
                               **({"vxlan_gbp": True} if config.gbp else {}))
            except NetlinkError as exc:
                raise NoKernelVXLAN(exc.args[-1]) from None
        index = int((await ipr.link_lookup(ifname=name))[0])
        if self.ipv6:
            set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "0")
            set_sysctl(f"net/ipv6/conf/{name}/accept_ra", "0")  # as Go flannel's device
            set_sysctl(f"net/ipv6/neigh/{name}/app_solicit", "3")
        else:
            set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
            set_sysctl(f"net/ipv4/neigh/{name}/app_solicit", "3")
        await ipr.link("set", index=index, address=format_mac(self.mac), mtu=self.mtu,
                       state="up")
        await ipr.addr("replace", index=index, address=str(subnet.network_address),
                       prefixlen=subnet.max_prefixlen)
        if not self.ipv6:  # lazy: the whole network onto the device, every entry a miss
            route = {"dst": str(self._network), "oif": index, "proto": RTPROT_FLANNEL,
                     "scope": 253}
            if self.lazy is not None:
                await ipr.route("replace", **route)
            else:
                with contextlib.suppress(NetlinkError):
                    await ipr.route("del", **route)
        return index

    def lost(self) -> BackendError | None:
        return device_lost(self.name, self.index)

    # -- peers ---------------------------------------------------------------------------

    async def apply(self, events: Sequence[LeaseEvent]) -> None:
        """Bring the device to the batch's final state: the entries of peers that are gone
        or changed first, then those of new or changed peers, in one send."""
        planned = self.plan.apply(events)
        for lease in planned.skipped:
            self._counters["leases_skipped"] += 1
            log.warning("ignoring vxlan lease %s on %s: no usable %s VtepMAC, or a subnet "
                        "of another length", lease.key, self.name,
                        "BackendV6Data" if self.ipv6 else "BackendData")
        stale: list[Request] = []
        fresh: list[Request] = []
        device = self.device
        for change in planned.changes:
            old, new = change.old, change.new
            if self.lazy is not None:  # nothing up front; a peer's lazy entries go with it
                if old is not None:
                    stale += self.lazy.forget(self.lazy.in_subnet(old.subnet), old, device)
                    stale.append(fdb_delete(old.vtep_mac, old.public_ip, device.index))
                continue
            old_direct = self._direct.pop(old.subnet, False) if old is not None else False
            new_direct = await self._is_direct(new) if new is not None else False
            if new is not None:
                self._direct[new.subnet] = new_direct
                fresh += install(new, device, new_direct)
            if old is not None:
                stale += superseded(old, new, device, old_direct, new_direct) \
                    if new is not None else removal(old, device, old_direct)
        if stale or fresh:
            await self._program(stale, fresh, planned.changes)
        elif planned.changes:
            self._log(planned.changes, 0, 0, 0)

    async def _is_direct(self, peer: Peer) -> bool:
        """DirectRouting: is the peer's PublicIP reachable with no gateway, through our
        interface (the same L2 segment)?"""
        if not self.config.direct_routing:
            return False

        async def lookup(ipr: Any) -> bool:
            try:
                routes = await collect(await ipr.route("get", dst=str(peer.public_ip)))
            except NetlinkError:
                return False
            return bool(routes) and routes[0].get("RTA_GATEWAY") is None \
                and routes[0].get("RTA_OIF") == self._iface.index

        return await self._netlink.call(lookup)

    async def _program(self, stale: Sequence[Request], fresh: Sequence[Request],
                       changes: Sequence[Any]) -> None:
        result = await program([*stale, *fresh], f"vxlan {self.name}")
        if result is None:
            self._counters["program_errors"] += len(stale) + len(fresh)
            return
        failed, gone = result
        not_removed = sum(1 for request in failed if request.flags == DELETE)
        removed = len(stale) - gone - not_removed
        self._counters["program_errors"] += len(failed)
        self._counters["entries_removed"] += removed
        installed = len(fresh) - (len(failed) - not_removed)
        self._counters["entries_installed"] += installed
        self._log(changes, installed, removed, len(failed))

    def _log(self, changes: Sequence[Any], installed: int, removed: int, failed: int) -> None:
        added = [c.new for c in changes if c.new is not None]
        left = [c.old for c in changes if c.new is None and c.old is not None]
        if len(changes) < BULK:
            for change in changes:
                peer = change.new or change.old
                if change.new is None:
                    log.info("%s removed subnet=%s %s=%s", self._label, peer.subnet,
                             self._ip_name, peer.public_ip)
                else:
                    log.info("%s %s subnet=%s %s=%s vtep_mac=%s", self._label,
                             "updated" if change.old else "added", peer.subnet,
                             self._ip_name, peer.public_ip, format_mac(peer.vtep_mac))
            return
        if left:
            log.info("peers removed count=%d device=%s entries=%d failed=%d", len(left),
                     self.name, removed, failed)
        if added:
            log.info("peers added or changed count=%d device=%s entries=%d failed=%d",
                     len(added), self.name, installed, failed)

    # -- misses --------------------------------------------------------------------------

    async def answer(self, miss: Miss) -> None:
        """A miss the kernel reported on this device: an IP without a neighbour (L3) or a
        VtepMAC without an FDB entry (L2); answered from the lease table, or counted."""
        device = self.device
        requests: list[Request] = []
        kind = ""
        if miss.dst is not None:
            try:
                ip = ip_address(miss.dst)
            except ValueError:
                ip = None
            peer = self.plan.owner_of(ip) if ip is not None else None
            if ip is not None and peer is not None and not self._direct.get(peer.subnet):
                requests, kind = answer_l3(ip, peer, device, self.lazy is not None), "l3"
                if self.lazy is not None:
                    self.lazy.record(ip, self._clock())
        elif miss.lladdr is not None:
            try:
                owner = self.plan.owner_of_mac(parse_mac(miss.lladdr))
            except DecodeError:
                owner = None
            if owner is not None:
                requests, kind = answer_l2(owner.vtep_mac, owner, device), "l2"
        if not requests:
            self._counters["misses_unknown"] += 1
            return
        result = await program(requests, f"vxlan {self.name} miss")
        if result is None or result[0]:
            self._counters["program_errors"] += 1
            return
        self._counters[f"{kind}_misses_answered"] += 1

    async def sweep(self) -> None:
        """Lazy programming: every entry lives IdleTimeout seconds from its installation.
        (The kernel's own neighbour timers cannot tell us: the probes of an unused entry
        look like use.)"""
        if self.lazy is None:
            return
        requests: list[Request] = []
        aged = 0
        for ip in self.lazy.expired(self._clock()):
            peer = self.plan.owner_of(ip)
            if peer is None:  # went with its peer
                self.lazy.installed.pop(ip, None)
                continue
            requests += self.lazy.forget([ip], peer, self.device)
            aged += 1
        if requests:
            await program(requests, f"vxlan {self.name} ageing")
            self._counters["entries_aged_out"] += aged

    def counters(self) -> Mapping[str, int]:
        counts = {**self._counters, "peers": len(self.plan.peers)}
        return {f"{self._prefix}{key}": value for key, value in counts.items()}


def _matches(link: Any, wanted: Mapping[str, Any], gbp: bool, mac: str) -> bool:
    """Is the existing device the one we would make (so that a restart keeps it)?"""
    info = link.get("IFLA_LINKINFO")
    if info is None or info.get("IFLA_INFO_KIND") != "vxlan":
        return False
    data = info.get("IFLA_INFO_DATA")
    if data is None or any(data.get(key) != value for key, value in wanted.items()):
        return False
    return bool(data.get("IFLA_VXLAN_GBP") is not None) == gbp and \
        link.get("IFLA_ADDRESS") == mac

