"""backends/_wgnoise.py: two Devices talking through lists, a fake clock and seeded
randomness; a real wireguard-go initiation as the known answer."""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from backends._wgnoise import (
    REPLAY_WINDOW,
    Address,
    Device,
    Limits,
    WGDrop,
    _Keypair,
    _Peer,
    format_key,
    kdf,
    parse_key,
    public_key_of,
)
from lease.errors import ConfigError
from tests.unit.test_wireguard_wire import GO_INITIATION
from tun import wireguard as wire

A_ADDR: Address = ("192.0.2.1", 51820)
B_ADDR: Address = ("192.0.2.2", 51820)
A_NET = ip_network("10.0.1.0/24")
B_NET = ip_network("10.0.2.0/24")
# The keys of the integration test run that captured GO_INITIATION (ours, wireguard-go's).
KAT_OUR_PRIVATE = bytes.fromhex(
    "0e1e44a074d9cfec2658e481692dc5617da490bd53199f94134676ca89b05db0")
KAT_GO_PRIVATE = bytes.fromhex(
    "90b70af05bf80acd2c00d079b6c189c1806928e44df361c4dc2453f4313b4b57")
KAT_CAPTURED_AT = 1796237000.0  # Dec 2026, near the capture


@dataclass
class Clock:
    now: float = 1000.0
    wall: float = 1_796_000_000.0

    def __call__(self) -> float:
        return self.now

    def wall_time(self) -> float:
        return self.wall + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Pair:
    a: Device
    b: Device
    clock: Clock
    lost: list[bytes] = field(default_factory=list)

    def to_b(self, datagrams: Iterable[tuple[Address, bytes]]) -> list[bytes]:
        """Deliver to b; b's answers go back to a, and so on until quiet. Packets b
        wrote to its TUN are returned."""
        return self._exchange(list(datagrams), [])[1]

    def to_a(self, datagrams: Iterable[tuple[Address, bytes]]) -> list[bytes]:
        return self._exchange([], list(datagrams))[0]

    def _exchange(self, for_b: list[tuple[Address, bytes]],
                  for_a: list[tuple[Address, bytes]]) -> tuple[list[bytes], list[bytes]]:
        tun_a: list[bytes] = []
        tun_b: list[bytes] = []
        for _ in range(50):
            if not for_a and not for_b:
                break
            next_a: list[tuple[Address, bytes]] = []
            next_b: list[tuple[Address, bytes]] = []
            for addr, d in for_b:
                assert addr == B_ADDR
                replies, packets = self.b.receive(d, A_ADDR)
                next_a += replies
                tun_b += packets
            for addr, d in for_a:
                assert addr == A_ADDR
                replies, packets = self.a.receive(d, B_ADDR)
                next_b += replies
                tun_a += packets
            for_a, for_b = next_a, next_b
        return tun_a, tun_b


def flat(groups: list[tuple[Address, list[bytes]]]) -> list[tuple[Address, bytes]]:
    return [(addr, d) for addr, ds in groups for d in ds]


def ipv4(src: str, dst: str, payload: bytes = b"x" * 100, proto: int = 17) -> bytes:
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                       ip_address(src).packed, ip_address(dst).packed) + payload


def ipv6(src: str, dst: str, payload: bytes = b"y" * 64) -> bytes:
    return struct.pack(">IHBB16s16s", 6 << 28, len(payload), 17, 64, ip_address(src).packed,
                       ip_address(dst).packed) + payload


def seeded(seed: int) -> random.Random:
    return random.Random(seed)


DEFAULT_LIMITS = Limits()


def make_pair(limits: Limits = DEFAULT_LIMITS, seed: int = 1, mtu: int = 0) -> Pair:
    clock = Clock()
    rng_a, rng_b = seeded(seed), seeded(seed + 1000)
    a = Device(rng_a.randbytes(32), clock=clock, wall=clock.wall_time, random=rng_a.randbytes,
               limits=limits, mtu=mtu)
    b = Device(rng_b.randbytes(32), clock=clock, wall=clock.wall_time, random=rng_b.randbytes,
               limits=limits, mtu=mtu)
    a.set_peer(b.public_key, endpoint=B_ADDR, allowed_ips=[B_NET])
    b.set_peer(a.public_key, endpoint=A_ADDR, allowed_ips=[A_NET])
    return Pair(a, b, clock)


def connect(pair: Pair) -> None:
    """a initiates (its first packet queued), the handshake completes, the packet arrives."""
    packet = ipv4("10.0.1.1", "10.0.2.1")
    assert pair.to_b(flat(pair.a.send([packet]))) == [packet]


def test_handshake_then_data_both_ways() -> None:
    pair = make_pair()
    out = pair.a.send([ipv4("10.0.1.1", "10.0.2.1")])
    assert [(addr, [len(d) for d in ds]) for addr, ds in out] == [(B_ADDR, [148])]
    replies, packets = pair.b.receive(out[0][1][0], A_ADDR)
    assert packets == [] and [len(r) for _, r in replies] == [92]
    # the initiator sends its queued packet on the new session at once
    replies2, _ = pair.a.receive(replies[0][1], B_ADDR)
    assert [len(r) for _, r in replies2] == [32 + 128]  # 120 bytes padded to 128
    _, packets = pair.b.receive(replies2[0][1], A_ADDR)
    assert packets == [ipv4("10.0.1.1", "10.0.2.1")]
    many = [ipv4("10.0.2.1", "10.0.1.1", bytes([i]) * (i + 1)) for i in range(40)]
    assert pair.to_a(flat(pair.b.send(many))) == many
    back = [ipv4("10.0.1.1", "10.0.2.1", bytes([i]) * (i + 1)) for i in range(40)]
    assert pair.to_b(flat(pair.a.send(back))) == back
    assert pair.a.drops == {} and pair.b.drops == {}
    ca, cb = pair.a.counters(), pair.b.counters()
    assert ca["handshakes_sent"] == 1 and cb["handshakes_sent"] == 0
    assert ca["handshakes_completed"] == cb["handshakes_completed"] == 1
    assert cb["packets_in"] == 41 and ca["packets_in"] == 40
    status = pair.a.peers()[0]
    assert status.public_key == pair.b.public_key and status.endpoint == B_ADDR
    assert status.last_handshake == pair.clock.wall_time() and status.has_session
    assert status.tx_bytes > 0 and status.rx_bytes > 0


def test_padding_is_to_16_but_not_past_the_mtu() -> None:
    pair = make_pair(mtu=1420)
    connect(pair)
    for length, wire_len in ((1420, 1452), (1419, 1452), (1401, 1440), (20, 64)):
        packet = ipv4("10.0.1.1", "10.0.2.1", bytes(length - 20))
        datagrams = flat(pair.a.send([packet]))
        assert [len(d) for _, d in datagrams] == [wire_len]
        assert pair.to_b(datagrams) == [packet]


def test_ipv6_allowed_ips_and_longest_prefix() -> None:
    pair = make_pair()
    rng = seeded(5)
    c = Device(rng.randbytes(32), clock=pair.clock, random=rng.randbytes)
    pair.a.set_peer(pair.b.public_key, endpoint=B_ADDR,
                    allowed_ips=[B_NET, ip_network("fd00:2::/64")])
    pair.a.set_peer(c.public_key, endpoint=("192.0.2.3", 51820),
                    allowed_ips=[ip_network("10.0.2.128/25"), ip_network("fd00:2::/96")])
    b_key, c_key, c_addr = pair.b.public_key, c.public_key, ("192.0.2.3", 51820)
    assert pair.a.peer_for(ipv4("10.0.1.1", "10.0.2.1")) == b_key
    assert pair.a.peer_for(ipv4("10.0.1.1", "10.0.2.200")) == c_key
    assert pair.a.peer_for(ipv6("fd00:1::1", "fd00:2::1:0:0")) == b_key
    assert pair.a.peer_for(ipv6("fd00:1::1", "fd00:2::1")) == c_key
    assert pair.a.peer_for(ipv6("fd00:1::1", "fd00:3::1")) is None
    assert pair.a.peer_for(b"\x45") is None
    assert [a for a, _ in pair.a.send([ipv4("10.0.1.1", "10.0.2.200")])] == [c_addr]
    # an allowed IP set on another peer moves there, as in WireGuard
    pair.a.set_peer(c.public_key, endpoint=c_addr, allowed_ips=[B_NET])
    by_key = {p.public_key: p.allowed_ips for p in pair.a.peers()}
    assert by_key[c.public_key] == (B_NET,)
    assert by_key[pair.b.public_key] == (ip_network("fd00:2::/64"),)


def test_ipv6_inner_packets_pass_with_their_padding_cut() -> None:
    pair = make_pair()
    v6a, v6b = ip_network("fd00:1::/64"), ip_network("fd00:2::/64")
    pair.a.set_peer(pair.b.public_key, endpoint=B_ADDR, allowed_ips=[B_NET, v6b])
    pair.b.set_peer(pair.a.public_key, endpoint=A_ADDR, allowed_ips=[A_NET, v6a])
    packet = ipv6("fd00:1::1", "fd00:2::1", b"z" * 13)
    assert pair.to_b(flat(pair.a.send([packet]))) == [packet]


def test_send_drops_what_has_nowhere_to_go() -> None:
    pair = make_pair()
    assert pair.a.send([ipv4("10.0.1.1", "10.0.3.1"), b"", b"\x45" * 10, b"\x10" * 40]) == []
    assert pair.a.drops == {WGDrop.NO_PEER: 1, WGDrop.NOT_IP: 3}


def test_queue_is_bounded_and_flushed_in_order_after_the_handshake() -> None:
    pair = make_pair(Limits(queue_len=4))
    packets = [ipv4("10.0.1.1", "10.0.2.1", bytes([i]) * 30) for i in range(6)]
    out = pair.a.send(packets)
    assert [len(ds) for _, ds in out] == [1]  # one initiation, nothing else
    assert pair.a.drops == {WGDrop.QUEUE_FULL: 2}
    assert pair.to_b(flat(out)) == packets[2:]


def test_initiations_are_rate_limited_retransmitted_then_given_up() -> None:
    pair = make_pair()
    first = pair.a.send([ipv4("10.0.1.1", "10.0.2.1")])
    assert len(flat(first)) == 1
    assert flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")])) == []  # rate limit
    deadline = pair.a.next_deadline()
    assert deadline is not None and 1005.0 <= deadline <= 1005.0 + 1 / 3
    sent = 1
    while pair.clock.now < 1000 + 95:
        pair.clock.advance(0.25)
        sent += len(pair.a.tick())
    # one every REKEY_TIMEOUT (+ jitter) until REKEY_ATTEMPT_TIME, then the queue goes
    assert 15 <= sent <= 18
    assert pair.a.drops[WGDrop.HANDSHAKE_TIMEOUT] == 2
    pair.clock.advance(30)
    assert pair.a.tick() == []


def test_no_endpoint_queues_and_counts() -> None:
    pair = make_pair()
    rng = seeded(9)
    lonely = Device(rng.randbytes(32), clock=pair.clock, random=rng.randbytes)
    lonely.set_peer(pair.a.public_key, endpoint=None, allowed_ips=[A_NET])
    assert lonely.send([ipv4("10.0.2.1", "10.0.1.1")]) == []
    assert lonely.drops == {WGDrop.NO_ENDPOINT: 1}
    # once a initiates, lonely learns the endpoint and its queued packet goes out
    pair.a.set_peer(lonely.public_key, endpoint=B_ADDR, allowed_ips=[B_NET])
    init = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    replies, _ = lonely.receive(init[0][1], A_ADDR)
    data, _ = pair.a.receive(replies[0][1], B_ADDR)
    replies, packets = lonely.receive(data[0][1], A_ADDR)
    assert packets == [ipv4("10.0.1.1", "10.0.2.1")]
    assert [pair.a.receive(d, B_ADDR)[1] for _, d in replies] == [[ipv4("10.0.2.1", "10.0.1.1")]]


def test_rekey_after_messages_and_old_session_still_decrypts() -> None:
    pair = make_pair(Limits(rekey_after_messages=5))
    connect(pair)
    in_flight = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1", bytes([i]) * 10)
                                  for i in range(3)]))
    pair.clock.advance(6)  # past the initiation rate limit
    out = pair.a.send([ipv4("10.0.1.1", "10.0.2.1")] * 3)
    kinds = [d[0] for _, d in flat(out)]
    assert kinds == [1, 4, 4, 4]  # counter 4 reached the limit: an initiation first
    delivered = pair.to_b(flat(out))
    assert len(delivered) == 3
    assert pair.a.counters()["rekeys"] == 1
    assert len(pair.to_b(in_flight)) == 3  # the previous session still opens
    assert pair.to_a(flat(pair.b.send([ipv4("10.0.2.1", "10.0.1.1")]))) == [
        ipv4("10.0.2.1", "10.0.1.1")]
    assert pair.a.drops == {} and pair.b.drops == {}


def test_rekey_after_time_only_by_the_initiator() -> None:
    pair = make_pair()
    connect(pair)
    pair.clock.advance(121)
    b_out = flat(pair.b.send([ipv4("10.0.2.1", "10.0.1.1")]))
    assert [d[0] for _, d in b_out] == [4]  # the responder does not rekey on time
    assert pair.to_a(b_out)
    a_out = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    assert [d[0] for _, d in a_out] == [1, 4]
    pair.to_b(a_out)
    assert pair.a.counters()["rekeys"] == 1 and pair.b.counters()["rekeys"] == 1


def test_receiving_near_reject_time_starts_a_handshake_once() -> None:
    pair = make_pair()
    connect(pair)
    pair.clock.advance(166)  # past REJECT - KEEPALIVE - REKEY_TIMEOUT
    replies, packets = pair.a.receive(flat(pair.b.send([ipv4("10.0.2.1", "10.0.1.1")]))[0][1],
                                      B_ADDR)
    assert len(packets) == 1 and [d[0] for _, d in replies] == [1]
    pair.clock.advance(6)
    replies, _ = pair.a.receive(flat(pair.b.send([ipv4("10.0.2.1", "10.0.1.1")]))[0][1], B_ADDR)
    assert [d[0] for _, d in replies] == []


def test_keys_expire_after_reject_time() -> None:
    pair = make_pair(Limits(rekey_after_time=1000))
    connect(pair)
    old = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    pair.clock.advance(180)
    assert pair.to_b(old) == []
    assert pair.b.drops == {WGDrop.KEY_EXPIRED: 1}
    out = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    assert [d[0] for _, d in out] == [1]  # queued behind a new handshake
    assert pair.to_b(out) == [ipv4("10.0.1.1", "10.0.2.1")]
    assert not pair.a.peers()[0].has_session or pair.a.counters()["handshakes_completed"] == 2


def test_reject_after_messages() -> None:
    pair = make_pair(Limits(reject_after_messages=4, rekey_after_messages=100))
    connect(pair)
    pair.clock.advance(6)  # past the initiation rate limit
    out = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")] * 4))
    # counter 0 went to the first packet; 1-3 still fit, then a new handshake
    assert [d[0] for _, d in out] == [1, 4, 4, 4]
    assert len(pair.to_b(out)) == 4


def test_all_keys_zeroed_after_three_reject_times_of_silence() -> None:
    pair = make_pair()
    connect(pair)
    for _ in range(3 * 180 // 10 + 2):
        pair.clock.advance(10)
        pair.a.tick()
        pair.b.tick()
    assert not pair.a.peers()[0].has_session
    assert pair.a._sessions == {} and pair.b._sessions == {}


def keypair() -> _Keypair:
    peer = _Peer(bytes(32), bytes(32))
    return _Keypair(peer, bytes(32), bytes(32), 1, 2, 0.0, True)


def test_replay_window_edges() -> None:
    kp = keypair()
    assert not kp.replayed(0)
    kp.mark(0)
    assert kp.replayed(0)
    kp.mark(5000)
    top = 5000
    assert not kp.replayed(top - REPLAY_WINDOW + 1)  # the oldest still in the window
    assert kp.replayed(top - REPLAY_WINDOW)  # just behind it
    kp.mark(top - REPLAY_WINDOW + 1)
    assert kp.replayed(top - REPLAY_WINDOW + 1)
    for c in range(top - 10, top):  # reordered within the window: once each
        assert not kp.replayed(c)
        kp.mark(c)
        assert kp.replayed(c)
    kp.mark(top + 1)
    assert kp.replayed(top - 5) and not kp.replayed(top + 2)
    kp.mark(top + 10 * REPLAY_WINDOW)  # a jump clears the window
    assert kp.replayed(top + 1) and not kp.replayed(top + 10 * REPLAY_WINDOW - 1)


def test_reordered_datagrams_accepted_once() -> None:
    pair = make_pair()
    connect(pair)
    packets = [ipv4("10.0.1.1", "10.0.2.1", bytes([i]) * 20) for i in range(20)]
    out = flat(pair.a.send(packets))
    assert pair.to_b(out[::-1]) == packets[::-1]
    assert pair.to_b(out) == []
    assert pair.b.drops == {WGDrop.REPLAYED: 20}


def test_far_behind_the_window_is_replayed() -> None:
    pair = make_pair()
    connect(pair)
    first = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    pair.to_b(flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")] * (REPLAY_WINDOW + 1))))
    assert pair.to_b(first) == []
    assert pair.b.drops == {WGDrop.REPLAYED: 1}


def test_truncated_flipped_forged_datagrams_dropped_by_reason() -> None:
    pair = make_pair()
    connect(pair)
    good = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))[0][1]
    for n in range(len(good)):
        assert pair.b.receive(good[:n], A_ADDR) == ([], [])
    d = pair.b.drops
    assert d[WGDrop.RUNT] == 4 and d[WGDrop.BAD_LENGTH] == 28
    assert d[WGDrop.DECRYPT_FAILED] == len(good) - 32
    pair.b.drops.clear()
    for i in range(len(good) * 8):
        bad = bytearray(good)
        bad[i // 8] ^= 1 << (i % 8)
        assert pair.b.receive(bytes(bad), A_ADDR) == ([], [])
    assert set(pair.b.drops) <= {WGDrop.UNKNOWN_TYPE, WGDrop.UNKNOWN_INDEX, WGDrop.REPLAYED,
                                 WGDrop.DECRYPT_FAILED, WGDrop.KEY_EXPIRED}
    assert pair.b.drops[WGDrop.DECRYPT_FAILED] > len(good) * 8 - 100
    # the untouched original still goes through once
    assert pair.b.receive(good, A_ADDR)[1] == [ipv4("10.0.1.1", "10.0.2.1")]
    pair.b.drops.clear()
    assert pair.b.receive(b"\x01\0\0\0" + bytes(144), A_ADDR) == ([], [])
    assert pair.b.receive(b"\x02\0\0\0" + bytes(88), A_ADDR) == ([], [])
    assert pair.b.receive(b"\x03\0\0\0" + bytes(60), A_ADDR) == ([], [])
    assert pair.b.receive(b"\x09\0\0\0" + bytes(60), A_ADDR) == ([], [])
    assert pair.b.drops == {WGDrop.BAD_MAC1: 2, WGDrop.UNKNOWN_INDEX: 1,
                            WGDrop.UNKNOWN_TYPE: 1}


def test_flipped_handshake_bits_never_complete() -> None:
    pair = make_pair()
    init = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))[0][1]
    for i in range(0, len(init) * 8, 3):
        bad = bytearray(init)
        bad[i // 8] ^= 1 << (i % 8)
        replies, _ = pair.b.receive(bytes(bad), A_ADDR)
        # only mac2 is not covered by anything when not under load
        assert replies == [] or i // 8 >= wire.MAC2_OFFSET[wire.MessageType.INITIATION]
        if replies:
            pair.clock.advance(0.05)


def test_an_initiation_replayed_is_stale() -> None:
    pair = make_pair()
    init = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    assert len(pair.b.receive(init[0][1], A_ADDR)[0]) == 1
    pair.clock.advance(1)
    assert pair.b.receive(init[0][1], A_ADDR) == ([], [])
    assert pair.b.drops == {WGDrop.STALE_INITIATION: 1}


def test_initiation_flood_from_one_peer() -> None:
    pair = make_pair()
    pair.a.send([ipv4("10.0.1.1", "10.0.2.1")])
    pair.clock.advance(6)
    first = pair.a.tick()
    pair.clock.advance(0.001)
    pair.a._peers[pair.b.public_key].retransmit_at = pair.clock.now  # force another now
    second = pair.a.tick()
    assert len(pair.b.receive(first[0][1], A_ADDR)[0]) == 1
    assert pair.b.receive(second[0][1], A_ADDR) == ([], [])
    assert pair.b.drops == {WGDrop.HANDSHAKE_FLOOD: 1}


def test_under_load_a_cookie_reply_then_mac2_gets_through() -> None:
    pair = make_pair()
    pair.b.under_load = True
    init = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    replies, _ = pair.b.receive(init[0][1], A_ADDR)
    assert [len(r) for _, r in replies] == [64] and replies[0][0] == A_ADDR
    assert pair.b.drops == {WGDrop.COOKIE_REQUIRED: 1}
    assert pair.a.receive(replies[0][1], B_ADDR) == ([], [])
    assert pair.a.drops == {}
    # a forged cookie reply is counted
    forged = bytearray(replies[0][1])
    forged[-1] ^= 1
    pair.a.receive(bytes(forged), B_ADDR)
    assert pair.a.drops == {WGDrop.BAD_COOKIE: 1}
    # the retransmission carries mac2 and is let through
    pair.clock.advance(5.4)
    retry = pair.a.tick()
    assert retry and retry[0][1][132:] != bytes(16)
    assert pair.to_b(retry) == [ipv4("10.0.1.1", "10.0.2.1")]
    # mac2 is bound to the source address: from elsewhere, another cookie reply
    pair.clock.advance(6)
    init2 = pair.a._make_initiation(pair.a._peers[pair.b.public_key], pair.clock.now)
    replies, _ = pair.b.receive(init2, ("198.51.100.7", 51820))
    assert [len(r) for _, r in replies] == [64]


def test_passive_keepalive_and_new_handshake_timers() -> None:
    pair = make_pair()
    connect(pair)
    # b received data and sent nothing: after KEEPALIVE_TIMEOUT, a keepalive
    pair.clock.advance(9.9)
    assert pair.b.tick() == []
    pair.clock.advance(0.2)
    ka = pair.b.tick()
    assert [len(d) for _, d in ka] == [32]
    assert pair.to_a(ka) == [] and pair.a.drops == {}
    assert pair.b.counters()["keepalives_sent"] == 1
    # a sends and hears nothing back for KEEPALIVE + REKEY_TIMEOUT: a new handshake
    pair.a.send([ipv4("10.0.1.1", "10.0.2.1")])
    pair.clock.advance(15.1)
    assert [d[0] for _, d in pair.a.tick()] == [1]


def test_persistent_keepalive() -> None:
    pair = make_pair()
    connect(pair)
    pair.a.set_peer(pair.b.public_key, endpoint=B_ADDR, allowed_ips=[B_NET], keepalive=25)
    assert [len(d) for _, d in pair.a.tick()] == [32]  # at once when turned on
    pair.clock.advance(10.1)
    pair.to_a(pair.b.tick())  # b's passive keepalive: traffic, so a's timer restarts
    pair.clock.advance(24.9)
    assert pair.a.tick() == []
    pair.clock.advance(0.2)
    assert [len(d) for _, d in pair.a.tick()] == [32]
    deadline = pair.a.next_deadline()
    assert deadline is not None and deadline <= pair.clock.now + 25


def test_set_peer_keeps_sessions_and_peer_key_change() -> None:
    pair = make_pair()
    connect(pair)
    pair.a.set_peer(pair.b.public_key, endpoint=("192.0.2.2", 51820),
                    allowed_ips=[B_NET, ip_network("10.0.22.0/24")])
    assert [d[0] for _, d in flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))] == [4]
    # b comes back with a new key; a is told
    rng = seeded(77)
    new_b = Device(rng.randbytes(32), clock=pair.clock, wall=pair.clock.wall_time,
                   random=rng.randbytes)
    new_b.set_peer(pair.a.public_key, endpoint=A_ADDR, allowed_ips=[A_NET])
    pair.a.remove_peer(pair.b.public_key)
    pair.a.set_peer(new_b.public_key, endpoint=B_ADDR, allowed_ips=[B_NET])
    assert [p.public_key for p in pair.a.peers()] == [new_b.public_key]
    pair.b = new_b
    pair.clock.advance(6)
    connect(pair)
    # the old b's initiations are from an unknown peer now
    rng = seeded(1001)
    old = Device(rng.randbytes(32), clock=pair.clock, random=rng.randbytes)
    assert old.public_key != new_b.public_key
    old.set_peer(pair.a.public_key, endpoint=A_ADDR, allowed_ips=[A_NET])
    init = flat(old.send([ipv4("10.0.2.1", "10.0.1.1")]))
    assert pair.a.receive(init[0][1], B_ADDR) == ([], [])
    assert pair.a.drops == {WGDrop.UNKNOWN_PEER: 1}


def test_inner_source_must_be_in_the_peers_allowed_ips() -> None:
    pair = make_pair()
    connect(pair)
    spoofed = flat(pair.b.send([ipv4("10.0.9.9", "10.0.1.1")]))
    assert pair.to_a(spoofed) == []
    assert pair.a.drops == {WGDrop.NOT_ALLOWED_SOURCE: 1}
    # an inner packet that is not IP (or shorter than it says) is NOT_IP
    bogus = ipv4("10.0.2.1", "10.0.1.1")
    bogus = bogus[:2] + (500).to_bytes(2, "big") + bogus[4:]
    assert pair.to_a(flat(pair.b.send([bogus]))) == []
    assert pair.a.drops[WGDrop.NOT_IP] == 1


def test_roaming_follows_authenticated_packets_only() -> None:
    pair = make_pair()
    connect(pair)
    moved: Address = ("198.51.100.9", 4000)
    data = flat(pair.b.send([ipv4("10.0.2.1", "10.0.1.1")] * 2))
    forged = bytearray(data[1][1])
    forged[-1] ^= 1
    pair.a.receive(bytes(forged), ("198.51.100.66", 1))
    assert pair.a.peers()[0].endpoint == B_ADDR
    pair.a.receive(data[0][1], moved)
    assert pair.a.peers()[0].endpoint == moved
    assert [a for a, _ in pair.a.send([ipv4("10.0.1.1", "10.0.2.1")])] == [moved]


def test_simultaneous_initiations_settle() -> None:
    pair = make_pair()
    init_a = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    init_b = flat(pair.b.send([ipv4("10.0.2.1", "10.0.1.1")]))
    tun_a, tun_b = pair._exchange(init_a, init_b)
    assert tun_a == [ipv4("10.0.2.1", "10.0.1.1")] and tun_b == [ipv4("10.0.1.1", "10.0.2.1")]
    for _ in range(3):
        assert pair.to_b(flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))) == [
            ipv4("10.0.1.1", "10.0.2.1")]
        assert pair.to_a(flat(pair.b.send([ipv4("10.0.2.1", "10.0.1.1")]))) == [
            ipv4("10.0.2.1", "10.0.1.1")]


def test_psk_must_match() -> None:
    pair = make_pair()
    psk = bytes(range(32))
    pair.a.set_peer(pair.b.public_key, endpoint=B_ADDR, allowed_ips=[B_NET], psk=psk)
    init = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    replies, _ = pair.b.receive(init[0][1], A_ADDR)  # b has no psk: its response is wrong
    assert pair.a.receive(replies[0][1], B_ADDR) == ([], [])
    assert pair.a.drops == {WGDrop.BAD_HANDSHAKE: 1}
    pair.b.set_peer(pair.a.public_key, endpoint=A_ADDR, allowed_ips=[A_NET], psk=psk)
    pair.clock.advance(6)
    assert pair.to_b(pair.a.tick()) == [ipv4("10.0.1.1", "10.0.2.1")]


def test_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError):
        Device(b"short")
    dev = Device(bytes(32))
    with pytest.raises(ConfigError):
        dev.set_peer(b"x" * 31, endpoint=None, allowed_ips=[])
    with pytest.raises(ConfigError):
        dev.set_peer(bytes(32), endpoint=None, allowed_ips=[])  # small order
    with pytest.raises(ConfigError):
        dev.set_peer(public_key_of(b"\x01" * 32), endpoint=None, allowed_ips=[], psk=b"1")
    assert parse_key(format_key(b"\x07" * 32)) == b"\x07" * 32
    for bad in ("nope!", "AAAA"):
        with pytest.raises(ConfigError):
            parse_key(bad)


def test_status_carries_no_secrets() -> None:
    pair = make_pair()
    connect(pair)
    status = pair.a.peers()[0]
    kp = pair.a._peers[pair.b.public_key].current
    assert kp is not None
    fields = [getattr(status, f) for f in status.__slots__]
    assert all(not isinstance(v, bytes) or v == pair.b.public_key for v in fields)


# --- known answers ------------------------------------------------------------------------

def test_kdf_is_hkdf_with_hmac_blake2s() -> None:
    key, data = bytes(range(32)), b"input keying material"
    for n in (1, 2, 3):
        expected = HKDF(hashes.BLAKE2s(32), 32 * n, salt=key, info=b"").derive(data)
        assert b"".join(kdf(key, data, n)) == expected


def test_a_real_wireguard_go_initiation_is_accepted() -> None:
    """GO_INITIATION was sent by wireguard-go to KAT_OUR_PRIVATE's public key: its mac1,
    static and timestamp open, and we answer it."""
    go_public = public_key_of(KAT_GO_PRIVATE)
    ours = Device(KAT_OUR_PRIVATE, clock=lambda: 5.0, wall=lambda: KAT_CAPTURED_AT,
                  random=seeded(3).randbytes)
    # mac1 computed independently of the module
    mac1_key = hashlib.blake2s(b"mac1----" + ours.public_key).digest()
    assert hashlib.blake2s(GO_INITIATION[:116], key=mac1_key, digest_size=16).digest() == \
        GO_INITIATION[116:132]
    ours.set_peer(go_public, endpoint=None, allowed_ips=[IPv4Network("10.9.0.2/32")])
    replies, packets = ours.receive(GO_INITIATION, ("192.0.2.2", 51820))
    assert ours.drops == {}
    assert packets == [] and [len(r) for _, r in replies] == [92]
    response = wire.decode_response(replies[0][1])
    assert response.receiver == wire.decode_initiation(GO_INITIATION).sender
    when = ours._peers[go_public].last_timestamp
    assert abs(when[0] - wire.TAI64_BASE - KAT_CAPTURED_AT) < 86400 * 365
    # someone else's key cannot open it
    other = Device(bytes(range(32)))
    other.set_peer(go_public, endpoint=None, allowed_ips=[])
    other.receive(GO_INITIATION, ("192.0.2.2", 51820))
    assert other.drops == {WGDrop.BAD_MAC1: 1}


# --- fuzz -----------------------------------------------------------------------------------

FUZZ_PAIR = make_pair(seed=42)
connect(FUZZ_PAIR)
FUZZ_SEEDS = [flat(FUZZ_PAIR.a.send([ipv4("10.0.1.1", "10.0.2.1")]))[0][1], GO_INITIATION,
              wire.encode_cookie_reply(wire.CookieReply(1, bytes(24), bytes(32)))]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_receive_never_raises_on_garbage(data: bytes, load: bool) -> None:
    FUZZ_PAIR.b.under_load = load
    _, packets = FUZZ_PAIR.b.receive(data, A_ADDR)
    assert packets == [] or data[:1] == b"\x04"
    FUZZ_PAIR.b.under_load = False


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FUZZ_SEEDS), st.lists(st.tuples(st.integers(0, 400),
                                                       st.integers(0, 255)), max_size=4),
       st.integers(0, 400))
def test_receive_never_raises_on_mutations(seed: bytes, edits: list[tuple[int, int]],
                                           cut: int) -> None:
    data = bytearray(seed)
    for pos, value in edits:
        if data:
            data[pos % len(data)] = value
    FUZZ_PAIR.b.receive(bytes(data[:cut] if cut < len(data) else data), A_ADDR)
    FUZZ_PAIR.b.receive(memoryview(bytes(data)), ("2001:db8::1", 1, 0, 0))  # type: ignore[arg-type]


def test_networks_types_accepted() -> None:
    nets: list[IPv4Network | IPv6Network] = [IPv4Network("10.1.0.0/16"), IPv6Network("fd00::/8")]
    Device(bytes(range(32))).set_peer(public_key_of(b"\x05" * 32), endpoint=None,
                                      allowed_ips=nets)


def test_next_deadline_and_tick_when_idle() -> None:
    pair = make_pair()
    assert pair.a.next_deadline() is None and pair.a.tick() == []
    connect(pair)
    deadline = pair.a.next_deadline()
    assert deadline is not None and pair.clock.now < deadline <= pair.clock.now + 15


def test_a_cookie_goes_stale_after_cookie_refresh_time() -> None:
    pair = make_pair(Limits(cookie_refresh_time=30))
    pair.b.under_load = True
    init = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    replies, _ = pair.b.receive(init[0][1], A_ADDR)
    pair.a.receive(replies[0][1], B_ADDR)
    peer = pair.a._peers[pair.b.public_key]
    assert pair.a._make_initiation(peer, pair.clock.now)[132:] != bytes(16)
    pair.clock.advance(31)
    assert pair.a._make_initiation(peer, pair.clock.now)[132:] == bytes(16)


def test_under_load_responses_need_mac2_too() -> None:
    pair = make_pair()
    init = flat(pair.a.send([ipv4("10.0.1.1", "10.0.2.1")]))
    replies, _ = pair.b.receive(init[0][1], A_ADDR)
    pair.a.under_load = True
    cookie, _ = pair.a.receive(replies[0][1], B_ADDR)
    assert [len(c) for _, c in cookie] == [64]
    assert pair.a.drops == {WGDrop.COOKIE_REQUIRED: 1}
    # b takes the cookie for its response (found by the response's sender index)
    assert pair.b.receive(cookie[0][1], A_ADDR) == ([], [])
    assert pair.b.drops == {} and pair.b._peers[pair.a.public_key].cookie is not None


def test_buffers_are_not_kept() -> None:
    """The shell reuses its read buffers: a queued packet is a copy, a datagram is opened
    during the call."""
    pair = make_pair()
    buf = bytearray(ipv4("10.0.1.1", "10.0.2.1", b"q" * 60))
    out = pair.a.send([memoryview(buf)])
    buf[30:40] = b"\xff" * 10  # the shell's next read lands in the same buffer
    assert pair.to_b(flat(out)) == [ipv4("10.0.1.1", "10.0.2.1", b"q" * 60)]
    rx = bytearray(flat(pair.a.send([memoryview(bytearray(ipv4("10.0.1.1", "10.0.2.1")))]))[0][1])
    _, packets = pair.b.receive(memoryview(rx), A_ADDR)
    rx[:] = bytes(len(rx))
    assert packets == [ipv4("10.0.1.1", "10.0.2.1")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_send_never_raises(packets: list[bytes]) -> None:
    FUZZ_PAIR.a.send([memoryview(p) if i % 2 else p for i, p in enumerate(packets)])
