"""Tests for backends/_wg_kernel.py without a kernel module: the requests it sends (as Go
flannel configures its device), that pyroute2 encodes them into a WG_CMD_SET_DEVICE
message, and that a kernel without the `wireguard` link kind is told apart from other
netlink failures (the backend falls back to userspace on the first only)."""

from __future__ import annotations

import asyncio
import base64
import errno
import types
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from pyroute2.netlink.generic import wireguard as pyroute2_wg

from backends._base import ExternalInterface
from backends._wg_kernel import (
    KernelWireGuard,
    device_request,
    peer_request,
    removal_request,
)
from backends.wireguard import NoKernelWireGuard, Peer, WireGuardConfig
from lease.config import BackendSpec, parse_network_config
from lease.errors import BackendError
from lease.model import Lease, LeaseAttrs

KEY = bytes(range(32))
PSK = bytes(range(5, 37))
PEER = Peer(bytes(range(1, 33)), ("192.0.2.2", 51820), IPv4Network("10.5.2.0/24"))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_device_request() -> None:
    assert device_request(KEY, 51820) == {"private_key": b64(KEY), "listen_port": 51820}


def test_peer_request_as_flannel() -> None:
    assert peer_request(PEER, [PEER.subnet], PSK, 25) == {
        "public_key": b64(PEER.public_key), "endpoint_addr": "192.0.2.2",
        "endpoint_port": 51820, "persistent_keepalive": 25, "replace_allowed_ips": True,
        "allowed_ips": ["10.5.2.0/24"], "preshared_key": b64(PSK)}
    assert "preshared_key" not in peer_request(PEER, [PEER.subnet], None, 0)
    assert removal_request(PEER.public_key) == {"public_key": b64(PEER.public_key),
                                                "remove": True}


@pytest.mark.parametrize("request_", [peer_request(PEER, [PEER.subnet], PSK, 25),
                                      removal_request(PEER.public_key)])
def test_pyroute2_encodes_the_requests(request_: dict[str, Any]) -> None:
    cls = pyroute2_wg.AsyncWireGuard
    fake = types.SimpleNamespace()
    fake._wg_test_key = types.MethodType(cls._wg_test_key, fake)
    fake._wg_build_allowedips = types.MethodType(cls._wg_build_allowedips, fake)
    msg = pyroute2_wg.wgmsg()
    msg["attrs"].append(["WGDEVICE_A_IFNAME", "flannel-wg"])
    cls._wg_set_peer(fake, msg, request_)
    msg["cmd"] = pyroute2_wg.WG_CMD_SET_DEVICE
    msg["version"] = pyroute2_wg.WG_GENL_VERSION
    msg["header"]["type"] = 0x20
    msg.encode()
    assert len(msg.data) > 40


class FailingNetlink:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def call(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        raise self.exc

    def close(self) -> None:
        pass


def plane(exc: Exception) -> KernelWireGuard:
    iface = ExternalInterface("eth0", 2, IPv4Address("192.0.2.1"), IPv4Address("192.0.2.1"),
                              1500)
    network = parse_network_config('{"Network": "10.5.0.0/16"}')
    kernel = KernelWireGuard(WireGuardConfig.from_spec(BackendSpec("wireguard")), iface,
                             network, KEY, 1420)
    kernel._netlink.close()
    kernel._netlink = FailingNetlink(exc)  # type: ignore[assignment]
    return kernel


def netlink_error(code: int, text: str) -> Exception:
    from pyroute2.netlink.exceptions import NetlinkError
    error: Exception = NetlinkError(code, text)
    return error


LEASE = Lease(IPv4Network("10.5.1.0/24"), LeaseAttrs(IPv4Address("192.0.2.1")))


def test_no_link_kind_is_told_apart() -> None:
    kernel = plane(netlink_error(errno.EOPNOTSUPP, "Operation not supported"))
    with pytest.raises(NoKernelWireGuard, match="type wireguard: Operation not supported"):
        asyncio.run(kernel.start(LEASE))
    kernel = plane(netlink_error(errno.EPERM, "Operation not permitted"))
    with pytest.raises(BackendError, match="creating flannel-wg: Operation not permitted"):
        asyncio.run(kernel.start(LEASE))
