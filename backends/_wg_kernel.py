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
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

from lease.errors import BackendError
from lease.model import Lease

from ._bulk import RTPROT_FLANNEL
from ._netlink import Netlink, watch_device
from .wireguard import DEVICE, NoKernelWireGuard, Peer

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


def peer_request(peer: Peer, allowed_ips: Sequence[IPv4Network], psk: bytes | None,
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
    """`flannel-wg` as a kernel device."""

    name = "kernel"

    def __init__(self, config: WireGuardConfig, iface: ExternalInterface,
                 network: NetworkConfig, private_key: bytes, mtu: int) -> None:
        self.config, self._iface, self._network = config, iface, network
        self._private_key, self.mtu = private_key, mtu
        self._netlink = Netlink()
        self.index = 0
        self._peers = 0
        self._errors = 0

    async def _wg(self, **request: Any) -> None:
        def send() -> None:
            from pyroute2 import WireGuard

            with WireGuard() as wg:
                wg.set(DEVICE, **request)

        await asyncio.to_thread(send)

    async def start(self, lease: Lease, peers: Sequence[tuple[Peer, list[IPv4Network]]]) \
            -> None:
        mtu, network = self.mtu, self._network.network

        async def make(ipr: Any) -> int:
            found = await ipr.link_lookup(ifname=DEVICE)
            if found:  # as flannel: an existing device is recreated
                await ipr.link("del", index=found[0])
            await ipr.link("add", ifname=DEVICE, kind="wireguard")
            index = int((await ipr.link_lookup(ifname=DEVICE))[0])
            await ipr.link("set", index=index, mtu=mtu)
            return index

        try:
            self.index = await self._netlink.call(make)
        except Exception as exc:  # pyroute2's NetlinkError
            code = getattr(exc, "code", None)
            if code in NO_KIND or "wireguard" in str(exc).lower():
                raise NoKernelWireGuard(f"ip link add {DEVICE} type wireguard: "
                                        f"{_reason(exc)}") from None
            raise BackendError(f"wireguard: creating {DEVICE}: {_reason(exc)}") from None
        try:
            await self._wg(**device_request(self._private_key, self.config.listen_port))
        except Exception as exc:
            raise BackendError(f"wireguard: configuring {DEVICE}: {_reason(exc)}") from None
        self._private_key = b""
        address = str(lease.subnet.network_address)

        async def address_and_route(ipr: Any) -> None:
            await ipr.addr("replace", index=self.index, address=address, prefixlen=32)
            await ipr.link("set", index=self.index, state="up")
            await ipr.route("replace", dst=str(network), oif=self.index,
                            proto=RTPROT_FLANNEL, scope=253)  # RT_SCOPE_LINK

        try:
            await self._netlink.call(address_and_route)
        except Exception as exc:
            raise BackendError(f"wireguard: configuring {DEVICE}: {_reason(exc)}") from None
        for peer, allowed in peers:
            await self.set_peer(peer, allowed)
        log.info("wireguard backend ready dataplane=kernel device=%s address=%s/32 mtu=%d "
                 "port=%d", DEVICE, address, mtu, self.config.listen_port)

    async def set_peer(self, peer: Peer, allowed_ips: list[IPv4Network]) -> None:
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
        await watch_device(DEVICE, self.index)

    def counters(self) -> Mapping[str, int]:
        return {"netlink_errors": self._errors}

    async def close(self) -> None:
        self._netlink.close()


def _reason(exc: BaseException) -> str:
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1]
    return str(exc) or type(exc).__name__
