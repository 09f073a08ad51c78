"""WireGuard without I/O: the Noise_IKpsk2 handshake, cookies, sessions, transport data and
the timers, as the WireGuard whitepaper describes them, interoperable with wireguard-go and
the Linux module. Sans-IO: datagrams and IP packets in, datagrams and IP packets out; the
clock, the wall clock and the randomness are injected (tests drive it with fakes). The
wire layout is tun/wireguard.py's.

A Device holds our static key and the peers; the shell (backends/wireguard.py) calls
  send(packets)            IP packets read from the TUN -> datagrams grouped per endpoint
  receive(datagram, src)   one UDP datagram -> (datagrams to send back, IP packets for TUN)
  tick()                   timers (retransmit, rekey, keepalive, key zeroing) -> datagrams
and next_deadline() says when tick() next has work. Nothing here raises on bad input from
the network: every dropped datagram or packet is counted in `drops` by WGDrop reason.

Crypto: X25519 and ChaCha20-Poly1305 from `cryptography`, BLAKE2s from hashlib (HASH, MAC =
keyed BLAKE2s-128, HMAC-BLAKE2s for the HKDF), XChaCha20-Poly1305 for cookie replies from
PyNaCl. Each session builds its two ChaCha20Poly1305 objects once; the data path is a
struct pack, one AEAD call and a concatenation per packet.

Counting: `drops` per reason; counters() has device totals where packets_*/bytes_* are the
inner IP packets (out = from the TUN, sent encrypted; in = decrypted, written to the TUN);
PeerStatus.rx_bytes/tx_bytes are wire bytes (UDP payloads), as `wg show` reports them.

Additions to the agreed interface (nothing renamed): Device(..., mtu=0) caps the padding at
the MTU as wireguard-go does (pass the TUN's MTU: a full-size packet then needs no padding
copy); Limits has queue_len (packets held per peer while waiting for a handshake) and the
message limits have the whitepaper's values as defaults; peer_for(packet) names the peer
an IP packet would go to; PeerStatus.has_session.

For the shell:
- send() puts handshake initiations in groups of their own, before the data groups; a data
  group holds one peer's datagrams in order, all the same size for same-size packets (so
  UDP GSO can take a run of them; only the last of a GSO send may be shorter).
- Buffers handed in are not kept: send() copies what it queues, receive() keeps nothing of
  the datagram; both may reuse their buffers as soon as the call returns.
- set_peer(endpoint=None) keeps an endpoint the peer was already at (learned by roaming).
- next_deadline() is None with no timer armed; keypair expiry is checked on use, so a
  tick every second or so is still wanted.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl import bindings as _nacl
from nacl.exceptions import CryptoError as _NaclError

from lease.errors import ConfigError, DecodeError
from tun import wireguard as wire

Address = tuple[str, int]
Buffer = bytes | bytearray | memoryview

CONSTRUCTION: Final = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER: Final = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1: Final = b"mac1----"
LABEL_COOKIE: Final = b"cookie--"
REPLAY_WINDOW: Final = 2048  # counters this far behind the highest seen are still accepted once
HANDSHAKE_INITIATION_RATE: Final = 1 / 50  # s between initiations we consume from one peer
MAX_JITTER: Final = 1 / 3  # s added to REKEY_TIMEOUT, as the whitepaper §6.1
ZERO_KEY: Final = bytes(32)
_NONCE: Final = struct.Struct("<4xQ")  # ChaCha20Poly1305 nonce: 32 zero bits, LE counter
_HEADER: Final = wire.TRANSPORT_HEADER
_U32: Final = struct.Struct(">I")
_U128: Final = struct.Struct(">QQ")
_PAD: Final = bytes(wire.PADDING)
_INDEX: Final = struct.Struct("<I")
_JITTER: Final = struct.Struct("<H")
_TRANSPORT_WORDS: Final = struct.Struct("<IIQ")  # type + reserved as one word: 4 for data
_CACHE_MAX: Final = 4096  # IPv4 destinations remembered per routing table


@dataclass(frozen=True, slots=True)
class Limits:
    """The whitepaper §6 constants (real WireGuard's); tests shorten them."""

    rekey_after_messages: int = 2**60
    reject_after_messages: int = 2**64 - 2**13 - 1
    rekey_after_time: float = 120.0
    reject_after_time: float = 180.0
    rekey_attempt_time: float = 90.0
    rekey_timeout: float = 5.0
    keepalive_timeout: float = 10.0
    cookie_refresh_time: float = 120.0
    queue_len: int = 128  # packets held per peer while a handshake is under way


class WGDrop(enum.IntEnum):
    """Why a datagram (receive) or an IP packet (send) went nowhere. Values are stable."""

    RUNT = 1  # shorter than any message
    UNKNOWN_TYPE = 2  # type byte not 1-4 or reserved bytes not zero
    BAD_LENGTH = 3  # a handshake message of the wrong size, transport shorter than 32
    BAD_MAC1 = 4
    COOKIE_REQUIRED = 5  # under load without a valid mac2: a cookie reply was sent instead
    BAD_HANDSHAKE = 6  # a handshake message that does not decrypt
    UNKNOWN_PEER = 7  # an initiation from a static key that is not a peer
    STALE_INITIATION = 8  # timestamp not newer than the last one seen (a replay)
    UNKNOWN_INDEX = 9  # receiver index of no session or handshake of ours
    REPLAYED = 10  # counter seen before or behind the replay window
    DECRYPT_FAILED = 11  # transport data that does not authenticate
    KEY_EXPIRED = 12  # session past REJECT_AFTER_TIME or REJECT_AFTER_MESSAGES
    NOT_ALLOWED_SOURCE = 13  # inner source not in the sending peer's allowed IPs
    NO_PEER = 14  # no peer's allowed IPs hold the destination
    NOT_IP = 15  # neither IPv4 nor IPv6, or shorter than its header says
    QUEUE_FULL = 16  # waiting for a handshake with the queue full: the oldest dropped
    NO_ENDPOINT = 17  # the peer has no endpoint to send a handshake to
    BAD_COOKIE = 18  # a cookie reply that does not decrypt
    HANDSHAKE_FLOOD = 19  # initiations from one peer faster than 50 per second
    HANDSHAKE_TIMEOUT = 20  # queued packets dropped after REKEY_ATTEMPT_TIME gave up


@dataclass(frozen=True, slots=True)
class PeerStatus:
    public_key: bytes
    endpoint: Address | None
    allowed_ips: tuple[IPv4Network | IPv6Network, ...]
    last_handshake: float | None  # wall clock (time.time()) of the last completed handshake
    rx_bytes: int
    tx_bytes: int
    keepalive: float
    has_session: bool


# --- primitives (the whitepaper §5.4) -------------------------------------------------

def blake2s_hash(*parts: Buffer) -> bytes:
    h = hashlib.blake2s()
    for part in parts:
        h.update(part)
    return h.digest()


def mac(key: Buffer, data: Buffer) -> bytes:
    """MAC(key, input): keyed BLAKE2s with a 16-byte digest."""
    return hashlib.blake2s(data, key=bytes(key), digest_size=16).digest()


def hmac_blake2s(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "blake2s")


def kdf(key: bytes, data: bytes, n: int) -> list[bytes]:
    """KDF_n(key, input): HKDF with HMAC-BLAKE2s, n outputs of 32 bytes."""
    prk = hmac_blake2s(key, data)
    out: list[bytes] = []
    prev = b""
    for i in range(1, n + 1):
        prev = hmac_blake2s(prk, prev + bytes([i]))
        out.append(prev)
    return out


def aead_seal(key: bytes, counter: int, plaintext: bytes, aad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_NONCE.pack(counter), plaintext, aad)


def aead_open(key: bytes, counter: int, ciphertext: bytes, aad: bytes) -> bytes:
    """Raises InvalidTag."""
    return ChaCha20Poly1305(key).decrypt(_NONCE.pack(counter), ciphertext, aad)


def _xseal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305 (cookie replies, the whitepaper §5.4.7), through PyNaCl."""
    return bytes(_nacl.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key))


def _xopen(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
    try:
        return bytes(_nacl.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce,
                                                                      key))
    except _NaclError:
        return None


def public_key_of(private_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519; ValueError for a public key of small order (an all-zero result)."""
    return private.exchange(X25519PublicKey.from_public_bytes(public))


CHAINING_KEY0: Final = blake2s_hash(CONSTRUCTION)
HASH0: Final = blake2s_hash(CHAINING_KEY0, IDENTIFIER)


# --- state ------------------------------------------------------------------------------

class _Keypair:
    """One session: the two transport keys, our index, the peer's, the replay window."""

    __slots__ = ("bitmap", "created_at", "expires_at", "initiator", "lastminute_at", "local",
                 "peer", "recv", "rekey_at", "remote", "send", "send_counter", "top")

    def __init__(self, peer: _Peer, send_key: bytes, recv_key: bytes, local: int, remote: int,
                 created_at: float, initiator: bool, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        self.peer = peer
        self.send = ChaCha20Poly1305(send_key)
        self.recv = ChaCha20Poly1305(recv_key)
        self.local = local
        self.remote = remote
        self.created_at = created_at
        self.initiator = initiator
        # the whitepaper §6 deadlines of this session, absolute on the injected clock
        self.expires_at = created_at + limits.reject_after_time
        never = float("inf")
        self.rekey_at = created_at + limits.rekey_after_time if initiator else never
        self.lastminute_at = created_at + limits.reject_after_time - limits.keepalive_timeout \
            - limits.rekey_timeout if initiator else never
        self.send_counter = 0
        self.top = -1  # highest counter received
        self.bitmap = 0  # bit i: counter top - i received

    def replayed(self, counter: int) -> bool:
        """Whether the counter was seen or is behind the window (no update)."""
        off = self.top - counter
        if off < 0:
            return False
        return off >= REPLAY_WINDOW or bool(self.bitmap >> off & 1)

    def mark(self, counter: int) -> None:
        """Record an authenticated counter (RFC 6479's window, as one Python int)."""
        shift = counter - self.top
        if shift > 0:
            self.bitmap = ((self.bitmap << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW \
                else 1
            self.top = counter
        else:
            self.bitmap |= 1 << -shift


_WINDOW_MASK: Final = (1 << REPLAY_WINDOW) - 1


class _Handshake:
    """Our initiation in flight: what the response is checked and keyed with."""

    __slots__ = ("chaining", "ephemeral", "hash", "local")

    def __init__(self, local: int, ephemeral: X25519PrivateKey, chaining: bytes,
                 hash_: bytes) -> None:
        self.local = local
        self.ephemeral = ephemeral
        self.chaining = chaining
        self.hash = hash_


class _Peer:
    __slots__ = ("allowed", "attempts_started_at", "cookie", "cookie_at", "cookie_key",
                 "current", "endpoint", "handshake", "keepalive", "keepalive_at",
                 "last_handshake", "last_initiation_at", "last_sent_initiation_at",
                 "last_sent_mac1", "last_sent_timestamp", "last_timestamp", "mac1_key",
                 "new_handshake_at", "next", "persistent_at", "previous", "psk", "public_key",
                 "queue", "retransmit_at", "rx_bytes", "sent_lastminute", "static_dh",
                 "tx_bytes", "zero_keys_at")

    def __init__(self, public_key: bytes, static_dh: bytes) -> None:
        self.public_key = public_key
        self.static_dh = static_dh  # DH(our static, their static), used by both directions
        self.mac1_key = blake2s_hash(LABEL_MAC1, public_key)
        self.cookie_key = blake2s_hash(LABEL_COOKIE, public_key)
        self.endpoint: Address | None = None
        self.allowed: tuple[IPv4Network | IPv6Network, ...] = ()
        self.psk = ZERO_KEY
        self.keepalive = 0.0
        self.current: _Keypair | None = None
        self.previous: _Keypair | None = None
        self.next: _Keypair | None = None
        self.handshake: _Handshake | None = None
        self.last_timestamp = (0, 0)  # newest TAI64N of an initiation from them
        self.last_sent_timestamp = (0, 0)
        self.last_initiation_at = -1e18  # when we last consumed one of their initiations
        self.last_sent_initiation_at = -1e18
        self.attempts_started_at = 0.0
        self.last_sent_mac1: bytes | None = None
        self.cookie: bytes | None = None
        self.cookie_at = 0.0
        self.queue: collections.deque[bytes] = collections.deque()
        self.retransmit_at: float | None = None
        self.keepalive_at: float | None = None
        self.new_handshake_at: float | None = None
        self.persistent_at: float | None = None
        self.zero_keys_at: float | None = None
        self.sent_lastminute = False
        self.last_handshake: float | None = None
        self.rx_bytes = 0
        self.tx_bytes = 0


class _Routes:
    """Allowed IPs, longest prefix first: per family a list of (mask, {network int: peer}),
    one dict per prefix length in use."""

    def __init__(self) -> None:
        self.v4: list[tuple[int, dict[int, _Peer]]] = []
        self.v6: list[tuple[int, dict[int, _Peer]]] = []

    @classmethod
    def build(cls, owners: dict[IPv4Network | IPv6Network, _Peer]) -> _Routes:
        routes = cls()
        for version, table, bits in ((4, routes.v4, 32), (6, routes.v6, 128)):
            by_len: dict[int, dict[int, _Peer]] = {}
            for net, peer in owners.items():
                if net.version == version:
                    by_len.setdefault(net.prefixlen, {})[int(net.network_address)] = peer
            for plen in sorted(by_len, reverse=True):
                mask = ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)
                table.append((mask, by_len[plen]))
        return routes


def _lookup(table: list[tuple[int, dict[int, _Peer]]], addr: int) -> _Peer | None:
    for mask, nets in table:
        peer = nets.get(addr & mask)
        if peer is not None:
            return peer
    return None


# --- the device ---------------------------------------------------------------------------

class Device:
    """One WireGuard interface: our static key, the peers, their sessions and timers."""

    def __init__(self, private_key: bytes, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 random: Callable[[int], bytes] = os.urandom, limits: Limits = Limits(),
                 mtu: int = 0) -> None:
        if len(private_key) != wire.KEY_LEN:
            raise ConfigError("a WireGuard private key is 32 bytes")
        self._static = X25519PrivateKey.from_private_bytes(bytes(private_key))
        self.public_key: bytes = self._static.public_key().public_bytes_raw()
        self._clock = clock
        self._wall = wall
        self._random = random
        self.limits = limits
        self.mtu = mtu
        self.under_load = False
        self.drops: collections.Counter[WGDrop] = collections.Counter()
        self._mac1_key = blake2s_hash(LABEL_MAC1, self.public_key)
        self._cookie_key = blake2s_hash(LABEL_COOKIE, self.public_key)
        self._hash_responder = blake2s_hash(HASH0, self.public_key)
        self._cookie_secret = b""
        self._cookie_secret_at = -1e18
        self._peers: dict[bytes, _Peer] = {}
        self._owners: dict[IPv4Network | IPv6Network, _Peer] = {}
        self._routes = _Routes()
        self._v4_cache: dict[int, _Peer | None] = {}
        self._sessions: dict[int, _Keypair] = {}  # our index -> session
        self._handshakes: dict[int, _Peer] = {}  # our index -> peer with our initiation
        self._responses: dict[int, _Peer] = {}  # our index in a response -> peer (cookies)
        self._n = {"handshakes_sent": 0, "handshakes_completed": 0, "rekeys": 0,
                   "keepalives_sent": 0, "cookie_replies_sent": 0}
        self.packets_out = 0
        self.bytes_out = 0
        self.packets_in = 0
        self.bytes_in = 0

    # -- configuration ---------------------------------------------------------------------

    def set_peer(self, public_key: bytes, *, endpoint: Address | None,
                 allowed_ips: Sequence[IPv4Network | IPv6Network], psk: bytes | None = None,
                 keepalive: float = 0.0) -> None:
        """Add a peer or update one in place (its sessions survive). An allowed IP another
        peer holds moves to this one, as in WireGuard."""
        key = bytes(public_key)
        if len(key) != wire.KEY_LEN:
            raise ConfigError("a WireGuard public key is 32 bytes")
        if psk is not None and len(psk) != wire.KEY_LEN:
            raise ConfigError("a WireGuard preshared key is 32 bytes")
        peer = self._peers.get(key)
        if peer is None:
            try:
                static_dh = dh(self._static, key)
            except ValueError:
                raise ConfigError("WireGuard public key is of small order (not a key)") from None
            peer = self._peers[key] = _Peer(key, static_dh)
        if endpoint is not None:
            peer.endpoint = (endpoint[0], endpoint[1])
        peer.psk = bytes(psk) if psk is not None else ZERO_KEY
        if keepalive != peer.keepalive:
            peer.keepalive = keepalive
            peer.persistent_at = self._clock() if keepalive > 0 else None
        for net, owner in list(self._owners.items()):
            if owner is peer:
                del self._owners[net]
        for net in allowed_ips:
            previous = self._owners.get(net)
            if previous is not None and previous is not peer:
                previous.allowed = tuple(n for n in previous.allowed if n != net)
            self._owners[net] = peer
        peer.allowed = tuple(dict.fromkeys(allowed_ips))
        self._routes = _Routes.build(self._owners)
        self._v4_cache.clear()

    def remove_peer(self, public_key: bytes) -> None:
        peer = self._peers.pop(bytes(public_key), None)
        if peer is None:
            return
        self._forget_keys(peer)
        self._owners = {net: p for net, p in self._owners.items() if p is not peer}
        self._routes = _Routes.build(self._owners)
        self._v4_cache.clear()

    def peer_for(self, packet: Buffer) -> bytes | None:
        """The public key of the peer whose allowed IPs hold the packet's destination."""
        if len(packet) >= 20 and packet[0] >> 4 == 4:
            peer = _lookup(self._routes.v4, _U32.unpack_from(packet, 16)[0])
        elif len(packet) >= 40 and packet[0] >> 4 == 6:
            hi, lo = _U128.unpack_from(packet, 24)
            peer = _lookup(self._routes.v6, hi << 64 | lo)
        else:
            return None
        return peer.public_key if peer is not None else None

    def peers(self) -> list[PeerStatus]:
        now = self._clock()
        return [PeerStatus(p.public_key, p.endpoint, p.allowed, p.last_handshake, p.rx_bytes,
                           p.tx_bytes, p.keepalive, self._usable(p.current, now))
                for p in self._peers.values()]

    def counters(self) -> dict[str, int]:
        return {**self._n, "packets_out": self.packets_out, "bytes_out": self.bytes_out,
                "packets_in": self.packets_in, "bytes_in": self.bytes_in,
                "drops": sum(self.drops.values())}

    # -- the data path ---------------------------------------------------------------------

    def send(self, packets: Sequence[Buffer]) -> list[tuple[Address, list[bytes]]]:
        """IP packets from the TUN -> encrypted datagrams, one group per endpoint in the
        order first used (handshake initiations in groups of their own, first). A peer
        without a usable session gets its packets queued and a handshake started."""
        now = self._clock()
        control: list[tuple[Address, list[bytes]]] = []
        groups: list[tuple[_Peer, list[bytes]]] = []
        last_peer: _Peer | None = None
        last_list: list[bytes] = []
        cache = self._v4_cache
        u32 = _U32.unpack_from
        header = _HEADER.pack
        nonce = _NONCE.pack
        mtu = self.mtu
        limits = self.limits
        reject_msgs = limits.reject_after_messages
        rekey_msgs = limits.rekey_after_messages - 1
        n_out = 0
        b_out = 0
        for packet in packets:
            length = len(packet)
            if length >= 20 and packet[0] >> 4 == 4:
                dst = u32(packet, 16)[0]
                try:
                    peer = cache[dst]
                except KeyError:
                    peer = self._cache_v4(dst)
            elif length >= 40 and packet[0] >> 4 == 6:
                hi, lo = _U128.unpack_from(packet, 24)
                peer = _lookup(self._routes.v6, hi << 64 | lo)
            else:
                self.drops[WGDrop.NOT_IP] += 1
                continue
            if peer is None:
                self.drops[WGDrop.NO_PEER] += 1
                continue
            kp = peer.current
            if kp is None or now >= kp.expires_at or kp.send_counter >= reject_msgs \
                    or peer.endpoint is None:
                self._enqueue(peer, bytes(packet), now, control)
                continue
            pad = -length & 15
            if pad and mtu and length + pad > mtu:
                pad = mtu - length if mtu > length else 0
            counter = kp.send_counter
            kp.send_counter = counter + 1
            datagram = header(4, kp.remote, counter) + kp.send.encrypt(
                nonce(counter), bytes(packet) + _PAD[:pad] if pad else packet, None)
            if peer is not last_peer:
                for p, lst in groups:
                    if p is peer:
                        last_list = lst
                        break
                else:
                    last_list = []
                    groups.append((peer, last_list))
                last_peer = peer
            last_list.append(datagram)
            n_out += 1
            b_out += length
            if counter >= rekey_msgs or now >= kp.rekey_at:
                self._initiate(peer, now, control)
        self.packets_out += n_out
        self.bytes_out += b_out
        result = control
        for peer, datagrams in groups:
            peer.tx_bytes += sum(map(len, datagrams))
            self._sent_data(peer, now)
            if peer.endpoint is not None:
                result.append((peer.endpoint, datagrams))
        return result

    def _cache_v4(self, dst: int) -> _Peer | None:
        """The longest-prefix answer for one IPv4 destination, remembered until the routes
        change (bounded: cleared when full)."""
        if len(self._v4_cache) >= _CACHE_MAX:
            self._v4_cache.clear()
        peer = self._v4_cache[dst] = _lookup(self._routes.v4, dst)
        return peer

    def receive(self, datagram: Buffer,
                src: Address) -> tuple[list[tuple[Address, bytes]], list[bytes]]:
        """One UDP datagram from `src` -> (datagrams to send, IP packets for the TUN).
        Transport data, the hot path, is opened here; everything else in _control()."""
        if len(datagram) < wire.TRANSPORT_MIN_LEN:
            return self._control(datagram, src)
        kind, index, counter = _TRANSPORT_WORDS.unpack_from(datagram)
        if kind != 4:  # type 4 with its reserved bytes zero: transport data
            return self._control(datagram, src)
        if len(src) != 2:
            src = (src[0], src[1])
        kp = self._sessions.get(index)
        if kp is None:
            self.drops[WGDrop.UNKNOWN_INDEX] += 1
            return [], []
        now = self._clock()
        if now >= kp.expires_at or counter >= self.limits.reject_after_messages:
            self.drops[WGDrop.KEY_EXPIRED] += 1
            return [], []
        top = kp.top
        behind = top - counter
        if behind >= 0 and (behind >= REPLAY_WINDOW or kp.bitmap >> behind & 1):
            self.drops[WGDrop.REPLAYED] += 1
            return [], []
        try:
            plain = kp.recv.decrypt(_NONCE.pack(counter), memoryview(datagram)[16:], None)
        except InvalidTag:
            self.drops[WGDrop.DECRYPT_FAILED] += 1
            return [], []
        # authenticated: into the replay window (RFC 6479's, as one Python int)
        if behind < 0:
            kp.bitmap = ((kp.bitmap << -behind) | 1) & _WINDOW_MASK \
                if -behind < REPLAY_WINDOW else 1
            kp.top = counter
        else:
            kp.bitmap |= 1 << behind
        peer = kp.peer
        peer.rx_bytes += len(datagram)
        out: list[tuple[Address, bytes]] = []
        if kp is peer.next:
            self._confirm(peer, kp, now, out)
        if peer.endpoint != src:
            peer.endpoint = src
        peer.new_handshake_at = None  # any authenticated packet received
        if peer.keepalive > 0:
            peer.persistent_at = now + peer.keepalive
        if now >= kp.lastminute_at and not peer.sent_lastminute:
            peer.sent_lastminute = True
            self._initiate(peer, now, [], out)
        length = len(plain)
        if not length:
            return out, []  # a keepalive
        if peer.keepalive_at is None:  # data received: a keepalive unless we send first
            peer.keepalive_at = now + self.limits.keepalive_timeout
        if length >= 20 and plain[0] >> 4 == 4:
            size = plain[2] << 8 | plain[3]
            source = _U32.unpack_from(plain, 12)[0]
            try:
                owner = self._v4_cache[source]
            except KeyError:
                owner = self._cache_v4(source)
        elif length >= 40 and plain[0] >> 4 == 6:
            size = 40 + (plain[4] << 8 | plain[5])
            hi, lo = _U128.unpack_from(plain, 8)
            owner = _lookup(self._routes.v6, hi << 64 | lo)
        else:
            self.drops[WGDrop.NOT_IP] += 1
            return out, []
        if size > length or size < 20:
            self.drops[WGDrop.NOT_IP] += 1
            return out, []
        if owner is not peer:
            self.drops[WGDrop.NOT_ALLOWED_SOURCE] += 1
            return out, []
        self.packets_in += 1
        self.bytes_in += size
        return out, [plain if size == length else plain[:size]]

    def _control(self, datagram: Buffer,
                 src: Address) -> tuple[list[tuple[Address, bytes]], list[bytes]]:
        """Handshake messages, cookie replies, and what is dropped for type or length."""
        n = len(datagram)
        if n < 4:
            self.drops[WGDrop.RUNT] += 1
            return [], []
        kind = datagram[0]
        try:
            mtype = wire.message_type(datagram)
        except DecodeError:
            self.drops[WGDrop.UNKNOWN_TYPE if kind not in (1, 2, 3, 4) or datagram[1]
                       or datagram[2] or datagram[3] else WGDrop.BAD_LENGTH] += 1
            return [], []
        if mtype is wire.MessageType.TRANSPORT:  # not reached: the hot path took it
            return [], []
        data = bytes(datagram)
        addr = (src[0], src[1])
        if mtype is wire.MessageType.COOKIE_REPLY:
            self._cookie_reply(data)
            return [], []
        out: list[tuple[Address, bytes]] = []
        if not self._check_macs(data, mtype, addr, out):
            return out, []
        if mtype is wire.MessageType.INITIATION:
            self._initiation(data, addr, out)
            return out, []
        return out, self._response(data, addr, out)

    # -- timers ------------------------------------------------------------------------

    def tick(self) -> list[tuple[Address, bytes]]:
        """Run the timers that are due: handshake retransmits and give-ups, keepalives
        (passive and persistent), handshakes for silent sessions, key zeroing."""
        now = self._clock()
        out: list[tuple[Address, bytes]] = []
        limits = self.limits
        for peer in list(self._peers.values()):
            if peer.retransmit_at is not None and now >= peer.retransmit_at:
                peer.retransmit_at = None
                if now - peer.attempts_started_at >= limits.rekey_attempt_time:
                    self._give_up(peer, now)
                else:
                    self._initiate(peer, now, [], out, retry=True)
            if peer.keepalive_at is not None and now >= peer.keepalive_at:
                peer.keepalive_at = None
                self._keepalive(peer, now, out)
            if peer.new_handshake_at is not None and now >= peer.new_handshake_at:
                peer.new_handshake_at = None
                self._initiate(peer, now, [], out)
            if peer.persistent_at is not None and now >= peer.persistent_at:
                peer.persistent_at = now + peer.keepalive
                self._keepalive(peer, now, out)
            if peer.zero_keys_at is not None and now >= peer.zero_keys_at:
                self._forget_keys(peer)
            for kp in (peer.previous, peer.current, peer.next):
                if kp is not None and now >= kp.expires_at:
                    self._drop_keypair(peer, kp)
        return out

    def next_deadline(self) -> float | None:
        times = [t for p in self._peers.values()
                 for t in (p.retransmit_at, p.keepalive_at, p.new_handshake_at,
                           p.persistent_at, p.zero_keys_at) if t is not None]
        return min(times) if times else None

    # -- internals: sending ----------------------------------------------------------------

    def _usable(self, kp: _Keypair | None, now: float) -> bool:
        return kp is not None and kp.send_counter < self.limits.reject_after_messages \
            and now < kp.expires_at

    def _enqueue(self, peer: _Peer, packet: bytes, now: float,
                 control: list[tuple[Address, list[bytes]]]) -> None:
        if len(peer.queue) >= self.limits.queue_len:
            peer.queue.popleft()
            self.drops[WGDrop.QUEUE_FULL] += 1
        peer.queue.append(packet)
        self._initiate(peer, now, control)

    def _initiate(self, peer: _Peer, now: float, control: list[tuple[Address, list[bytes]]],
                  out: list[tuple[Address, bytes]] | None = None, retry: bool = False) -> None:
        """Send a handshake initiation unless one went out less than REKEY_TIMEOUT ago
        (retransmits excepted); lands in `control` (send's shape) or `out`."""
        if not retry and now - peer.last_sent_initiation_at < self.limits.rekey_timeout:
            return
        if peer.endpoint is None:
            self.drops[WGDrop.NO_ENDPOINT] += 1
            return
        if not retry and peer.retransmit_at is None:
            peer.attempts_started_at = now
        message = self._make_initiation(peer, now)
        peer.last_sent_initiation_at = now
        self._n["handshakes_sent"] += 1
        jitter = _JITTER.unpack(self._random(2))[0] / 65536 * MAX_JITTER
        peer.retransmit_at = now + self.limits.rekey_timeout + jitter
        self._sent_any(peer, now)
        peer.tx_bytes += len(message)
        if out is not None:
            out.append((peer.endpoint, message))
        else:
            control.append((peer.endpoint, [message]))

    def _make_initiation(self, peer: _Peer, now: float) -> bytes:
        ephemeral = X25519PrivateKey.from_private_bytes(self._random(32))
        e_pub = ephemeral.public_key().public_bytes_raw()
        h = blake2s_hash(HASH0, peer.public_key)
        ck = kdf(CHAINING_KEY0, e_pub, 1)[0]
        h = blake2s_hash(h, e_pub)
        ck, key = kdf(ck, dh(ephemeral, peer.public_key), 2)
        static = aead_seal(key, 0, self.public_key, h)
        h = blake2s_hash(h, static)
        ck, key = kdf(ck, peer.static_dh, 2)
        stamp = self._timestamp(peer)
        timestamp = aead_seal(key, 0, stamp, h)
        h = blake2s_hash(h, timestamp)
        if peer.handshake is not None:
            self._handshakes.pop(peer.handshake.local, None)
        local = self._new_index()
        peer.handshake = _Handshake(local, ephemeral, ck, h)
        self._handshakes[local] = peer
        body = wire.encode_initiation(wire.Initiation(local, e_pub, static, timestamp))
        return self._seal_macs(peer, body, wire.MessageType.INITIATION, now)

    def _timestamp(self, peer: _Peer) -> bytes:
        stamp = wire.encode_tai64n(max(self._wall(), 0.0))
        value = wire.decode_tai64n(stamp)
        if value <= peer.last_sent_timestamp:  # two in one clock tick: still strictly newer
            secs, nanos = peer.last_sent_timestamp
            value = (secs + 1, 0) if nanos >= 999_999_999 else (secs, nanos + 1)
            stamp = struct.pack(">QI", *value)
        peer.last_sent_timestamp = value
        return stamp

    def _seal_macs(self, peer: _Peer, body: bytes, mtype: wire.MessageType,
                   now: float) -> bytes:
        offset = wire.MAC1_OFFSET[mtype]
        mac1 = mac(peer.mac1_key, body[:offset])
        peer.last_sent_mac1 = mac1
        if peer.cookie is not None and now - peer.cookie_at < self.limits.cookie_refresh_time:
            mac2 = mac(peer.cookie, body[:offset] + mac1)
        else:
            mac2 = bytes(wire.MAC_LEN)
        return body[:offset] + mac1 + mac2

    def _new_index(self) -> int:
        while True:
            index: int = _INDEX.unpack(self._random(4))[0]
            if index not in self._sessions and index not in self._handshakes \
                    and index not in self._responses:
                return index

    def _keepalive(self, peer: _Peer, now: float, out: list[tuple[Address, bytes]]) -> None:
        kp = peer.current
        if not self._usable(kp, now) or peer.endpoint is None:
            if peer.endpoint is not None:
                self._initiate(peer, now, [], out)
            return
        assert kp is not None
        out.append((peer.endpoint, self._seal(peer, kp, b"")))
        self._n["keepalives_sent"] += 1
        self._sent_any(peer, now)

    def _seal(self, peer: _Peer, kp: _Keypair, packet: bytes) -> bytes:
        length = len(packet)
        pad = -length & 15
        if pad and self.mtu and length + pad > self.mtu:
            pad = max(0, self.mtu - length)
        counter = kp.send_counter
        kp.send_counter = counter + 1
        datagram = _HEADER.pack(4, kp.remote, counter) + kp.send.encrypt(
            _NONCE.pack(counter), packet + _PAD[:pad], None)
        peer.tx_bytes += len(datagram)
        return datagram

    def _flush(self, peer: _Peer, now: float, out: list[tuple[Address, bytes]]) -> None:
        """Queued packets out through the new session; a keepalive if there were none."""
        kp = peer.current
        if kp is None or peer.endpoint is None:
            return
        if not peer.queue:
            self._keepalive(peer, now, out)
            return
        while peer.queue:
            packet = peer.queue.popleft()
            out.append((peer.endpoint, self._seal(peer, kp, packet)))
            self.packets_out += 1
            self.bytes_out += len(packet)
        self._sent_data(peer, now)

    def _sent_any(self, peer: _Peer, now: float) -> None:
        peer.keepalive_at = None
        if peer.keepalive > 0:
            peer.persistent_at = now + peer.keepalive

    def _sent_data(self, peer: _Peer, now: float) -> None:
        self._sent_any(peer, now)
        if peer.new_handshake_at is None:  # nothing back within this: a new handshake
            peer.new_handshake_at = now + self.limits.keepalive_timeout \
                + self.limits.rekey_timeout

    # -- internals: handshake messages -----------------------------------------------------

    def _cookie_secret_now(self, now: float) -> bytes:
        if not self._cookie_secret or now - self._cookie_secret_at >= \
                self.limits.cookie_refresh_time:
            self._cookie_secret = self._random(32)
            self._cookie_secret_at = now
        return self._cookie_secret

    def _cookie_for(self, addr: Address, now: float) -> bytes:
        try:
            ip = ip_address(addr[0]).packed
        except ValueError:
            ip = addr[0].encode()
        return mac(self._cookie_secret_now(now), ip + (addr[1] & 0xFFFF).to_bytes(2, "big"))

    def _check_macs(self, data: bytes, mtype: wire.MessageType, addr: Address,
                    out: list[tuple[Address, bytes]]) -> bool:
        offset = wire.MAC1_OFFSET[mtype]
        if not hmac.compare_digest(mac(self._mac1_key, data[:offset]),
                                   data[offset:offset + wire.MAC_LEN]):
            self.drops[WGDrop.BAD_MAC1] += 1
            return False
        if not self.under_load:
            return True
        now = self._clock()
        cookie = self._cookie_for(addr, now)
        mac2_at = offset + wire.MAC_LEN
        if hmac.compare_digest(mac(cookie, data[:mac2_at]), data[mac2_at:]):
            return True
        nonce = self._random(wire.COOKIE_NONCE_LEN)
        sealed = _xseal(self._cookie_key, nonce, cookie, data[offset:mac2_at])
        sender = _INDEX.unpack_from(data, 4)[0]
        out.append((addr, wire.encode_cookie_reply(wire.CookieReply(sender, nonce, sealed))))
        self._n["cookie_replies_sent"] += 1
        self.drops[WGDrop.COOKIE_REQUIRED] += 1
        return False

    def _cookie_reply(self, data: bytes) -> None:
        reply = wire.decode_cookie_reply(data)
        peer = self._handshakes.get(reply.receiver) or self._responses.get(reply.receiver)
        if peer is None:
            self.drops[WGDrop.UNKNOWN_INDEX] += 1
            return
        if peer.last_sent_mac1 is None:
            self.drops[WGDrop.BAD_COOKIE] += 1
            return
        cookie = _xopen(peer.cookie_key, reply.nonce, reply.cookie, peer.last_sent_mac1)
        if cookie is None:
            self.drops[WGDrop.BAD_COOKIE] += 1
            return
        peer.cookie = cookie
        peer.cookie_at = self._clock()

    def _initiation(self, data: bytes, addr: Address, out: list[tuple[Address, bytes]]) -> None:
        msg = wire.decode_initiation(data)
        now = self._clock()
        try:
            h = blake2s_hash(self._hash_responder, msg.ephemeral)
            ck = kdf(CHAINING_KEY0, msg.ephemeral, 1)[0]
            ck, key = kdf(ck, dh(self._static, msg.ephemeral), 2)
            static = aead_open(key, 0, msg.static, h)
            h = blake2s_hash(h, msg.static)
        except (InvalidTag, ValueError):
            self.drops[WGDrop.BAD_HANDSHAKE] += 1
            return
        peer = self._peers.get(static)
        if peer is None:
            self.drops[WGDrop.UNKNOWN_PEER] += 1
            return
        ck, key = kdf(ck, peer.static_dh, 2)
        try:
            stamp = aead_open(key, 0, msg.timestamp, h)
        except InvalidTag:
            self.drops[WGDrop.BAD_HANDSHAKE] += 1
            return
        h = blake2s_hash(h, msg.timestamp)
        when = wire.decode_tai64n(stamp)
        if when <= peer.last_timestamp:
            self.drops[WGDrop.STALE_INITIATION] += 1
            return
        if now - peer.last_initiation_at < HANDSHAKE_INITIATION_RATE:
            self.drops[WGDrop.HANDSHAKE_FLOOD] += 1
            return
        peer.last_timestamp = when
        peer.last_initiation_at = now
        # the response (the whitepaper §5.4.3)
        ephemeral = X25519PrivateKey.from_private_bytes(self._random(32))
        e_pub = ephemeral.public_key().public_bytes_raw()
        ck = kdf(ck, e_pub, 1)[0]
        h = blake2s_hash(h, e_pub)
        try:
            ck = kdf(ck, dh(ephemeral, msg.ephemeral), 1)[0]
            ck = kdf(ck, dh(ephemeral, peer.public_key), 1)[0]
        except ValueError:
            self.drops[WGDrop.BAD_HANDSHAKE] += 1
            return
        ck, tau, key = kdf(ck, peer.psk, 3)
        h = blake2s_hash(h, tau)
        empty = aead_seal(key, 0, b"", h)
        local = self._new_index()
        body = wire.encode_response(wire.Response(local, msg.sender, e_pub, empty))
        response = self._seal_macs(peer, body, wire.MessageType.RESPONSE, now)
        recv_key, send_key = kdf(ck, b"", 2)
        if peer.next is not None:
            self._drop_keypair(peer, peer.next)
        kp = _Keypair(peer, send_key, recv_key, local, msg.sender, now, initiator=False,
                      limits=self.limits)
        peer.next = kp
        self._sessions[local] = kp
        self._responses[local] = peer
        peer.endpoint = addr
        peer.zero_keys_at = now + 3 * self.limits.reject_after_time
        peer.new_handshake_at = None
        self._sent_any(peer, now)
        peer.rx_bytes += len(data)
        peer.tx_bytes += len(response)
        out.append((addr, response))

    def _response(self, data: bytes, addr: Address,
                  out: list[tuple[Address, bytes]]) -> list[bytes]:
        msg = wire.decode_response(data)
        peer = self._handshakes.get(msg.receiver)
        if peer is None or peer.handshake is None:
            self.drops[WGDrop.UNKNOWN_INDEX] += 1
            return []
        hs = peer.handshake
        now = self._clock()
        try:
            ck = kdf(hs.chaining, msg.ephemeral, 1)[0]
            h = blake2s_hash(hs.hash, msg.ephemeral)
            ck = kdf(ck, dh(hs.ephemeral, msg.ephemeral), 1)[0]
            ck = kdf(ck, dh(self._static, msg.ephemeral), 1)[0]
            ck, tau, key = kdf(ck, peer.psk, 3)
            h = blake2s_hash(h, tau)
            aead_open(key, 0, msg.empty, h)
        except (InvalidTag, ValueError):
            self.drops[WGDrop.BAD_HANDSHAKE] += 1
            return []
        send_key, recv_key = kdf(ck, b"", 2)
        del self._handshakes[hs.local]
        peer.handshake = None
        kp = _Keypair(peer, send_key, recv_key, hs.local, msg.sender, now, initiator=True,
                      limits=self.limits)
        self._sessions[hs.local] = kp
        self._rotate(peer, kp)
        peer.endpoint = addr
        peer.rx_bytes += len(data)
        peer.retransmit_at = None
        peer.new_handshake_at = None
        peer.zero_keys_at = now + 3 * self.limits.reject_after_time
        self._flush(peer, now, out)
        return []

    def _confirm(self, peer: _Peer, kp: _Keypair, now: float,
                 out: list[tuple[Address, bytes]]) -> None:
        """The initiator's first data on the session we answered: it becomes current."""
        peer.next = None
        self._responses.pop(kp.local, None)
        self._rotate(peer, kp)
        peer.retransmit_at = None
        if peer.handshake is not None:  # both sides initiated: ours is not needed now
            self._handshakes.pop(peer.handshake.local, None)
            peer.handshake = None
        if peer.queue:
            self._flush(peer, now, out)

    def _rotate(self, peer: _Peer, kp: _Keypair) -> None:
        """`kp` becomes current. A session we answered but that was not used yet (both
        sides initiated) is kept as previous rather than the older current, as
        wireguard-go does: the peer may already be sending on it."""
        if peer.current is not None:
            self._n["rekeys"] += 1
        if peer.previous is not None:
            self._drop_keypair(peer, peer.previous)
        if peer.next is not None and peer.next is not kp:
            if peer.current is not None:
                self._drop_keypair(peer, peer.current)
            peer.previous, peer.next = peer.next, None
        else:
            peer.previous = peer.current
        peer.current = kp
        peer.sent_lastminute = False
        peer.last_handshake = self._wall()
        self._n["handshakes_completed"] += 1

    def _drop_keypair(self, peer: _Peer, kp: _Keypair) -> None:
        self._sessions.pop(kp.local, None)
        self._responses.pop(kp.local, None)
        if peer.previous is kp:
            peer.previous = None
        if peer.current is kp:
            peer.current = None
        if peer.next is kp:
            peer.next = None

    def _forget_keys(self, peer: _Peer) -> None:
        for kp in (peer.previous, peer.current, peer.next):
            if kp is not None:
                self._drop_keypair(peer, kp)
        if peer.handshake is not None:
            self._handshakes.pop(peer.handshake.local, None)
            peer.handshake = None
        peer.zero_keys_at = None
        peer.retransmit_at = None

    def _give_up(self, peer: _Peer, now: float) -> None:
        """REKEY_ATTEMPT_TIME passed without an answer: queued packets go."""
        if peer.queue:
            self.drops[WGDrop.HANDSHAKE_TIMEOUT] += len(peer.queue)
            peer.queue.clear()
        if peer.handshake is not None:
            self._handshakes.pop(peer.handshake.local, None)
            peer.handshake = None
        peer.new_handshake_at = None
        if peer.current is None and peer.zero_keys_at is None:
            peer.zero_keys_at = now + 3 * self.limits.reject_after_time


def parse_key(text: str) -> bytes:
    """A base64 key as `wg` prints it -> 32 bytes; ConfigError otherwise."""
    import base64
    import binascii

    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("WireGuard key is not base64") from None
    if len(raw) != wire.KEY_LEN:
        raise ConfigError(f"WireGuard key is {len(raw)} bytes, not 32")
    return raw


def format_key(key: bytes) -> str:
    import base64

    return base64.b64encode(key).decode()

