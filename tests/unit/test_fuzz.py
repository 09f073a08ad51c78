"""Fuzz tests for every decoder: an input either decodes or raises the one decode error type.

Malformed input raises one `ValueError` subclass, "dropped" is a verdict, and random
garbage gives only "decode error" or "dropped", for the lease JSON, the network
config, subnet keys, subnet.env, VXLAN/Ethernet/ARP headers, MAC text, IPv4 headers and the
udp and vxlan packet codecs (which never raise: every input is a verdict).

Hypothesis runs derandomized (the same examples on every run, so CI is deterministic) with
three kinds of input per decoder: raw bytes or text; JSON-ish structures with keys in random
case (Go's decoder matches them case-insensitively) and number literals json.dumps never
writes (1e400, -0, 400-digit integers); and valid inputs, built with scapy or by hand, then
mutated (bytes flipped or overwritten, truncated, extended, cut) with the IPv4 header
checksum recomputed half of the time so that a mutated header gets past the first check.
The codecs are built with peers whose PublicIP is the fuzzed datagram's source, so the deep
paths (TTL, fragmentation, ICMP errors, ARP answers, checksum completion) are reached.

The *_CORPUS lists are the interesting cases known or found (NaN, lone surrogates, huge
numbers, deep nesting, IHL 0, a clear VXLAN I flag, ARP with the wrong hlen, ...): each is
a named vector that runs on every run, whatever Hypothesis draws.

An `@example` marked `# regression` is an input that broke a decoder's contract (found by
reading the decoder or by this fuzzer), kept so that it runs first every time: RecursionError
out of the JSON decoders on deep nesting, 1e400 decoded and then re-encoded as Infinity (not
JSON) by encode_lease_attrs, subnet keys that parse but are not the key of what they name.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IPOption
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from backends._codec import Answer, Drop, Dropped, Reply, Send, SendMany, Verdict, Write
from backends.udp import UDPCodec
from backends.vxlan import VXLANCodec
from flanneld.subnet_env import parse_subnet_env, previous_subnet
from lease.config import NetworkConfig, parse_network_config
from lease.errors import ConfigError, DecodeError
from lease.model import (
    LeaseAttrs,
    decode_lease,
    decode_lease_attrs,
    encode_lease_attrs,
    parse_subnet_key,
    subnet_key,
)
from tests.codecs import (
    MAC_B,
    MAC_C,
    OWN_MAC,
    OWN_VTEP,
    PUBLIC_B,
    PUBLIC_C,
    VNI,
    make_udp_codec,
    make_vxlan_codec,
    outcome,
)
from tests.scapy_ref import inner
from tun.packet import check_ipv4
from tun.vxlan import (
    ARP_LEN,
    ARP_REPLY,
    ETH_HEADER_LEN,
    HEADROOM,
    VXLAN_HEADER_LEN,
    decode_arp,
    decode_ethernet,
    decode_vxlan_header,
    encode_arp,
    encode_ethernet,
    format_mac,
    parse_mac,
)

FUZZ: Final = settings(max_examples=2000, derandomize=True, deadline=None, database=None,
                       suppress_health_check=[HealthCheck.too_slow])

SLACK: Final = 64  # the engine's buffers are larger than any packet: n, not len(buf), counts
FILL: Final = 0x5A  # what the headroom holds before the vxlan codec writes its header

DROP_REASONS: Final = frozenset(int(reason) for reason in Drop)

# Offsets worth overwriting (relative to the header): IPv4 version/IHL, total length,
# flags/fragment offset, TTL, protocol, destination; VXLAN flags and VNI, Ethernet
# destination and type; ARP htype, ptype, hlen, plen, op, target IP.
IPV4_HOT: Final = (0, 2, 3, 6, 7, 8, 9, 16, 17, 18, 19)
VXLAN_HOT: Final = (0, 1, 4, 5, 6, 7, 8, 13, 20, 21, *(HEADROOM + o for o in IPV4_HOT))
ARP_HOT: Final = (0, 1, 2, 3, 4, 5, 6, 7, 24, 25, 26, 27)


# --- building inputs ----------------------------------------------------------------------


def rfc1071(data: bytes | bytearray) -> int:
    """The Internet checksum the long way (big-endian words), independent of tun.packet."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fix_ipv4_checksum(data: bytearray, at: int = 0) -> None:
    """Recompute the header checksum of the IPv4 header at `at`, where its IHL fits."""
    if len(data) < at + 20:
        return
    ihl = (data[at] & 0x0F) * 4
    if ihl < 20 or at + ihl > len(data):
        return
    data[at + 10:at + 12] = b"\0\0"
    data[at + 10:at + 12] = rfc1071(data[at:at + ihl]).to_bytes(2, "big")


def ipv4(*, ihl: int = 5, total: int | None = None, ttl: int = 64, proto: int = 17,
         flags_offset: int = 0, src: str = "10.5.2.9", dst: str = "10.5.1.7",
         payload: bytes = b"", version: int = 4, good_checksum: bool = True) -> bytes:
    """An IPv4 packet by hand, fields as given (also the impossible ones): options of zeros
    fill an IHL above 5, the header is 20 bytes for an IHL below."""
    options = bytes(max(ihl * 4 - 20, 0))
    length = 20 + len(options) + len(payload) if total is None else total
    header = bytearray(struct.pack("!BBHHHBBHII", version << 4 | ihl, 0, length, 0x4242,
                                   flags_offset, ttl, proto, 0, int(IPv4Address(src)),
                                   int(IPv4Address(dst))) + options)
    header[10:12] = rfc1071(header).to_bytes(2, "big")
    if not good_checksum:
        header[11] ^= 0x01
    return bytes(header) + payload


def swap_addresses(packet: bytes) -> bytes:
    """Source and destination swapped: the header checksum stays valid (the ones'-complement
    sum does not depend on the order of the words)."""
    if len(packet) < 20:
        return packet
    return packet[:12] + packet[16:20] + packet[12:16] + packet[20:]


def with_partial_checksum(packet: bytes) -> bytes:
    """A TCP or UDP packet as a sender with checksum offload hands it on over a veth: the
    transport checksum field holds the folded pseudo-header sum, not yet complemented."""
    ihl = (packet[0] & 0x0F) * 4
    proto = packet[9]
    at = ihl + (16 if proto == 6 else 6)
    pseudo = packet[12:20] + bytes((0, proto)) + (len(packet) - ihl).to_bytes(2, "big")
    folded = ~rfc1071(pseudo) & 0xFFFF
    return packet[:at] + folded.to_bytes(2, "big") + packet[at + 2:]


def vxlan_frame(payload: bytes, *, vni: int = VNI, flags: int = 0x08, dst: str = OWN_MAC,
                src: str = MAC_B, ethertype: int = 0x0800) -> bytes:
    """A VXLAN datagram as the kernel's flannel.<VNI> sends it, built by scapy."""
    frame: Any = VXLAN(flags=flags, vni=vni) / Ether(dst=dst, src=src, type=ethertype)
    return bytes(frame / Raw(payload)) if payload else bytes(frame)


def arp(op: int = 1, target: str = OWN_VTEP, sender: str = "10.5.2.0",
        sender_mac: str = MAC_B) -> bytes:
    """What the peer kernel's flannel.<VNI> asks when it has no neighbour for `target`."""
    return bytes(ARP(op=op, hwsrc=sender_mac, psrc=sender, hwdst="00:00:00:00:00:00",
                     pdst=target))


def rewrite(data: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    out[offset:offset + len(value)] = value
    return bytes(out)


# --- seeds: valid inputs the mutators start from -----------------------------------------

ROUTER_ALERT: Final = IPOption(b"\x94\x04\x00\x00")
# From our subnet to a peer (and elsewhere): every branch of from_tun.
OUTBOUND: Final[tuple[bytes, ...]] = (
    inner(dst="10.5.2.9"),
    inner(dst="10.5.3.1", proto="tcp", size=60),
    inner(dst="10.5.2.9", proto="icmp", size=84),
    inner(dst="10.9.0.1"),
    inner(dst="10.5.2.9", ttl=1),
    inner(dst="10.5.2.9", size=1600),
    inner(dst="10.5.2.9", size=1600, flags="DF"),
    inner(dst="10.5.2.9", size=1600, options=[ROUTER_ALERT]),
    inner(dst="10.5.2.9", options=[ROUTER_ALERT]),
    ipv4(src="10.5.1.7", dst="10.5.2.9"),
)
# From a peer's subnet to ours: every branch of from_net, checksum completion included.
INBOUND: Final[tuple[bytes, ...]] = (
    inner(src="10.5.2.9", dst="10.5.1.7"),
    inner(src="10.5.2.9", dst="10.5.1.7", proto="tcp", size=200),
    inner(src="10.5.2.9", dst="10.5.1.7", proto="icmp", size=84),
    with_partial_checksum(inner(src="10.5.2.9", dst="10.5.1.7", proto="tcp", size=200)),
    with_partial_checksum(inner(src="10.5.2.9", dst="10.5.1.7", size=101)),
    inner(src="10.5.2.9", dst="10.5.1.7", ttl=1),
    inner(src="10.5.2.9", dst="10.5.7.7"),
    inner(src="10.5.2.9", dst="10.5.1.7", options=[ROUTER_ALERT]),
    inner(src="10.5.2.9", dst="10.5.1.7", flags="MF"),
    ipv4(),
)
FRAMES: Final[tuple[bytes, ...]] = (
    *(vxlan_frame(packet) for packet in INBOUND),
    vxlan_frame(arp(), dst="ff:ff:ff:ff:ff:ff", ethertype=0x0806),
    vxlan_frame(arp(), ethertype=0x0806),
    vxlan_frame(arp(op=ARP_REPLY), ethertype=0x0806),
    vxlan_frame(arp(target="10.5.1.9"), ethertype=0x0806),
    vxlan_frame(INBOUND[0], vni=2),
    vxlan_frame(INBOUND[0], dst=MAC_C),
    vxlan_frame(bytes(IPv6(src="fc00::2", dst="fc00::1")), ethertype=0x86DD),
)
ARPS: Final[tuple[bytes, ...]] = (arp(), arp(op=ARP_REPLY), arp(target="10.5.1.9"))
VXLAN_HEADERS: Final[tuple[bytes, ...]] = (bytes(VXLAN(flags=0x08, vni=VNI)),
                                          bytes(VXLAN(flags=0x08, vni=0xFFFFFF)))


# --- strategies ---------------------------------------------------------------------------
# Hypothesis costs about a millisecond per example here and ~50 µs per draw, so the
# strategies draw little: a seed and a byte program of edits rather than one draw per edit,
# JSON snippets from a pool rather than a recursive strategy.

MUTATIONS: Final = 6  # flip a bit, set a byte, truncate, extend, insert, delete


def apply_edits(data: bytearray, program: bytes, hot: Sequence[int]) -> None:
    """Edit `data` as `program` says, three bytes an edit: the kind (its top bit: at a hot
    offset), where, and what (a bit, a byte, a length)."""
    for i in range(0, len(program) - 2, 3):
        kind, where, what = program[i], program[i + 1], program[i + 2]
        if kind % MUTATIONS == 3:  # extend with the rest of the program
            data += program[i + 3:] or bytes([what])
            return
        if not data and kind % MUTATIONS != 4:
            continue
        hot_here = [offset for offset in hot if offset < len(data)]
        at = hot_here[where % len(hot_here)] if kind & 0x80 and hot_here \
            else (where << 8 | what) % max(len(data), 1)
        edit = kind % MUTATIONS
        if edit == 0:
            data[at] ^= 1 << (what & 7)
        elif edit == 1:
            data[at] = what
        elif edit == 2:
            del data[at:]
        elif edit == 4:
            data[at:at] = bytes([what])
        else:
            del data[at:at + what % 8 + 1]


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], hot: Sequence[int] = IPV4_HOT,
            ip_at: int = 0) -> bytes:
    """A seed after the edits of a drawn program (an empty one leaves it intact); its IPv4
    header checksum (at `ip_at`) recomputed half of the time, so that a mutated header
    field is judged on its own."""
    data = bytearray(draw(st.sampled_from(seeds)))
    apply_edits(data, draw(st.binary(max_size=24)), hot)
    if draw(st.booleans()):
        fix_ipv4_checksum(data, ip_at)
    return bytes(data)


# Text: any code point, and (as often) text dense in lone surrogates.
SHORT_TEXT: Final = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),
    st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, exclude_categories=()),
            max_size=4))
ANY_TEXT: Final = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=120),
    st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, exclude_categories=()),
            max_size=20))
TEXT_PIECES: Final = ("0", "{", "}", "[", "]", ",", ":", '"', "\\", "\\u", "\\ud800", '"\\udfff"',
                      "NaN", "Infinity", "1e400", "-", " ", "\x00", "\ufeff", "null", "\ud800",
                      "/", ".", "&", "=", "\n", "\r", "\u2028", "#", "'")


def edit_text(text: str, program: bytes) -> str:
    """`text` after the edits of `program`: truncate, insert a piece of syntax, delete."""
    for i in range(0, len(program) - 1, 2):
        kind, what = program[i], program[i + 1]
        at = what * 7 % (len(text) + 1)
        if kind % 3 == 0:
            text = text[:at]
        elif kind % 3 == 1:
            text = text[:at] + TEXT_PIECES[kind % len(TEXT_PIECES)] + text[at:]
        else:
            text = text[:at] + text[at + kind % 4 + 1:]
    return text


def mutated_text(texts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(edit_text, texts, st.binary(min_size=2, max_size=8))


def random_case(word: str, mask: int) -> str:
    """`word` with letter i upper-cased where bit i of `mask` is set ("pUBLicip")."""
    return "".join(c.upper() if mask >> i & 1 else c.lower() for i, c in enumerate(word))


def case_variants(word: str) -> list[str]:
    """`word` as JSON keys: as written and in other cases (Go's decoder matches them all),
    and with a letter escaped (a decoder matches keys after unescaping)."""
    variants = {word, word.lower(), word.upper(), random_case(word, 0x5555),
                random_case(word, 0x3C3C), random_case(word, 0x0F0F)}
    keys = {json.dumps(variant) for variant in variants}
    keys.add(json.dumps(word[:-1])[:-1] + f"\\u{ord(word[-1]):04x}" + '"')
    return sorted(keys)


def cased(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from(case_variants(word))


CONFIG_FIELDS: Final = ("Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend",
                        "EnableIPv4", "EnableIPv6", "IPv6Network", "IPv6SubnetLen",
                        "IPv6SubnetMin", "IPv6SubnetMax", "EnableNFTables")
BACKEND_FIELDS: Final = ("Type", "VNI", "Port", "VtepMAC", "DirectRouting", "MTU", "Backend")
LEASE_FIELDS: Final = ("PublicIP", "PublicIPv6", "BackendType", "BackendData",
                       "BackendV6Data")
FIELDS: Final = CONFIG_FIELDS + BACKEND_FIELDS + LEASE_FIELDS

V4_ADDRS: Final = st.integers(0, 2**32 - 1).map(lambda n: str(IPv4Address(n)))
V4_CIDRS: Final = st.builds(lambda n, p: str(IPv4Network((n, p % 33), strict=False))
                            if p < 33 else f"{IPv4Address(n)}/{p - 33}",
                            st.integers(0, 2**32 - 1), st.integers(0, 65))
V6_ADDRS: Final = st.integers(0, 2**128 - 1).map(lambda n: str(IPv6Address(n)))
V6_CIDRS: Final = st.builds(lambda n, p: str(IPv6Network((n, p % 129), strict=False))
                            if p < 129 else f"{IPv6Address(n)}/{p - 129}",
                            st.integers(0, 2**128 - 1), st.integers(0, 257))

# JSON text the generators splice together: every kind of value a field may get, the
# awkward numbers json.dumps never writes, escapes, nesting.
NUMBERS: Final = ("0", "-0", "-0.0", "0e0", "-0e-0", "1", "-1", "24", "26", "28", "30", "31",
                  "64", "126", "24.0", "1e1", "1e400", "-1e400", "1E+309", "1e-400",
                  "4.9e-324", "1.7976931348623157e308", "18446744073709551616", "9" * 400,
                  "1" * 4301, "NaN", "Infinity", "-Infinity")
STRINGS: Final = ("", "udp", "vxlan", "VXLAN", "host-gw", "nope", MAC_B, "10.5.0.0/16",
                  "10.5.1.0", "10.5.255.0", "0.0.0.0", "0.0.0.0/0", "10.5.0.0/30",
                  "10.5.1.1/16", "10.5.0.0/255.255.0.0", "010.5.0.0/16", "10.0.0.1",
                  "fc00::/48", "fc00:0:0:ff::", "fe80::%eth0/64", "fe80::1%eth0", "fe80::1%",
                  "::ffff:10.0.0.1", "\\ud800", "\\udfff\\ud800", "\\ud83d\\ude00", "\\u0000",
                  'a\\"b', "\u2028", "\ud800")
SCALAR_POOL: Final = (*NUMBERS, "true", "false", "null",
                      *(f'"{s}"' for s in STRINGS))
OBJECT_POOL: Final = ('{"Type":"vxlan","VNI":1,"VtepMAC":"' + MAC_B + '"}',
                      '{"type":"UDP","port":8285}', '{"Type":"host-gw"}', '{"Type":null}',
                      '{"Type":""}', '{"Type":7}', '{"VNI":1e400}', '{"Type":"udp","Port":-1}',
                      '{"Type":"vxlan","Backend":{"Type":"udp","Backend":{"Type":"x"}}}',
                      '{"TYPE":"udp","type":"vxlan"}', "{}", "[]", "[[[[]]]]", '[{"a":[1]}]',
                      '{"a":{"b":{"c":null}}}', '{"\\ud800":1}')
VALUE_POOL: Final = SCALAR_POOL + OBJECT_POOL
KEY_POOL: Final = (*(key for field in FIELDS for key in case_variants(field)), '""', '"x"',
                   '"\\ud800"', '"publicip "', '"\u017fubnetLen"', '"Bac\u212aend"')
KEYS: Final = st.one_of(st.sampled_from(KEY_POOL), SHORT_TEXT.map(json.dumps))
SCALARS: Final = st.one_of(
    st.sampled_from(SCALAR_POOL),
    st.one_of(st.integers(), st.floats(), SHORT_TEXT, V4_ADDRS, V4_CIDRS, V6_ADDRS,
              V6_CIDRS).map(json.dumps))


def json_array(items: Sequence[str]) -> str:
    return "[" + ",".join(items) + "]"


def json_object(pairs: Sequence[tuple[str, str]]) -> str:
    """An object from (JSON key, JSON value) pairs: duplicates, in any case, stay."""
    return "{" + ",".join(f"{key}:{value}" for key, value in pairs) + "}"


VALUES: Final = st.one_of(
    SCALARS, st.sampled_from(OBJECT_POOL),
    st.lists(st.sampled_from(VALUE_POOL), max_size=3).map(json_array),
    st.lists(st.tuples(KEYS, st.sampled_from(VALUE_POOL)), max_size=3).map(json_object))


@st.composite
def documents(draw: st.DrawFn, first: str, first_values: st.SearchStrategy[str]) -> str:
    """A JSON object that mostly has `first` (Network, PublicIP), then any fields; one in
    four also turns IPv6 on with an IPv6Network."""
    pairs = draw(st.lists(st.tuples(KEYS, VALUES), max_size=4))
    if draw(st.integers(0, 3)) == 0:
        pairs += [(draw(cased("EnableIPv6")), "true"),
                  (draw(cased("IPv6Network")), json.dumps(draw(V6_CIDRS)))]
    if draw(st.integers(0, 9)):
        at = draw(st.integers(0, len(pairs)))
        pairs.insert(at, (draw(cased(first)), json.dumps(draw(first_values))))
    return json_object(pairs)


# json.loads(bytes) detects UTF-8/16/32 (with or without BOM); surrogatepass lets lone
# surrogates through to the decoder, as a hostile etcd value could.
ENCODINGS: Final = ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                    "utf-32-le", "utf-32-be")


def json_inputs(docs: st.SearchStrategy[str]) -> st.SearchStrategy[str | bytes]:
    """Documents, mutated documents, any value, any text; as text or encoded, or bytes."""
    texts = st.one_of(docs, mutated_text(docs), VALUES, ANY_TEXT)
    return st.one_of(
        docs, texts,
        st.builds(lambda text, codec: text.encode(codec, "surrogatepass"), texts,
                  st.sampled_from(ENCODINGS)),
        st.binary(max_size=120))


class Token(str):
    """JSON text to splice in as it is."""


def render(value: Any) -> str:
    return str(value) if isinstance(value, Token) else json.dumps(value)


@st.composite
def network_configs(draw: st.DrawFn) -> str:
    """A config that mostly holds together (SubnetMin/Max inside Network, on SubnetLen
    boundaries; IPv6 likewise), each optional field present or not, then up to two fields
    of any value on top."""
    prefix = draw(st.integers(0, 28))
    network = IPv4Network((draw(st.integers(0, 2**32 - 1)), prefix), strict=False)
    length = draw(st.integers(prefix + 2, 30))
    first, last = sorted(draw(st.integers(0, (1 << (length - prefix)) - 1)) for _ in "ab")
    size = 1 << (32 - length)
    fields: dict[str, Any] = {
        "Network": str(network), "SubnetLen": length,
        "SubnetMin": str(network.network_address + first * size),
        "SubnetMax": str(network.network_address + last * size),
        "Backend": Token(draw(st.sampled_from(OBJECT_POOL[:5]))),
        "EnableNFTables": draw(st.booleans())}
    if draw(st.booleans()):
        prefix6 = draw(st.integers(0, 124))
        network6 = IPv6Network((draw(st.integers(0, 2**128 - 1)), prefix6), strict=False)
        length6 = draw(st.integers(prefix6 + 2, 126))
        first, last = sorted(draw(st.integers(0, (1 << (length6 - prefix6)) - 1)) for _ in "ab")
        size6 = 1 << (128 - length6)
        fields |= {"EnableIPv6": True, "IPv6Network": str(network6), "IPv6SubnetLen": length6,
                   "IPv6SubnetMin": str(network6.network_address + first * size6),
                   "IPv6SubnetMax": str(network6.network_address + last * size6)}
    present = draw(st.integers(0, 2**len(fields) - 1))
    pairs = [(draw(cased(name)), render(value)) for i, (name, value) in enumerate(fields.items())
             if name == "Network" or present >> i & 1]
    pairs += draw(st.lists(st.tuples(KEYS, VALUES), max_size=2))
    return json_object(pairs)


@st.composite
def lease_values(draw: st.DrawFn) -> str:
    """A lease value as flannel writes it, each field but PublicIP present or not, then up to
    two fields of any value on top."""
    fields: dict[str, Any] = {
        "PublicIP": draw(V4_ADDRS),
        "PublicIPv6": draw(st.none() | V6_ADDRS),
        "BackendType": draw(st.sampled_from(["vxlan", "udp", "host-gw", "", "\u00e9"])),
        "BackendData": Token(draw(st.sampled_from(VALUE_POOL))),
        "BackendV6Data": Token(draw(st.sampled_from(VALUE_POOL)))}
    present = draw(st.integers(0, 2**len(fields) - 1))
    pairs = [(draw(cased(name)), render(value)) for i, (name, value) in enumerate(fields.items())
             if name == "PublicIP" or present >> i & 1]
    pairs += draw(st.lists(st.tuples(KEYS, VALUES), max_size=2))
    return json_object(pairs)


CONFIG_INPUTS: Final = json_inputs(network_configs() | documents("Network", V4_CIDRS))
LEASE_INPUTS: Final = json_inputs(lease_values() | documents("PublicIP", V4_ADDRS))

NUMERALS: Final = (*(str(n) for n in range(33)), "64", "128", "255", "256", "00", "024", "0010",
                   "\u0661\u0660", "\uff11", "\u0663", "4294967296", "9" * 30, "+1", "")


@st.composite
def subnet_key_like(draw: st.DrawFn) -> str:
    """a.b.c.d-len[&v6-len] with odd numerals: leading zeros, non-ASCII digits, too big."""
    numerals = st.sampled_from(NUMERALS)
    key = ".".join(draw(numerals) for _ in range(4)) + "-" + draw(numerals)
    if draw(st.booleans()):
        hextets = st.one_of(V6_CIDRS.map(lambda text: text.split("/")[0]),
                            st.text("0123456789abcdef:", max_size=24))
        key += "&" + draw(hextets) + "-" + draw(numerals)
    return key


CANONICAL_KEYS: Final = st.builds(
    lambda n, p, v6: subnet_key(IPv4Network((n, p), strict=False),
                                None if v6 is None else IPv6Network(v6, strict=False)),
    st.integers(0, 2**32 - 1), st.integers(0, 32),
    st.none() | st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)))


@st.composite
def spelled_keys(draw: st.DrawFn) -> str:
    """The key of a real subnet (and IPv6 subnet), spelled canonically or another way that
    names the same subnets: prefix lengths with leading zeros, IPv6 exploded."""
    subnet = IPv4Network((draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 32))),
                         strict=False)
    key = f"{subnet.network_address}-{subnet.prefixlen:0{draw(st.integers(1, 3))}d}"
    if draw(st.booleans()):
        subnet6 = IPv6Network((draw(st.integers(0, 2**128 - 1)), draw(st.integers(0, 128))),
                              strict=False)
        spelled = subnet6.network_address.exploded if draw(st.booleans()) \
            else str(subnet6.network_address)
        key += f"&{spelled}-{subnet6.prefixlen:0{draw(st.integers(1, 3))}d}"
    return key


SUBNET_KEYS: Final = st.one_of(SHORT_TEXT, subnet_key_like(), CANONICAL_KEYS, spelled_keys(),
                               mutated_text(CANONICAL_KEYS))

ENV_KEYS: Final = ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ",
                   "FLANNEL_IPV6_SUBNET", "", " ", "#")
ENV_VALUES: Final = st.one_of(
    st.sampled_from(STRINGS), V4_CIDRS, V6_CIDRS, SHORT_TEXT,
    st.builds("{0}{1}{0}".format, st.sampled_from(['"', "'", " "]), V4_CIDRS))
ENV_LINES: Final = st.one_of(
    st.builds("{}={}".format, st.sampled_from(ENV_KEYS) | SHORT_TEXT, ENV_VALUES),
    st.sampled_from(["", "#", "# FLANNEL_SUBNET=x", "=", "==", "=x", "x", " = ", "\x00"]))
ENV_TEXT: Final = st.one_of(
    ANY_TEXT,
    st.builds(lambda lines, sep: sep.join(lines), st.lists(ENV_LINES, max_size=5),
              st.sampled_from(["\n", "\r\n", "\r", "\x0b", "\x85", "\u2028", "\x1e"])))


# --- checking verdicts --------------------------------------------------------------------


def check_udp_from_tun(codec: UDPCodec, buf: bytearray, n: int, verdict: Verdict) -> None:
    addrs = {route.addr for route in codec.routes.values()}
    assert int(outcome(verdict)[1]) in DROP_REASONS
    match verdict:
        case Send(addr, flow):
            assert flow == 0 and addr in addrs
            assert 20 <= n <= codec.mtu and buf[0] >> 4 == 4
        case Reply(data, reason):  # an ICMP error to the sender, a valid IPv4 packet
            assert reason in (Drop.NO_ROUTE, Drop.TTL_EXPIRED, Drop.OVERSIZED)
            assert isinstance(data, bytes) and check_ipv4(data, len(data)) == len(data)
            assert data[9] == 1 and rfc1071(data[20:]) == 0
        case SendMany(addr, pieces, reason):
            assert reason == Drop.OVERSIZED
            assert addr in addrs and pieces
            assert all(isinstance(p, bytes) and 20 <= len(p) <= codec.mtu for p in pieces)
        case Dropped(reason):
            assert reason != Drop.NONE
        case _:
            raise AssertionError(f"not a udp from_tun verdict: {verdict!r}")


def check_udp_from_net(codec: UDPCodec, before: bytes, buf: bytearray | memoryview, n: int,
                       verdict: Verdict) -> None:
    assert int(outcome(verdict)[1]) in DROP_REASONS
    match verdict:
        case Write(data):  # a valid packet for our subnet, TTL decremented
            assert isinstance(data, int) and 20 <= data <= n
            assert check_ipv4(buf, data) == data
            assert IPv4Address(bytes(buf[16:20])) in codec.own_subnet
            assert buf[8] == before[8] - 1
        case Dropped(reason):
            assert reason != Drop.NONE
            assert bytes(buf) == before  # a dropped datagram is left as it came
        case _:
            raise AssertionError(f"not a udp from_net verdict: {verdict!r}")


def check_vxlan_from_tun(codec: VXLANCodec, buf: bytearray, n: int, verdict: Verdict) -> None:
    match verdict:
        case Send(addr, flow):  # the flow hash picks the UDP source port
            assert 0 <= flow < 1 << 32 and 20 <= n <= codec.mtu
            routes = {(route.addr, route.header) for route in codec.routes.values()}
            assert (addr, bytes(buf[:HEADROOM])) in routes
        case Dropped(reason):
            assert int(reason) in DROP_REASONS - {Drop.NONE}
        case _:
            raise AssertionError(f"not a vxlan from_tun verdict: {verdict!r}")


def check_vxlan_from_net(codec: VXLANCodec, before: bytes, buf: bytearray | memoryview, n: int,
                         src_ip: str, verdict: Verdict) -> None:
    assert int(outcome(verdict)[1]) in DROP_REASONS
    match verdict:
        case Write(data):
            assert isinstance(data, int) and 20 <= data <= n - HEADROOM
            packet = memoryview(buf)[HEADROOM:HEADROOM + data]
            assert check_ipv4(packet, data) == data
            assert IPv4Address(bytes(packet[16:20])) in codec.own_subnet
        case Answer(addr, frame):  # an ARP reply for our VTEP, back to the asking peer
            assert addr == (src_ip, codec.port) and len(frame) == HEADROOM + ARP_LEN
            assert decode_vxlan_header(frame) == codec.vni
            assert decode_ethernet(frame[VXLAN_HEADER_LEN:])[1:] == (codec.own_mac, 0x0806)
            reply = decode_arp(frame[HEADROOM:])
            assert (reply.op, reply.sender_ip) == (ARP_REPLY, codec.vtep_ip)
            assert bytes(buf) == before
        case Dropped(reason):
            assert reason != Drop.NONE
            assert bytes(buf) == before
        case _:
            raise AssertionError(f"not a vxlan from_net verdict: {verdict!r}")


def run_udp_from_tun(packet: bytes) -> Verdict:
    codec = make_udp_codec()
    buf, n = bytearray(packet) + bytearray(b"\xa5" * SLACK), len(packet)
    verdict = codec.from_tun(buf, n)
    check_udp_from_tun(codec, buf, n, verdict)
    return verdict


def run_udp_from_net(datagram: bytes, src_ip: str, as_view: bool = False) -> Verdict:
    codec = make_udp_codec()
    raw = bytearray(datagram) + (b"" if as_view else bytearray(b"\xa5" * SLACK))
    buf: bytearray | memoryview = memoryview(raw) if as_view else raw
    before = bytes(buf)
    verdict = codec.from_net(buf, len(datagram), src_ip)
    check_udp_from_net(codec, before, buf, len(datagram), verdict)
    return verdict


def run_vxlan_from_tun(packet: bytes) -> Verdict:
    codec = make_vxlan_codec()
    buf = bytearray([FILL] * HEADROOM) + bytearray(packet) + bytearray(b"\xa5" * SLACK)
    verdict = codec.from_tun(buf, len(packet))
    check_vxlan_from_tun(codec, buf, len(packet), verdict)
    return verdict


def run_vxlan_from_net(datagram: bytes, src_ip: str,
                       as_view: bool = False) -> tuple[Verdict, VXLANCodec]:
    codec = make_vxlan_codec()
    raw = bytearray(datagram) + (b"" if as_view else bytearray(b"\xa5" * SLACK))
    buf: bytearray | memoryview = memoryview(raw) if as_view else raw
    before = bytes(buf)
    verdict = codec.from_net(buf, len(datagram), src_ip)
    check_vxlan_from_net(codec, before, buf, len(datagram), src_ip, verdict)
    return verdict, codec


# --- checking decoded values --------------------------------------------------------------


def config_or_error(text: str | bytes) -> NetworkConfig | None:
    """The contract: a NetworkConfig that holds together, or ConfigError; nothing else."""
    try:
        config = parse_network_config(text)
    except ConfigError:
        return None
    assert config.enable_ipv4 and 0 < config.subnet_len <= 30
    assert config.subnet_len >= config.network.prefixlen + 2
    assert config.subnet_min in config.network and config.subnet_max in config.network
    assert config.subnet_min <= config.subnet_max
    assert config.backend.type == config.backend.type.lower() != ""
    if config.enable_ipv6:
        assert config.ipv6_network is not None and config.ipv6_subnet_min is not None
        assert config.ipv6_subnet_min in config.ipv6_network
    return config


def attrs_or_error(value: str | bytes) -> LeaseAttrs | None:
    try:
        attrs = decode_lease_attrs(value)
    except DecodeError:
        return None
    assert isinstance(attrs.public_ip, IPv4Address)
    assert all(isinstance(s, str) for s in (attrs.backend_type, attrs.backend_data,
                                            attrs.backend_v6_data))
    return attrs


def check_round_trip(value: str | bytes) -> None:
    """What decodes, encodes to JSON that decodes again to the same attrs (as Go re-reads)."""
    attrs = attrs_or_error(value)
    if attrs is None:
        return
    wire = encode_lease_attrs(attrs)
    try:
        again = decode_lease_attrs(wire)
    except DecodeError as exc:
        raise AssertionError(f"{value!r} decodes, but its re-encoding {wire!r} does not: "
                             f"{exc}") from None
    assert again == attrs


def check_subnet_key(name: str) -> None:
    """A key either raises DecodeError or is the canonical key of what it names, so that the
    etcd key and Lease.key agree (the watch and the listing key their tables by them)."""
    try:
        subnet, ipv6 = parse_subnet_key(name)
    except DecodeError:
        return
    assert subnet.prefixlen <= 32 and (ipv6 is None or ipv6.prefixlen <= 128)
    assert subnet_key(subnet, ipv6) == name


def check_subnet_env(text: str) -> None:
    try:
        values = parse_subnet_env(text)
        subnet = previous_subnet(values)
    except DecodeError:
        return
    assert all(isinstance(k, str) and k == k.strip() != "" for k in values)
    assert all(isinstance(v, str) for v in values.values())
    assert subnet is None or isinstance(subnet, IPv4Network)


def check_headers(data: bytes) -> None:
    """`data` as a VXLAN header, an Ethernet header and an ARP packet: each decodes (and
    re-encodes to what it read) or raises DecodeError for a reason it can name."""
    try:
        vni = decode_vxlan_header(data)
    except DecodeError:
        assert len(data) < VXLAN_HEADER_LEN or not data[0] & 0x08
    else:
        assert vni == int.from_bytes(data[4:7], "big") and data[0] & 0x08
    try:
        dst, src, ethertype = decode_ethernet(data)
    except DecodeError:
        assert len(data) < ETH_HEADER_LEN
    else:
        assert encode_ethernet(dst, src, ethertype) == data[:ETH_HEADER_LEN]
    try:
        packet = decode_arp(data)
    except DecodeError:
        assert len(data) < ARP_LEN or data[:6] != b"\x00\x01\x08\x00\x06\x04"
    else:
        assert encode_arp(packet) == data[:ARP_LEN]


def check_mac(text: str) -> None:
    try:
        mac = parse_mac(text)
    except DecodeError:
        return
    assert len(mac) == 6 and format_mac(mac) == text.lower()


def check_ipv4_or_error(data: bytes, n: int) -> None:
    """check_ipv4 on buf[:n] of a buffer that may hold more: a total length that fits, or
    DecodeError."""
    try:
        total = check_ipv4(data, n)
    except DecodeError:
        return
    ihl = (data[0] & 0x0F) * 4
    assert 20 <= ihl <= total <= n and data[0] >> 4 == 4 and rfc1071(data[:ihl]) == 0


# --- fuzzing: lease JSON and network config -----------------------------------------------
# Each JSON input goes through both JSON decoders: config-like documents mostly exercise
# parse_network_config, lease-like ones decode_lease_attrs (and its round trip through
# encode_lease_attrs) and decode_lease.

LEASE_KEYS: Final = st.sampled_from(["10.5.34.0-24", "10.5.34.0-24&fc00:0:0:22::-64",
                                     "10.5.34.1-24", "10.5.34.0-33", ""])


@FUZZ
@given(CONFIG_INPUTS)
def test_config_like_json_decodes_or_raises_the_decode_error(text: str | bytes) -> None:
    config_or_error(text)
    attrs_or_error(text)


@FUZZ
@given(LEASE_INPUTS, LEASE_KEYS)
# regressions: 1e400 decoded, then re-encoded as Infinity (not JSON); the second the fuzzer's
@example('{"PublicIP":"10.0.0.1","BackendData":1e400}', "10.5.34.0-24")
@example('{"PUBLICIP":"0.0.0.0","BACKENDDATA":0,"BACKENDV6DATA":1e400}', "")
def test_lease_like_json_decodes_or_raises_the_decode_error_and_round_trips(
        value: str | bytes, name: str) -> None:
    config_or_error(value)
    check_round_trip(value)
    try:
        lease = decode_lease(name, value)
    except DecodeError:
        return
    assert lease.attrs == decode_lease_attrs(value)
    assert (lease.subnet, lease.ipv6_subnet) == parse_subnet_key(name)


DEPTHS: Final = (500, 990, 1000, 1010, 2000, 100_000)  # around Python's recursion limit


@FUZZ
@given(depth=st.one_of(st.integers(1, 64), st.sampled_from(DEPTHS)),
       opener=st.sampled_from(["[", '{"VNI":']))
@example(depth=100_000, opener="[")  # regression: RecursionError escaped
def test_deep_nesting_is_the_decode_error_or_decodes(depth: int, opener: str) -> None:
    nested = opener * depth + "0" + ("]" if opener == "[" else "}") * depth
    config_or_error(f'{{"Network":"10.5.0.0/16","Backend":{{"Type":"udp","X":{nested}}}}}')
    attrs_or_error(f'{{"PublicIP":"10.0.0.1","BackendData":{nested}}}'.encode())


# --- fuzzing: subnet keys, subnet.env, MAC text -------------------------------------------


@FUZZ
@given(SUBNET_KEYS)
@example("0.0.0.0-00")  # regression (the fuzzer's): parsed to 0.0.0.0/0, whose key is 0.0.0.0-0
@example("10.5.34.0-024")  # regression: parsed to 10.5.34.0/24, whose key is 10.5.34.0-24
@example("10.5.34.0-24&fc00:0000::-64")  # regression: IPv6 half not canonical
def test_subnet_keys_parse_to_their_canonical_form_or_raise_decode_error(name: str) -> None:
    check_subnet_key(name)


@FUZZ
@given(ENV_TEXT, ENV_VALUES)
def test_subnet_env_parses_or_raises_decode_error(text: str, value: str) -> None:
    check_subnet_env(text)
    try:  # a value as it may come from elsewhere (unstripped, multi-line)
        subnet = previous_subnet({"FLANNEL_SUBNET": value})
    except DecodeError:
        return
    assert subnet is None or isinstance(subnet, IPv4Network)


@FUZZ
@given(st.one_of(SHORT_TEXT, st.text("0123456789abcdefABCDEF:-\uff10\u0660", max_size=20),
                 mutated_text(st.sampled_from([OWN_MAC, MAC_B.upper()]))))
def test_parse_mac_decodes_or_raises_decode_error(text: str) -> None:
    check_mac(text)


# --- fuzzing: VXLAN, Ethernet and ARP headers ---------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=40), mutated(ARPS, hot=ARP_HOT),
                 mutated(VXLAN_HEADERS, hot=(0, 1, 4, 5, 6, 7))))
def test_frame_headers_decode_or_raise_decode_error(data: bytes) -> None:
    check_headers(data)


# --- fuzzing: the packet codecs (verdicts, never exceptions) and check_ipv4 ---------------

PEER_SOURCES: Final = st.one_of(st.sampled_from([PUBLIC_B, PUBLIC_C]),
                                st.sampled_from(["192.168.0.1", "", "10.5.2.9"]), SHORT_TEXT)


@FUZZ
@given(st.one_of(st.binary(max_size=64), mutated(OUTBOUND)))
def test_codecs_from_tun_never_raise(packet: bytes) -> None:
    run_udp_from_tun(packet)
    run_vxlan_from_tun(packet)


@FUZZ
@given(st.one_of(st.binary(max_size=64), mutated(INBOUND)), PEER_SOURCES, st.booleans(),
       st.integers(0, 64))
def test_udp_codec_from_net_never_raises(datagram: bytes, src_ip: str, as_view: bool,
                                         short: int) -> None:
    run_udp_from_net(datagram, src_ip, as_view)
    check_ipv4_or_error(datagram, max(len(datagram) - short, 0))


@FUZZ
@given(st.one_of(st.binary(max_size=96), mutated(FRAMES, hot=VXLAN_HOT, ip_at=HEADROOM)),
       PEER_SOURCES, st.booleans())
def test_vxlan_codec_from_net_never_raises(datagram: bytes, src_ip: str,
                                           as_view: bool) -> None:
    run_vxlan_from_net(datagram, src_ip, as_view)


def test_the_seeds_reach_every_deep_path() -> None:
    """Unmutated, the seeds take every branch past the first checks: the mutators start
    from there, so the fuzzer is not stuck at "runt" or "not a peer"."""
    tun_udp = {type(run_udp_from_tun(p)) for p in OUTBOUND}
    assert tun_udp == {Send, Reply, SendMany}
    assert {type(run_vxlan_from_tun(p)) for p in OUTBOUND} == {Send, Dropped}
    net_udp = {outcome(run_udp_from_net(p, PUBLIC_B)) for p in INBOUND}
    assert (Write, Drop.NONE) in net_udp and (Dropped, Drop.TTL_EXPIRED) in net_udp
    outcomes = [run_vxlan_from_net(frame, PUBLIC_B) for frame in FRAMES]
    reasons = {outcome(verdict) for verdict, _codec in outcomes}
    assert {(Write, Drop.NONE), (Answer, Drop.NONE), (Dropped, Drop.WRONG_VNI),
            (Dropped, Drop.WRONG_MAC), (Dropped, Drop.NOT_FOR_US),
            (Dropped, Drop.NOT_IPV4), (Dropped, Drop.TTL_EXPIRED)} <= reasons
    assert sum(codec.checksums_completed for _verdict, codec in outcomes) == 2
    assert config_or_error('{"network":"10.5.0.0/16","BACKEND":{"type":"VXLAN"}}') is not None
    assert attrs_or_error('{"publicip":"10.0.0.1","BACKENDDATA":{"VNI":1}}') is not None


# --- the corpus: interesting cases, each a named vector that always runs ------------------

DEEP: Final = 100_000
JSON_CORPUS: Final[list[tuple[str, str | bytes]]] = [
    ("empty", ""),
    ("empty bytes", b""),
    ("null", "null"),
    ("array", "[]"),
    ("empty object", "{}"),
    ("string", '"10.5.0.0/16"'),
    ("NaN", "NaN"),
    ("Infinity", "Infinity"),
    ("-Infinity", "-Infinity"),
    ("NaN value", '{"Network":"10.5.0.0/16","SubnetLen":NaN,"PublicIP":NaN}'),
    ("Infinity in Backend", '{"Network":"10.5.0.0/16","Backend":{"Type":"udp","Port":Infinity}}'),
    ("1e400 SubnetLen", '{"Network":"10.5.0.0/16","SubnetLen":1e400}'),
    ("1e400 in Backend", '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":1e400}}'),
    ("1e400 BackendData", '{"PublicIP":"10.0.0.1","BackendData":1e400}'),
    ("-1e400 BackendV6Data", '{"PublicIP":"10.0.0.1","BackendV6Data":[-1e400]}'),
    ("1e-400 BackendData", '{"PublicIP":"10.0.0.1","BackendData":1e-400}'),
    ("negative zero int", '{"Network":"10.5.0.0/16","SubnetLen":-0,"PublicIP":"10.0.0.1"}'),
    ("negative zero float",
     '{"Network":"10.5.0.0/16","SubnetLen":-0.0,"PublicIP":"10.0.0.1","BackendData":-0.0}'),
    ("SubnetLen 24.0", '{"Network":"10.5.0.0/16","SubnetLen":24.0}'),
    ("SubnetLen true", '{"Network":"10.5.0.0/16","SubnetLen":true}'),
    ("huge SubnetLen", '{"Network":"10.5.0.0/16","SubnetLen":' + "9" * 400 + "}"),
    ("int beyond the digit limit", '{"Network":"10.5.0.0/16","SubnetLen":' + "9" * 5000 + "}"),
    ("huge BackendData", '{"PublicIP":"10.0.0.1","BackendData":' + "9" * 4000 + "}"),
    ("lone surrogate", '"\\ud800"'),
    ("lone surrogate in a field", '{"Network":"\\ud800","PublicIP":"\\udfff"}'),
    ("lone surrogate key", '{"Network":"10.5.0.0/16","\\udc00":1,"PublicIP":"10.0.0.1"}'),
    ("raw lone surrogate", '{"PublicIP":"10.0.0.1","BackendType":"\ud800"}'),
    ("surrogate in UTF-8 bytes", b'{"PublicIP":"10.0.0.1","BackendType":"\xed\xa0\x80"}'),
    ("surrogate pair", '{"PublicIP":"10.0.0.1","BackendType":"\\ud83d\\ude00"}'),
    ("invalid UTF-8", b'{"PublicIP":"10.0.0.1","BackendType":"\xff"}'),
    ("BOM in text", '\ufeff{"Network":"10.5.0.0/16","PublicIP":"10.0.0.1"}'),
    ("UTF-8 BOM bytes", b'\xef\xbb\xbf{"Network":"10.5.0.0/16","PublicIP":"10.0.0.1"}'),
    ("UTF-16", '{"Network":"10.5.0.0/16","PublicIP":"10.0.0.1"}'.encode("utf-16")),
    ("odd UTF-16", b"\x00{\x00}\x00"),
    ("UTF-32 odd", b"\x00\x00\x00{\x00\x00"),
    ("NUL", '{"Network":"10.5.0.0/16\\u0000","PublicIP":"10.0.0.1\\u0000"}'),
    ("trailing garbage", '{"Network":"10.5.0.0/16","PublicIP":"10.0.0.1"} x'),
    ("keys in odd case", '{"nEtWoRk":"10.5.0.0/16","PUBLICIP":"10.0.0.1","backendtype":"udp"}'),
    ("duplicate keys, later wins",
     '{"Network":"10.6.0.0/16","NETWORK":"10.5.0.0/16","publicip":"x","PublicIP":"10.0.0.1"}'),
    ("duplicate keys, later bad", '{"Network":"10.5.0.0/16","network":7,"PublicIP":"10.0.0.1",'
                                  '"PUBLICIP":null}'),
    ("nested Backend", '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Backend":'
                       '{"Type":"udp","Backend":{"Type":"host-gw"}}}}'),
    ("Backend not an object", '{"Network":"10.5.0.0/16","Backend":"udp"}'),
    ("Backend Type null", '{"Network":"10.5.0.0/16","Backend":{"Type":null}}'),
    ("Backend Type in two cases", '{"Network":"10.5.0.0/16","Backend":{"type":"udp",'
                                  '"TYPE":"vxlan"}}'),
    ("Network /0", '{"Network":"0.0.0.0/0"}'),
    ("Network /30", '{"Network":"10.5.0.0/30"}'),
    ("Network at the top", '{"Network":"255.255.255.0/24","SubnetLen":26}'),
    ("Network with host bits", '{"Network":"10.5.1.1/16"}'),
    ("Network with a netmask", '{"Network":"10.5.0.0/255.255.0.0"}'),
    ("SubnetMin outside", '{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}'),
    ("SubnetMin off boundary", '{"Network":"10.5.0.0/16","SubnetMin":"10.5.255.255"}'),
    ("IPv6 /125", '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/125"}'),
    ("IPv6 with a zone", '{"Network":"10.5.0.0/16","EnableIPv6":true,'
                         '"IPv6Network":"fe80::%eth0/64"}'),
    ("IPv6 SubnetMax zone", '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":'
                            '"fc00::/48","IPv6SubnetMax":"fc00:0:0:ff::%1"}'),
    ("IPv6 only", '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}'),
    ("PublicIP leading zero", '{"PublicIP":"010.0.0.1"}'),
    ("PublicIP with a prefix", '{"PublicIP":"10.0.0.1/32"}'),
    ("PublicIP number", '{"PublicIP":167772161}'),
    ("PublicIPv6 with a zone", '{"PublicIP":"10.0.0.1","PublicIPv6":"fe80::1%eth0"}'),
    ("PublicIPv6 empty zone", '{"PublicIP":"10.0.0.1","PublicIPv6":"fe80::1%"}'),
    ("PublicIPv6 mapped", '{"PublicIP":"10.0.0.1","PublicIPv6":"::ffff:10.0.0.1"}'),
    ("BackendType not a string", '{"PublicIP":"10.0.0.1","BackendType":["vxlan"]}'),
    ("BackendData string", '{"PublicIP":"10.0.0.1","BackendData":"{\\"VNI\\":1}"}'),
    ("BackendData false", '{"PublicIP":"10.0.0.1","BackendData":false}'),
    ("BackendData with escapes",
     '{"PublicIP":"10.0.0.1","BackendData":{"VtepMAC":"\\u0000\\"\\\\\\u2028"}}'),
    ("nested arrays, deep", "[" * DEEP + "]" * DEEP),
    ("nested objects, deep", '{"a":' * DEEP + "0" + "}" * DEEP),
    ("deep in Backend", '{"Network":"10.5.0.0/16","Backend":{"Type":"udp","X":'
                        + "[" * DEEP + "]" * DEEP + "}}"),
    ("deep in BackendData", '{"PublicIP":"10.0.0.1","BackendData":' + "[" * DEEP + "]" * DEEP
                            + "}"),
    ("unclosed deep", "[" * DEEP),
]


@pytest.mark.parametrize("text", [v for _, v in JSON_CORPUS], ids=[k for k, _ in JSON_CORPUS])
def test_json_corpus_network_config(text: str | bytes) -> None:
    config_or_error(text)


@pytest.mark.parametrize("value", [v for _, v in JSON_CORPUS], ids=[k for k, _ in JSON_CORPUS])
def test_json_corpus_lease_attrs(value: str | bytes) -> None:
    check_round_trip(value)
    try:
        lease = decode_lease("10.5.34.0-24", value)
    except DecodeError:
        return
    assert lease.attrs == decode_lease_attrs(value)


KEY_CORPUS: Final[list[tuple[str, str]]] = [
    ("canonical", "10.5.34.0-24"),
    ("dual stack", "10.5.34.0-24&fc00:0:0:22::-64"),
    ("empty", ""),
    ("dash", "-"),
    ("prefix leading zero", "10.5.34.0-024"),
    ("IPv6 not canonical", "10.5.34.0-24&fc00:0000::-64"),
    ("IPv6 prefix leading zero", "10.5.34.0-24&fc00::-064"),
    ("octet leading zero", "010.5.34.0-24"),
    ("host bits", "10.5.34.1-24"),
    ("prefix 33", "10.5.34.0-33"),
    ("huge prefix", "10.5.34.0-99999999999999999999"),
    ("prefix beyond the digit limit", "10.5.34.0-" + "9" * 5000),
    ("plus sign", "10.5.34.0-+24"),
    ("Arabic-Indic digits", "\u0661\u0660.5.34.0-24"),
    ("fullwidth digit", "\uff11\uff10.5.34.0-24"),
    ("Arabic-Indic prefix", "10.5.34.0-\u0662\u0664"),
    ("trailing newline", "10.5.34.0-24\n"),
    ("no dots", "10x5x34x0-24"),
    ("IPv6 empty", "10.5.34.0-24&-64"),
    ("IPv6 colons", "10.5.34.0-24&" + ":" * 1000 + "-64"),
    ("IPv6 prefix 129", "10.5.34.0-24&fc00::-129"),
    ("IPv6 host bits", "10.5.34.0-24&fc00::1-64"),
    ("dangling ampersand", "10.5.34.0-24&"),
    ("lone surrogate", "10.5.34.0-24\ud800"),
]


@pytest.mark.parametrize("name", [v for _, v in KEY_CORPUS], ids=[k for k, _ in KEY_CORPUS])
def test_subnet_key_corpus(name: str) -> None:
    check_subnet_key(name)


ENV_CORPUS: Final[list[tuple[str, str]]] = [
    ("empty", ""),
    ("flannel's", "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\n"),
    ("empty subnet", "FLANNEL_SUBNET="),
    ("quoted", "FLANNEL_SUBNET='10.5.72.1/24'"),
    ("empty quotes", 'FLANNEL_SUBNET=""'),
    ("one quote", 'FLANNEL_SUBNET="'),
    ("no key", "=10.5.72.1/24"),
    ("no equals", "FLANNEL_SUBNET"),
    ("prefix 33", "FLANNEL_SUBNET=10.5.72.1/33"),
    ("netmask", "FLANNEL_SUBNET=10.5.72.1/255.255.255.0"),
    ("hostmask", "FLANNEL_SUBNET=10.5.72.1/0.0.0.255"),
    ("hex prefix", "FLANNEL_SUBNET=10.5.72.1/0x18"),
    ("IPv6 subnet", "FLANNEL_SUBNET=fc00::1/64"),
    ("two slashes", "FLANNEL_SUBNET=10.5.72.1/24/24"),
    ("non-ASCII digits", "FLANNEL_SUBNET=\u0661.2.3.4/8"),
    ("line separator", "\u2028FLANNEL_SUBNET=10.5.72.1/24\u2029"),
    ("CR only", "FLANNEL_SUBNET=10.5.72.1/24\rFLANNEL_MTU=1450"),
    ("lone surrogate", "FLANNEL_SUBNET=\ud800"),
    ("NUL", "\x00=\x00"),
    ("comment only", "# FLANNEL_SUBNET=10.5.72.1/24"),
    ("huge prefix", "FLANNEL_SUBNET=10.5.72.1/" + "9" * 5000),
]


@pytest.mark.parametrize("text", [v for _, v in ENV_CORPUS], ids=[k for k, _ in ENV_CORPUS])
def test_subnet_env_corpus(text: str) -> None:
    check_subnet_env(text)


# IPv4 packets from a peer's subnet to ours (src 10.5.2.9, dst 10.5.1.7): each runs through
# check_ipv4, both codecs inbound (bare and in a VXLAN frame) and, addresses swapped,
# outbound.
PACKET_CORPUS: Final[list[tuple[str, bytes]]] = [
    ("empty", b""),
    ("one byte", b"\x45"),
    ("19 bytes", ipv4()[:19]),
    ("header only", ipv4()),
    ("IHL 0", ipv4(ihl=0)),
    ("IHL 4", ipv4(ihl=4)),
    ("IHL 15 in 20 bytes", ipv4(ihl=15)[:20]),
    ("IHL 15", ipv4(ihl=15, payload=b"\x00" * 8)),
    ("total length 0", ipv4(total=0)),
    ("total length < IHL", ipv4(ihl=6, total=20)),
    ("total length > n", ipv4(total=21)),
    ("total length 65535", ipv4(total=0xFFFF)),
    ("bad checksum", ipv4(good_checksum=False)),
    ("version 6", ipv4(version=6)),
    ("version 0", ipv4(version=0)),
    ("real IPv6", bytes(IPv6(src="fc00::2", dst="fc00::1"))),
    ("TTL 0", ipv4(ttl=0)),
    ("TTL 1", ipv4(ttl=1)),
    ("TTL 2", ipv4(ttl=2)),
    ("TTL 255", ipv4(ttl=255)),
    ("ICMP", ipv4(proto=1, payload=b"\x08\x00\xf7\xff\x00\x00\x00\x00")),
    ("TCP without a header", ipv4(proto=6, payload=b"\x00" * 4)),
    ("UDP partial checksum, no payload", with_partial_checksum(ipv4(payload=bytes(8)))),
    ("TCP partial checksum", with_partial_checksum(ipv4(proto=6, payload=bytes(20)))),
    ("partial checksum of a fragment",
     with_partial_checksum(ipv4(proto=6, flags_offset=0x2000, payload=bytes(20)))),
    ("non-first fragment", ipv4(flags_offset=0x0001, payload=bytes(16))),
    ("last fragment offset", ipv4(flags_offset=0x1FFF, payload=bytes(1600))),
    ("oversized, DF", ipv4(flags_offset=0x4000, payload=bytes(1600))),
    ("oversized, MF", ipv4(flags_offset=0x2000, payload=bytes(1600))),
    ("oversized, IHL 15", ipv4(ihl=15, payload=bytes(1600))),
    ("oversized, total < IHL", ipv4(ihl=6, total=20, payload=bytes(1600))),
    ("oversized, IHL 0", ipv4(ihl=0, payload=bytes(1600))),
    ("all ones", b"\xff" * 64),
    ("all zeros", bytes(64)),
    ("maximal", ipv4(payload=bytes(0xFFFF - 20))),
]


@pytest.mark.parametrize("packet", [v for _, v in PACKET_CORPUS],
                         ids=[k for k, _ in PACKET_CORPUS])
def test_packet_corpus(packet: bytes) -> None:
    check_ipv4_or_error(packet, len(packet))
    for src_ip in (PUBLIC_B, "192.168.0.9"):
        for as_view in (False, True):
            run_udp_from_net(packet, src_ip, as_view)
            run_vxlan_from_net(vxlan_frame(packet), src_ip, as_view)
    run_udp_from_tun(swap_addresses(packet))
    run_vxlan_from_tun(swap_addresses(packet))


ARP_FRAME: Final = vxlan_frame(arp(), dst="ff:ff:ff:ff:ff:ff", ethertype=0x0806)
FRAME_CORPUS: Final[list[tuple[str, bytes]]] = [
    ("empty", b""),
    ("VXLAN header only", VXLAN_HEADERS[0]),
    ("21 bytes", vxlan_frame(b"")[:21]),
    ("headers only", vxlan_frame(b"")),
    ("I flag clear", rewrite(vxlan_frame(INBOUND[0]), 0, b"\x00")),
    ("only reserved flags", rewrite(vxlan_frame(INBOUND[0]), 0, b"\xf7")),
    ("all flags", rewrite(vxlan_frame(INBOUND[0]), 0, b"\xff\xff\xff\xff")),
    ("reserved VNI byte set", rewrite(vxlan_frame(INBOUND[0]), 7, b"\xff")),
    ("VNI 0", vxlan_frame(INBOUND[0], vni=0)),
    ("VNI 2^24-1", vxlan_frame(INBOUND[0], vni=0xFFFFFF)),
    ("broadcast IPv4", vxlan_frame(INBOUND[0], dst="ff:ff:ff:ff:ff:ff")),
    ("multicast dst", vxlan_frame(INBOUND[0], dst="01:00:5e:00:00:01")),
    ("VLAN tag", vxlan_frame(b"\x00\x01\x08\x00" + INBOUND[0], ethertype=0x8100)),
    ("ethertype 0", vxlan_frame(INBOUND[0], ethertype=0)),
    ("IPv6", vxlan_frame(bytes(IPv6(src="fc00::2", dst="fc00::1")), ethertype=0x86DD)),
    ("oversized super-packet", vxlan_frame(ipv4(payload=bytes(0xFFFF - 20))) + bytes(64)),
    ("ARP request for us", ARP_FRAME),
    ("ARP request unicast", vxlan_frame(arp(), ethertype=0x0806)),
    ("ARP request for another IP", vxlan_frame(arp(target="10.5.1.9"), ethertype=0x0806)),
    ("ARP reply", vxlan_frame(arp(op=ARP_REPLY), ethertype=0x0806)),
    ("ARP op 0", vxlan_frame(arp(op=0), ethertype=0x0806)),
    ("ARP wrong htype", rewrite(ARP_FRAME, HEADROOM, b"\x00\x06")),
    ("ARP wrong ptype", rewrite(ARP_FRAME, HEADROOM + 2, b"\x86\xdd")),
    ("ARP wrong hlen", rewrite(ARP_FRAME, HEADROOM + 4, b"\x05")),
    ("ARP wrong plen", rewrite(ARP_FRAME, HEADROOM + 5, b"\x10")),
    ("ARP hlen 0 plen 0", rewrite(ARP_FRAME, HEADROOM + 4, b"\x00\x00")),
    ("ARP truncated", ARP_FRAME[:HEADROOM + ARP_LEN - 1]),
    ("ARP with padding", ARP_FRAME + bytes(18)),
    ("ARP from our own VTEP", vxlan_frame(arp(sender=OWN_VTEP, sender_mac=OWN_MAC),
                                          dst="ff:ff:ff:ff:ff:ff", ethertype=0x0806)),
]


@pytest.mark.parametrize("frame", [v for _, v in FRAME_CORPUS], ids=[k for k, _ in FRAME_CORPUS])
def test_frame_corpus(frame: bytes) -> None:
    for src_ip in (PUBLIC_B, PUBLIC_C, "192.168.0.9"):
        for as_view in (False, True):
            run_vxlan_from_net(frame, src_ip, as_view)
            run_udp_from_net(frame, src_ip, as_view)
    for part in (frame, frame[VXLAN_HEADER_LEN:], frame[HEADROOM:]):
        check_headers(part)


MAC_CORPUS: Final[list[tuple[str, str]]] = [
    ("empty", ""),
    ("lower", OWN_MAC),
    ("upper", MAC_B.upper()),
    ("dashes", OWN_MAC.replace(":", "-")),
    ("trailing colon", OWN_MAC + ":"),
    ("five bytes", OWN_MAC[:14]),
    ("seven bytes", OWN_MAC + ":00"),
    ("trailing newline", OWN_MAC + "\n"),
    ("fullwidth digit", "\uff17e:3a:01:02:03:01"),
    ("Arabic-Indic digit", "\u0667e:3a:01:02:03:01"),
    ("single digits", "7e:3a:1:2:3:1"),
    ("no separators", OWN_MAC.replace(":", "")),
    ("lone surrogate", "\ud800"),
]


@pytest.mark.parametrize("text", [v for _, v in MAC_CORPUS], ids=[k for k, _ in MAC_CORPUS])
def test_mac_corpus(text: str) -> None:
    check_mac(text)
