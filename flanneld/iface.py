"""Choosing the underlay interface (-iface, -iface-regex, -iface-can-reach, default route).

Shell: reads links, addresses and routes through netlink (pyroute2). The interface's first
IPv6 address that is not link-local (or -public-ipv6) is kept too, for EnableIPv6, as
flannel's LookupExtIface does; check_ipv6 says whether a dual-stack network can use it.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from backends import ExternalInterface, Netlink, collect
from lease.errors import ConfigError


@dataclass(frozen=True, slots=True)
class _Link:
    name: str
    index: int
    mtu: int
    addresses: tuple[IPv4Address, ...]
    addresses6: tuple[IPv6Address, ...] = ()  # not link-local, in the kernel's order


async def _links(ipr: Any) -> list[_Link]:
    addresses: dict[int, list[IPv4Address]] = {}
    async for msg in await ipr.addr("dump", family=socket.AF_INET):
        addresses.setdefault(msg["index"], []).append(IPv4Address(msg.get("address")))
    addresses6: dict[int, list[IPv6Address]] = {}
    async for msg in await ipr.addr("dump", family=socket.AF_INET6):
        address6 = IPv6Address(msg.get("address"))
        if not address6.is_link_local:
            addresses6.setdefault(msg["index"], []).append(address6)
    links = [
        _Link(msg.get("ifname"), msg["index"], int(msg.get("mtu") or 1500),
              tuple(addresses.get(msg["index"], ())), tuple(addresses6.get(msg["index"], ())))
        async for msg in await ipr.link("dump")
    ]
    return sorted(links, key=lambda link: link.index)


def _as_ip(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


def _by_name_or_ip(links: Sequence[_Link], wanted: str) -> _Link | None:
    ip = _as_ip(wanted)
    if ip is None:
        return next((link for link in links if link.name == wanted), None)
    return next((link for link in links if ip in (*link.addresses, *link.addresses6)), None)


def _by_regex(links: Sequence[_Link], pattern: str) -> _Link | None:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"-iface-regex {pattern!r}: {exc}") from None
    for link in links:
        if regex.search(link.name) or any(regex.search(str(a)) for a in link.addresses):
            return link
    for link in links:  # an IPv6 address matched only when no name or IPv4 address did
        if any(regex.search(str(a)) for a in link.addresses6):
            return link
    return None


async def _route_oif(ipr: Any, dst: str | None) -> int | None:
    if dst is None:
        async for msg in await ipr.route("dump", family=socket.AF_INET, table=254):
            if msg["dst_len"] == 0 and msg.get("oif"):
                return int(msg.get("oif"))
        return None
    try:
        answers = await collect(await ipr.route("get", dst=dst))
    except NetlinkError:
        return None
    return int(answers[0].get("RTA_OIF")) if answers else None


async def pick_interface(
    ifaces: Sequence[str], regexes: Sequence[str], can_reach: str, public_ip: str,
    public_ipv6: str = "",
) -> ExternalInterface:
    """Resolve the flags to one interface with an IPv4 address; ConfigError if impossible."""
    netlink = Netlink()
    try:
        return await netlink.call(lambda ipr: _pick(ipr, ifaces, regexes, can_reach, public_ip,
                                                    public_ipv6))
    finally:
        netlink.close()


def check_ipv6(iface: ExternalInterface) -> None:
    """ConfigError unless the interface can carry a dual-stack network (EnableIPv6): it
    needs an IPv6 address of its own (the VXLAN device's local address, host-gw's next
    hop), and peers must be able to reach the public one."""
    if iface.address6 is None:
        raise ConfigError(f"EnableIPv6 is true but interface {iface.name} has no IPv6 address "
                          "(other than link-local); add one, or choose another with -iface")
    public = iface.public_ipv6 or iface.address6
    if public.is_loopback or public.is_unspecified or public.is_multicast \
            or public.is_link_local:
        raise ConfigError(f"-public-ipv6 {public} is not an address peers can reach")


async def _pick(
    ipr: Any, ifaces: Sequence[str], regexes: Sequence[str], can_reach: str, public_ip: str,
    public_ipv6: str = "",
) -> ExternalInterface:
    links = await _links(ipr)
    link: _Link | None = None
    address: IPv4Address | None = None
    address6: IPv6Address | None = None
    if ifaces:
        for wanted in ifaces:
            link = _by_name_or_ip(links, wanted)
            if link is not None:
                ip = _as_ip(wanted)
                if isinstance(ip, IPv4Address) and ip in link.addresses:
                    address = ip
                elif isinstance(ip, IPv6Address) and ip in link.addresses6:
                    address6 = ip
                break
        if link is None:
            raise ConfigError(f"-iface: none of {', '.join(ifaces)} exists on this host")
    elif regexes:
        for pattern in regexes:
            link = _by_regex(links, pattern)
            if link is not None:
                break
        if link is None:
            raise ConfigError(f"-iface-regex: no interface matches {', '.join(regexes)}")
    else:
        oif = await _route_oif(ipr, can_reach or None)
        link = next((item for item in links if item.index == oif), None)
        if link is None:
            what = f"no route to {can_reach}" if can_reach else "no default route"
            raise ConfigError(f"{what}; choose the interface with -iface")
    if not link.addresses:
        raise ConfigError(f"interface {link.name} has no IPv4 address")
    address = address or link.addresses[0]
    public = IPv4Address(public_ip) if public_ip else address
    if public.is_loopback or public.is_unspecified or public.is_multicast:
        source = "-public-ip" if public_ip else f"interface {link.name}'s address"
        raise ConfigError(f"{source} {public} is not an address peers can reach; "
                          "choose another interface with -iface, or give -public-ip")
    address6 = address6 or (link.addresses6[0] if link.addresses6 else None)
    return ExternalInterface(
        name=link.name, index=link.index, address=address, public_ip=public, mtu=link.mtu,
        address6=address6, public_ipv6=IPv6Address(public_ipv6) if public_ipv6 else address6)
