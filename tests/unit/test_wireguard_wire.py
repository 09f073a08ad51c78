"""tun/wireguard.py: the four WireGuard messages, TAI64N, padding, the inner length."""

from __future__ import annotations

import random

import pytest

from lease.errors import DecodeError
from tun import wireguard as wire

# A handshake initiation wireguard-go (Debian's 0.0.20220316) sent in
# tests/integration/test_wireguard_interop.py; tests/unit/test_wgnoise.py opens it.
GO_INITIATION = bytes.fromhex(
    "010000004886bb39a06e4a59ee8758ad26aff653eace59fe9d70bc1482cc65f93e9c75ae2388eb23da20ea"
    "09c36b664c95a4941e8d5c9d8d64e8a59953bd16418aa3678a51c0b1ff7497cde1e7d0cc8352c180de0b6a"
    "e2910d15bd5c206af0812fbb7b9e863e17d82c5a40816e2d8aa1ac83b9386312d00477ec5e28f290197674"
    "efd2ba00000000000000000000000000000000")


def test_a_real_initiation_decodes_and_encodes_back() -> None:
    msg = wire.decode_initiation(GO_INITIATION)
    assert msg.sender == int.from_bytes(GO_INITIATION[4:8], "little")
    assert msg.ephemeral == GO_INITIATION[8:40]
    assert len(msg.static) == 48 and len(msg.timestamp) == 28
    assert msg.mac2 == bytes(16)  # no cookie
    assert wire.encode_initiation(msg) == GO_INITIATION
    assert wire.message_type(GO_INITIATION) is wire.MessageType.INITIATION


def test_lengths_and_mac_offsets() -> None:
    assert len(GO_INITIATION) == wire.INITIATION_LEN == 148
    assert wire.MAC1_OFFSET[wire.MessageType.INITIATION] == 116
    assert wire.MAC2_OFFSET[wire.MessageType.INITIATION] == 132
    assert wire.MAC1_OFFSET[wire.MessageType.RESPONSE] == 60
    assert wire.MAC2_OFFSET[wire.MessageType.RESPONSE] == 76
    rng = random.Random(1)
    resp = wire.Response(7, 9, rng.randbytes(32), rng.randbytes(16), rng.randbytes(16),
                         rng.randbytes(16))
    data = wire.encode_response(resp)
    assert len(data) == 92 and data[:4] == b"\x02\0\0\0"
    assert data[4:8] == (7).to_bytes(4, "little") and data[8:12] == (9).to_bytes(4, "little")
    assert wire.decode_response(data) == resp
    cookie = wire.CookieReply(0xDEADBEEF, rng.randbytes(24), rng.randbytes(32))
    data = wire.encode_cookie_reply(cookie)
    assert len(data) == 64 and data[:8] == b"\x03\0\0\0\xef\xbe\xad\xde"
    assert wire.decode_cookie_reply(data) == cookie
    header = wire.encode_transport_header(0x01020304, 2**64 - 1)
    assert header == b"\x04\0\0\0\x04\x03\x02\x01" + b"\xff" * 8
    assert wire.decode_transport_header(header + bytes(16)) == wire.TransportHeader(
        0x01020304, 2**64 - 1)


@pytest.mark.parametrize("decode,data", [
    (wire.decode_initiation, GO_INITIATION),
    (wire.decode_response, wire.encode_response(wire.Response(1, 2, bytes(32), bytes(16)))),
    (wire.decode_cookie_reply, wire.encode_cookie_reply(wire.CookieReply(1, bytes(24),
                                                                          bytes(32)))),
    (wire.decode_transport_header, wire.encode_transport_header(1, 2) + bytes(16)),
])
def test_every_truncation_is_a_decode_error(decode: object, data: bytes) -> None:
    assert callable(decode)
    for n in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:n])
        with pytest.raises(DecodeError):
            wire.message_type(data[:n])
    bad = bytearray(data)
    bad[2] = 1  # a reserved byte set
    with pytest.raises(DecodeError):
        decode(bytes(bad))
    with pytest.raises(DecodeError):
        wire.message_type(bytes(bad))


def test_message_type_on_garbage_only_decode_errors() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(0, 200))
        try:
            kind = wire.message_type(data)
        except DecodeError:
            continue
        assert kind is wire.MessageType.TRANSPORT or len(data) == wire.MESSAGE_LEN[kind]


def test_with_macs_replaces_both() -> None:
    out = wire.with_macs(GO_INITIATION, b"\x11" * 16, b"\x22" * 16)
    assert out[:116] == GO_INITIATION[:116] and out[116:] == b"\x11" * 16 + b"\x22" * 16
    with pytest.raises(DecodeError):
        wire.with_macs(wire.encode_transport_header(1, 1) + bytes(16), bytes(16), bytes(16))


def test_tai64n() -> None:
    assert wire.encode_tai64n(0) == bytes.fromhex("400000000000000a00000000")
    assert wire.encode_tai64n(1.5) == bytes.fromhex("400000000000000b1dcd6500")
    assert wire.decode_tai64n(wire.encode_tai64n(1.5)) == (0x400000000000000B, 500_000_000)
    assert wire.decode_tai64n(wire.encode_tai64n(100.0)) < wire.decode_tai64n(
        wire.encode_tai64n(100.000001))
    with pytest.raises(DecodeError):
        wire.decode_tai64n(bytes(11))
    with pytest.raises(ValueError):
        wire.encode_tai64n(-1)


@pytest.mark.parametrize("length,mtu,padded", [
    (0, 0, 0), (1, 0, 16), (16, 0, 16), (17, 0, 32), (1420, 0, 1424),
    (1420, 1420, 1420), (1419, 1420, 1420), (1400, 1420, 1408), (1500, 1420, 1500),
])
def test_padding(length: int, mtu: int, padded: int) -> None:
    assert wire.padded_length(length, mtu) == padded


def test_inner_length() -> None:
    v4 = bytes([0x45, 0, 0, 28]) + bytes(24) + bytes(4)  # 28 bytes said, 4 of padding
    assert wire.inner_length(v4) == 28
    v6 = bytes([0x60, 0, 0, 0, 0, 8]) + bytes(34) + bytes(8)
    assert wire.inner_length(v6) == 48
    for bad in (b"", bytes([0x45, 0, 0, 40]) + bytes(16), bytes([0x45, 0, 0, 10]) + bytes(16),
                bytes([0x50]) + bytes(40), bytes([0x60, 0, 0, 0, 1, 0]) + bytes(34)):
        with pytest.raises(DecodeError):
            wire.inner_length(bad)
