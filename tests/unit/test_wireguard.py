"""Tests for backends/wireguard.py and backends/_wg_key.py: flannel's options and their
one-line errors, the key file (0400, made once, reused, garbled files refused), the lease
attributes byte for byte as Go flannel writes them, and the peer plan from lease events."""

from __future__ import annotations

import base64
import json
import stat
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from backends import OPTIONS, REGISTRY, check_backend
from backends.wireguard import (
    Change,
    NoIPv6Side,
    PeerPlan,
    WireGuardConfig,
    decode_key,
    format_endpoint,
    key_file_path,
    lease_attrs_for,
    load_or_create_key,
    new_private_key,
    peer_of,
    peer_of_v6,
)
from lease.config import BackendSpec, parse_network_config
from lease.errors import BackendError, ConfigError
from lease.model import EventKind, Lease, LeaseAttrs, LeaseEvent, encode_lease_attrs

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
OWN = bytes(range(2, 34))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def spec(**options: Any) -> BackendSpec:
    return BackendSpec("wireguard", options)


# -- options ---------------------------------------------------------------------------

def test_defaults_are_flannels() -> None:
    config = WireGuardConfig.from_spec(spec())
    assert (config.listen_port, config.listen_port_v6, config.psk, config.keepalive_s,
            config.mtu, config.mode, config.dataplane) == (51820, 51821, None, 0, 0,
                                                           "separate", "auto")


def test_options_case_insensitive_keys() -> None:
    config = WireGuardConfig.from_spec(spec(listenport=5000, LISTENPORTV6=5001,
                                            psk=b64(KEY_A), persistentkeepaliveinterval=25,
                                            mtu=1400, mode="auto", dataplane="Userspace"))
    assert (config.listen_port, config.listen_port_v6, config.psk, config.keepalive_s,
            config.mtu, config.mode, config.dataplane) == (5000, 5001, KEY_A, 25, 1400,
                                                           "auto", "userspace")


def test_null_keeps_defaults() -> None:
    config = WireGuardConfig.from_spec(spec(ListenPort=None, PSK=None, Mode=None))
    assert (config.listen_port, config.psk, config.mode) == (51820, None, "separate")


@pytest.mark.parametrize(("options", "message"), [
    ({"ListenPort": 0}, "ListenPort must be an integer 1..65535, not 0"),
    ({"ListenPort": "51820"}, "ListenPort must be an integer"),
    ({"ListenPort": True}, "ListenPort must be an integer"),
    ({"ListenPortV6": 70000}, "ListenPortV6 must be an integer"),
    ({"PSK": "not base64!"}, "PSK is not base64"),
    ({"PSK": b64(b"short")}, "PSK is 5 bytes, not 32"),
    ({"PSK": 5}, "PSK must be a base64 string"),
    ({"PersistentKeepaliveInterval": "25s"}, "PersistentKeepaliveInterval must be an integer"),
    ({"PersistentKeepaliveInterval": 2.5}, "PersistentKeepaliveInterval must be an integer"),
    ({"PersistentKeepaliveInterval": -1}, "PersistentKeepaliveInterval must be an integer"),
    ({"MTU": 100}, "MTU 100 leaves no room"),
    ({"MTU": -5}, "MTU must be an integer"),
    ({"Mode": "Separate"}, "Mode must be one of separate, auto, ipv4, ipv6"),
    ({"Mode": "both"}, "Mode must be one of"),
    ({"Dataplane": "dpdk"}, "Dataplane must be one of auto, kernel, userspace"),
    ({"Offload": "yes"}, "Offload must be true or false"),
])
def test_bad_option_is_one_line(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        WireGuardConfig.from_spec(spec(**options))
    text = str(caught.value)
    assert text.startswith("wireguard backend: ") and message in text and "\n" not in text


def test_psk_never_in_repr_or_error() -> None:
    config = WireGuardConfig.from_spec(spec(PSK=b64(KEY_A)))
    assert b64(KEY_A) not in repr(config)
    bad = b64(KEY_A)[:-4] + "!!!!"
    with pytest.raises(ConfigError) as caught:
        WireGuardConfig.from_spec(spec(PSK=bad))
    assert bad not in str(caught.value)


def test_registered() -> None:
    assert REGISTRY["wireguard"] == "backends.wireguard:WireGuardBackend"
    assert OPTIONS["wireguard"] == "backends.wireguard:WireGuardConfig"
    network = parse_network_config(
        '{"Network": "10.5.0.0/16", "Backend": {"Type": "wireguard", "ListenPort": 0}}')
    with pytest.raises(ConfigError, match="ListenPort"):
        check_backend(network)


# -- keys ------------------------------------------------------------------------------

def test_new_private_key_is_clamped_and_matches_cryptography() -> None:
    key = new_private_key(bytes([0xFF] * 32))
    assert key[0] & 7 == 0 and key[31] & 0x80 == 0 and key[31] & 0x40
    X25519PrivateKey.from_private_bytes(key)  # a valid key


def test_key_file_created_0400_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "run" / "flannel" / "wgkey"
    key, created = load_or_create_key(path)
    assert created and len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert path.read_text() == b64(key)  # base64, no newline, as flannel writes it
    again, created = load_or_create_key(path)
    assert again == key and not created
    assert [p.name for p in path.parent.iterdir()] == ["wgkey"]  # no temporary left


def test_key_file_written_by_wg_is_read(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "wgkey"
    path.write_text(b64(KEY_A) + "\n")  # `wg genkey > file` ends in a newline
    path.chmod(0o644)
    assert load_or_create_key(path) == (KEY_A, False)
    [record] = caplog.records  # readable by others: one warning, without the key
    assert "mode 0644" in record.getMessage() and b64(KEY_A) not in record.getMessage()
    path.chmod(0o400)
    caplog.clear()
    load_or_create_key(path)
    assert not caplog.records


@pytest.mark.parametrize("content", [b"garbage", b64(b"x" * 31).encode(), b"\xff\xfe\x00"])
def test_garbled_key_file_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "wgkey"
    path.write_bytes(content)
    with pytest.raises(BackendError) as caught:
        load_or_create_key(path)
    text = str(caught.value)
    assert text.startswith(f"wireguard: the key file {path}: ") and "\n" not in text


def test_unreadable_key_file(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="is a directory"):
        load_or_create_key(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BackendError, match=r"cannot (read|write) the key file"):
        load_or_create_key(blocker / "wgkey")


def test_key_file_env_override() -> None:
    assert str(key_file_path({})) == "/run/flannel/wgkey"
    assert str(key_file_path({"WIREGUARD_KEY_FILE": "/tmp/k"})) == "/tmp/k"


def test_decode_key() -> None:
    assert decode_key(b64(KEY_A), "k") == KEY_A
    with pytest.raises(ValueError, match="k is not base64"):
        decode_key("###", "k")


# -- lease attributes ------------------------------------------------------------------

def test_lease_attrs_byte_for_byte() -> None:
    config = WireGuardConfig.from_spec(spec())
    attrs = lease_attrs_for(IPv4Address("192.0.2.1"), None, KEY_A, config)
    assert encode_lease_attrs(attrs) == (
        '{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"wireguard",'
        f'"BackendData":{{"PublicKey":"{b64(KEY_A)}","Port":51820}}}}').encode()


def test_lease_attrs_dual_stack() -> None:
    config = WireGuardConfig.from_spec(spec(ListenPort=7000, ListenPortV6=7001))
    attrs = lease_attrs_for(IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1"), KEY_A,
                            config, enable_ipv6=True)
    assert encode_lease_attrs(attrs) == (
        '{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1","BackendType":"wireguard",'
        f'"BackendData":{{"PublicKey":"{b64(KEY_A)}","Port":7000}},'
        f'"BackendV6Data":{{"PublicKey":"{b64(KEY_A)}","Port":7001}}}}').encode()
    auto = lease_attrs_for(IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1"), KEY_A,
                           WireGuardConfig.from_spec(spec(Mode="auto", ListenPort=7000)),
                           enable_ipv6=True)
    assert auto.backend_v6_data.endswith('"Port":7000}')


# -- peers -----------------------------------------------------------------------------

def lease(subnet: str, key: bytes | None, ip: str = "192.0.2.2", port: Any = 51820,
          backend_type: str = "wireguard") -> Lease:
    data: dict[str, Any] = {}
    if key is not None:
        data["PublicKey"] = b64(key)
    if port is not ...:
        data["Port"] = port
    return Lease(IPv4Network(subnet), LeaseAttrs(IPv4Address(ip), backend_type,
                                                 json.dumps(data, separators=(",", ":"))))


def added(item: Lease) -> LeaseEvent:
    return LeaseEvent(EventKind.ADDED, item)


def removed(item: Lease) -> LeaseEvent:
    return LeaseEvent(EventKind.REMOVED, item)


def test_peer_of() -> None:
    peer = peer_of(lease("10.5.2.0/24", KEY_A, port=6000), 51820)
    assert (peer.public_key, peer.endpoint, peer.subnet) == (
        KEY_A, ("192.0.2.2", 6000), IPv4Network("10.5.2.0/24"))
    # an older flannel's lease without Port (or 0): our own ListenPort, as flannel
    assert peer_of(lease("10.5.2.0/24", KEY_A, port=...), 7777).endpoint[1] == 7777
    assert peer_of(lease("10.5.2.0/24", KEY_A, port=0), 7777).endpoint[1] == 7777


@pytest.mark.parametrize(("item", "message"), [
    (lease("10.5.2.0/24", KEY_A, backend_type="vxlan"), "BackendType is 'vxlan'"),
    (lease("10.5.2.0/24", None), "PublicKey must be a base64 string"),
    (lease("10.5.2.0/24", b"short"), "PublicKey is 5 bytes"),
    (lease("10.5.2.0/24", KEY_A, port="x"), "Port 'x' is not a port"),
    (lease("10.5.2.0/24", KEY_A, port=70000), "is not a port"),
])
def test_peer_of_refuses(item: Lease, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        peer_of(item, 51820)


def test_plan_add_change_remove() -> None:
    plan = PeerPlan(OWN, 51820)
    a = lease("10.5.2.0/24", KEY_A)
    [change] = plan.apply([added(a)])
    assert change.remove is None and change.peer == peer_of(a, 51820)
    assert plan.apply([added(a)]) == []  # nothing changed
    moved = lease("10.5.2.0/24", KEY_A, ip="192.0.2.9")
    [change] = plan.apply([added(moved)])
    assert change.remove is None and change.peer is not None \
        and change.peer.endpoint == ("192.0.2.9", 51820)
    rekeyed = lease("10.5.2.0/24", KEY_B, ip="192.0.2.9")
    [change] = plan.apply([added(rekeyed)])
    assert change.remove == KEY_A and change.peer is not None and change.peer.public_key == KEY_B
    assert plan.apply([removed(rekeyed)]) == [Change(remove=KEY_B)]
    assert plan.apply([removed(rekeyed)]) == []
    assert plan.peers == {}


def test_plan_skips_bad_and_own(caplog: pytest.LogCaptureFixture) -> None:
    plan = PeerPlan(OWN, 51820)
    assert plan.apply([added(lease("10.5.2.0/24", None)),
                       added(lease("10.5.3.0/24", OWN)),
                       added(lease("10.5.4.0/24", KEY_A, backend_type="udp"))]) == []
    assert plan.skipped == 3 and len(caplog.records) == 3


def test_plan_shared_key_kept_until_last_lease() -> None:
    plan = PeerPlan(OWN, 51820)
    one, two = lease("10.5.2.0/24", KEY_A), lease("10.5.3.0/24", KEY_A)
    plan.apply([added(one), added(two)])
    assert plan.allowed_ips(KEY_A) == [IPv4Network("10.5.2.0/24"), IPv4Network("10.5.3.0/24")]
    assert plan.apply([removed(one)]) == [Change(peer=peer_of(two, 51820))]
    assert plan.apply([removed(two)]) == [Change(remove=KEY_A)]


# -- this node's override --------------------------------------------------------------

def test_wireguard_dataplane_flag_overrides_the_config() -> None:
    import dataclasses

    from flanneld.cli import UsageError, parse_args
    from flanneld.daemon import with_node_overrides
    from flanneld.options import Options

    assert parse_args(["-wireguard-dataplane=userspace"], {}).wireguard_dataplane == \
        "userspace"
    with pytest.raises(UsageError, match="must be auto, kernel or userspace"):
        parse_args(["-wireguard-dataplane=dpdk"], {})
    config = parse_network_config('{"Network": "10.5.0.0/16", "Backend": '
                                  '{"Type": "wireguard", "dataplane": "kernel"}}')
    options = dataclasses.replace(Options(), wireguard_dataplane="userspace", offload="off")
    changed = with_node_overrides(config, options)
    parsed = WireGuardConfig.from_spec(changed.backend)
    assert (parsed.dataplane, parsed.offload) == ("userspace", False)
    vxlan = parse_network_config('{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}')
    assert with_node_overrides(vxlan, dataclasses.replace(
        Options(), wireguard_dataplane="userspace")) is vxlan


def test_enable_ipv6_needs_mode_separate() -> None:
    from backends._base import BackendContext, ExternalInterface
    from backends.wireguard import WireGuardBackend

    def network(mode: str) -> Any:
        return parse_network_config(
            '{"Network": "10.5.0.0/16", "EnableIPv6": true, "IPv6Network": "fc00:5::/48", '
            f'"Backend": {{"Type": "wireguard", "Mode": "{mode}"}}}}')

    iface = ExternalInterface("eth0", 2, IPv4Address("192.0.2.1"), IPv4Address("192.0.2.1"),
                              1500, IPv6Address("2001:db8::1"), IPv6Address("2001:db8::1"))
    WireGuardBackend(BackendContext(network("separate"), iface))
    with pytest.raises(ConfigError, match="Mode auto with EnableIPv6 is not supported yet"):
        WireGuardBackend(BackendContext(network("auto"), iface))


def dual_lease(subnet: str, subnet6: str | None, key: bytes, key6: bytes | None,
               port6: Any = 51821) -> Lease:
    data6 = "" if key6 is None else json.dumps({"PublicKey": b64(key6), "Port": port6},
                                               separators=(",", ":"))
    return Lease(IPv4Network(subnet), LeaseAttrs(
        IPv4Address("192.0.2.2"), "wireguard", json.dumps({"PublicKey": b64(key)}),
        IPv6Address("2001:db8::2") if subnet6 else None, data6),
        IPv6Network(subnet6) if subnet6 else None)


def test_peer_of_v6() -> None:
    peer = peer_of_v6(dual_lease("10.5.2.0/24", "fc00:5:0:2::/64", KEY_A, KEY_B), 51821)
    assert (peer.public_key, peer.endpoint, peer.subnet) == (
        KEY_B, ("2001:db8::2", 51821), IPv6Network("fc00:5:0:2::/64"))
    assert peer_of_v6(dual_lease("10.5.2.0/24", "fc00:5:0:2::/64", KEY_A, KEY_B, port6=0),
                      7000).endpoint == ("2001:db8::2", 7000)
    with pytest.raises(NoIPv6Side):
        peer_of_v6(dual_lease("10.5.2.0/24", None, KEY_A, None), 51821)
    with pytest.raises(ValueError, match=r"BackendV6Data\.PublicKey is not base64"):
        peer_of_v6(Lease(IPv4Network("10.5.2.0/24"), LeaseAttrs(
            IPv4Address("192.0.2.2"), "wireguard", "", IPv6Address("2001:db8::2"),
            '{"PublicKey":"###"}'), IPv6Network("fc00:5:0:2::/64")), 51821)


def test_v6_plan_ignores_ipv4_only_peers_and_follows_a_lease_losing_its_v6_side() -> None:
    plan = PeerPlan(OWN, 51821, ipv6=True)
    dual = dual_lease("10.5.2.0/24", "fc00:5:0:2::/64", KEY_A, KEY_B)
    [change] = plan.apply([added(dual)])
    assert change.peer is not None and change.peer.public_key == KEY_B
    assert plan.apply([added(dual_lease("10.5.3.0/24", None, KEY_A, None))]) == []
    assert plan.skipped == 0
    v4_only = Lease(dual.subnet, dual_lease("10.5.2.0/24", None, KEY_A, None).attrs,
                    dual.ipv6_subnet)
    assert plan.apply([added(v4_only)]) == [Change(remove=KEY_B)]


def test_format_endpoint() -> None:
    assert format_endpoint(("192.0.2.2", 51820)) == "192.0.2.2:51820"
    assert format_endpoint(("2001:db8::2", 51821)) == "[2001:db8::2]:51821"
