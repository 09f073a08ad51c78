"""The userspace VXLAN data plane's codec: what happens to each packet. Pure.

On the wire a frame is exactly what the kernel's VXLAN device sends (tun/vxlan.py): outer
IPv4/UDP (port 8472, a flow-hashed source port), the VXLAN header, inner Ethernet (the
peer's VtepMAC, ours) and the inner IPv4 packet, which the engine reads at HEADROOM so that
the 22 bytes of header go in front of it in place. The native fast path
(backends/_native/codec.c) makes the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Final

from lease.errors import DecodeError
from tun.packet import complete_partial_checksum, decrement_ttl
from tun.vxlan import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    HEADROOM,
    OUTER_OVERHEAD,
    VXLAN_HEADER_LEN,
    VXLAN_PORT,
    ARPPacket,
    decode_arp,
    decode_ethernet,
    decode_vxlan_header,
    encode_arp,
    encode_ethernet,
    encode_vxlan_header,
    flow_hash,
)

from ._codec import (
    MALFORMED,
    NO_ROUTE,
    NOT_FOR_US,
    NOT_IPV4,
    NOT_PEER,
    OVERSIZED,
    RUNT,
    TTL_EXPIRED,
    WRONG_MAC,
    WRONG_VNI,
    Answer,
    Dropped,
    NativeKind,
    NativeSpec,
    Send,
    SubnetCodec,
    Verdict,
    Write,
)

MAX_INNER: Final = 65535 - OUTER_OVERHEAD  # the largest inner packet a 64 KB underlay MTU allows


@dataclass(slots=True)
class VXLANCodec(SubnetCodec):
    """Per-packet logic of the userspace VXLAN data plane (implements _codec.NativeCodec)."""

    vni: int
    own_mac: bytes
    port: int = VXLAN_PORT
    mtu: int = 1450  # the largest inner packet (underlay MTU - 50)
    headroom: int = HEADROOM
    checksums_completed: int = 0  # inner checksums a peer's offload left unfinished
    vtep_ip: IPv4Address = field(init=False)
    _vxlan: bytes = field(init=False)

    def __post_init__(self) -> None:
        SubnetCodec.__post_init__(self)  # (a slotted dataclass cannot call super() bare)
        self.vtep_ip = self.own_subnet.network_address  # flannel.<VNI> carries <subnet>.0
        self._vxlan = encode_vxlan_header(self.vni)

    def native_spec(self) -> NativeSpec:
        return NativeSpec(NativeKind.VXLAN, self.own_net, self.subnet_len, self.mtu, self.vni,
                          self.own_mac)

    def add_peer(self, subnet: IPv4Network, public_ip: IPv4Address, vtep_mac: bytes) -> bool:
        header = self._vxlan + encode_ethernet(vtep_mac, self.own_mac, ETHERTYPE_IPV4)
        return self.table.add(subnet, public_ip, self.port, header)

    def from_tun(self, buf: bytearray | memoryview, n: int) -> Verdict:
        """The inner packet is at buf[22:22+n]; on Send the header is written in front of it
        and the flow hash picks the UDP source port."""
        h = HEADROOM
        if n < 20:
            return RUNT
        if buf[h] >> 4 != 4:
            return NOT_IPV4
        dst = (buf[h + 16] << 24) | (buf[h + 17] << 16) | (buf[h + 18] << 8) | buf[h + 19]
        route = self.routes.get(dst & self.mask)
        if route is None:
            return NO_ROUTE
        if n > self.mtu:
            return OVERSIZED
        if not decrement_ttl(memoryview(buf)[h:]):
            return TTL_EXPIRED
        buf[:h] = route.header
        return Send(route.addr, flow_hash(buf, h, n))

    def from_net(self, buf: bytearray | memoryview, n: int, src_ip: str) -> Verdict:
        """A datagram that reached our VXLAN port: an inner IPv4 packet for us (Write, its
        length; it starts at HEADROOM), an ARP request for our VTEP (Answer), or a drop."""
        if src_ip not in self.peers:
            return NOT_PEER
        if n < HEADROOM:
            return MALFORMED
        if n > HEADROOM + MAX_INNER:  # a super-packet no wire carries (a veth's tunnel GSO)
            return OVERSIZED
        try:
            vni = decode_vxlan_header(buf)
            dst_mac, src_mac, ethertype = decode_ethernet(memoryview(buf)[VXLAN_HEADER_LEN:])
        except DecodeError:
            return MALFORMED
        if vni != self.vni:
            return WRONG_VNI
        if dst_mac not in (self.own_mac, BROADCAST):
            return WRONG_MAC
        inner = memoryview(buf)[HEADROOM:n]
        if ethertype == ETHERTYPE_ARP:
            return self._arp(inner, src_mac, src_ip)
        if ethertype != ETHERTYPE_IPV4:
            return NOT_IPV4
        total = self.deliverable(inner, n - HEADROOM)
        if isinstance(total, Dropped):
            return total
        if complete_partial_checksum(inner, total):
            self.checksums_completed += 1
        return Write(total)

    def _arp(self, inner: memoryview, src_mac: bytes, src_ip: str) -> Verdict:
        try:
            arp = decode_arp(inner)
        except DecodeError:
            return MALFORMED
        if arp.op != ARP_REQUEST or arp.target_ip != self.vtep_ip:
            return NOT_FOR_US
        reply = ARPPacket(ARP_REPLY, self.own_mac, self.vtep_ip, arp.sender_mac, arp.sender_ip)
        frame = (self._vxlan + encode_ethernet(src_mac, self.own_mac, ETHERTYPE_ARP)
                 + encode_arp(reply))
        return Answer((src_ip, self.port), frame)
