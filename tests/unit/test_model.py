"""Tests for lease/model.py: subnet keys and lease values, byte-exact with Go flannel."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, Final

import pytest

from lease.errors import DecodeError
from lease.model import (
    EventKind,
    Lease,
    LeaseAttrs,
    LeaseEvent,
    backend_data,
    backend_data_json,
    by_key,
    decode_lease,
    decode_lease_attrs,
    diff_leases,
    encode_lease_attrs,
    parse_subnet_key,
    subnet_key,
)

REAL_EXAMPLE: Final = (
    b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
    b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
)
VXLAN_DATA: Final = '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}'
VXLAN_V6_DATA: Final = '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}'

# --- subnet keys -------------------------------------------------------------------------

KEY_VECTORS: Final[list[tuple[str, str | None, str]]] = [
    ("10.5.34.0/24", None, "10.5.34.0-24"),
    ("10.5.0.0/16", None, "10.5.0.0-16"),
    ("192.168.0.128/25", None, "192.168.0.128-25"),
    ("10.5.0.4/30", None, "10.5.0.4-30"),
    ("10.5.34.0/24", "fc00::/64", "10.5.34.0-24&fc00::-64"),
    ("10.5.34.0/24", "fc00:0:0:22::/64", "10.5.34.0-24&fc00:0:0:22::-64"),
    ("10.5.34.0/24", "2001:db8:1:2::/64", "10.5.34.0-24&2001:db8:1:2::-64"),
    ("10.5.0.4/30", "fc00::4/126", "10.5.0.4-30&fc00::4-126"),
]


@pytest.mark.parametrize(("subnet", "subnet6", "key"), KEY_VECTORS)
def test_subnet_key_encode(subnet: str, subnet6: str | None, key: str) -> None:
    net6 = IPv6Network(subnet6) if subnet6 is not None else None
    assert subnet_key(IPv4Network(subnet), net6) == key


@pytest.mark.parametrize(("subnet", "subnet6", "key"), KEY_VECTORS)
def test_subnet_key_decode(subnet: str, subnet6: str | None, key: str) -> None:
    net6 = IPv6Network(subnet6) if subnet6 is not None else None
    assert parse_subnet_key(key) == (IPv4Network(subnet), net6)


def test_subnet_key_default_is_ipv4_only() -> None:
    assert subnet_key(IPv4Network("10.5.34.0/24")) == "10.5.34.0-24"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "10.5.34.0",  # no length
        "10.5.34.0-",
        "-24",
        "10.5.34.0-33",  # length out of range
        "10.5.34.0-99999999999999999999",
        "10.5.34.1-24",  # host bits set
        "10.5.34.0-16",
        "a.b.c.d-24",  # not digits
        "10x5x34x0-24",  # not dots
        "10.5.34-24",
        "10.5.34.0.0-24",
        "256.5.34.0-24",
        "10.5.34.0/24",
        "10.5.34.0_24",
        " 10.5.34.0-24",
        "10.5.34.0-24 ",
        "10.5.34.0-24\n",
        "/coreos.com/network/subnets/10.5.34.0-24",
        "10.5.34.0-24&",
        "10.5.34.0-24&fc00::",
        "10.5.34.0-24&fc00::-",
        "10.5.34.0-24&fc00::1-64",  # IPv6 host bits set
        "10.5.34.0-24&fc00::-129",
        "10.5.34.0-24&FC00::-64",  # upstream's regex wants lower case
        "10.5.34.0-24&fc00:::-64",
        "10.5.34.0-24&10.0.0.0-8",
        "10.5.34.0-24&fc00::-64&fc01::-64",
        "\u0661\u0660.5.34.0-24",  # Arabic-Indic digits match \d but are not an address
        "10.5.34.0-\u0662\u0664",
    ],
)
def test_bad_subnet_keys(key: str) -> None:
    with pytest.raises(DecodeError):
        parse_subnet_key(key)


def test_subnet_key_truncations() -> None:
    key = "10.5.34.0-24"
    for cut in range(len(key)):
        with pytest.raises(DecodeError):
            parse_subnet_key(key[:cut])


def test_random_subnet_keys_parse_or_raise_decode_error() -> None:
    rng = random.Random(1234)
    alphabet = "0123456789.-&:abcdefx/ \u0663"
    seeds = [key for _, _, key in KEY_VECTORS]
    parsed = 0
    for i in range(4000):
        if i % 2:
            name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        else:
            chars = list(rng.choice(seeds))
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(len(chars) + 1)
                if rng.random() < 0.5 and pos < len(chars):
                    chars[pos] = rng.choice(alphabet)
                else:
                    chars.insert(pos, rng.choice(alphabet))
            name = "".join(chars)
        try:
            subnet, subnet6 = parse_subnet_key(name)
        except DecodeError:
            continue
        parsed += 1
        assert parse_subnet_key(subnet_key(subnet, subnet6)) == (subnet, subnet6)
    assert parsed > 0


# --- lease values ------------------------------------------------------------------------

ATTR_VECTORS: Final[list[tuple[LeaseAttrs, bytes]]] = [
    (
        LeaseAttrs(IPv4Address("192.168.64.3"), backend_type="vxlan", backend_data=VXLAN_DATA),
        REAL_EXAMPLE,
    ),
    (
        LeaseAttrs(IPv4Address("10.0.0.1")),  # udp: no BackendType
        b'{"PublicIP":"10.0.0.1","PublicIPv6":null}',
    ),
    (
        LeaseAttrs(IPv4Address("10.0.0.1"), backend_type="host-gw"),
        b'{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendType":"host-gw"}',
    ),
    (
        LeaseAttrs(
            IPv4Address("10.0.0.1"),
            backend_type="vxlan",
            backend_data=VXLAN_DATA,
            public_ipv6=IPv6Address("fc00::1"),
            backend_v6_data=VXLAN_V6_DATA,
        ),
        b'{"PublicIP":"10.0.0.1","PublicIPv6":"fc00::1","BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},'
        b'"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}',
    ),
    (
        LeaseAttrs(IPv4Address("172.16.0.9"), public_ipv6=IPv6Address("2001:db8::9")),
        b'{"PublicIP":"172.16.0.9","PublicIPv6":"2001:db8::9"}',
    ),
    (
        LeaseAttrs(IPv4Address("10.0.0.1"), backend_type="vxlan", backend_data="{}"),
        b'{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{}}',
    ),
]


@pytest.mark.parametrize(("attrs", "value"), ATTR_VECTORS)
def test_encode_lease_attrs(attrs: LeaseAttrs, value: bytes) -> None:
    assert encode_lease_attrs(attrs) == value


@pytest.mark.parametrize(("attrs", "value"), ATTR_VECTORS)
def test_decode_lease_attrs(attrs: LeaseAttrs, value: bytes) -> None:
    assert decode_lease_attrs(value) == attrs
    assert decode_lease_attrs(value.decode()) == attrs


@pytest.mark.parametrize(("attrs", "value"), ATTR_VECTORS)
def test_lease_value_round_trips_byte_exactly(attrs: LeaseAttrs, value: bytes) -> None:
    assert encode_lease_attrs(decode_lease_attrs(value)) == value
    assert decode_lease_attrs(encode_lease_attrs(attrs)) == attrs


def test_real_flannel_example() -> None:
    attrs = decode_lease_attrs(REAL_EXAMPLE)
    assert attrs.public_ip == IPv4Address("192.168.64.3")
    assert attrs.public_ipv6 is None
    assert attrs.backend_type == "vxlan"
    assert attrs.backend_data == VXLAN_DATA
    assert attrs.backend_v6_data == ""
    assert backend_data(attrs) == {"vni": 1, "vtepmac": "c6:d2:32:6f:8f:44"}
    assert encode_lease_attrs(attrs) == REAL_EXAMPLE


def test_encode_from_backend_data_json_matches_real_example() -> None:
    data = backend_data_json({"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})
    attrs = LeaseAttrs(IPv4Address("192.168.64.3"), backend_type="vxlan", backend_data=data)
    assert encode_lease_attrs(attrs) == REAL_EXAMPLE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            b'{"publicip":"192.168.64.3","publicipv6":null,"backendtype":"vxlan",'
            b'"backenddata":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}',
            ATTR_VECTORS[0][0],
        ),
        (
            b'{"PUBLICIP":"192.168.64.3","BACKENDTYPE":"vxlan",'
            b'"BACKENDDATA":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}',
            ATTR_VECTORS[0][0],
        ),
        (b'{"publicIP":"10.0.0.1"}', ATTR_VECTORS[1][0]),
        (b'{"publicip":"10.0.0.1","backendtype":"host-gw"}', ATTR_VECTORS[2][0]),
        (
            b'{"publicip":"10.0.0.1","publicipv6":"fc00::1","backendtype":"vxlan",'
            b'"backenddata":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},'
            b'"backendv6data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}',
            ATTR_VECTORS[3][0],
        ),
        # whitespace, no PublicIPv6 at all, an unknown key, fields out of order
        (
            b' { "BackendData" : { "VNI" : 1 , "VtepMAC" : "c6:d2:32:6f:8f:44" } ,\n'
            b' "Extra": [1, 2], "BackendType" : "vxlan" , "PublicIP" : "192.168.64.3" } ',
            ATTR_VECTORS[0][0],
        ),
        # a later duplicate wins, as in Go
        (b'{"PublicIP":"10.9.9.9","publicip":"10.0.0.1"}', ATTR_VECTORS[1][0]),
        # an empty BackendType is udp
        (b'{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendType":""}', ATTR_VECTORS[1][0]),
    ],
)
def test_decode_lease_attrs_lenient_forms(value: bytes, expected: LeaseAttrs) -> None:
    assert decode_lease_attrs(value) == expected


def test_decode_lower_case_keys_re_encodes_canonically() -> None:
    value = (
        b'{"publicip":"192.168.64.3","publicipv6":null,"backendtype":"vxlan",'
        b'"backenddata":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
    )
    assert encode_lease_attrs(decode_lease_attrs(value)) == REAL_EXAMPLE


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b" ",
        b"null",
        b"[]",
        b'["PublicIP","10.0.0.1"]',
        b'"10.0.0.1"',
        b"42",
        b"{}",
        b'{"PublicIPv6":null}',  # PublicIP missing
        b'{"PublicIP":null}',
        b'{"PublicIP":167772161}',
        b'{"PublicIP":["10.0.0.1"]}',
        b'{"PublicIP":""}',
        b'{"PublicIP":"10.0.0"}',
        b'{"PublicIP":"10.0.0.256"}',
        b'{"PublicIP":"fc00::1"}',
        b'{"PublicIP":"10.0.0.1/24"}',
        b'{"PublicIP":"10.0.0.1","PublicIPv6":"10.0.0.2"}',
        b'{"PublicIP":"10.0.0.1","PublicIPv6":"fc00::zz"}',
        b'{"PublicIP":"10.0.0.1","PublicIPv6":""}',
        b'{"PublicIP":"10.0.0.1","PublicIPv6":5}',
        b'{"PublicIP":"10.0.0.1","PublicIPv6":["fc00::1"]}',
        b'{"PublicIP":"10.0.0.1","BackendType":5}',
        b'{"PublicIP":"10.0.0.1","BackendType":["vxlan"]}',
        b'{"PublicIP":"10.0.0.1","BackendType":true}',
        b'{"PublicIP":"10.0.0.1","BackendType":0}',  # malformed even though falsy
        b'{"PublicIP":"10.0.0.1","BackendType":false}',
        b'{"PublicIP":"10.0.0.1","BackendType":[]}',
        b'{"PublicIP":"10.0.0.1","BackendType":{}}',
        b"{'PublicIP':'10.0.0.1'}",
        b'{"PublicIP":"10.0.0.1"} x',
        b'{"PublicIP":"10.0.0.1",}',
        b'{"PublicIP":"10.0.0.1","BackendData":NaN}',  # not JSON (RFC 8259), Go rejects it
        b'{"PublicIP":"10.0.0.1","BackendData":{"VNI":Infinity}}',
        b"\xff\xfe\x00\x00",
        b'{"PublicIP":"10.0.0.\xff"}',
    ],
)
def test_malformed_lease_values(value: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_lease_attrs(value)


@pytest.mark.parametrize(("attrs", "value"), ATTR_VECTORS)
def test_every_truncation_raises_decode_error(attrs: LeaseAttrs, value: bytes) -> None:
    assert decode_lease_attrs(value) == attrs
    for cut in range(len(value)):
        with pytest.raises(DecodeError):
            decode_lease_attrs(value[:cut])
        with pytest.raises(DecodeError):
            decode_lease_attrs(value[:cut].decode())


def _mutate(rng: random.Random, value: bytes) -> bytes:
    data = bytearray(value)
    for _ in range(rng.randint(1, 4)):
        action = rng.randrange(4)
        pos = rng.randrange(len(data) + 1)
        if action == 0 and pos < len(data):
            data[pos] = rng.randrange(256)
        elif action == 1 and pos < len(data):
            data[pos] = rng.choice(b'{}[]",:0123456789.-abcdefnrtulsPIB ')
        elif action == 2:
            data.insert(pos, rng.choice(b'{}[]",:0123456789.-abcdefnrtulsPIB '))
        elif pos < len(data):
            del data[pos]
    return bytes(data)


def test_random_garbage_only_decodes_or_raises_decode_error() -> None:
    rng = random.Random(1234)
    values = [value for _, value in ATTR_VECTORS]
    decoded = 0
    for i in range(4000):
        garbage = rng.randbytes(rng.randint(0, 80)) if i % 2 else _mutate(rng, rng.choice(values))
        try:
            attrs = decode_lease_attrs(garbage)
        except DecodeError:
            continue
        decoded += 1
        assert isinstance(attrs, LeaseAttrs)
        assert isinstance(backend_data(attrs), dict)
        assert decode_lease_attrs(encode_lease_attrs(attrs)) == attrs
    assert decoded > 0


# --- BackendData -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ({"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}, '{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}'),
        ({"VtepMAC": "c6:d2:32:6f:8f:44", "VNI": 1}, '{"VtepMAC":"c6:d2:32:6f:8f:44","VNI":1}'),
        ({"VNI": 4096}, '{"VNI":4096}'),
        ({}, "{}"),
        ({"A": True, "B": None, "C": [1, "x"]}, '{"A":true,"B":null,"C":[1,"x"]}'),
    ],
)
def test_backend_data_json(data: dict[str, Any], text: str) -> None:
    assert backend_data_json(data) == text


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        (ATTR_VECTORS[0][0], {"vni": 1, "vtepmac": "c6:d2:32:6f:8f:44"}),
        (LeaseAttrs(IPv4Address("10.0.0.1")), {}),
        (LeaseAttrs(IPv4Address("10.0.0.1"), "host-gw"), {}),
        (LeaseAttrs(IPv4Address("10.0.0.1"), "vxlan", "{}"), {}),
        (
            LeaseAttrs(IPv4Address("10.0.0.1"), "vxlan", '{"vni":7,"vtepmac":"x"}'),
            {"vni": 7, "vtepmac": "x"},
        ),
        (LeaseAttrs(IPv4Address("10.0.0.1"), "vxlan", '{"VNI":1,"vni":2}'), {"vni": 2}),
        (LeaseAttrs(IPv4Address("10.0.0.1"), "vxlan", '"not an object"'), {}),
        (LeaseAttrs(IPv4Address("10.0.0.1"), "vxlan", "[1,2]"), {}),
    ],
)
def test_backend_data(attrs: LeaseAttrs, expected: dict[str, Any]) -> None:
    assert backend_data(attrs) == expected


def test_backend_data_after_decode() -> None:
    attrs = decode_lease_attrs(
        b'{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"Vni":3,"VTEPMAC":"aa"}}'
    )
    assert attrs.backend_data == '{"Vni":3,"VTEPMAC":"aa"}'
    assert backend_data(attrs) == {"vni": 3, "vtepmac": "aa"}


# --- whole leases --------------------------------------------------------------------------


def test_decode_lease() -> None:
    lease = decode_lease("10.5.34.0-24", REAL_EXAMPLE, etcd_lease=7, mod_revision=42)
    assert lease == Lease(
        subnet=IPv4Network("10.5.34.0/24"),
        attrs=ATTR_VECTORS[0][0],
        ipv6_subnet=None,
        etcd_lease=7,
        mod_revision=42,
    )
    assert lease.key == "10.5.34.0-24"
    assert lease.is_reservation is False


def test_decode_lease_defaults_to_a_reservation() -> None:
    lease = decode_lease("10.5.34.0-24", b'{"PublicIP":"10.0.0.1","PublicIPv6":null}')
    assert lease.etcd_lease == 0
    assert lease.mod_revision == 0
    assert lease.is_reservation is True
    assert lease.attrs == LeaseAttrs(IPv4Address("10.0.0.1"))


def test_decode_dual_stack_lease() -> None:
    value = ATTR_VECTORS[3][1]
    lease = decode_lease("10.5.34.0-24&fc00:0:0:22::-64", value.decode(), etcd_lease=1)
    assert lease.subnet == IPv4Network("10.5.34.0/24")
    assert lease.ipv6_subnet == IPv6Network("fc00:0:0:22::/64")
    assert lease.attrs == ATTR_VECTORS[3][0]
    assert lease.key == "10.5.34.0-24&fc00:0:0:22::-64"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("10.5.34.1-24", REAL_EXAMPLE),
        ("10.5.34.0", REAL_EXAMPLE),
        ("10.5.34.0-24", REAL_EXAMPLE[:-1]),
        ("10.5.34.0-24", b'{"PublicIP":"x"}'),
    ],
)
def test_decode_lease_errors(name: str, value: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_lease(name, value)


def test_lease_key_property() -> None:
    attrs = LeaseAttrs(IPv4Address("10.0.0.1"))
    assert Lease(IPv4Network("10.5.34.0/24"), attrs).key == "10.5.34.0-24"
    dual = Lease(IPv4Network("10.5.34.0/24"), attrs, IPv6Network("fc00::/64"))
    assert dual.key == "10.5.34.0-24&fc00::-64"


# --- diff_leases ---------------------------------------------------------------------------


def make_lease(
    cidr: str, public_ip: str = "192.168.0.1", etcd_lease: int = 1, mod_revision: int = 1
) -> Lease:
    return Lease(
        IPv4Network(cidr),
        LeaseAttrs(IPv4Address(public_ip), "vxlan", VXLAN_DATA),
        etcd_lease=etcd_lease,
        mod_revision=mod_revision,
    )


def _sorted(events: list[LeaseEvent]) -> list[LeaseEvent]:
    return sorted(events, key=lambda event: (event.kind.value, event.lease.key))


def test_diff_empty() -> None:
    assert diff_leases({}, {}) == []


def test_diff_added() -> None:
    a, b = make_lease("10.5.1.0/24"), make_lease("10.5.2.0/24", "192.168.0.2")
    events = diff_leases({a.key: a}, {a.key: a, b.key: b})
    assert events == [LeaseEvent(EventKind.ADDED, b)]


def test_diff_all_added_from_nothing() -> None:
    a, b = make_lease("10.5.1.0/24"), make_lease("10.5.2.0/24", "192.168.0.2")
    events = diff_leases({}, by_key([a, b]))
    assert _sorted(events) == [LeaseEvent(EventKind.ADDED, a), LeaseEvent(EventKind.ADDED, b)]


def test_diff_removed() -> None:
    a, b = make_lease("10.5.1.0/24"), make_lease("10.5.2.0/24", "192.168.0.2")
    events = diff_leases({a.key: a, b.key: b}, {a.key: a})
    assert events == [LeaseEvent(EventKind.REMOVED, b)]


def test_diff_all_removed() -> None:
    a, b = make_lease("10.5.1.0/24"), make_lease("10.5.2.0/24", "192.168.0.2")
    events = diff_leases(by_key([a, b]), {})
    assert _sorted(events) == [
        LeaseEvent(EventKind.REMOVED, a),
        LeaseEvent(EventKind.REMOVED, b),
    ]


@pytest.mark.parametrize(
    "changed_attrs",
    [
        LeaseAttrs(IPv4Address("192.168.0.99"), "vxlan", VXLAN_DATA),  # new PublicIP
        LeaseAttrs(IPv4Address("192.168.0.1"), "vxlan", '{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:aa"}'),
        LeaseAttrs(IPv4Address("192.168.0.1"), "host-gw"),  # new backend
        LeaseAttrs(IPv4Address("192.168.0.1"), "vxlan", VXLAN_DATA, IPv6Address("fc00::1")),
    ],
)
def test_diff_changed_attrs_are_re_announced_as_added(changed_attrs: LeaseAttrs) -> None:
    old = make_lease("10.5.1.0/24")
    new = Lease(old.subnet, changed_attrs, etcd_lease=1, mod_revision=2)
    assert diff_leases({old.key: old}, {new.key: new}) == [LeaseEvent(EventKind.ADDED, new)]


def test_diff_revision_only_change_is_silent() -> None:
    old = make_lease("10.5.1.0/24", mod_revision=10)
    renewed = make_lease("10.5.1.0/24", mod_revision=11)
    assert diff_leases({old.key: old}, {renewed.key: renewed}) == []


def test_diff_new_etcd_lease_on_renewal_is_silent() -> None:
    old = make_lease("10.5.1.0/24", etcd_lease=100, mod_revision=10)
    renewed = make_lease("10.5.1.0/24", etcd_lease=200, mod_revision=11)
    assert diff_leases({old.key: old}, {renewed.key: renewed}) == []


def test_diff_mixed() -> None:
    kept = make_lease("10.5.1.0/24", "192.168.0.1", mod_revision=5)
    renewed_old = make_lease("10.5.2.0/24", "192.168.0.2", mod_revision=5)
    renewed_new = make_lease("10.5.2.0/24", "192.168.0.2", mod_revision=9)
    changed_old = make_lease("10.5.3.0/24", "192.168.0.3")
    changed_new = make_lease("10.5.3.0/24", "192.168.0.33")
    gone = make_lease("10.5.4.0/24", "192.168.0.4")
    added = make_lease("10.5.5.0/24", "192.168.0.5")
    old = by_key([kept, renewed_old, changed_old, gone])
    new = by_key([kept, renewed_new, changed_new, added])
    events = diff_leases(old, new)
    assert len(events) == 3
    assert _sorted(events) == [
        LeaseEvent(EventKind.ADDED, changed_new),
        LeaseEvent(EventKind.ADDED, added),
        LeaseEvent(EventKind.REMOVED, gone),
    ]


def test_by_key() -> None:
    a = make_lease("10.5.1.0/24")
    b = Lease(IPv4Network("10.5.2.0/24"), a.attrs, IPv6Network("fc00:0:0:2::/64"))
    assert by_key([a, b]) == {"10.5.1.0-24": a, "10.5.2.0-24&fc00:0:0:2::-64": b}


@pytest.mark.parametrize(
    "value",
    [
        '{"PublicIP":"192.0.2.1"}'.encode("utf-16"),  # Go reads UTF-8 only
        b"\xef\xbb\xbf" + b'{"PublicIP":"192.0.2.1"}',  # a BOM is not JSON to Go
        b'{"PublicIP":"192.0.2.1","BackendType":"\\ud800"}',  # a lone surrogate, escaped
        '{"PublicIP":"192.0.2.1","BackendType":"\ud800"}',  # and as it is, in a str
        b'{"PublicIP":"192.0.2.1","BackendType":"\xff"}',  # not UTF-8
    ],
)
def test_values_go_would_refuse_are_refused(value: bytes | str) -> None:
    with pytest.raises(DecodeError):
        decode_lease_attrs(value)


def test_non_ascii_and_escapes_that_go_reads_are_read_the_same_each_time() -> None:
    value = '{"PublicIP":"192.0.2.1","BackendType":"x\\u00e9y","BackendData":{"k":"é"}}'
    for _ in range(2):  # the second time from the cache: the same answer
        attrs = decode_lease_attrs(value.encode())
        assert attrs.backend_type == "xéy" and attrs.backend_data == '{"k":"é"}'
