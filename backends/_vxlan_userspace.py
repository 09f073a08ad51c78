"""The vxlan backend's userspace data plane: a TUN named `flannel.<VNI>` and the packet
engine (backends/_datapath.py) with the VXLAN codec (backends/_vxlan_codec.py).

Shell. Chosen with `"Dataplane": "userspace"`, or when the kernel cannot create a VXLAN
link; its frames are the kernel's byte for byte, flow-hashed source port included (flows
are spread over SENDERS sockets, one source port each), so kernel VXLAN nodes and Go
flannel's are its peers. IPv4 only.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Final

from lease.errors import BackendError
from lease.model import Lease
from tun.device import TunDevice, configure_tun
from tun.vxlan import format_mac

from ._bulk import RTPROT_FLANNEL
from ._datapath import Engine, open_engine, open_udp_socket
from ._netlink import Netlink, watch_device
from ._vxlan_codec import VXLANCodec
from ._vxlan_plan import Change, Peer

if TYPE_CHECKING:
    from ._base import ExternalInterface
    from .vxlan import VXLANConfig

log = logging.getLogger(__name__)

SENDERS: Final = 8  # sockets the plane spreads flows over (source ports)


class UserspaceVXLAN:
    """Made in start(); peers follow the lease batches through apply()."""

    def __init__(self, config: VXLANConfig, iface: ExternalInterface, network: IPv4Network,
                 subnet_len: int, netlink: Netlink, mtu: int) -> None:
        self.config, self._iface, self._network = config, iface, network
        self._subnet_len, self._netlink, self.mtu = subnet_len, netlink, mtu
        self._tun: TunDevice | None = None
        self._sockets: list[socket.socket] = []
        self._engine: Engine | None = None
        self.codec: VXLANCodec | None = None

    async def start(self, lease: Lease, mac: bytes, peers: Iterable[Peer]) -> None:
        config = self.config
        self.codec = VXLANCodec(lease.subnet, self._subnet_len, config.vni, mac,
                                config.udp_port, self.mtu)
        address = str(self._iface.address)
        try:
            listener = open_udp_socket(address, config.udp_port)
            self._sockets.append(listener)
            self._sockets += [open_udp_socket(address, 0) for _ in range(SENDERS)]
        except OSError as exc:
            raise BackendError(f"vxlan: cannot bind {self._iface.address}:{config.udp_port}: "
                               f"{exc.strerror}") from None
        self._tun = TunDevice.open(config.device, offload=config.offload)
        await configure_tun(self._netlink, self._tun.name, lease.subnet.network_address,
                            self.mtu, self._network, RTPROT_FLANNEL)
        self._engine = open_engine(self._tun.fd, listener, self.codec, config.offload,
                                   senders=self._sockets[1:], vnet_hdr=self._tun.vnet_hdr)
        self._engine.start()
        for peer in peers:
            self._add(peer)
        log.info("vxlan backend ready dataplane=userspace device=%s vtep_mac=%s mtu=%d port=%d "
                 "engine=%s gso=%s gro=%s tun_offload=%s", config.device, format_mac(mac),
                 self.mtu, config.udp_port, self._engine.name, self._engine.gso,
                 self._engine.gro, self._tun.vnet_hdr)

    def _add(self, peer: Peer) -> None:
        assert self.codec is not None and isinstance(peer.subnet, IPv4Network)
        self.codec.add_peer(peer.subnet, peer.public_ip,  # type: ignore[arg-type]
                            peer.vtep_mac)

    def apply(self, changes: Sequence[Change]) -> None:
        assert self.codec is not None
        for change in changes:
            if change.new is not None:
                self._add(change.new)
                log.info("peer %s subnet=%s public_ip=%s vtep_mac=%s",
                         "updated" if change.old else "added", change.new.subnet,
                         change.new.public_ip, format_mac(change.new.vtep_mac))
            elif change.old is not None:
                assert isinstance(change.old.subnet, IPv4Network)
                self.codec.remove_peer(change.old.subnet)
                log.info("peer removed subnet=%s public_ip=%s", change.old.subnet,
                         change.old.public_ip)

    async def run(self) -> None:
        """The engine runs on its own; this only ends (BackendError) if the TUN goes away."""
        assert self._tun is not None
        await watch_device(self._tun.name, self._tun.index)

    def counters(self) -> Mapping[str, int]:
        """The engine's (checksums_completed included: the codec's and the native path's)."""
        return dict(self._engine.counters()) if self._engine is not None else {}

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.stop()
        for sock in self._sockets:
            sock.close()
        if self._tun is not None:
            self._tun.close()
