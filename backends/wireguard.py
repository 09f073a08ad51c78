"""wireguard: `flannel-wg`, IP packets encrypted with WireGuard (UDP port 51820).

Go flannel's wireguard backend, its formats and options exactly: the lease carries
BackendType `wireguard` and BackendData `{"PublicKey":"<base64>","Port":<n>}`
(BackendV6Data the same with `ListenPortV6` where IPv6 is on); the options are
`ListenPort` (51820), `ListenPortV6` (51821), `PSK` (a base64 key), `MTU` (the underlay
MTU the device's is computed from: its own is MTU - 80), `PersistentKeepaliveInterval`
(whole seconds, an integer, as flannel reads it) and `Mode` (`separate`, `auto`, `ipv4`,
`ipv6`); the private key lives in /run/flannel/wgkey (base64, mode 0400; the environment's
WIREGUARD_KEY_FILE names another path), made once and reused. The device carries our
subnet's network address /32 and a route for the whole network; each peer is the lease's
PublicIP:Port with its subnet as the allowed IPs.

Two data planes (ours, `"Dataplane"`: `auto`, the default, `kernel` or `userspace`):
- kernel (backends/_wg_kernel.py): a Linux `wireguard` link configured over generic netlink;
- userspace (backends/_wg_userspace.py): a TUN and the WireGuard protocol of
  backends/_wgnoise.py, for hosts without the module; `auto` falls back to it with one line.

This module parses the options, keeps the key, and turns lease events into peer changes
(the pure part: WireGuardConfig, lease_attrs_for, peer_of, PeerPlan); it never logs a
private key or a preshared key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Final, Protocol

from lease.config import BackendSpec
from lease.errors import BackendError, ConfigError
from lease.model import (
    EventKind,
    Lease,
    LeaseAttrs,
    LeaseEvent,
    backend_data,
    backend_data_json,
    backend_v6_data,
)

from ._base import BackendContext

log = logging.getLogger(__name__)

BACKEND_TYPE: Final = "wireguard"
DEFAULT_PORT: Final = 51820
DEFAULT_PORT_V6: Final = 51821
OVERHEAD: Final = 80  # outer IPv6 40 + UDP 8 + type 4 + index 4 + counter 8 + tag 16, as flannel
DEVICE: Final = "flannel-wg"
DEVICE_V6: Final = "flannel-wg-v6"
KEY_FILE: Final = "/run/flannel/wgkey"
KEY_FILE_VARIABLE: Final = "WIREGUARD_KEY_FILE"
KEY_LEN: Final = 32
MODES: Final = ("separate", "auto", "ipv4", "ipv6")
DATAPLANES: Final = ("auto", "kernel", "userspace")


# -- keys ------------------------------------------------------------------------------

def decode_key(text: object, what: str) -> bytes:
    """A WireGuard key as `wg` prints it (standard base64 of 32 bytes) -> the bytes;
    ValueError naming `what` (never quoting the text: it may be a secret)."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != KEY_LEN:
        raise ValueError(f"{what} is {len(raw)} bytes, not {KEY_LEN}")
    return raw


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def new_private_key(random: bytes) -> bytes:
    """32 random bytes clamped as Curve25519 wants (what `wg genkey` prints)."""
    key = bytearray(random[:KEY_LEN])
    key[0] &= 248
    key[31] = (key[31] & 127) | 64
    return bytes(key)


def key_file_path(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(KEY_FILE_VARIABLE) or KEY_FILE)


def load_or_create_key(path: Path) -> tuple[bytes, bool]:
    """Our private key from `path`, or a new one written there (backends/_wg_key.py);
    (key, created). BackendError in one line for a file that is unreadable or garbled."""
    from ._wg_key import load_or_create

    def make() -> tuple[bytes, str]:
        key = new_private_key(os.urandom(KEY_LEN))
        return key, encode_key(key)

    return load_or_create(path, lambda text: decode_key(text, "the private key"), make)


# -- options ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WireGuardConfig:
    """flannel's options (defaults as flannel's), then ours (Dataplane, Offload)."""

    listen_port: int = DEFAULT_PORT
    listen_port_v6: int = DEFAULT_PORT_V6
    psk: bytes | None = field(default=None, repr=False)
    keepalive_s: int = 0
    mtu: int = 0  # 0 = the interface's; the device gets this - OVERHEAD
    mode: str = "separate"
    dataplane: str = "auto"
    offload: bool = True  # userspace plane: TUN offloads, UDP GSO/GRO

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> WireGuardConfig:
        def value(name: str, default: object) -> object:
            got = spec.option(name, default)
            return default if got is None else got  # JSON null: Go keeps the default

        def integer(name: str, default: int, low: int, high: int) -> int:
            got = value(name, default)
            if isinstance(got, bool) or not isinstance(got, int) or not low <= got <= high:
                raise ConfigError(f"wireguard backend: {name} must be an integer "
                                  f"{low}..{high}, not {got!r}")
            return got

        def choice(name: str, default: str, allowed: tuple[str, ...], exact: bool) -> str:
            got = value(name, default)
            if isinstance(got, str) and not exact:
                got = got.lower()
            if got not in allowed:
                raise ConfigError(f"wireguard backend: {name} must be one of "
                                  f"{', '.join(allowed)}, not {got!r}")
            assert isinstance(got, str)
            return got

        psk_text = value("PSK", "")
        psk: bytes | None = None
        if psk_text != "":
            try:
                psk = decode_key(psk_text, "PSK")
            except ValueError as exc:
                raise ConfigError(f"wireguard backend: {exc} (make one with `wg genpsk`)") \
                    from None
        mtu = integer("MTU", 0, 0, 65535)
        if 0 < mtu < 68 + OVERHEAD:
            raise ConfigError(f"wireguard backend: MTU {mtu} leaves no room for a packet "
                              f"(the device's MTU is MTU - {OVERHEAD})")
        offload = value("Offload", True)
        if not isinstance(offload, bool):
            raise ConfigError(f"wireguard backend: Offload must be true or false, "
                              f"not {offload!r}")
        return cls(
            listen_port=integer("ListenPort", DEFAULT_PORT, 1, 65535),
            listen_port_v6=integer("ListenPortV6", DEFAULT_PORT_V6, 1, 65535),
            psk=psk,
            # flannel: a Go time.Duration read from a JSON integer, then times a second
            keepalive_s=integer("PersistentKeepaliveInterval", 0, 0, 65535),
            mtu=mtu,
            mode=choice("Mode", "separate", MODES, exact=True),  # Go compares exactly
            dataplane=choice("Dataplane", "auto", DATAPLANES, exact=False),
            offload=offload,
        )


# -- the lease -------------------------------------------------------------------------

def lease_attrs_for(public_ip: IPv4Address, public_ipv6: IPv6Address | None, public_key: bytes,
                    config: WireGuardConfig, enable_ipv4: bool = True,
                    enable_ipv6: bool = False) -> LeaseAttrs:
    """Our lease's attributes as flannel's newSubnetAttrs writes them: BackendData where
    IPv4 is on, PublicIPv6 and BackendV6Data where IPv6 is on (the v6 device's port in
    separate mode, else the one device's)."""
    key = encode_key(public_key)
    v6_port = config.listen_port_v6 if config.mode == "separate" else config.listen_port
    return LeaseAttrs(
        public_ip=public_ip,
        backend_type=BACKEND_TYPE,
        backend_data=(backend_data_json({"PublicKey": key, "Port": config.listen_port})
                      if enable_ipv4 else ""),
        public_ipv6=public_ipv6 if enable_ipv6 else None,
        backend_v6_data=(backend_data_json({"PublicKey": key, "Port": v6_port})
                         if enable_ipv6 else ""),
    )


@dataclass(frozen=True, slots=True)
class Peer:
    """One peer as a lease describes it."""

    public_key: bytes
    endpoint: tuple[str, int]
    subnet: IPv4Network | IPv6Network


def peer_of(lease: Lease, default_port: int) -> Peer:
    """The IPv4 peer a lease describes; ValueError (one line, for the log) if it is not a
    wireguard lease or its BackendData is unusable. A Port of 0 or none means our own
    ListenPort, as flannel does for leases of flannel versions without it."""
    if lease.attrs.backend_type != BACKEND_TYPE:
        raise ValueError(f"BackendType is {lease.attrs.backend_type!r}, not {BACKEND_TYPE!r}")
    return _peer(backend_data(lease.attrs), "BackendData", str(lease.attrs.public_ip),
                 default_port, lease.subnet)


def _peer(data: Mapping[str, object], field_name: str, ip: str, default_port: int,
          subnet: IPv4Network | IPv6Network) -> Peer:
    """The peer that a lease's BackendData (or BackendV6Data) `data` names at `ip`."""
    key = decode_key(data.get("publickey"), f"{field_name}.PublicKey")
    port = data.get("port", 0)
    if port is None:
        port = 0
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{field_name}.Port {port!r} is not a port")
    return Peer(key, (ip, port or default_port), subnet)


class NoIPv6Side(ValueError):
    """A lease without an IPv6 subnet, PublicIPv6 or BackendV6Data (an IPv4-only peer)."""


def peer_of_v6(lease: Lease, default_port: int) -> Peer:
    """The IPv6 peer of a dual-stack lease (flannel-wg-v6's): BackendV6Data's key and Port,
    [PublicIPv6]:Port, its IPv6 subnet. NoIPv6Side for an IPv4-only lease, ValueError as
    peer_of for an unusable one."""
    attrs = lease.attrs
    if attrs.backend_type != BACKEND_TYPE:
        raise ValueError(f"BackendType is {attrs.backend_type!r}, not {BACKEND_TYPE!r}")
    if lease.ipv6_subnet is None or attrs.public_ipv6 is None or not attrs.backend_v6_data:
        raise NoIPv6Side("no IPv6 side")
    return _peer(backend_v6_data(attrs), "BackendV6Data", str(attrs.public_ipv6),
                 default_port, lease.ipv6_subnet)


@dataclass(frozen=True, slots=True)
class Change:
    """Set `peer` (add or update) and/or remove the peer with key `remove`."""

    remove: bytes | None = None
    peer: Peer | None = None


class PeerPlan:
    """The peers the leases describe, keyed by subnet key; apply() turns a batch of lease
    events into the changes a data plane makes. A key that changed removes the old peer
    (as flannel's cleanup of an endpoint's other keys does); a peer whose key another lease
    still uses is not removed."""

    def __init__(self, own_key: bytes, default_port: int, ipv6: bool = False) -> None:
        self.own_key, self.default_port = own_key, default_port
        self._peer_of = peer_of_v6 if ipv6 else peer_of
        self.peers: dict[str, Peer] = {}
        self.skipped = 0

    def _left(self, key: bytes) -> Change:
        """What a subnet leaving `key` changes: the peer goes, or, if another lease still
        names the key, it is set again with the subnets left."""
        for peer in self.peers.values():
            if peer.public_key == key:
                return Change(peer=peer)
        return Change(remove=key)

    def apply(self, events: Iterable[LeaseEvent]) -> list[Change]:
        changes: list[Change] = []
        for event in events:
            name = event.lease.key
            old = self.peers.get(name)
            if event.kind is EventKind.REMOVED:
                if old is None:
                    continue
                del self.peers[name]
                changes.append(self._left(old.public_key))
                continue
            try:
                peer = self._peer_of(event.lease, self.default_port)
            except NoIPv6Side:  # an IPv4-only peer: nothing on the IPv6 device
                if old is not None:
                    del self.peers[name]
                    changes.append(self._left(old.public_key))
                continue
            except ValueError as exc:
                self.skipped += 1
                log.warning("ignoring lease %s: %s", event.lease.subnet, exc)
                continue
            if peer.public_key == self.own_key:
                self.skipped += 1
                log.warning("ignoring lease %s: it has our own public key", event.lease.subnet)
                continue
            if old == peer:
                continue
            self.peers[name] = peer
            if old is not None and old.public_key != peer.public_key:
                left = self._left(old.public_key)
                if left.peer is not None:
                    changes.append(left)
                changes.append(Change(remove=left.remove, peer=peer))
            else:
                changes.append(Change(peer=peer))
        return changes

    def allowed_ips(self, key: bytes) -> list[IPv4Network | IPv6Network]:
        """Every subnet the leases give `key` (one, unless two leases share a key)."""
        return [peer.subnet for peer in self.peers.values() if peer.public_key == key]


# -- the backend -----------------------------------------------------------------------

class Plane(Protocol):
    """What a wireguard data plane does; backends/_wg_kernel.py and _wg_userspace.py."""

    name: str
    device_name: str  # flannel-wg or flannel-wg-v6

    async def start(self, lease: Lease) -> None: ...

    async def set_peer(self, peer: Peer, allowed_ips: list[IPv4Network | IPv6Network]) \
        -> None: ...

    async def remove_peer(self, public_key: bytes) -> None: ...

    async def run(self) -> None: ...

    def counters(self) -> Mapping[str, int]: ...

    async def close(self) -> None: ...


class NoKernelWireGuard(Exception):
    """The kernel cannot create a `wireguard` link (no module): userspace instead."""


class WireGuardBackend:
    """Chooses the data plane and feeds it the peers' changes: `flannel-wg` for IPv4 and,
    with EnableIPv6 (Mode separate, flannel's default), `flannel-wg-v6` on ListenPortV6 for
    IPv6, each with its own peer plan, as Go flannel's two devices."""

    def __init__(self, context: BackendContext) -> None:
        self.config = WireGuardConfig.from_spec(context.network.backend)
        self._context = context
        self._iface = context.iface
        self._ipv6 = context.network.enable_ipv6
        if self._ipv6 and self.config.mode != "separate":
            raise ConfigError(f"wireguard backend: Mode {self.config.mode} with EnableIPv6 is "
                              "not supported yet (one device for both families); use Mode "
                              "separate, flannel's default")
        self._private_key = b""
        self.public_key = b""
        self.plan: PeerPlan | None = None
        self.plan6: PeerPlan | None = None
        self.plane: Plane | None = None
        self.plane6: Plane | None = None
        self.dataplane = self.config.dataplane

    @property
    def mtu(self) -> int:
        return (self.config.mtu or self._iface.mtu) - OVERHEAD

    async def lease_attrs(self, previous: LeaseAttrs | None) -> LeaseAttrs:
        path = key_file_path(os.environ)
        self._private_key, created = load_or_create_key(path)
        from ._wgnoise import public_key_of

        self.public_key = public_key_of(self._private_key)
        self.plan = PeerPlan(self.public_key, self.config.listen_port)
        if self._ipv6:  # flannel's two devices share the one key
            self.plan6 = PeerPlan(self.public_key, self.config.listen_port_v6, ipv6=True)
        log.info("wireguard key %s key_file=%s public_key=%s",
                 "created" if created else "loaded", path, encode_key(self.public_key))
        return lease_attrs_for(self._iface.public_ip, self._iface.public_ipv6,
                               self.public_key, self.config, enable_ipv6=self._ipv6)

    def _plane(self, kind: str, ipv6: bool) -> Plane:
        network = self._context.network
        if kind == "kernel":
            from ._wg_kernel import KernelWireGuard

            return KernelWireGuard(self.config, self._iface, network, self._private_key,
                                   self.mtu, ipv6=ipv6)
        from ._wg_userspace import UserspaceWireGuard

        return UserspaceWireGuard(self.config, self._iface, network, self._private_key,
                                  self.mtu, ipv6=ipv6)

    async def start(self, lease: Lease) -> None:
        if self.dataplane in ("auto", "kernel"):
            kernel = self._plane("kernel", False)
            try:
                await kernel.start(lease)
            except NoKernelWireGuard as exc:
                await kernel.close()
                if self.dataplane == "kernel":
                    raise BackendError(f"wireguard: Dataplane kernel, but the kernel cannot "
                                       f"create a wireguard link ({exc})") from None
                log.warning("the kernel cannot create a wireguard link (%s); using the "
                            "userspace WireGuard data plane instead", exc)
            else:
                self.plane, self.dataplane = kernel, "kernel"
        if self.plane is None:
            self.dataplane = "userspace"
            self.plane = self._plane("userspace", False)
            await self.plane.start(lease)
        if self._ipv6:
            self.plane6 = self._plane(self.dataplane, True)
            await self.plane6.start(lease)
        self._private_key = b""  # the planes hold it now; nothing here keeps a copy

    async def apply(self, events: Sequence[LeaseEvent]) -> None:
        for plan, plane in ((self.plan, self.plane), (self.plan6, self.plane6)):
            if plan is None or plane is None:
                continue
            for change in plan.apply(events):
                if change.remove is not None:
                    await plane.remove_peer(change.remove)
                    log.info("peer removed device=%s public_key=%s", plane.device_name,
                             encode_key(change.remove))
                if change.peer is not None:
                    peer = change.peer
                    await plane.set_peer(peer, plan.allowed_ips(peer.public_key))
                    log.info("peer set device=%s subnet=%s endpoint=%s public_key=%s",
                             plane.device_name, peer.subnet, format_endpoint(peer.endpoint),
                             encode_key(peer.public_key))

    async def run(self) -> None:
        assert self.plane is not None
        if self.plane6 is None:
            await self.plane.run()
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(self.plane.run())
            group.create_task(self.plane6.run())

    def counters(self) -> Mapping[str, int]:
        counts: dict[str, int] = dict(self.plane.counters()) if self.plane else {}
        counts["peers"] = len(self.plan.peers) if self.plan else 0
        counts["leases_skipped"] = self.plan.skipped if self.plan else 0
        counts["dataplane_userspace"] = int(self.dataplane == "userspace")
        if self.plane6 is not None and self.plan6 is not None:
            counts.update({f"v6_{name}": value for name, value in self.plane6.counters().items()})
            counts["v6_peers"] = len(self.plan6.peers)
            counts["v6_leases_skipped"] = self.plan6.skipped
        return counts

    async def close(self) -> None:
        for plane in (self.plane, self.plane6):
            if plane is not None:
                await plane.close()


def format_endpoint(endpoint: tuple[str, int]) -> str:
    """`192.0.2.2:51820`, `[2001:db8::2]:51821`."""
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
