"""host-gw: no encapsulation, one route per peer: `<subnet> via <PublicIP> dev <iface>`.

Works only when every host is on one L2 segment. Refuses to start behind NAT (a public IP
that is not the interface's own). Routes are re-checked every 10 s and repaired.

With EnableIPv6 (flannel's GetV6Route): also `<IPv6 subnet> via <PublicIPv6> dev <iface>`
for each peer whose lease has both; an IPv4-only peer gets its IPv4 route only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import Final

from lease.errors import BackendError
from lease.model import EventKind, Lease, LeaseAttrs, LeaseEvent

from ._base import BackendContext
from ._bulk import RTPROT_FLANNEL, program, route_delete, route_replace
from ._netlink import Netlink, Route, RouteTable

log = logging.getLogger(__name__)

BACKEND_TYPE: Final = "host-gw"
RESYNC_S: Final = 10.0
BULK: Final = 32  # routes added (or removed) at once from which one log line says them all


def desired_route(lease: Lease, oif: int) -> Route | None:
    """The route a peer's lease asks for, or None if it is not a host-gw lease."""
    if lease.attrs.backend_type != BACKEND_TYPE:
        return None
    return Route(lease.subnet, lease.attrs.public_ip, oif)


def desired_route6(lease: Lease, oif: int) -> Route | None:
    """The IPv6 route of a dual-stack host-gw lease (its IPv6 subnet via its PublicIPv6),
    or None: not host-gw, or an IPv4-only lease (flannel would dereference the missing
    PublicIPv6)."""
    if lease.attrs.backend_type != BACKEND_TYPE or lease.ipv6_subnet is None \
            or lease.attrs.public_ipv6 is None:
        return None
    return Route(lease.ipv6_subnet, lease.attrs.public_ipv6, oif)


Subnet = IPv4Network | IPv6Network


def plan_resync(
    desired: Mapping[Subnet, Route], actual: Sequence[Route]
) -> tuple[list[Route], list[Route]]:
    """(routes to (re)install, routes of ours to delete) to make `actual` equal `desired`."""
    have = {route.dst: route for route in actual}
    install = [route for dst, route in desired.items() if have.get(dst) != route]
    delete = [route for dst, route in have.items() if dst not in desired]
    return install, delete


class HostGWBackend:
    def __init__(self, context: BackendContext) -> None:
        self._iface = context.iface
        if context.iface.public_ip != context.iface.address:
            raise BackendError(
                f"host-gw cannot work behind NAT: public IP {context.iface.public_ip} is not "
                f"the address of {context.iface.name} ({context.iface.address})"
            )
        self._ipv6 = context.network.enable_ipv6
        public6, own6 = context.iface.public_ipv6, context.iface.address6
        if self._ipv6 and public6 is not None and own6 is not None and public6 != own6:
            raise BackendError(
                f"host-gw cannot work behind NAT: public IPv6 {public6} is not the address "
                f"of {context.iface.name} ({own6})")
        self._netlink = Netlink()
        self._routes = RouteTable(self._netlink)
        self._desired: dict[Subnet, Route] = {}
        self._synced = asyncio.Event()
        self._counters = {"routes_installed": 0, "routes_deleted": 0, "route_errors": 0,
                          "resync_repairs": 0}

    @property
    def mtu(self) -> int:
        return self._iface.mtu

    async def lease_attrs(self, previous: LeaseAttrs | None) -> LeaseAttrs:
        return LeaseAttrs(public_ip=self._iface.public_ip, backend_type=BACKEND_TYPE,
                          public_ipv6=self._iface.public_ipv6 if self._ipv6 else None)

    async def start(self, lease: Lease) -> None:
        log.info("host-gw ready subnet=%s iface=%s", lease.subnet, self._iface.name)

    async def apply(self, events: Sequence[LeaseEvent]) -> None:
        """Bring the kernel to the batch's final state: per subnet, the route its last
        event asks for, or none."""
        before: dict[Subnet, Route | None] = {}
        for event in events:
            wanted: list[tuple[Subnet, Route | None]] = [
                (event.lease.subnet, desired_route(event.lease, self._iface.index))]
            if self._ipv6 and event.lease.ipv6_subnet is not None:
                wanted.append((event.lease.ipv6_subnet,
                               desired_route6(event.lease, self._iface.index)))
            for subnet, new in wanted:
                old = self._desired.pop(subnet, None)
                before.setdefault(subnet, old)
                if event.kind is EventKind.ADDED and new is not None:
                    self._desired[subnet] = new
        install = [self._desired[s] for s in before if s in self._desired]
        delete = [old for s, old in before.items() if old is not None and s not in self._desired]
        await self._change(install, delete)
        self._synced.set()

    async def _change(self, install: Sequence[Route], delete: Sequence[Route]) -> None:
        """Install and delete routes, one send for all (backends/_bulk.py); each logged, or
        from BULK routes on (a node joining a big cluster, many leases expiring at once)
        one line for all."""
        if not install and not delete:
            return
        requests = [route_replace(r.dst, r.gateway, r.oif, RTPROT_FLANNEL, r.onlink)
                    for r in install]
        requests += [route_delete(r.dst, r.gateway, r.oif, RTPROT_FLANNEL, r.onlink)
                     for r in delete]
        result = await program(requests, "host-gw")
        if result is None:
            self._counters["route_errors"] += len(requests)
            return
        failed = set(map(id, result[0]))  # a route already gone counts as removed
        self._counters["route_errors"] += len(failed)
        for what, routes, done in (("added", install, requests[:len(install)]),
                                   ("removed", delete, requests[len(install):])):
            good = [route for route, request in zip(routes, done, strict=True)
                    if id(request) not in failed]
            self._counters["routes_installed" if what == "added" else "routes_deleted"] += \
                len(good)
            if len(routes) >= BULK:
                log.info("routes %s count=%d failed=%d", what, len(good),
                         len(routes) - len(good))
            else:
                for route in good:
                    log.info("route %s subnet=%s via=%s", what, route.dst, route.gateway)

    async def resync(self) -> int:
        """Repair missing or changed routes and delete stale ones of ours; how many fixed."""
        install, delete = plan_resync(self._desired, await self._routes.ours(self._ipv6))
        await self._change(install, delete)
        fixed = len(install) + len(delete)
        if fixed:
            self._counters["resync_repairs"] += fixed
            log.info("host-gw resync repaired %d routes", fixed)
        return fixed

    async def run(self) -> None:
        await self._synced.wait()  # the first peer listing: never delete before we know
        while True:
            try:
                await self.resync()
            except BackendError as exc:  # a bad moment for netlink: try again next time
                self._counters["route_errors"] += 1
                log.warning("host-gw: resync: %s", exc)
            await asyncio.sleep(RESYNC_S)

    def counters(self) -> Mapping[str, int]:
        return dict(self._counters)

    async def close(self) -> None:
        self._netlink.close()

