"""The wireguard backend's kernel data plane: a Linux `wireguard` link `flannel-wg`,
configured over generic netlink (pyroute2's WireGuard) as Go flannel configures it: our
private key and ListenPort, then per peer its public key, PSK, keepalive, the endpoint
PublicIP:Port and its subnet as the allowed IPs (replacing the old ones).

Shell. The requests are built by pure functions (device_request, peer_request,
removal_request: tested without a kernel); start() raises NoKernelWireGuard when the
kernel cannot create the link kind (no module), and the backend falls back to userspace.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import socket
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Any

from lease.errors import BackendError
from lease.model import Lease

from ._bulk import RTPROT_FLANNEL
from ._netlink import Netlink, watch_device
from .wireguard import DEVICE, DEVICE_V6, NoKernelWireGuard, Peer

if TYPE_CHECKING:
    from lease.config import NetworkConfig

    from ._base import ExternalInterface
    from .wireguard import WireGuardConfig

log = logging.getLogger(__name__)

# errors that say "this kernel has no wireguard link kind"
NO_KIND = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENODEV, errno.ENOENT,
           errno.EPROTONOSUPPORT)


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def device_request(private_key: bytes, listen_port: int) -> dict[str, Any]:
    """The device's settings, as pyroute2's WireGuard.set takes them."""
    return {"private_key": _b64(private_key), "listen_port": listen_port}


def peer_request(peer: Peer, allowed_ips: Sequence[IPv4Network | IPv6Network], psk: bytes | None,
                 keepalive_s: int) -> dict[str, Any]:
    """One peer added or updated: endpoint, allowed IPs replaced, PSK, keepalive."""
    request: dict[str, Any] = {
        "public_key": _b64(peer.public_key),
        "endpoint_addr": peer.endpoint[0],
        "endpoint_port": peer.endpoint[1],
        "persistent_keepalive": keepalive_s,
        "replace_allowed_ips": True,
        "allowed_ips": [str(net) for net in allowed_ips],
    }
    if psk is not None:
        request["preshared_key"] = _b64(psk)
    return request


def removal_request(public_key: bytes) -> dict[str, Any]:
    return {"public_key": _b64(public_key), "remove": True}


class KernelWireGuard:
    """`flannel-wg` (or, `ipv6`, `flannel-wg-v6`) as a kernel device."""

    name = "kernel"

    def __init__(self, config: WireGuardConfig, iface: ExternalInterface,
                 network: NetworkConfig, private_key: bytes, mtu: int,
                 ipv6: bool = False) -> None:
        self.config, self._iface, self._network = config, iface, network
        self.ipv6 = ipv6
        self.device_name = DEVICE_V6 if ipv6 else DEVICE
        self.port = config.listen_port_v6 if ipv6 else config.listen_port
        self._private_key, self.mtu = private_key, mtu
        self._netlink = Netlink()
        self.index = 0
        self._peers = 0
        self._errors = 0

    async def _wg(self, **request: Any) -> None:
        def send() -> None:
            from pyroute2 import WireGuard

            with WireGuard() as wg:
                wg.set(name, **request)

        name = self.device_name

        await asyncio.to_thread(send)

    async def start(self, lease: Lease) -> None:
        mtu, name = self.mtu, self.device_name
        if self.ipv6:
            assert lease.ipv6_subnet is not None and self._network.ipv6_network is not None
            network: IPv4Network | IPv6Network = self._network.ipv6_network
            address, prefixlen = str(lease.ipv6_subnet.network_address), 128
        else:
            network, address, prefixlen = self._network.network, \
                str(lease.subnet.network_address), 32
        family = socket.AF_INET6 if self.ipv6 else socket.AF_INET

        async def make(ipr: Any) -> int:
            found = await ipr.link_lookup(ifname=name)
            if found:  # as flannel: an existing device is recreated
                await ipr.link("del", index=found[0])
            await ipr.link("add", ifname=name, kind="wireguard")
            index = int((await ipr.link_lookup(ifname=name))[0])
            await ipr.link("set", index=index, mtu=mtu)
            return index

        try:
            self.index = await self._netlink.call(make)
        except Exception as exc:  # pyroute2's NetlinkError
            code = getattr(exc, "code", None)
            if code in NO_KIND or "wireguard" in str(exc).lower():
                raise NoKernelWireGuard(f"ip link add {name} type wireguard: "
                                        f"{_reason(exc)}") from None
            raise BackendError(f"wireguard: creating {name}: {_reason(exc)}") from None
        try:
            await self._wg(**device_request(self._private_key, self.port))
        except Exception as exc:
            raise BackendError(f"wireguard: configuring {name}: {_reason(exc)}") from None
        self._private_key = b""

        async def address_and_route(ipr: Any) -> None:
            await ipr.addr("replace", index=self.index, address=address, prefixlen=prefixlen,
                           family=family)
            await ipr.link("set", index=self.index, state="up")
            await ipr.route("replace", dst=str(network), oif=self.index, family=family,
                            proto=RTPROT_FLANNEL, scope=253)  # RT_SCOPE_LINK

        try:
            await self._netlink.call(address_and_route)
        except Exception as exc:
            raise BackendError(f"wireguard: configuring {name}: {_reason(exc)}") from None
        log.info("wireguard backend ready dataplane=kernel device=%s address=%s/%d mtu=%d "
                 "port=%d", name, address, prefixlen, mtu, self.port)

    async def set_peer(self, peer: Peer, allowed_ips: list[IPv4Network | IPv6Network]) \
            -> None:
        try:
            await self._wg(peer=peer_request(peer, allowed_ips, self.config.psk,
                                             self.config.keepalive_s))
            self._peers += 1
        except Exception as exc:
            self._errors += 1
            log.error("wireguard: setting peer %s: %s", peer.subnet, _reason(exc))

    async def remove_peer(self, public_key: bytes) -> None:
        try:
            await self._wg(peer=removal_request(public_key))
            self._peers -= 1
        except Exception as exc:
            self._errors += 1
            log.error("wireguard: removing a peer: %s", _reason(exc))

    async def run(self) -> None:
        await watch_device(self.device_name, self.index)

    def counters(self) -> Mapping[str, int]:
        return {"netlink_errors": self._errors}

    async def close(self) -> None:
        self._netlink.close()


def _reason(exc: BaseException) -> str:
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1]
    return str(exc) or type(exc).__name__
