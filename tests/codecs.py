"""The cluster the codec tests share: our subnet and two peers, and codecs built for it; and
how the tests compare the codecs' verdicts."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Final

from backends._codec import Drop, Dropped, Reply, SendMany, Verdict
from backends.udp import DEFAULT_PORT, UDPCodec
from backends.vxlan import VXLANCodec
from tun.vxlan import VXLAN_PORT, parse_mac

VNI: Final = 1
SUBNET_LEN: Final = 24
UDP_MTU: Final = 1472  # 1500 - 28
VXLAN_MTU: Final = 1450  # 1500 - 50

OWN: Final = IPv4Network("10.5.1.0/24")
OWN_VTEP: Final = "10.5.1.0"
OWN_PUBLIC: Final = "192.168.0.1"
OWN_MAC: Final = "7e:3a:01:02:03:01"
PEER_B: Final = IPv4Network("10.5.2.0/24")
PUBLIC_B: Final = "192.168.0.2"
MAC_B: Final = "c6:d2:32:6f:8f:44"
PEER_C: Final = IPv4Network("10.5.3.0/24")
PUBLIC_C: Final = "192.168.0.3"
MAC_C: Final = "a2:5b:10:20:30:40"

PeerSpec = tuple[IPv4Network, str, str]  # subnet, PublicIP, VtepMAC
PEERS: Final[tuple[PeerSpec, ...]] = ((PEER_B, PUBLIC_B, MAC_B), (PEER_C, PUBLIC_C, MAC_C))
UDP_PEERS: Final = tuple((subnet, public_ip) for subnet, public_ip, _ in PEERS)


def make_udp_codec(own: IPv4Network = OWN, mtu: int = UDP_MTU, port: int = DEFAULT_PORT,
                   peers: tuple[tuple[IPv4Network, str], ...] = UDP_PEERS) -> UDPCodec:
    codec = UDPCodec(own, SUBNET_LEN, port, mtu)
    for subnet, public_ip in peers:
        assert codec.add_peer(subnet, IPv4Address(public_ip))
    return codec


def make_vxlan_codec(own: IPv4Network = OWN, own_mac: str = OWN_MAC, vni: int = VNI,
                     port: int = VXLAN_PORT, mtu: int = VXLAN_MTU,
                     peers: tuple[PeerSpec, ...] = PEERS) -> VXLANCodec:
    codec = VXLANCodec(own, SUBNET_LEN, vni, parse_mac(own_mac), port, mtu)
    for subnet, public_ip, mac in peers:
        assert codec.add_peer(subnet, IPv4Address(public_ip), parse_mac(mac))
    return codec


def typed(verdict: Verdict) -> tuple[type[Verdict], Verdict]:
    """The verdict and its class, to compare with `==`: verdicts are NamedTuples, which
    compare as bare tuples (Write(4) == Dropped(Drop.NO_ROUTE)), so the class must be
    compared too for the kind of verdict to count."""
    return type(verdict), verdict


def outcome(verdict: Verdict) -> tuple[type[Verdict], Drop]:
    """The verdict's class and its reason (Drop.NONE for Send, Write and Answer)."""
    match verdict:
        case Reply(reason=reason) | SendMany(reason=reason) | Dropped(reason=reason):
            return type(verdict), reason
    return type(verdict), Drop.NONE
