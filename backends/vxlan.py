"""vxlan: `flannel.<VNI>`, Ethernet frames in UDP (port 8472), RFC 7348.

Two data planes behind one lease format (BackendType `vxlan`, BackendData
`{"VNI":…,"VtepMAC":"…"}`, exactly as flannel writes it):

- kernel (default, backends/_vxlan_kernel.py): a Linux VXLAN device programmed per peer as
  flannel >= 0.9 does (neighbour, FDB entry, onlink route), whose L2/L3 misses are answered
  from the lease table; `"Programming": "lazy"` installs entries only for misses and ages
  them out; `DirectRouting` sends to peers on our L2 segment unencapsulated. With
  EnableIPv6 a second device, `flannel-v6.<VNI>`, and the lease carries PublicIPv6 and
  BackendV6Data.
- userspace (`"Dataplane": "userspace"`, or automatically when the kernel cannot create a
  VXLAN link; backends/_vxlan_userspace.py): a TUN and the packet engine with the codec of
  backends/_vxlan_codec.py; IPv4 only.

This module parses the options and coordinates: which peers the leases describe (the pure
planner, backends/_vxlan_plan.py), which plane carries them, the misses and the checks.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from lease.config import BackendSpec
from lease.errors import BackendError, ConfigError
from lease.model import Lease, LeaseAttrs, LeaseEvent
from tun.vxlan import OUTER_OVERHEAD, VXLAN_PORT

from ._base import BackendContext
from ._bulk import Miss, miss_socket, parse_misses
from ._netlink import DEVICE_CHECK_S, Netlink
from ._vxlan_codec import VXLANCodec
from ._vxlan_kernel import COUNTERS, KernelVTEP, NoKernelVXLAN
from ._vxlan_plan import BACKEND_TYPE, Peer, peer_of, random_vtep_mac
from ._vxlan_userspace import UserspaceVXLAN

__all__ = ["BACKEND_TYPE", "Peer", "VXLANBackend", "VXLANCodec", "VXLANConfig", "peer_of",
           "random_vtep_mac"]

log = logging.getLogger(__name__)

RESYNC_S: Final = 10.0  # the longest the lazy sweep waits


@dataclass(frozen=True, slots=True)
class VXLANConfig:
    """flannel's options (defaults as flannel's), then ours (Dataplane, Programming...)."""

    vni: int = 1
    port: int = 0  # 0 = the kernel's default, 8472
    gbp: bool = False
    learning: bool = False
    mtu: int = 0  # 0 = the interface's
    direct_routing: bool = False
    dataplane: str = "kernel"
    programming: str = "eager"
    idle_timeout_s: int = 300  # lazy programming: entries unused this long are removed
    offload: bool = True  # userspace plane: UDP GSO/GRO

    @property
    def udp_port(self) -> int:
        return self.port or VXLAN_PORT

    @property
    def device(self) -> str:
        return f"flannel.{self.vni}"

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> VXLANConfig:
        def integer(name: str, default: int, low: int, high: int) -> int:
            value = spec.option(name, default)
            value = default if value is None else value
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"vxlan backend: {name} must be an integer {low}..{high}, "
                                  f"not {value!r}")
            return value

        def boolean(name: str, default: bool) -> bool:
            value = spec.option(name, default)
            value = default if value is None else value
            if not isinstance(value, bool):
                raise ConfigError(f"vxlan backend: {name} must be true or false, not {value!r}")
            return value

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = spec.option(name, default)
            value = default if value is None else value
            if not isinstance(value, str) or value.lower() not in allowed:
                raise ConfigError(f"vxlan backend: {name} must be one of {', '.join(allowed)}, "
                                  f"not {value!r}")
            return value.lower()

        mtu = integer("MTU", 0, 0, 65535)
        if 0 < mtu < 68 + OUTER_OVERHEAD:
            raise ConfigError(f"vxlan backend: MTU {mtu} leaves no room for a packet")
        return cls(
            vni=integer("VNI", 1, 0, (1 << 24) - 1),
            port=integer("Port", 0, 0, 65535),
            gbp=boolean("GBP", False),
            learning=boolean("Learning", False),
            mtu=mtu,
            direct_routing=boolean("DirectRouting", False),
            dataplane=choice("Dataplane", "kernel", ("kernel", "userspace")),
            programming=choice("Programming", "eager", ("eager", "lazy")),
            idle_timeout_s=integer("IdleTimeout", 300, 5, 86400),
            offload=boolean("Offload", True),
        )


class VXLANBackend:
    """Chooses the data plane, feeds it the peers' changes, answers the kernel's misses and
    watches the devices."""

    def __init__(self, context: BackendContext,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = VXLANConfig.from_spec(context.network.backend)
        self._iface = context.iface
        self._network = context.network
        self.dataplane = self.config.dataplane
        self._netlink = Netlink()
        self._clock = clock
        network = context.network
        if network.enable_ipv6 and self.dataplane == "userspace":
            raise ConfigError("vxlan backend: the userspace data plane is IPv4-only; "
                              "EnableIPv6 needs Dataplane kernel")
        self.vtep = KernelVTEP(self.config, False, context.iface, network.network,
                               network.subnet_len, self._netlink, self._clock)
        self.vtep6: KernelVTEP | None = None
        if network.enable_ipv6:
            assert network.ipv6_network is not None
            self.vtep6 = KernelVTEP(self.config, True, context.iface, network.ipv6_network,
                                    network.ipv6_subnet_len, self._netlink, self._clock)
        self._userspace: UserspaceVXLAN | None = None
        self._misses: asyncio.Queue[Miss] = asyncio.Queue()
        self._miss_sock: socket.socket | None = None
        self._misses_lost = 0

    @property
    def mtu(self) -> int:
        return self.vtep.mtu

    @property
    def codec(self) -> VXLANCodec | None:
        return self._userspace.codec if self._userspace is not None else None

    async def lease_attrs(self, previous: LeaseAttrs | None) -> LeaseAttrs:
        """Each device keeps the VtepMAC our last lease advertised (peers have it
        programmed), else the existing device's, else a new random one."""
        await self.vtep.choose_mac(previous)
        if self.vtep6 is None:
            return LeaseAttrs(public_ip=self._iface.public_ip, backend_type=BACKEND_TYPE,
                              backend_data=self.vtep.backend_data())
        await self.vtep6.choose_mac(previous)  # flannel's newSubnetAttrs with a v6 device
        return LeaseAttrs(public_ip=self._iface.public_ip, backend_type=BACKEND_TYPE,
                          backend_data=self.vtep.backend_data(),
                          public_ipv6=self._iface.public_ipv6,
                          backend_v6_data=self.vtep6.backend_data())

    # -- start ---------------------------------------------------------------------------

    async def start(self, lease: Lease) -> None:
        if self.dataplane == "kernel":
            try:
                await self.vtep.start(lease)
            except NoKernelVXLAN as exc:
                if self.vtep6 is not None:
                    raise BackendError(f"vxlan: the kernel cannot create a VXLAN link ({exc}) "
                                       "and the userspace data plane is IPv4-only") from None
                log.warning("the kernel cannot create a VXLAN link (%s); using the userspace "
                            "VXLAN data plane instead", exc)
                self.dataplane = "userspace"
        if self.dataplane == "userspace":
            self._userspace = UserspaceVXLAN(self.config, self._iface, self._network.network,
                                             self._network.subnet_len, self._netlink,
                                             self.mtu)
            await self._userspace.start(lease, self.vtep.mac, self.vtep.plan.peers.values())
            return
        if self.vtep6 is not None:
            await self.vtep6.start(lease)
        try:
            self._miss_sock = miss_socket()
        except OSError as exc:
            raise BackendError(f"vxlan: a netlink socket for neighbour misses: {exc.strerror}") \
                from None
        asyncio.get_running_loop().add_reader(self._miss_sock.fileno(), self._on_misses)

    def _on_misses(self) -> None:
        """Drain the miss socket (it passes nothing but RTM_GETNEIGH): the misses on our
        devices go to run(). A full socket buffer loses misses; the kernel asks again."""
        assert self._miss_sock is not None
        while True:
            try:
                data = self._miss_sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:  # ENOBUFS: the buffer overflowed, misses were lost
                self._misses_lost += 1
                if exc.errno == errno.ENOBUFS:
                    continue
                return
            for miss in parse_misses(data):
                if miss.ifindex in (self.vtep.index, self.vtep6.index if self.vtep6 else -1):
                    self._misses.put_nowait(miss)

    # -- peers ---------------------------------------------------------------------------

    async def apply(self, events: Sequence[LeaseEvent]) -> None:
        if self._userspace is not None:
            planned = self.vtep.plan.apply(events)
            self._userspace.apply(planned.changes)
            return
        await self.vtep.apply(events)
        if self.vtep6 is not None:
            await self.vtep6.apply(events)

    # -- running -------------------------------------------------------------------------

    def _vteps(self) -> list[KernelVTEP]:
        return [self.vtep] + ([self.vtep6] if self.vtep6 is not None else [])

    async def run(self) -> None:
        """Answer misses and age lazy entries out; ends (BackendError) only if one of our
        devices goes away."""
        if self._userspace is not None:
            await self._userspace.run()
        period_s = min(RESYNC_S, self.config.idle_timeout_s / 2)
        next_sweep = self._clock() + period_s
        next_check = self._clock() + DEVICE_CHECK_S
        while True:  # the checks come first, so that a flood of misses cannot hold them off
            now = self._clock()
            if now >= next_check:
                next_check = now + DEVICE_CHECK_S
                for vtep in self._vteps():
                    lost = vtep.lost()
                    if lost is not None:
                        raise lost
            if now >= next_sweep:
                next_sweep = now + period_s
                await self.vtep.sweep()
            try:
                async with asyncio.timeout(max(0.0, min(next_sweep, next_check) - now)):
                    miss = await self._misses.get()
            except TimeoutError:
                continue
            target = self.vtep if miss.ifindex == self.vtep.index else self.vtep6
            if target is not None:
                await target.answer(miss)

    def counters(self) -> Mapping[str, int]:
        counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        counts.update(self.vtep.counters())
        counts["misses_lost"] = self._misses_lost
        counts["dataplane_userspace"] = int(self._userspace is not None)
        if self._userspace is not None:
            counts.update(self._userspace.counters())
        if self.vtep6 is not None:
            counts.update(self.vtep6.counters())
        return counts

    async def close(self) -> None:
        if self._miss_sock is not None:
            asyncio.get_running_loop().remove_reader(self._miss_sock.fileno())
            self._miss_sock.close()
        if self._userspace is not None:
            await self._userspace.close()
        self._netlink.close()
