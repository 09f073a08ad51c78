"""The TUN device: open it (python-pytun), make it non-blocking, configure it (pyroute2).

Shell. Plain, the device is opened with IFF_TUN | IFF_NO_PI: every read and write is one
bare IP packet. With offloads (IFF_VNET_HDR, TUNSETOFFLOAD with checksum and TCPv4
segmentation offload) every read and write starts with a 10-byte virtio-net header and a
TCP packet may be a 64 KB super-packet; tun/offload.py cuts and joins those.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import pytun

from lease.errors import BackendError
from tun.offload import VNET_HDR_LEN

IFF_VNET_HDR: Final = 0x4000
TUNSETOFFLOAD: Final = 0x400454D0
TUNSETVNETHDRSZ: Final = 0x400454D8
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
log = logging.getLogger(__name__)
T = TypeVar("T")


class Netlink(Protocol):
    """What configuring the device needs of the backends' netlink shell
    (backends/_netlink.py's Netlink): run a pyroute2 request function, await its result."""

    async def call(self, fn: Callable[[Any], Awaitable[T]]) -> T: ...


@dataclass
class TunDevice:
    name: str
    fd: int
    _handle: Any
    vnet_hdr: bool = False  # reads and writes carry a virtio-net header (offloads on)
    index: int = 0  # the kernel's ifindex of the device we opened


    @classmethod
    def open(cls, name: str, offload: bool = False) -> TunDevice:
        """Open `name` (created if missing). With `offload`, ask for checksum and TCPv4
        segmentation offloads; a kernel that refuses gets a log line and a plain device."""
        flags = pytun.IFF_TUN | pytun.IFF_NO_PI
        try:
            handle = pytun.TunTapDevice(name=name, flags=flags | (IFF_VNET_HDR if offload else 0))
        except (pytun.Error, OSError) as exc:
            raise BackendError(f"cannot open TUN device {name}: {exc}") from None
        fd = handle.fileno()
        if offload:
            try:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
            except OSError as exc:
                log.warning("TUN offloads refused by the kernel (%s); one packet per read",
                            exc.strerror)
                handle.close()
                return cls.open(name)
        os.set_blocking(fd, False)
        name = handle.name if isinstance(handle.name, str) else handle.name.decode()
        return cls(name, fd, handle, offload, socket.if_nametoindex(name))

    def close(self) -> None:
        self._handle.close()


async def configure_tun(netlink: Netlink, name: str, address: IPv4Address, mtu: int,
                        network: IPv4Network, route_proto: int) -> int:
    """MTU, up, `address/32`, and `route <network> dev <name>`; the link index.

    gso_max_segs stays at its default: a forwarded super-packet (from a container) with
    more segments than the device takes is cut into single packets by the kernel, which
    costs far more than the second UDP GSO send a 46-segment super-packet needs."""

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
