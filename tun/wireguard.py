"""WireGuard messages on the wire, as the WireGuard whitepaper (§5.4) lays them out. Pure:
bytes in, bytes out; no keys, no clock.

Every message starts with a one-byte type and three reserved zero bytes; integers are
little-endian. Four messages:

    1 handshake initiation (148): sender index, unencrypted ephemeral (32), encrypted
      static (32 + 16), encrypted TAI64N timestamp (12 + 16), mac1 (16), mac2 (16)
    2 handshake response (92): sender index, receiver index, unencrypted ephemeral (32),
      encrypted nothing (0 + 16), mac1, mac2
    3 cookie reply (64): receiver index, nonce (24), encrypted cookie (16 + 16)
    4 transport data (16 + n): receiver index, counter (8), encrypted packet (n >= 16)

mac1 covers every byte before it and mac2 every byte before it (mac1 included): MAC1_OFFSET
and MAC2_OFFSET give their places per message type. The keyed parts (building the AEADs
and the macs) live in backends/_wgnoise.py.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from lease.errors import DecodeError

Buffer = bytes | bytearray | memoryview


class MessageType(enum.IntEnum):
    INITIATION = 1
    RESPONSE = 2
    COOKIE_REPLY = 3
    TRANSPORT = 4


KEY_LEN: Final = 32
TAG_LEN: Final = 16  # Poly1305
MAC_LEN: Final = 16
TIMESTAMP_LEN: Final = 12  # TAI64N
COOKIE_NONCE_LEN: Final = 24  # XChaCha20
INITIATION_LEN: Final = 148
RESPONSE_LEN: Final = 92
COOKIE_REPLY_LEN: Final = 64
TRANSPORT_HEADER_LEN: Final = 16
TRANSPORT_MIN_LEN: Final = TRANSPORT_HEADER_LEN + TAG_LEN  # a keepalive: no payload
PADDING: Final = 16  # plaintexts are zero-padded to a multiple of this
MESSAGE_LEN: Final = {MessageType.INITIATION: INITIATION_LEN,
                      MessageType.RESPONSE: RESPONSE_LEN,
                      MessageType.COOKIE_REPLY: COOKIE_REPLY_LEN}
MAC1_OFFSET: Final = {MessageType.INITIATION: INITIATION_LEN - 2 * MAC_LEN,
                      MessageType.RESPONSE: RESPONSE_LEN - 2 * MAC_LEN}
MAC2_OFFSET: Final = {MessageType.INITIATION: INITIATION_LEN - MAC_LEN,
                      MessageType.RESPONSE: RESPONSE_LEN - MAC_LEN}
# TAI64N label for 1970-01-01 00:00:10 TAI (= 00:00:00 UTC then), as wireguard-go writes it.
TAI64_BASE: Final = 0x400000000000000A

_INITIATION: Final = struct.Struct("<B3xI32s48s28s16s16s")
_RESPONSE: Final = struct.Struct("<B3xII32s16s16s16s")
_COOKIE_REPLY: Final = struct.Struct("<B3xI24s32s")
TRANSPORT_HEADER: Final = struct.Struct("<B3xIQ")  # type, receiver index, counter
_TAI64N: Final = struct.Struct(">QI")


@dataclass(frozen=True, slots=True)
class Initiation:
    sender: int
    ephemeral: bytes
    static: bytes  # encrypted: 48 bytes
    timestamp: bytes  # encrypted: 28 bytes
    mac1: bytes = bytes(MAC_LEN)
    mac2: bytes = bytes(MAC_LEN)


@dataclass(frozen=True, slots=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    empty: bytes  # encrypted nothing: the 16-byte tag
    mac1: bytes = bytes(MAC_LEN)
    mac2: bytes = bytes(MAC_LEN)


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    cookie: bytes  # encrypted: 32 bytes


@dataclass(frozen=True, slots=True)
class TransportHeader:
    receiver: int
    counter: int


def message_type(data: Buffer) -> MessageType:
    """The type of a datagram whose length fits it; DecodeError otherwise (an unknown type,
    nonzero reserved bytes, or a length the type does not have)."""
    if len(data) < 4:
        raise DecodeError(f"WireGuard message of {len(data)} bytes is a runt")
    kind = data[0]
    if kind not in _TYPES or data[1] or data[2] or data[3]:
        raise DecodeError(f"unknown WireGuard message type {bytes(data[:4]).hex()}")
    mtype = _TYPES[kind]
    if mtype is MessageType.TRANSPORT:
        if len(data) < TRANSPORT_MIN_LEN:
            raise DecodeError(f"WireGuard transport message of {len(data)} bytes is too short")
    elif len(data) != MESSAGE_LEN[mtype]:
        raise DecodeError(f"WireGuard {mtype.name.lower()} of {len(data)} bytes, "
                          f"not {MESSAGE_LEN[mtype]}")
    return mtype


_TYPES: Final = {int(t): t for t in MessageType}


def _check(data: Buffer, mtype: MessageType, length: int) -> None:
    if len(data) != length or data[0] != mtype or data[1] or data[2] or data[3]:
        raise DecodeError(f"not a WireGuard {mtype.name.lower()} of {length} bytes")


def encode_initiation(msg: Initiation) -> bytes:
    return _INITIATION.pack(MessageType.INITIATION, msg.sender, msg.ephemeral, msg.static,
                            msg.timestamp, msg.mac1, msg.mac2)


def decode_initiation(data: Buffer) -> Initiation:
    _check(data, MessageType.INITIATION, INITIATION_LEN)
    _, sender, eph, static, ts, mac1, mac2 = _INITIATION.unpack(data)
    return Initiation(sender, eph, static, ts, mac1, mac2)


def encode_response(msg: Response) -> bytes:
    return _RESPONSE.pack(MessageType.RESPONSE, msg.sender, msg.receiver, msg.ephemeral,
                          msg.empty, msg.mac1, msg.mac2)


def decode_response(data: Buffer) -> Response:
    _check(data, MessageType.RESPONSE, RESPONSE_LEN)
    _, sender, receiver, eph, empty, mac1, mac2 = _RESPONSE.unpack(data)
    return Response(sender, receiver, eph, empty, mac1, mac2)


def encode_cookie_reply(msg: CookieReply) -> bytes:
    return _COOKIE_REPLY.pack(MessageType.COOKIE_REPLY, msg.receiver, msg.nonce, msg.cookie)


def decode_cookie_reply(data: Buffer) -> CookieReply:
    _check(data, MessageType.COOKIE_REPLY, COOKIE_REPLY_LEN)
    _, receiver, nonce, cookie = _COOKIE_REPLY.unpack(data)
    return CookieReply(receiver, nonce, cookie)


def encode_transport_header(receiver: int, counter: int) -> bytes:
    return TRANSPORT_HEADER.pack(MessageType.TRANSPORT, receiver, counter)


def decode_transport_header(data: Buffer) -> TransportHeader:
    if len(data) < TRANSPORT_MIN_LEN or data[0] != MessageType.TRANSPORT or data[1] \
            or data[2] or data[3]:
        raise DecodeError(f"not a WireGuard transport message ({len(data)} bytes)")
    _, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
    return TransportHeader(receiver, counter)


def with_macs(message: Buffer, mac1: bytes, mac2: bytes) -> bytes:
    """`message` (an initiation or response) with its two macs replaced."""
    mtype = message_type(message)
    if mtype not in MAC1_OFFSET:
        raise DecodeError(f"a WireGuard {mtype.name.lower()} has no macs")
    if len(mac1) != MAC_LEN or len(mac2) != MAC_LEN:
        raise ValueError("a WireGuard mac is 16 bytes")
    return bytes(message[:MAC1_OFFSET[mtype]]) + mac1 + mac2


def padded_length(length: int, mtu: int = 0) -> int:
    """The whitepaper §5.4.6: round up to a multiple of 16, but not past the MTU (when
    given) unless the packet itself is longer."""
    padded = (length + PADDING - 1) & ~(PADDING - 1)
    if mtu and padded > mtu:
        return max(length, mtu)
    return padded


def encode_tai64n(unix_time: float) -> bytes:
    """TAI64N of a Unix time (seconds since the epoch, as time.time() gives)."""
    if unix_time < 0:
        raise ValueError("a TAI64N timestamp before 1970 is not written here")
    seconds = int(unix_time)
    nanos = min(int((unix_time - seconds) * 1e9), 999_999_999)
    return _TAI64N.pack(TAI64_BASE + seconds, nanos)


def decode_tai64n(data: Buffer) -> tuple[int, int]:
    """(TAI64 label, nanoseconds); compare these tuples to order timestamps."""
    if len(data) != TIMESTAMP_LEN:
        raise DecodeError(f"a TAI64N timestamp is 12 bytes, not {len(data)}")
    seconds, nanos = _TAI64N.unpack(data)
    return int(seconds), int(nanos)


def inner_length(packet: Buffer) -> int:
    """The length an IPv4 or IPv6 packet says it has (its padding cut off); DecodeError when
    the bytes are not an IP packet or are shorter than it says."""
    if not packet:
        raise DecodeError("empty inner packet")
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        length = packet[2] << 8 | packet[3]
        if 20 <= length <= len(packet):
            return length
    elif version == 6 and len(packet) >= 40:
        length = 40 + (packet[4] << 8 | packet[5])
        if length <= len(packet):
            return length
    raise DecodeError(f"inner packet of {len(packet)} bytes is not a whole IP packet")
