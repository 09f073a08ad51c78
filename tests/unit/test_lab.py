"""Tests for flanneld/lab.py's command line: every bad argument is one line and exit 2,
before anything is created (these run without root and leave nothing behind)."""

from __future__ import annotations

import pytest

from flanneld.lab import main


@pytest.mark.parametrize(("argv", "message"), [
    (["--hosts", "1"], "--hosts must be between 2 and 50"),
    (["--hosts", "51"], "--hosts must be between 2 and 50"),
    (["--backend", "udp", "--dataplane", "userspace"],
     "--dataplane goes with --backend vxlan or wireguard"),
    (["--backend", "nonsense"], "invalid choice: 'nonsense'"),
    (["--seconds", "0"], "--seconds must be between 1 and 600"),
    (["--seconds", "-1"], "--seconds must be between 1 and 600"),
    (["--seconds", "3600"], "--seconds must be between 1 and 600"),
    (["--network", "10.5.0.0/33"], "--network 10.5.0.0/33: Network '10.5.0.0/33' is not an IPv4"),
    (["--network", "nonsense"], "--network nonsense: Network 'nonsense' is not an IPv4 CIDR"),
    (["--network", "192.0.0.0/16"], "overlaps the lab's underlay 192.0.2.0/24"),
    (["--network", "198.51.100.0/24"], "overlaps the lab's underlay 198.51.100.0/24"),
    (["--network", "10.5.0.0/24", "--hosts", "5"], "room for 3 subnets of /26, not 5"),
    (["--ipv6", "--backend", "udp"], "--ipv6 needs --backend host-gw, wireguard or vxlan"),
    (["--ipv6", "--backend", "vxlan", "--dataplane", "userspace"], "the udp backend and the "
     "userspace VXLAN data plane are IPv4-only"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("flanneld-lab: error: ") and message in err[-1], err


def test_ipv6_network_config_is_dual_stack() -> None:
    import json

    from flanneld.lab import _network_config
    from lease.config import parse_network_config
    config = parse_network_config(json.dumps(
        _network_config("vxlan", "10.5.0.0/16", None, "fc00:5::/48")))
    assert config.enable_ipv6 and str(config.ipv6_network) == "fc00:5::/48"
    assert _network_config("host-gw", "10.5.0.0/16") == {
        "Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}
