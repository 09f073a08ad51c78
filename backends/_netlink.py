"""Netlink (pyroute2): the shell every kernel backend shares for its devices, and reading routes.

pyroute2's AsyncIPRoute cannot run on uvloop (uvloop refuses its AF_NETLINK socket), so it
lives on a stdlib asyncio loop in one helper thread; callers on the main loop await the
results. Routes we install (as requests, backends/_bulk.py) carry our own protocol number,
so a restarted daemon can tell them from everyone else's and never touches routes it did
not make.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Final, TypeVar

from pyroute2 import AsyncIPRoute

from lease.errors import BackendError

from ._bulk import RTPROT_FLANNEL, dump_routes

log = logging.getLogger(__name__)
DEVICE_CHECK_S: Final = 1.0  # how soon a deleted or replaced device of ours is noticed
T = TypeVar("T")


def device_lost(name: str, index: int) -> BackendError | None:
    """None while `name` is still the device `index` we made; else what to end with. One
    ioctl in our network namespace (no netlink, no process)."""
    try:
        now = socket.if_nametoindex(name)
    except OSError:
        now = 0
    if now == index:
        return None
    what = "was deleted" if not now else f"was replaced (ifindex {index}, now {now})"
    return BackendError(f"{name} {what}: exiting, so that flanneld starts over and makes it "
                        f"again (systemd restarts it; the lease is kept)")


async def watch_device(name: str, index: int, period_s: float = DEVICE_CHECK_S) -> None:
    """Never returns; raises BackendError once the device is gone or replaced."""
    while True:
        await asyncio.sleep(period_s)
        lost = device_lost(name, index)
        if lost is not None:
            raise lost


async def collect(result: Any) -> list[Any]:
    """pyroute2 answers some requests with a list, others with an async generator."""
    if hasattr(result, "__aiter__"):
        return [msg async for msg in result]
    return list(result)


class Netlink:
    """One AsyncIPRoute on a private stdlib event loop thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netlink",
                                        daemon=True)
        self._thread.start()
        self._ipr: Any = None

    async def call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run `fn(ipr)` on the netlink thread and await its result here."""
        if self._ipr is None:
            async def make() -> Any:
                ipr = AsyncIPRoute()
                await ipr.setup_endpoint()
                return ipr

            self._ipr = await self._submit(make())
        ipr = self._ipr
        return await self._submit(fn(ipr))

    async def _submit(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        future = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        if self._ipr is not None:
            self._loop.call_soon_threadsafe(self._ipr.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)


@dataclass(frozen=True, slots=True)
class Route:
    dst: IPv4Network | IPv6Network
    gateway: IPv4Address | IPv6Address
    oif: int
    onlink: bool = False


class RouteTable:
    """Our routes in the main table of the current network namespace, as they are (the
    changes go as requests: backends/_bulk.py's program)."""

    def __init__(self, netlink: Netlink) -> None:
        self._nl = netlink

    async def ours(self, ipv6: bool = False) -> list[Route]:
        """The IPv4 routes (and with `ipv6` the IPv6 ones too) with our protocol number and
        a gateway in the main table: read with one raw netlink dump per family
        (backends/_bulk.py), which costs a fraction of pyroute2's parsing when there are
        thousands."""
        try:
            dumped = await asyncio.to_thread(dump_routes, RTPROT_FLANNEL)
            if ipv6:
                dumped += await asyncio.to_thread(dump_routes, RTPROT_FLANNEL, socket.AF_INET6)
        except OSError as exc:
            raise BackendError(f"reading the routing table: {exc.strerror}") from None
        return [Route(dst=r.dst, gateway=r.gateway, oif=r.oif, onlink=r.onlink)
                for r in dumped if r.gateway is not None]
