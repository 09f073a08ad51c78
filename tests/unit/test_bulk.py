"""Tests for backends/_bulk.py: the rtnetlink requests, decoded by pyroute2 as the second
opinion, and the acknowledgement parser on byte vectors."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from backends._bulk import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    DumpedRoute,
    Miss,
    dump_request,
    encode,
    fdb_delete,
    fdb_replace,
    getneigh_filter,
    neigh_delete,
    neigh_replace,
    parse_acks,
    parse_misses,
    parse_routes,
    route_delete,
    route_replace,
)

MAC = bytes.fromhex("0e0102030405")


def decoded(message: bytes, kind: Any) -> Any:
    parsed = kind(message)
    parsed.decode()
    return parsed


def test_a_route_request_says_what_ip_route_replace_would() -> None:
    request = route_replace(IPv4Network("10.5.3.0/24"), IPv4Address("10.5.3.0"), 7, 70,
                            onlink=True)
    message = encode(request, 42)
    parsed = decoded(message, rtmsg)
    assert parsed["header"]["type"] == RTM_NEWROUTE == request.kind
    assert parsed["header"]["sequence_number"] == 42
    assert parsed["header"]["flags"] == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    assert parsed["header"]["length"] == len(message)
    assert (parsed["family"], parsed["dst_len"], parsed["proto"], parsed["table"]) == \
        (socket.AF_INET, 24, 70, 254)
    assert parsed["flags"] == 4 and parsed["type"] == 1 and parsed["scope"] == 0
    assert parsed.get_attr("RTA_DST") == "10.5.3.0"
    assert parsed.get_attr("RTA_GATEWAY") == "10.5.3.0"
    assert parsed.get_attr("RTA_OIF") == 7 and parsed.get_attr("RTA_TABLE") == 254
    assert "10.5.3.0/24 via 10.5.3.0" in request.what


def test_a_route_without_onlink() -> None:
    parsed = decoded(encode(route_replace(IPv4Network("10.6.0.0/16"), IPv4Address("192.0.2.9"),
                                          3, 70), 1), rtmsg)
    assert parsed["flags"] == 0 and parsed["dst_len"] == 16


def test_a_neighbour_request() -> None:
    message = encode(neigh_replace(IPv4Address("10.5.3.0"), MAC, 9), 5)
    parsed = decoded(message, ndmsg)
    assert parsed["header"]["type"] == RTM_NEWNEIGH
    assert (parsed["family"], parsed["ifindex"], parsed["state"], parsed["flags"]) == \
        (socket.AF_INET, 9, 0x80, 0)
    assert parsed.get_attr("NDA_DST") == "10.5.3.0"
    assert parsed.get_attr("NDA_LLADDR") == "0e:01:02:03:04:05"


def test_an_fdb_request() -> None:
    parsed = decoded(encode(fdb_replace(MAC, IPv4Address("192.0.2.7"), 9), 6), ndmsg)
    assert (parsed["family"], parsed["ifindex"], parsed["state"], parsed["flags"]) == \
        (7, 9, 0x80, 0x02)  # AF_BRIDGE, permanent, NTF_SELF
    assert parsed.get_attr("NDA_DST") == "192.0.2.7"
    assert parsed.get_attr("NDA_LLADDR") == "0e:01:02:03:04:05"


def ack(sequence: int, errno: int, echo: bytes = b"") -> bytes:
    body = struct.pack("=i", -errno) + struct.pack("=IHHII", 16 + len(echo), 24, 5,
                                                   sequence, 0) + echo
    return struct.pack("=IHHII", 16 + len(body), 2, 0x100, sequence, 1234) + body


def test_acks_are_read_by_sequence_number() -> None:
    data = ack(1, 0) + ack(2, 101, b"\0" * 8) + ack(3, 0)
    assert parse_acks(data) == {1: 0, 2: 101, 3: 0}


def test_a_truncated_or_foreign_buffer_gives_what_it_holds() -> None:
    whole = ack(1, 0) + ack(2, 17)
    assert parse_acks(whole[:-3]) == {1: 0, 2: 17}  # the errno is in, the echo cut short
    assert parse_acks(whole[:20]) == {1: 0}  # header and errno: enough
    assert parse_acks(whole[:19]) == {}
    assert parse_acks(b"") == {}
    assert parse_acks(struct.pack("=IHHII", 0, 2, 0, 1, 0)) == {}  # length 0: stop
    notice = struct.pack("=IHHII", 20, 24, 0, 9, 0) + b"\0" * 4  # not an ack
    assert parse_acks(notice + ack(4, 0)) == {4: 0}


def route_message(dst: str, dst_len: int, gateway: str | None, oif: int, proto: int,
                  flags: int = 0, table: int = 254, family: int = socket.AF_INET) -> bytes:
    def attr(kind: int, payload: bytes) -> bytes:
        return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)

    body = struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, table, proto, 0, 1, flags)
    body += attr(15, struct.pack("=I", table)) + attr(1, IPv4Address(dst).packed)
    if gateway:
        body += attr(5, IPv4Address(gateway).packed)
    body += attr(4, struct.pack("=I", oif))
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWROUTE, 2, 1, 0) + body


DONE = struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0" * 4


def test_a_route_dump_request_asks_for_our_protocol_in_the_main_table() -> None:
    parsed = decoded(dump_request(70, 9), rtmsg)
    assert parsed["header"]["type"] == 26 and parsed["header"]["flags"] == 0x301
    assert (parsed["family"], parsed["table"], parsed["proto"]) == (socket.AF_INET, 254, 70)


def test_a_dump_yields_our_routes_only_and_sees_its_end() -> None:
    data = (route_message("10.5.3.0", 24, "10.5.3.0", 7, 70, flags=4)
            + route_message("10.9.0.0", 16, "192.0.2.9", 2, 4)  # someone else's
            + route_message("10.5.4.0", 24, None, 2, 70)  # ours, no gateway
            + route_message("10.5.5.0", 24, "192.0.2.5", 2, 70, table=100)  # another table
            + route_message("10.5.6.0", 24, "192.0.2.6", 2, 70, family=socket.AF_INET6))
    routes, done = parse_routes(data, 70)
    assert not done
    assert routes == [
        DumpedRoute(IPv4Network("10.5.3.0/24"), IPv4Address("10.5.3.0"), 7, True),
        DumpedRoute(IPv4Network("10.5.4.0/24"), None, 2, False)]
    assert parse_routes(data + DONE, 70)[1]
    assert parse_routes(data[:-5], 70)[0] == routes  # a cut-off last message is left out
    assert parse_routes(b"\xff" * 7, 70) == ([], False)


def test_an_fdb_delete_request_is_acknowledged_but_creates_nothing() -> None:
    parsed = decoded(encode(fdb_delete(MAC, IPv4Address("192.0.2.7"), 9), 8), ndmsg)
    assert parsed["header"]["type"] == 29  # RTM_DELNEIGH
    assert parsed["header"]["flags"] == NLM_F_REQUEST | NLM_F_ACK
    assert (parsed["family"], parsed["flags"]) == (7, 0x02)
    assert parsed.get_attr("NDA_DST") == "192.0.2.7"
    assert parsed.get_attr("NDA_LLADDR") == "0e:01:02:03:04:05"


def test_a_route_delete_names_our_protocol_and_any_scope() -> None:
    request = route_delete(IPv4Network("10.5.3.0/24"), IPv4Address("10.5.3.0"), 7, 70,
                           onlink=True)
    parsed = decoded(encode(request, 3), rtmsg)
    assert parsed["header"]["type"] == 25  # RTM_DELROUTE
    assert parsed["header"]["flags"] == NLM_F_REQUEST | NLM_F_ACK  # neither create nor replace
    assert (parsed["family"], parsed["dst_len"], parsed["proto"], parsed["table"]) == \
        (socket.AF_INET, 24, 70, 254)
    assert (parsed["scope"], parsed["type"], parsed["flags"]) == (255, 0, 4)
    assert parsed.get_attr("RTA_DST") == "10.5.3.0"
    assert parsed.get_attr("RTA_GATEWAY") == "10.5.3.0"
    assert parsed.get_attr("RTA_OIF") == 7


def test_a_neighbour_delete_names_only_the_address() -> None:
    parsed = decoded(encode(neigh_delete(IPv4Address("10.5.3.0"), 9), 4), ndmsg)
    assert parsed["header"]["type"] == 29  # RTM_DELNEIGH
    assert parsed["header"]["flags"] == NLM_F_REQUEST | NLM_F_ACK
    assert (parsed["family"], parsed["ifindex"], parsed["state"]) == (socket.AF_INET, 9, 0)
    assert parsed.get_attr("NDA_DST") == "10.5.3.0"
    assert parsed.get_attr("NDA_LLADDR") is None


def neighbour_message(kind: int, family: int, ifindex: int, attrs: list[tuple[str, str]]) -> bytes:
    """What the kernel sends, encoded by pyroute2 (the second opinion)."""
    message = ndmsg()
    message["header"]["type"] = kind
    message["family"], message["ifindex"], message["attrs"] = family, ifindex, attrs
    message.encode()
    return bytes(message.data)


def test_misses_parse_as_pyroute2_would_give_them() -> None:
    l3 = neighbour_message(30, socket.AF_INET, 9, [("NDA_DST", "10.5.3.7")])
    l2 = neighbour_message(30, 7, 9, [("NDA_LLADDR", "0e:01:02:03:04:05")])
    v6 = neighbour_message(30, socket.AF_INET6, 4, [("NDA_DST", "fe80::1")])
    assert l3.hex() == "240000001e0000000000000000000000020000000900000000000000080001000a050307"
    assert parse_misses(l3 + l2 + v6) == [Miss(socket.AF_INET, 9, "10.5.3.7", None),
                                          Miss(7, 9, None, "0e:01:02:03:04:05"),
                                          Miss(socket.AF_INET6, 4, "fe80::1", None)]


def test_only_misses_are_taken_and_a_cut_message_ends_the_parse() -> None:
    change = neighbour_message(28, socket.AF_INET, 9, [("NDA_DST", "10.5.3.8"),
                                                       ("NDA_LLADDR", "0e:01:02:03:04:05")])
    miss = neighbour_message(30, socket.AF_INET, 9, [("NDA_DST", "10.5.3.7")])
    assert parse_misses(change + miss) == [Miss(socket.AF_INET, 9, "10.5.3.7", None)]
    assert parse_misses(miss[:-1]) == []  # shorter than its own length
    assert parse_misses(b"") == parse_misses(b"\0" * 16) == []
    odd = neighbour_message(30, socket.AF_INET, 9, [])  # no attributes at all
    assert parse_misses(odd) == [Miss(socket.AF_INET, 9, None, None)]
    # a destination of a length no address has is left out, not misread
    bad = bytearray(miss)
    bad[28:30] = struct.pack("=H", 7)
    assert parse_misses(bytes(bad))[0].dst is None


def test_the_socket_filter_keeps_type_30_only() -> None:
    """Classic BPF, run here by hand on the header: ld h [4]; jeq 30 ? accept : drop."""
    program = [struct.unpack_from("=HBBI", getneigh_filter(), at) for at in range(0, 32, 8)]
    assert [code for code, *_ in program] == [0x28, 0x15, 0x06, 0x06]

    def verdict(message: bytes) -> int:
        value = int.from_bytes(message[program[0][3]:program[0][3] + 2], "big")
        step = 1 + (program[1][1] if value == program[1][3] else program[1][2])
        return int(program[1 + step][3])

    assert verdict(neighbour_message(30, 2, 9, [])) == 0xFFFFFFFF
    assert verdict(neighbour_message(28, 2, 9, [])) == 0
    assert verdict(neighbour_message(29, 2, 9, [])) == 0


# -- IPv6 (flannel-v6.<VNI>, host-gw's IPv6 routes) ----------------------------------------


def test_an_ipv6_onlink_route_request_says_what_ip_6_route_replace_would() -> None:
    request = route_replace(IPv6Network("fc00:5:0:34::/64"), IPv6Address("fc00:5:0:34::"), 7,
                            70, onlink=True)
    parsed = decoded(encode(request, 3), rtmsg)
    assert (parsed["family"], parsed["dst_len"], parsed["proto"], parsed["flags"]) == \
        (socket.AF_INET6, 64, 70, 4)
    assert parsed.get_attr("RTA_DST") == "fc00:5:0:34::"
    assert parsed.get_attr("RTA_GATEWAY") == "fc00:5:0:34::"
    assert parsed.get_attr("RTA_OIF") == 7
    delete = decoded(encode(route_delete(IPv6Network("fc00:5:0:34::/64"),
                                         IPv6Address("2001:db8::2"), 2, 70), 4), rtmsg)
    assert delete["header"]["type"] == 25 and delete["family"] == socket.AF_INET6
    assert delete.get_attr("RTA_GATEWAY") == "2001:db8::2"


def test_ipv6_neighbour_and_fdb_requests() -> None:
    neigh = decoded(encode(neigh_replace(IPv6Address("fc00:5:0:34::"), MAC, 9), 1), ndmsg)
    assert (neigh["family"], neigh["ifindex"], neigh["state"]) == (socket.AF_INET6, 9, 0x80)
    assert neigh.get_attr("NDA_DST") == "fc00:5:0:34::"
    assert neigh.get_attr("NDA_LLADDR") == "0e:01:02:03:04:05"
    gone = decoded(encode(neigh_delete(IPv6Address("fc00:5:0:34::"), 9), 2), ndmsg)
    assert gone["family"] == socket.AF_INET6 and gone["header"]["type"] == 29
    fdb = decoded(encode(fdb_replace(MAC, IPv6Address("2001:db8::2"), 9), 3), ndmsg)
    assert (fdb["family"], fdb["flags"], fdb["state"]) == (7, 2, 0x80)
    assert fdb.get_attr("NDA_DST") == "2001:db8::2"
    assert fdb.get_attr("NDA_LLADDR") == "0e:01:02:03:04:05"
    assert fdb_delete(MAC, IPv6Address("2001:db8::2"), 9).body == \
        fdb_replace(MAC, IPv6Address("2001:db8::2"), 9).body


def route6_message(dst: str, dst_len: int, gateway: str | None, oif: int, proto: int) -> bytes:
    message = rtmsg()
    message["header"]["type"] = RTM_NEWROUTE
    message["family"], message["dst_len"], message["table"] = socket.AF_INET6, dst_len, 254
    message["proto"], message["type"] = proto, 1
    attrs: list[tuple[str, Any]] = [("RTA_TABLE", 254), ("RTA_DST", dst), ("RTA_OIF", oif)]
    if gateway:
        attrs.append(("RTA_GATEWAY", gateway))
    message["attrs"] = attrs
    message.encode()
    return bytes(message.data)


def test_an_ipv6_dump_yields_our_ipv6_routes_only() -> None:
    assert decoded(dump_request(70, 1, socket.AF_INET6), rtmsg)["family"] == socket.AF_INET6
    data = (route6_message("fc00:5:0:34::", 64, "2001:db8::2", 2, 70)
            + route6_message("fc00:9::", 32, "2001:db8::9", 2, 4)  # someone else's
            + route_message("10.5.3.0", 24, "10.5.3.0", 7, 70)  # IPv4: not in this dump
            + DONE)
    routes, done = parse_routes(data, 70, socket.AF_INET6)
    assert done and routes == [DumpedRoute(IPv6Network("fc00:5:0:34::/64"),
                                           IPv6Address("2001:db8::2"), 2, False)]
    v4, _ = parse_routes(data, 70)
    assert [route.dst for route in v4] == [IPv4Network("10.5.3.0/24")]
