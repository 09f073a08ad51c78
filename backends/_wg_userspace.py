"""The wireguard backend's userspace data plane: a TUN `flannel-wg`, one UDP socket on
ListenPort, and the WireGuard protocol without I/O of backends/_wgnoise.py (its Device).

Shell, on the event loop like backends/_datapath.py's PacketEngine, with its pieces: the
TUN is opened with the virtio-net header and TCPv4 segmentation offload, so a TCP stream
comes as 64 KB super-packets, cut here into segments once per burst (tun/offload.py's
segment_tcp4_many); the Device encrypts each segment; each endpoint's datagrams leave in
sendmsg calls with UDP GSO (one per run of equal sizes, scatter-gather, no copy). The
socket asks for UDP GRO; each datagram of a batch goes through the Device, and what it
decrypts goes into the TUN. The Device's timers (retransmits, keepalives, rekeying, key
zeroing) run from run(). Nothing unauthenticated reaches the TUN: the Device hands out
only packets that decrypted under a session and whose source is the peer's allowed IP.

Bounded: at most MAX_BURST reads per wake-up and direction; the Device holds at most
Limits.queue_len packets per peer waiting for a handshake; a full TUN or socket is a
counted drop; every datagram the Device refuses is counted by WGDrop reason.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Any, Final

from lease.errors import BackendError
from lease.model import Lease
from tun.device import TunDevice, configure_tun, set_sysctl
from tun.offload import (
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    NEEDS_CSUM,
    PLAIN_HDR,
    VNET_HDR,
    VNET_HDR_LEN,
    finish_checksum,
    join_run,
    plan_runs,
    segment_tcp4_many,
    tso_header_len,
)

from ._bulk import RTPROT_FLANNEL
from ._datapath import (
    _GRO_CMSG_SPACE,
    BUFFER_SIZE,
    MAX_BURST,
    MIN_JOIN,
    SMALL,
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    _enable,
    open_udp_socket,
    segments_per_send,
)
from ._netlink import Netlink, device_lost
from ._wgnoise import Device, Limits, WGDrop
from .wireguard import DEVICE, DEVICE_V6, Peer

if TYPE_CHECKING:
    from lease.config import NetworkConfig

    from ._base import ExternalInterface
    from .wireguard import WireGuardConfig

log = logging.getLogger(__name__)

Address = tuple[str, int]
STAGE_SLOTS: Final = 16  # TUN reads held before the Device encrypts them in one call
CUT_ROOM: Final = 65536 + 8192  # a 64 KB super-packet cut at an MSS near the MTU
TIMER_MAX_S: Final = 0.25  # the longest the timers sleep (a send can start a handshake)
LOAD_INITIATIONS: Final = 16  # handshake initiations in one burst: "under load" (cookies)
JOIN_BYTES: Final = 8 * 65536  # decrypted packets gathered before they go into the TUN
_U16: Final = struct.Struct("=H")
PLANE_DROPS: Final = ("tun_malformed", "tun_queue_full", "tun_write_error",
                      "socket_queue_full", "send_error", "socket_error")


class UserspaceWireGuard:
    """Made in start(); peers through set_peer/remove_peer; counters() for the daemon."""

    name = "userspace"

    def __init__(self, config: WireGuardConfig, iface: ExternalInterface,
                 network: NetworkConfig, private_key: bytes, mtu: int,
                 limits: Limits | None = None, ipv6: bool = False) -> None:
        self.config, self._iface, self._network, self.mtu = config, iface, network, mtu
        self.ipv6 = ipv6
        self.device_name = DEVICE_V6 if ipv6 else DEVICE
        self.port = config.listen_port_v6 if ipv6 else config.listen_port
        self.device = Device(private_key, limits=limits or Limits(), mtu=mtu)
        self._netlink = Netlink()
        self._tun: TunDevice | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._timer_at = 0.0  # when run() next looks at the timers (loop time)
        self.vnet_hdr = self.gso = self.gro = False
        self._vnet_in = bytearray(VNET_HDR_LEN)
        self._stage = bytearray(STAGE_SLOTS * BUFFER_SIZE)
        stage = memoryview(self._stage)
        self._slots = [stage[i * BUFFER_SIZE:(i + 1) * BUFFER_SIZE] for i in range(STAGE_SLOTS)]
        self._cut = bytearray(STAGE_SLOTS * CUT_ROOM)
        self._net_buf = bytearray(65536 + 4096)
        self._plain: list[bytes] = []  # decrypted, waiting to be joined into the TUN
        self._plain_bytes = 0
        self._join_in = bytearray(JOIN_BYTES + 2 * 65536)
        self._joined = bytearray(BUFFER_SIZE)
        self.drops = dict.fromkeys(PLANE_DROPS, 0)
        self.n = dict.fromkeys(("tx_datagrams", "tx_bytes", "rx_datagrams", "rx_bytes",
                                "tun_reads", "tun_writes", "gso_sends", "gso_segments",
                                "gro_batches", "gro_segments", "tso_packets",
                                "tso_segments", "checksums_finished", "joined_packets",
                                "joined_segments"), 0)

    # -- set-up ----------------------------------------------------------------------------

    async def start(self, lease: Lease) -> None:
        config, iface = self.config, self._iface
        local = iface.address6 if self.ipv6 else iface.address
        try:
            self._sock = open_udp_socket(str(local), self.port, self.ipv6)
        except OSError as exc:
            where = f"[{local}]" if self.ipv6 else str(local)
            raise BackendError(f"wireguard: cannot bind {where}:{self.port}: "
                               f"{exc.strerror}") from None
        self._tun = TunDevice.open(self.device_name, offload=config.offload)
        self.vnet_hdr = self._tun.vnet_hdr
        if self.ipv6:
            assert lease.ipv6_subnet is not None and self._network.ipv6_network is not None
            await configure_tun6(self._netlink, self._tun.name, lease.ipv6_subnet,
                                 self.mtu, self._network.ipv6_network)
            address = f"{lease.ipv6_subnet.network_address}/128"
        else:
            await configure_tun(self._netlink, self._tun.name, lease.subnet.network_address,
                                self.mtu, self._network.network, RTPROT_FLANNEL)
            address = f"{lease.subnet.network_address}/32"
        self.gso = config.offload and _enable(self._sock, "gso")
        self.gro = config.offload and _enable(self._sock, "gro")
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._tun.fd, self._on_tun)
        self._loop.add_reader(self._sock.fileno(), self._on_net)
        log.info("wireguard backend ready dataplane=userspace device=%s address=%s mtu=%d "
                 "port=%d gso=%s gro=%s tun_offload=%s", self.device_name, address,
                 self.mtu, self.port, self.gso, self.gro, self.vnet_hdr)

    async def set_peer(self, peer: Peer, allowed_ips: list[IPv4Network | IPv6Network]) \
            -> None:
        self.device.set_peer(peer.public_key, endpoint=peer.endpoint,
                             allowed_ips=list(allowed_ips), psk=self.config.psk,
                             keepalive=float(self.config.keepalive_s))
        self._timers_changed()  # a keepalive timer may now be due sooner

    async def remove_peer(self, public_key: bytes) -> None:
        self.device.remove_peer(public_key)

    # -- TUN -> network --------------------------------------------------------------------

    def _on_tun(self) -> None:
        assert self._tun is not None
        fd, vnet, meta = self._tun.fd, self.vnet_hdr, self._vnet_in
        skip = VNET_HDR_LEN if vnet else 0
        packets: list[memoryview] = []
        slot = cut_used = 0
        cut = memoryview(self._cut)
        for _ in range(MAX_BURST):
            buf = self._slots[slot]
            try:
                n = os.readv(fd, (meta, buf) if vnet else (buf,)) - skip
            except BlockingIOError:
                break
            except OSError:
                self.drops["tun_malformed"] += 1
                break
            self.n["tun_reads"] += 1
            if vnet and meta[0] | meta[1]:
                flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HDR.unpack(meta)
                if gso_type & ~GSO_ECN == GSO_TCPV4:
                    hl = tso_header_len(buf, n, gso_size)
                    room = len(cut) - cut_used
                    segmented = segment_tcp4_many(self._stage, slot * BUFFER_SIZE, BUFFER_SIZE,
                                                  [n], gso_size, 0, cut[cut_used:]) \
                        if hl and room >= CUT_ROOM else None
                    if segmented is None:
                        self.drops["tun_malformed"] += 1
                        continue
                    stride = segmented.stride
                    for i in range(segmented.count - 1):
                        start = cut_used + i * stride
                        packets.append(cut[start:start + stride])
                    packets.append(cut[cut_used + (segmented.count - 1) * stride:
                                       cut_used + segmented.used])
                    cut_used += segmented.used
                    self.n["tso_packets"] += 1
                    self.n["tso_segments"] += segmented.count
                    if len(cut) - cut_used < CUT_ROOM:
                        self._encrypt(packets)
                        packets, slot, cut_used = [], 0, 0
                    continue
                if gso_type != GSO_NONE:  # never offered to the kernel (UDP, IPv6)
                    self.drops["tun_malformed"] += 1
                    continue
                if flags & NEEDS_CSUM:
                    if not finish_checksum(buf, n, csum_start, csum_offset):
                        self.drops["tun_malformed"] += 1
                        continue
                    self.n["checksums_finished"] += 1
            packets.append(buf[:n])
            slot += 1
            if slot == STAGE_SLOTS:
                self._encrypt(packets)
                packets, slot, cut_used = [], 0, 0
        if packets:
            self._encrypt(packets)

    def _encrypt(self, packets: list[memoryview]) -> None:
        for addr, datagrams in self.device.send(packets):
            self._send_group(addr, datagrams)
        self._timers_changed()

    def _timers_changed(self) -> None:
        """Wake run() if the Device now has a timer due before run() would look."""
        deadline = self.device.next_deadline()
        if deadline is not None and deadline < self._timer_at:
            self._wake.set()

    def _send_group(self, addr: Address, datagrams: list[bytes]) -> None:
        """One endpoint's datagrams: each run of equal sizes (the last may be shorter) in as
        few GSO sends as the kernel takes."""
        if not self.gso:
            for datagram in datagrams:
                self._sendmsg([datagram], addr, 0)
            return
        run: list[bytes] = []
        size = 0
        for datagram in datagrams:
            length = len(datagram)
            if run and (length > size or len(run) >= segments_per_send(size)):
                self._sendmsg(run, addr, size)
                run = []
            if not run:
                size = length
            run.append(datagram)
            if length < size:  # a shorter one ends a run
                self._sendmsg(run, addr, size)
                run = []
        if run:
            self._sendmsg(run, addr, size)

    def _sendmsg(self, run: list[bytes], addr: Address, size: int) -> None:
        assert self._sock is not None
        count = len(run)
        try:
            if count == 1:
                sent = self._sock.sendto(run[0], addr)
            else:
                sent = self._sock.sendmsg(run, [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0,
                                          addr)
                self.n["gso_sends"] += 1
                self.n["gso_segments"] += count
        except BlockingIOError:
            self.drops["socket_queue_full"] += count
            return
        except OSError as exc:
            if count > 1 and exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT):
                self.gso = False  # the kernel or the path said no: plain sends from now on
                log.warning("UDP GSO refused by the kernel (%s); sending datagrams one by one",
                            exc.strerror)
                for datagram in run:
                    self._sendmsg([datagram], addr, 0)
                return
            self.drops["send_error"] += count
            return
        self.n["tx_datagrams"] += count
        self.n["tx_bytes"] += sent

    # -- network -> TUN --------------------------------------------------------------------

    def _on_net(self) -> None:
        assert self._sock is not None and self._tun is not None
        sock, gro, device = self._sock, self.gro, self.device
        view = memoryview(self._net_buf)
        initiations = 0
        for _ in range(MAX_BURST):
            try:
                if gro:
                    n, ancdata, _flags, addr = sock.recvmsg_into((view,), _GRO_CMSG_SPACE)
                    segment = n
                    for level, kind, value in ancdata:
                        if level == SOL_UDP and kind == UDP_GRO:
                            segment = int.from_bytes(value[:4], sys.byteorder)
                else:
                    n, addr = sock.recvfrom_into(view)
                    segment = n
            except BlockingIOError:
                break
            except OSError:
                self.drops["socket_error"] += 1
                break
            if n > segment:
                self.n["gro_batches"] += 1
                self.n["gro_segments"] += -(-n // segment)
            src = (addr[0], addr[1])  # (an IPv6 address has flow info and scope too)
            for start in range(0, n, segment or 1):
                datagram = view[start:min(start + segment, n)] if segment else view[:0]
                if datagram and datagram[0] == 1:
                    initiations += 1
                self.n["rx_datagrams"] += 1
                self.n["rx_bytes"] += len(datagram)
                replies, plain = device.receive(datagram, src)
                for reply_addr, reply in replies:
                    self._sendmsg([reply], reply_addr, 0)
                if plain:
                    self._plain += plain
                    self._plain_bytes += len(plain[0])
                    if self._plain_bytes >= JOIN_BYTES:
                        self._deliver()
                if replies:
                    self._timers_changed()
        device.under_load = initiations >= LOAD_INITIATIONS
        if self._plain:
            self._deliver()

    def _deliver(self) -> None:
        """The decrypted packets gathered, into the TUN in order: with offloads, each run of
        equal sizes (the last may be shorter) that continues one TCP stream is joined into
        one super-packet (tun/offload.py's plan_runs and join_run, as PacketEngine joins
        GRO batches: every segment's checksums verified), the rest one at a time."""
        packets, self._plain, self._plain_bytes = self._plain, [], 0
        if not self.vnet_hdr:
            for packet in packets:
                self._write_tun(packet)
            return
        first, count = 0, len(packets)
        while first < count:
            size = len(packets[first])
            end = first + 1
            while end < count and len(packets[end]) == size:
                end += 1
            if end < count and len(packets[end]) < size:
                end += 1  # a shorter one can end a run
            if end - first < MIN_JOIN or size < SMALL:
                for packet in packets[first:end]:
                    self._write_tun(packet)
            else:
                self._join(packets[first:end], size)
            first = end

    def _join(self, group: list[bytes], size: int) -> None:
        buf = self._join_in
        whole = b"".join(group)  # one copy in C, then one into the buffer
        n = len(whole)
        buf[:n] = whole
        padded = len(group) * size
        buf[n:padded] = bytes(padded - n)
        done = 0
        for run in plan_runs(buf, n, size, 0):
            for packet in group[done:run.first]:
                self._write_tun(packet)
            header, total = join_run(buf, n, size, 0, run, self._joined)
            assert self._tun is not None
            try:
                os.writev(self._tun.fd, (header, memoryview(self._joined)[:total]))
            except BlockingIOError:
                self.drops["tun_queue_full"] += run.count
            except OSError:
                self.drops["tun_write_error"] += run.count
            else:
                self.n["tun_writes"] += 1
                self.n["joined_packets"] += 1
                self.n["joined_segments"] += run.count
            done = run.first + run.count
        for packet in group[done:]:
            self._write_tun(packet)

    def _write_tun(self, packet: bytes) -> None:
        assert self._tun is not None
        try:
            if self.vnet_hdr:
                os.writev(self._tun.fd, (PLAIN_HDR, packet))
            else:
                os.write(self._tun.fd, packet)
        except BlockingIOError:
            self.drops["tun_queue_full"] += 1
            return
        except OSError:
            self.drops["tun_write_error"] += 1
            return
        self.n["tun_writes"] += 1

    # -- timers ----------------------------------------------------------------------------

    async def run(self) -> None:
        """The Device's timers; ends (BackendError) only if flannel-wg goes away."""
        assert self._tun is not None and self._loop is not None
        loop, device = self._loop, self.device
        check_at = loop.time() + 1.0
        while True:
            for addr, datagram in device.tick():
                self._sendmsg([datagram], addr, 0)
            now = loop.time()
            if now >= check_at:
                check_at = now + 1.0
                lost = device_lost(self._tun.name, self._tun.index)
                if lost is not None:
                    raise lost
            deadline = device.next_deadline()
            wait = TIMER_MAX_S if deadline is None else min(TIMER_MAX_S, deadline - now)
            self._timer_at = now + wait
            self._wake.clear()
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    # -- counting and closing --------------------------------------------------------------

    def counters(self) -> Mapping[str, int]:
        counts: dict[str, Any] = dict(self.n)
        device = self.device.counters()
        device.pop("drops", None)
        counts.update({f"wg_{name}": value for name, value in device.items()})
        counts.update({f"drop_{name}": value for name, value in self.drops.items()})
        counts.update({f"drop_{reason.name.lower()}": self.device.drops[reason]
                       for reason in WGDrop})
        counts["wg_sessions"] = sum(1 for peer in self.device.peers() if peer.has_session)
        counts.update(offload_gso=int(self.gso), offload_gro=int(self.gro),
                      offload_tun=int(self.vnet_hdr))
        return counts

    async def close(self) -> None:
        if self._loop is not None:
            if self._tun is not None:
                self._loop.remove_reader(self._tun.fd)
            if self._sock is not None:
                self._loop.remove_reader(self._sock.fileno())
        if self._sock is not None:
            self._sock.close()
        if self._tun is not None:
            self._tun.close()
        self._netlink.close()


async def configure_tun6(netlink: Netlink, name: str, subnet: IPv6Network, mtu: int,
                         network: IPv6Network) -> int:
    """flannel-wg-v6 as Go flannel configures it: MTU, up, `<subnet>::/128` and
    `route <IPv6 network> dev <name>`; the link index."""

    async def apply(ipr: Any) -> int:
        found = await ipr.link_lookup(ifname=name)
        if not found:
            raise BackendError(f"TUN device {name} vanished")
        index = int(found[0])
        set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "0")
        set_sysctl(f"net/ipv6/conf/{name}/accept_ra", "0")
        await ipr.link("set", index=index, mtu=mtu, state="up")
        await ipr.addr("replace", index=index, address=str(subnet.network_address),
                       prefixlen=128, family=socket.AF_INET6)
        await ipr.route("replace", dst=str(network), oif=index, proto=RTPROT_FLANNEL,
                        family=socket.AF_INET6)
        return index

    try:
        return await netlink.call(apply)
    except BackendError:
        raise
    except Exception as exc:  # pyroute2's NetlinkError and friends
        raise BackendError(f"configuring {name}: {exc}") from None
