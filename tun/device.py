"""The TUN device: open it (python-pytun), make it non-blocking, configure it (pyroute2).

Shell. The device is opened with IFF_TUN | IFF_NO_PI: every read and write is one bare IP
packet. `extra_flags` is where offloads (IFF_VNET_HDR) plug in later without touching the
backends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytun

from backends._netlink import Netlink
from flanneld.errors import BackendError


@dataclass
class TunDevice:
    name: str
    fd: int
    _handle: Any

    @classmethod
    def open(cls, name: str, extra_flags: int = 0) -> TunDevice:
        try:
            handle = pytun.TunTapDevice(name=name,
                                        flags=pytun.IFF_TUN | pytun.IFF_NO_PI | extra_flags)
        except (pytun.Error, OSError) as exc:
            raise BackendError(f"cannot open TUN device {name}: {exc}") from None
        fd = handle.fileno()
        os.set_blocking(fd, False)
        return cls(handle.name if isinstance(handle.name, str) else handle.name.decode(), fd,
                   handle)

    def close(self) -> None:
        self._handle.close()


async def configure_tun(netlink: Netlink, name: str, address: IPv4Address, mtu: int,
                        network: IPv4Network, route_proto: int) -> int:
    """MTU, up, `address/32`, and `route <network> dev <name>`; the link index."""

    async def apply(ipr: Any) -> int:
        found = await ipr.link_lookup(ifname=name)
        if not found:
            raise BackendError(f"TUN device {name} vanished")
        index = int(found[0])
        # ICMP errors we write into the device come from its own address: without
        # accept_local the kernel drops them as martians. IPv6 would only add solicitations.
        set_sysctl(f"net/ipv4/conf/{name}/accept_local", "1")
        set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
        await ipr.link("set", index=index, mtu=mtu, state="up")
        await ipr.addr("replace", index=index, address=str(address), prefixlen=32)
        await ipr.route("replace", dst=str(network), oif=index, proto=route_proto,
                        scope=253)  # RT_SCOPE_LINK
        return index

    try:
        return await netlink.call(apply)
    except BackendError:
        raise
    except Exception as exc:  # pyroute2's NetlinkError and friends
        raise BackendError(f"configuring {name}: {exc}") from None


def set_sysctl(path: str, value: str) -> bool:
    """Write /proc/sys/<path> in this network namespace; False if the kernel lacks it."""
    try:
        Path("/proc/sys", path).write_text(value)
    except OSError:
        return False
    return True
