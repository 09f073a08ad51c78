"""Tests for flanneld/cli.py: flannel's flags read the way Go's flag package reads them,
plus FLANNELD_* environment variables."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

import pytest

import flanneld
from flanneld import cli
from flanneld.cli import UsageError, main, parse_args, usage
from flanneld.daemon import with_node_overrides
from flanneld.options import Options
from lease.config import parse_network_config

# Every flag Go flannel has; the usage text and the parser must know each one.
FLANNEL_FLAGS: Final = (
    "etcd-endpoints", "etcd-prefix", "etcd-keyfile", "etcd-certfile", "etcd-cafile",
    "etcd-username", "etcd-password", "iface", "iface-regex", "iface-can-reach", "public-ip",
    "public-ipv6", "subnet-file", "subnet-lease-renew-margin", "ip-masq", "iptables-resync",
    "iptables-forward-rules", "healthz-ip", "healthz-port", "v", "version",
)
ALL_FLAGS: Final = tuple(dict.fromkeys(FLANNEL_FLAGS + tuple(f.name for f in cli.FLAGS)))
INT_FLAGS: Final = (
    "subnet-lease-renew-margin", "iptables-resync", "healthz-port", "subnet-lease-ttl", "v",
)


def parse(*argv: str, env: Mapping[str, str] | None = None) -> Options:
    return parse_args(list(argv), {} if env is None else env)


def usage_error(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Parse `argv`, which must fail with UsageError, and return the message."""
    with pytest.raises(UsageError) as excinfo:
        parse_args(list(argv), {} if env is None else env)
    return str(excinfo.value)


def field(options: Options, name: str) -> object:
    """The value of an Options field by its flag name (`ip-masq` -> `ip_masq`)."""
    return dataclasses.asdict(options)[name.replace("-", "_")]


# --- defaults: exactly flannel's ----------------------------------------------------------

DEFAULTS: Final = (
    ("etcd-endpoints", "http://127.0.0.1:4001,http://127.0.0.1:2379"),
    ("etcd-prefix", "/coreos.com/network"),
    ("etcd-keyfile", ""),
    ("etcd-certfile", ""),
    ("etcd-cafile", ""),
    ("etcd-username", ""),
    ("etcd-password", ""),
    ("iface", ()),
    ("iface-regex", ()),
    ("iface-can-reach", ""),
    ("public-ip", ""),
    ("subnet-file", "/run/flannel/subnet.env"),
    ("subnet-lease-renew-margin", 60),
    ("ip-masq", False),
    ("iptables-resync", 5),
    ("iptables-forward-rules", True),
    ("healthz-ip", "0.0.0.0"),
    ("healthz-port", 0),
    ("v", 0),
    ("version", False),
    ("help", False),
)


@pytest.mark.parametrize(("name", "expected"), DEFAULTS)
def test_default_matches_flannel(name: str, expected: object) -> None:
    assert field(parse(), name) == expected
    assert field(Options(), name) == expected


def test_empty_command_line_and_environment_give_default_options() -> None:
    assert parse() == Options()


def test_unrelated_environment_is_ignored() -> None:
    env = {"PATH": "/bin", "FLANNELD_NOPE": "x", "FLANNEL_ETCD_PREFIX": "/no",
           "flanneld_etcd_prefix": "/no"}
    assert parse(env=env) == Options()


# --- spellings: one or two dashes, `=value` or a separate argument ---------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-etcd-prefix", "/x"],
        ["--etcd-prefix", "/x"],
        ["-etcd-prefix=/x"],
        ["--etcd-prefix=/x"],
    ],
    ids=["one-dash-space", "two-dash-space", "one-dash-equals", "two-dash-equals"],
)
def test_value_flag_spellings(argv: list[str]) -> None:
    assert parse_args(argv, {}).etcd_prefix == "/x"


def test_value_splits_at_first_equals_only() -> None:
    assert parse("-etcd-endpoints=http://a:2379/?x=y").etcd_endpoints == "http://a:2379/?x=y"


def test_empty_value_after_equals_is_a_value() -> None:
    assert parse("-etcd-prefix=").etcd_prefix == ""


def test_separate_value_may_start_with_a_dash() -> None:
    # Go's flag package takes the next argument as the value, whatever it looks like.
    options = parse("-etcd-prefix", "-ip-masq")
    assert options.etcd_prefix == "-ip-masq"
    assert options.ip_masq is False


def test_last_occurrence_of_a_single_valued_flag_wins() -> None:
    assert parse("-etcd-prefix", "/a", "--etcd-prefix=/b").etcd_prefix == "/b"


def test_many_flags_together() -> None:
    options = parse(
        "--etcd-endpoints=https://10.0.0.1:2379", "-etcd-prefix", "/k8s/network",
        "-etcd-keyfile", "/k", "-etcd-certfile=/c", "--etcd-cafile", "/ca",
        "-etcd-username", "flannel", "-etcd-password=pw", "-iface", "eth1",
        "-iface-regex", "^en", "-iface-can-reach", "192.0.2.1", "-public-ip", "192.0.2.7",
        "-subnet-file", "/tmp/s.env", "-subnet-lease-renew-margin", "30", "-ip-masq",
        "-iptables-resync=10", "-iptables-forward-rules=false", "-healthz-ip", "127.0.0.1",
        "-healthz-port", "8471", "-v", "2",
    )
    assert options == Options(
        etcd_endpoints="https://10.0.0.1:2379", etcd_prefix="/k8s/network", etcd_keyfile="/k",
        etcd_certfile="/c", etcd_cafile="/ca", etcd_username="flannel", etcd_password="pw",
        iface=("eth1",), iface_regex=("^en",), iface_can_reach="192.0.2.1",
        public_ip="192.0.2.7", subnet_file="/tmp/s.env", subnet_lease_renew_margin=30,
        ip_masq=True, iptables_resync=10, iptables_forward_rules=False,
        healthz_ip="127.0.0.1", healthz_port=8471, v=2,
    )


# --- booleans -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-ip-masq"], True),
        (["--ip-masq"], True),
        (["-ip-masq=true"], True),
        (["--ip-masq=true"], True),
        (["-ip-masq=false"], False),
        (["--ip-masq=false"], False),
        (["-ip-masq=1"], True),
        (["-ip-masq=0"], False),
        (["-ip-masq=t"], True),
        (["-ip-masq=T"], True),
        (["-ip-masq=TRUE"], True),
        (["-ip-masq=True"], True),
        (["-ip-masq=f"], False),
        (["-ip-masq=F"], False),
        (["-ip-masq=FALSE"], False),
        (["-ip-masq=False"], False),
        (["-ip-masq", "-ip-masq=false"], False),
    ],
)
def test_boolean_flag_values(argv: list[str], expected: bool) -> None:
    assert parse_args(argv, {}).ip_masq is expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-iptables-forward-rules"], True),
        (["-iptables-forward-rules=false"], False),
        (["--iptables-forward-rules=0"], False),
    ],
)
def test_default_true_boolean_can_be_turned_off(argv: list[str], expected: bool) -> None:
    assert parse_args(argv, {}).iptables_forward_rules is expected


@pytest.mark.parametrize("text", ["maybe", "yes", "no", "on", "2", "", "tRuE", " true"])
def test_bad_boolean_value_is_rejected(text: str) -> None:
    assert "ip-masq" in usage_error([f"-ip-masq={text}"])


def test_boolean_flag_does_not_consume_the_next_argument() -> None:
    # `-ip-masq false` is `-ip-masq` then a stray positional argument, as in Go.
    assert "false" in usage_error(["-ip-masq", "false"])


def test_boolean_flag_followed_by_another_flag() -> None:
    options = parse("-ip-masq", "-etcd-prefix", "/x")
    assert options.ip_masq is True
    assert options.etcd_prefix == "/x"


# --- repeatable flags ---------------------------------------------------------------------


def test_iface_is_repeatable_and_keeps_order() -> None:
    assert parse("-iface", "a", "-iface", "192.0.2.1").iface == ("a", "192.0.2.1")


def test_iface_mixed_spellings_keep_order() -> None:
    assert parse("--iface=eth2", "-iface", "eth0", "-iface=eth1").iface == ("eth2", "eth0", "eth1")


def test_iface_regex_is_repeatable_and_keeps_order() -> None:
    options = parse("-iface-regex", "^en", "--iface-regex=^eth[0-9]+$")
    assert options.iface_regex == ("^en", "^eth[0-9]+$")
    assert options.iface == ()


# --- integers and ranges ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "text", "expected"),
    [
        ("subnet-lease-renew-margin", "1", 1),
        ("subnet-lease-renew-margin", "60", 60),
        ("subnet-lease-renew-margin", "1439", 1439),
        ("iptables-resync", "5", 5),
        ("iptables-resync", "60", 60),
        ("healthz-port", "0", 0),
        ("healthz-port", "8471", 8471),
        ("healthz-port", "65535", 65535),
        ("v", "0", 0),
        ("v", "10", 10),
    ],
)
def test_integer_in_range_is_accepted(flag: str, text: str, expected: int) -> None:
    assert field(parse(f"-{flag}", text), flag) == expected
    assert field(parse(f"--{flag}={text}"), flag) == expected


@pytest.mark.parametrize(
    ("flag", "text"),
    [
        ("subnet-lease-renew-margin", "0"),
        ("subnet-lease-renew-margin", "1440"),
        ("subnet-lease-renew-margin", "-1"),
        ("healthz-port", "65536"),
        ("healthz-port", "-1"),
        ("iptables-resync", "0"),
        ("iptables-resync", "-5"),
    ],
)
def test_integer_out_of_range_is_rejected(flag: str, text: str) -> None:
    assert flag in usage_error([f"-{flag}", text])
    assert flag in usage_error([f"--{flag}={text}"])


@pytest.mark.parametrize("flag", INT_FLAGS)
@pytest.mark.parametrize("text", ["abc", "1.5", "", "60s", "1e3", "0x", "--5", "six"])
def test_non_integer_is_rejected(flag: str, text: str) -> None:
    assert flag in usage_error([f"-{flag}={text}"])


@pytest.mark.parametrize("flag", ["subnet-lease-renew-margin", "healthz-port"])
@pytest.mark.parametrize(
    "text", [" 60", "60 ", "60\n", "\u0666\u0660", "\uff16\uff10"],
    ids=["leading-space", "trailing-space", "trailing-newline", "arabic-indic", "fullwidth"],
)
def test_integer_text_go_strconv_rejects_is_rejected(flag: str, text: str) -> None:
    # Go's flag package parses ints with strconv.ParseInt: ASCII digits only, no whitespace.
    assert flag in usage_error([f"-{flag}={text}"])


# --- IP address flags ---------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["public-ip", "iface-can-reach", "healthz-ip"])
def test_ipv4_flag_accepts_an_address(flag: str) -> None:
    assert field(parse(f"-{flag}", "192.0.2.10"), flag) == "192.0.2.10"


@pytest.mark.parametrize("flag", ["public-ip", "iface-can-reach", "healthz-ip"])
@pytest.mark.parametrize(
    "text", ["300.1.1.1", "1.2.3", "10.0.0.1/24", "abc", "1.2.3.4.5", "2001:db8::1"]
)
def test_ipv4_flag_rejects_a_non_address(flag: str, text: str) -> None:
    assert flag in usage_error([f"-{flag}", text])


def test_public_ip_300_is_rejected() -> None:
    assert "public-ip" in usage_error(["-public-ip", "300.1.1.1"])


def test_public_ipv6_flag_exists() -> None:
    # Go flannel has -public-ipv6 next to -public-ip.
    assert field(parse("-public-ipv6", "2001:db8::7"), "public-ipv6") == "2001:db8::7"


# --- errors: unknown flags, missing values, positional arguments ------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["-nope"], "nope"),
        (["--nope"], "nope"),
        (["--nope=1"], "nope"),
        (["-ipmasq"], "ipmasq"),
        (["-etcd-prefixx", "/x"], "etcd-prefixx"),
        (["-ip-masq", "-Etcd-prefix", "/x"], "Etcd-prefix"),
    ],
)
def test_unknown_flag_is_rejected(argv: list[str], named: str) -> None:
    assert named in usage_error(argv)


@pytest.mark.parametrize("argv", [["---etcd-prefix", "/x"], ["---ip-masq"], ["-=x"], ["--=x"]])
def test_bad_flag_syntax_is_rejected(argv: list[str]) -> None:
    # Go's flag package: "bad flag syntax" for three dashes or an empty name.
    usage_error(argv)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["-etcd-prefix"], "etcd-prefix"),
        (["--etcd-prefix"], "etcd-prefix"),
        (["-ip-masq", "-iface"], "iface"),
        (["-healthz-port"], "healthz-port"),
        (["-iface", "eth0", "-public-ip"], "public-ip"),
    ],
)
def test_value_flag_given_last_without_a_value(argv: list[str], named: str) -> None:
    assert named in usage_error(argv)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["eth0"], "eth0"),
        (["-ip-masq", "extra"], "extra"),
        (["-etcd-prefix", "/x", "extra"], "extra"),
        (["--", "extra"], "extra"),
        (["-"], "-"),
    ],
)
def test_positional_argument_is_rejected(argv: list[str], named: str) -> None:
    assert named in usage_error(argv)


def test_double_dash_alone_ends_the_flags() -> None:
    assert parse("-ip-masq", "--").ip_masq is True


# --- help ---------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["-h"], ["-help"], ["--help"], ["--h"], ["-ip-masq", "-h"]])
def test_help_flags_set_help(argv: list[str]) -> None:
    assert parse_args(argv, {}).help is True


@pytest.mark.parametrize("name", ALL_FLAGS)
def test_usage_names_every_flag(name: str) -> None:
    assert f"-{name}" in usage()


def test_usage_mentions_the_environment() -> None:
    assert "FLANNELD_" in usage()


# --- FLANNELD_* environment ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "flag", "expected"),
    [
        ("FLANNELD_ETCD_PREFIX", "/env/network", "etcd-prefix", "/env/network"),
        ("FLANNELD_ETCD_ENDPOINTS", "https://e:2379", "etcd-endpoints", "https://e:2379"),
        ("FLANNELD_ETCD_PASSWORD", "s3cret", "etcd-password", "s3cret"),
        ("FLANNELD_IP_MASQ", "true", "ip-masq", True),
        ("FLANNELD_IP_MASQ", "1", "ip-masq", True),
        ("FLANNELD_IPTABLES_FORWARD_RULES", "false", "iptables-forward-rules", False),
        ("FLANNELD_IFACE", "eth0,eth1", "iface", ("eth0", "eth1")),
        ("FLANNELD_IFACE", "eth0", "iface", ("eth0",)),
        ("FLANNELD_IFACE", "192.0.2.1,eth1", "iface", ("192.0.2.1", "eth1")),
        ("FLANNELD_IFACE_REGEX", "^en,^eth", "iface-regex", ("^en", "^eth")),
        ("FLANNELD_PUBLIC_IP", "192.0.2.7", "public-ip", "192.0.2.7"),
        ("FLANNELD_SUBNET_FILE", "/tmp/s.env", "subnet-file", "/tmp/s.env"),
        ("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "30", "subnet-lease-renew-margin", 30),
        ("FLANNELD_IPTABLES_RESYNC", "7", "iptables-resync", 7),
        ("FLANNELD_HEALTHZ_IP", "127.0.0.1", "healthz-ip", "127.0.0.1"),
        ("FLANNELD_HEALTHZ_PORT", "8471", "healthz-port", 8471),
    ],
)
def test_environment_fills_unset_flag(variable: str, value: str, flag: str,
                                      expected: object) -> None:
    assert field(parse(env={variable: value}), flag) == expected


@pytest.mark.parametrize(
    ("argv", "env", "flag", "expected"),
    [
        (["-etcd-prefix", "/cli"], {"FLANNELD_ETCD_PREFIX": "/env"}, "etcd-prefix", "/cli"),
        (["--etcd-prefix=/cli"], {"FLANNELD_ETCD_PREFIX": "/env"}, "etcd-prefix", "/cli"),
        (["-ip-masq=false"], {"FLANNELD_IP_MASQ": "true"}, "ip-masq", False),
        (["-iface", "eth2"], {"FLANNELD_IFACE": "eth0,eth1"}, "iface", ("eth2",)),
        (["-healthz-port", "1"], {"FLANNELD_HEALTHZ_PORT": "2"}, "healthz-port", 1),
    ],
)
def test_command_line_wins_over_environment(argv: list[str], env: dict[str, str], flag: str,
                                            expected: object) -> None:
    assert field(parse_args(argv, env), flag) == expected


def test_environment_and_command_line_combine() -> None:
    options = parse("-iface", "eth1", env={"FLANNELD_ETCD_PREFIX": "/env",
                                           "FLANNELD_IP_MASQ": "true"})
    assert (options.iface, options.etcd_prefix, options.ip_masq) == (("eth1",), "/env", True)


def test_bad_environment_value_is_ignored_when_the_flag_is_given() -> None:
    # flagutil.SetFlagsFromEnv only visits flags not set on the command line.
    assert parse("-healthz-port", "1", env={"FLANNELD_HEALTHZ_PORT": "x"}).healthz_port == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FLANNELD_IP_MASQ", "maybe"),
        ("FLANNELD_IPTABLES_FORWARD_RULES", "yes"),
        ("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "0"),
        ("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "1440"),
        ("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "soon"),
        ("FLANNELD_HEALTHZ_PORT", "65536"),
        ("FLANNELD_HEALTHZ_PORT", "x"),
        ("FLANNELD_IPTABLES_RESYNC", "1.5"),
        ("FLANNELD_PUBLIC_IP", "300.1.1.1"),
        ("FLANNELD_HEALTHZ_IP", "localhost"),
    ],
)
def test_bad_environment_value_names_the_variable(variable: str, value: str) -> None:
    assert variable in usage_error([], {variable: value})


@pytest.mark.parametrize(
    ("variable", "flag"),
    [
        ("FLANNELD_ETCD_PREFIX", "etcd-prefix"),
        ("FLANNELD_IP_MASQ", "ip-masq"),
        ("FLANNELD_IPTABLES_FORWARD_RULES", "iptables-forward-rules"),
        ("FLANNELD_HEALTHZ_PORT", "healthz-port"),
        ("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "subnet-lease-renew-margin"),
        ("FLANNELD_IFACE", "iface"),
    ],
)
def test_empty_environment_value_is_ignored(variable: str, flag: str) -> None:
    # flannel fills flags with coreos/pkg/flagutil.SetFlagsFromEnv, which skips `val == ""`:
    # `FLANNELD_HEALTHZ_PORT=` in a unit file leaves the default, it is not an error.
    assert field(parse(env={variable: ""}), flag) == field(Options(), flag)


# --- Options ------------------------------------------------------------------------------


def test_password_never_in_repr() -> None:
    secret = "hunter2-Sekr1t"
    for options in (
        Options(etcd_password=secret),
        parse("-etcd-password", secret),
        parse(env={"FLANNELD_ETCD_PASSWORD": secret}),
    ):
        assert options.etcd_password == secret
        assert secret not in repr(options)
        assert secret not in str(options)


def test_options_are_frozen() -> None:
    options = Options()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.etcd_prefix = "/x"  # type: ignore[misc]


# --- main(): one line on stderr, exit 2; -version and -help exit 0 --------------------------


@pytest.fixture(autouse=True)
def no_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No FLANNELD_* from the outside, and a daemon that fails the test if main() starts it."""
    for name in list(os.environ):
        if name.startswith("FLANNELD_"):
            monkeypatch.delenv(name)

    def run_daemon(options: Options) -> int:
        raise AssertionError(f"main() started the daemon with {options!r}")

    fake = types.ModuleType("flanneld.daemon")
    monkeypatch.setattr(fake, "run_daemon", run_daemon, raising=False)
    monkeypatch.setitem(sys.modules, "flanneld.daemon", fake)
    yield


def exit_code(argv: list[str]) -> object:
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    return excinfo.value.code


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["-nope"], "nope"),
        (["--nope=1"], "nope"),
        (["-ip-masq=maybe"], "ip-masq"),
        (["-subnet-lease-renew-margin", "0"], "subnet-lease-renew-margin"),
        (["-subnet-lease-renew-margin", "1440"], "subnet-lease-renew-margin"),
        (["-healthz-port", "65536"], "healthz-port"),
        (["-healthz-port=abc"], "healthz-port"),
        (["-public-ip", "300.1.1.1"], "public-ip"),
        (["-etcd-prefix"], "etcd-prefix"),
        (["-version", "extra"], "extra"),
    ],
)
def test_main_usage_error_is_one_line_and_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("flanneld: ")
    assert err.endswith("\n")
    assert named in err
    assert "Traceback" not in err


def test_main_bad_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLANNELD_HEALTHZ_PORT", "x")
    assert exit_code(["-version"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("flanneld: ")
    assert "FLANNELD_HEALTHZ_PORT" in err


@pytest.mark.parametrize("argv", [["-version"], ["--version"], ["-version=true"]])
def test_main_version_prints_version_and_exits_0(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(argv) == 0
    out, err = capsys.readouterr()
    assert (out + err).strip() == flanneld.__version__


def test_main_version_from_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLANNELD_VERSION", "true")
    assert exit_code([]) == 0
    out, err = capsys.readouterr()
    assert (out + err).strip() == flanneld.__version__


@pytest.mark.parametrize("argv", [["-help"], ["-h"], ["--help"]])
def test_main_help_prints_usage_and_exits_0(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(argv) == 0
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text
    assert usage() in text
    for flag in cli.FLAGS:  # Go flannel's full list: test_usage_names_every_flag
        assert f"-{flag.name}" in text, flag.name


@pytest.mark.parametrize(("argv", "expected"), [
    ([], ""), (["-offload=on"], "on"), (["--offload", "off"], "off"),
])
def test_offload_flag(argv: list[str], expected: str) -> None:
    assert parse(*argv).offload == expected


def test_offload_flag_rejects_other_values() -> None:
    assert "offload" in usage_error(["-offload=yes"])


@pytest.mark.parametrize(("backend", "flag", "expected"), [
    ({"Type": "udp"}, "off", False),
    ({"Type": "udp", "offload": True}, "off", False),
    ({"Type": "vxlan", "OFFLOAD": False}, "on", True),
])
def test_offload_flag_overrides_the_network_config(backend: dict[str, object], flag: str,
                                                    expected: bool) -> None:
    config = parse_network_config(json.dumps({"Network": "10.5.0.0/16", "Backend": backend}))
    changed = with_node_overrides(config, dataclasses.replace(Options(), offload=flag))
    assert changed.backend.option("Offload") is expected
    assert changed.backend.type == config.backend.type


def test_no_override_keeps_the_config() -> None:
    config = parse_network_config('{"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}')
    assert with_node_overrides(config, dataclasses.replace(Options(), offload="off")) is config


def test_every_flag_is_an_option_and_its_default_is_the_options() -> None:
    """Defaults are defined once, in Options: each flag reads its own from there."""
    from dataclasses import fields

    from flanneld.cli import FLAGS
    names = {flag.name.replace("-", "_") for flag in FLAGS}
    assert names | {"help"} == {f.name for f in fields(Options)}
    assert parse_args([], {}) == Options()
    assert all(flag.default == getattr(Options(), flag.name.replace("-", "_")) for flag in FLAGS)
