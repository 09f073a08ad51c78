"""Tests for backends/_wg_userspace.py without a TUN or a network: the plane around fakes
(a socket that records sends, a SOCK_SEQPACKET pair in place of the TUN, which keeps each
write whole). Each peer's datagrams leave in GSO runs of equal sizes; decrypted segments of
one TCP stream reach the TUN joined, anything else one by one; hostile datagrams are
counted drops and nothing is written; counters are integers, every WGDrop reason there."""

from __future__ import annotations

import asyncio
import random
import socket
import types
from collections.abc import Iterator
from ipaddress import IPv4Address
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP

from backends._base import ExternalInterface
from backends._datapath import SOL_UDP, UDP_SEGMENT
from backends._wg_userspace import UserspaceWireGuard
from backends._wgnoise import WGDrop
from backends.wireguard import WireGuardConfig
from lease.config import BackendSpec, parse_network_config
from tun.offload import GSO_TCPV4, PLAIN_HDR, VNET_HDR, VNET_HDR_LEN

KEY = bytes(range(32))
ADDR = ("192.0.2.2", 51820)


class FakeSocket:
    def __init__(self, inbound: list[bytes] = ()) -> None:  # type: ignore[assignment]
        self.sent: list[tuple[int, int, tuple[str, int]]] = []  # (datagrams, size, addr)
        self.inbound = list(inbound)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.sent.append((1, len(data), addr))
        return len(data)

    def sendmsg(self, buffers: list[bytes], ancdata: list[tuple[int, int, bytes]], flags: int,
                addr: tuple[str, int]) -> int:
        [(level, kind, value)] = ancdata
        assert (level, kind) == (SOL_UDP, UDP_SEGMENT)
        size = int.from_bytes(value, "little")
        assert all(len(b) == size for b in buffers[:-1]) and len(buffers[-1]) <= size
        self.sent.append((len(buffers), size, addr))
        return sum(len(b) for b in buffers)

    def recvfrom_into(self, view: memoryview) -> tuple[int, tuple[str, int]]:
        if not self.inbound:
            raise BlockingIOError
        data = self.inbound.pop(0)
        view[:len(data)] = data
        return len(data), ("192.0.2.66", 4444)

    def close(self) -> None:
        pass


@pytest.fixture
def plane() -> Iterator[tuple[UserspaceWireGuard, socket.socket]]:
    iface = ExternalInterface("eth0", 2, IPv4Address("192.0.2.1"), IPv4Address("192.0.2.1"),
                              1500)
    network = parse_network_config('{"Network": "10.5.0.0/16"}')
    wg = UserspaceWireGuard(WireGuardConfig.from_spec(BackendSpec("wireguard")), iface,
                            network, KEY, 1420)
    tun, reader = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    wg._tun = types.SimpleNamespace(fd=tun.fileno(), name="flannel-wg",  # type: ignore[assignment]
                                    index=0, close=lambda: None)
    wg._sock = FakeSocket()  # type: ignore[assignment]
    wg.vnet_hdr = wg.gso = True
    reader.setblocking(False)
    yield wg, reader
    wg._loop = None
    asyncio.run(wg.close())
    tun.close()
    reader.close()


def written(reader: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(reader.recv(1 << 17))
        except BlockingIOError:
            return out


def sent(wg: UserspaceWireGuard) -> list[tuple[int, int, tuple[str, int]]]:
    sock: Any = wg._sock
    return list(sock.sent)


def test_gso_runs_of_equal_sizes(plane: tuple[UserspaceWireGuard, socket.socket]) -> None:
    wg, _ = plane
    wg._send_group(ADDR, [bytes(1452)] * 50 + [bytes(1000)])
    assert sent(wg) == [(45, 1452, ADDR), (6, 1452, ADDR)]  # 45 per send at 1452 bytes
    assert wg.n["gso_sends"] == 2 and wg.n["tx_datagrams"] == 51
    wg._send_group(ADDR, [bytes(100), bytes(200), bytes(200), bytes(32)])
    assert sent(wg)[2:] == [(1, 100, ADDR), (3, 200, ADDR)]  # a larger one starts a run
    wg.gso = False
    wg._send_group(ADDR, [bytes(64)] * 3)
    assert sent(wg)[4:] == [(1, 64, ADDR)] * 3


def stream(count: int, mss: int = 1368) -> list[bytes]:
    rng = random.Random(16)
    return [bytes(IP(src="10.5.2.2", dst="10.5.1.2", flags="DF", id=7) /
                  TCP(sport=4000, dport=5201, seq=1000 + i * mss, ack=1, flags="A",
                      window=500) / rng.randbytes(mss)) for i in range(count)]


def test_a_tcp_stream_is_joined_others_one_by_one(
        plane: tuple[UserspaceWireGuard, socket.socket]) -> None:
    wg, reader = plane
    ping = bytes(IP(src="10.5.2.2", dst="10.5.1.2") / ICMP() / (b"x" * 56))
    segments = stream(8)
    wg._plain = [ping, *segments, ping]
    wg._deliver()
    writes = written(reader)
    assert len(writes) == 3
    assert writes[0] == PLAIN_HDR + ping and writes[2] == PLAIN_HDR + ping
    _flags, gso_type, hdr_len, gso_size, _, _ = VNET_HDR.unpack(writes[1][:VNET_HDR_LEN])
    assert gso_type == GSO_TCPV4 and gso_size == 1368 and hdr_len == 40
    joined = writes[1][VNET_HDR_LEN:]
    assert len(joined) == 40 + 8 * 1368
    assert joined[40:] == b"".join(s[40:] for s in segments)
    assert wg.n["joined_packets"] == 1 and wg.n["joined_segments"] == 8


def test_a_corrupted_segment_is_not_joined(
        plane: tuple[UserspaceWireGuard, socket.socket]) -> None:
    wg, reader = plane
    segments = stream(6)
    bad = bytearray(segments[3])
    bad[100] ^= 0xFF  # its TCP checksum no longer holds: the kernel is to judge it alone
    wg._plain = [*segments[:3], bytes(bad), *segments[4:]]
    wg._deliver()
    writes = written(reader)
    assert PLAIN_HDR + bytes(bad) in writes
    assert sum(len(w) for w in writes) > 0 and wg.n["joined_segments"] <= 5


def test_without_offloads_every_packet_alone(
        plane: tuple[UserspaceWireGuard, socket.socket]) -> None:
    wg, reader = plane
    wg.vnet_hdr = False
    segments = stream(5)
    wg._plain = list(segments)
    wg._deliver()
    assert written(reader) == segments


def test_hostile_datagrams_are_counted_and_never_written(
        plane: tuple[UserspaceWireGuard, socket.socket]) -> None:
    wg, reader = plane
    rng = random.Random(7)
    hostile = [rng.randbytes(rng.randrange(1, 1500)) for _ in range(200)]
    hostile += [bytes([4, 0, 0, 0]) + rng.randbytes(rng.randrange(28, 200)) for _ in range(100)]
    hostile += [bytes([1, 0, 0, 0]) + rng.randbytes(144) for _ in range(50)]
    wg._sock = FakeSocket(hostile)  # type: ignore[assignment]
    for _ in range(3):
        wg._on_net()
    assert written(reader) == []
    counters = wg.counters()
    drops = sum(v for k, v in counters.items() if k.startswith("drop_"))
    assert drops == len(hostile) == counters["rx_datagrams"]
    assert counters["drop_unknown_index"] == 100 and counters["drop_bad_mac1"] == 50
    assert counters["tun_writes"] == 0


def test_counters_are_integers_with_every_reason(
        plane: tuple[UserspaceWireGuard, socket.socket]) -> None:
    wg, _ = plane
    counters = wg.counters()
    assert all(type(v) is int for v in counters.values())
    for reason in WGDrop:
        assert f"drop_{reason.name.lower()}" in counters
