"""Tests for flanneld/docker_opts.py: flannel's mk-docker-opts script."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Final

import pytest

from flanneld import docker_opts as module
from flanneld.docker_opts import (
    DEFAULT_KEY,
    DEFAULT_OUTPUT_FILE,
    USAGE,
    Options,
    UsageError,
    docker_opts,
    main,
    parse_args,
)
from flanneld.subnet_env import DEFAULT_SUBNET_FILE, format_subnet_env, parse_subnet_env
from lease.errors import ConfigError, DecodeError

ROOT: Final = Path(__file__).resolve().parents[2]
SH: Final = "/bin/sh"

# (backend, mtu, FLANNEL_IPMASQ) -> what flanneld writes; the MTUs are flannel's for a 1500
# byte link: host-gw adds no header, udp 28 bytes, vxlan 50.
BACKENDS: Final = [("host-gw", 1500), ("udp", 1472), ("vxlan", 1450)]
VECTORS: Final = [
    pytest.param(mtu, masq, id=f"{backend}-ipmasq-{'true' if masq else 'false'}")
    for backend, mtu in BACKENDS
    for masq in (True, False)
]


def subnet_env(mtu: int, masq: bool) -> str:
    return format_subnet_env(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.72.0/24"), mtu, masq)


def expected(mtu: int, masq: bool, *, individual: bool = True, combined: bool = True,
             key: str = DEFAULT_KEY, ipmasq: bool = True) -> str:
    """The script's output, spelled out by hand."""
    lines: list[str] = []
    docker_masq = "false" if masq else "true"
    if individual:
        lines.append('DOCKER_OPT_BIP="--bip=10.5.72.1/24"')
        if ipmasq:
            lines.append(f'DOCKER_OPT_IPMASQ="--ip-masq={docker_masq}"')
        lines.append(f'DOCKER_OPT_MTU="--mtu={mtu}"')
    if combined:
        masq_part = f" --ip-masq={docker_masq}" if ipmasq else ""
        lines.append(f'{key}=" --bip=10.5.72.1/24{masq_part} --mtu={mtu}"')
    return "".join(line + "\n" for line in lines)


def run(argv: Sequence[str]) -> None:
    """main() must return normally (exit status 0)."""
    main(list(argv))


def fail(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run main(argv), which must exit non-zero with one line on stderr; (code, that line)."""
    with pytest.raises(SystemExit) as excinfo:
        main(list(argv))
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("mk-docker-opts: ")
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    code = excinfo.value.code
    assert isinstance(code, int)
    return code, err.rstrip("\n")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """(subnet.env path, output path) in tmp_path; subnet.env is vxlan with FLANNEL_IPMASQ=true."""
    subnet = tmp_path / "subnet.env"
    subnet.write_text(subnet_env(1450, True))
    return subnet, tmp_path / "docker_opts.env"


# --- the pure function --------------------------------------------------------------------

@pytest.mark.parametrize(("mtu", "masq"), VECTORS)
@pytest.mark.parametrize("ipmasq", [True, False], ids=["masq-option", "m"])
@pytest.mark.parametrize(("individual", "combined"),
                         [(True, True), (True, False), (False, True)], ids=["both", "i", "c"])
def test_docker_opts_vectors(mtu: int, masq: bool, ipmasq: bool, individual: bool,
                             combined: bool) -> None:
    values = {"FLANNEL_NETWORK": "10.5.0.0/16", "FLANNEL_SUBNET": "10.5.72.1/24",
              "FLANNEL_MTU": str(mtu), "FLANNEL_IPMASQ": "true" if masq else "false"}
    text = docker_opts(values, individual=individual, combined=combined, key=DEFAULT_KEY,
                       ipmasq=ipmasq)
    assert text == expected(mtu, masq, individual=individual, combined=combined, ipmasq=ipmasq)


def test_docker_opts_exact_default_text() -> None:
    values = {"FLANNEL_SUBNET": "10.5.72.1/24", "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "true"}
    assert docker_opts(values, individual=True, combined=True, key="DOCKER_OPTS",
                       ipmasq=True) == (
        'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\n'
        'DOCKER_OPT_IPMASQ="--ip-masq=false"\n'
        'DOCKER_OPT_MTU="--mtu=1450"\n'
        'DOCKER_OPTS=" --bip=10.5.72.1/24 --ip-masq=false --mtu=1450"\n'
    )


def test_docker_opts_custom_key_names_only_the_combined_line() -> None:
    values = {"FLANNEL_SUBNET": "10.1.2.1/24", "FLANNEL_MTU": "1472", "FLANNEL_IPMASQ": "false"}
    assert docker_opts(values, individual=True, combined=True, key="FLANNEL_DOCKER",
                       ipmasq=True) == (
        'DOCKER_OPT_BIP="--bip=10.1.2.1/24"\n'
        'DOCKER_OPT_IPMASQ="--ip-masq=true"\n'
        'DOCKER_OPT_MTU="--mtu=1472"\n'
        'FLANNEL_DOCKER=" --bip=10.1.2.1/24 --ip-masq=true --mtu=1472"\n'
    )


def test_docker_opts_neither_part_is_empty() -> None:
    values = {"FLANNEL_SUBNET": "10.1.2.1/24", "FLANNEL_MTU": "1472"}
    assert docker_opts(values, individual=False, combined=False, key="K", ipmasq=True) == ""


@pytest.mark.parametrize("ipmasq", [True, False])
@pytest.mark.parametrize("values", [{}, {"FLANNEL_IPMASQ": ""}], ids=["unset", "empty"])
def test_docker_opts_without_flannel_ipmasq_leaves_the_option_out(
    values: dict[str, str], ipmasq: bool,
) -> None:
    full = {"FLANNEL_SUBNET": "10.1.2.1/24", "FLANNEL_MTU": "1500", **values}
    assert docker_opts(full, individual=True, combined=True, key="K", ipmasq=ipmasq) == (
        'DOCKER_OPT_BIP="--bip=10.1.2.1/24"\n'
        'DOCKER_OPT_MTU="--mtu=1500"\n'
        'K=" --bip=10.1.2.1/24 --mtu=1500"\n'
    )


@pytest.mark.parametrize(("values", "message"), [
    ({"FLANNEL_MTU": "1450"}, "FLANNEL_SUBNET is missing or empty"),
    ({"FLANNEL_SUBNET": "", "FLANNEL_MTU": "1450"}, "FLANNEL_SUBNET is missing or empty"),
    ({"FLANNEL_SUBNET": "10.5.72.1/24"}, "FLANNEL_MTU is missing or empty"),
    ({"FLANNEL_SUBNET": "10.5.72.1/24", "FLANNEL_MTU": ""}, "FLANNEL_MTU is missing or empty"),
    ({"FLANNEL_SUBNET": "10.5.72.1/24", "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "yes"},
     "invalid FLANNEL_IPMASQ 'yes'"),
    ({"FLANNEL_SUBNET": "10.5.72.1/24", "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "True"},
     "invalid FLANNEL_IPMASQ 'True'"),
    ({"FLANNEL_SUBNET": "10.5.72.1/24", "FLANNEL_MTU": "$(reboot)"}, "inside double quotes"),
    ({"FLANNEL_SUBNET": '10.5.72.1/24"', "FLANNEL_MTU": "1450"}, "inside double quotes"),
    ({"FLANNEL_SUBNET": "10.5.72.1/24", "FLANNEL_MTU": "`id`"}, "inside double quotes"),
    ({"FLANNEL_SUBNET": "10.5.72.1/24\\", "FLANNEL_MTU": "1450"}, "inside double quotes"),
    ({"FLANNEL_SUBNET": "10.5.72.1/24\nX=1", "FLANNEL_MTU": "1450"}, "inside double quotes"),
], ids=["no-subnet", "empty-subnet", "no-mtu", "empty-mtu", "ipmasq-yes", "ipmasq-True",
        "dollar", "quote", "backtick", "backslash", "newline"])
def test_docker_opts_rejects_bad_values(values: Mapping[str, str], message: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)):
        docker_opts(values, individual=True, combined=True, key=DEFAULT_KEY, ipmasq=True)


def test_docker_opts_m_skips_the_ipmasq_check_like_the_script() -> None:
    values = {"FLANNEL_SUBNET": "10.5.72.1/24", "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "yes"}
    assert docker_opts(values, individual=False, combined=True, key="K", ipmasq=False) == (
        'K=" --bip=10.5.72.1/24 --mtu=1450"\n'
    )


@pytest.mark.parametrize("key", ["", "1ABC", "A-B", "A B", "A=B", 'A"'])
def test_docker_opts_rejects_a_key_that_is_no_shell_name(key: str) -> None:
    values = {"FLANNEL_SUBNET": "10.5.72.1/24", "FLANNEL_MTU": "1450"}
    with pytest.raises(ConfigError, match="not a shell variable name"):
        docker_opts(values, individual=True, combined=True, key=key, ipmasq=True)


# --- option parsing -----------------------------------------------------------------------

DEFAULTS: Final = Options(DEFAULT_SUBNET_FILE, DEFAULT_OUTPUT_FILE, True, True, DEFAULT_KEY,
                          True, False)


@pytest.mark.parametrize(("argv", "options"), [
    ([], DEFAULTS),
    (["-i"], Options(individual=True, combined=False)),
    (["-c"], Options(individual=False, combined=True)),
    (["-i", "-c"], DEFAULTS),
    (["-ic"], DEFAULTS),
    (["-ci"], DEFAULTS),
    (["-m"], Options(ipmasq=False)),
    (["-mc"], Options(individual=False, ipmasq=False)),
    (["-f", "/x/subnet.env"], Options(subnet_file="/x/subnet.env")),
    (["-f/x/subnet.env"], Options(subnet_file="/x/subnet.env")),
    (["-d", "/x/out.env"], Options(output_file="/x/out.env")),
    (["-d/x/out.env"], Options(output_file="/x/out.env")),
    (["-k", "FLANNEL_DOCKER"], Options(key="FLANNEL_DOCKER")),
    (["-kFLANNEL_DOCKER"], Options(key="FLANNEL_DOCKER")),
    (["-ick", "K"], Options(key="K")),
    (["-ickK"], Options(key="K")),
    (["-mif", "a", "-d", "b", "-k", "K", "-c"], Options("a", "b", True, True, "K", False)),
    (["-f", "-i"], Options(subnet_file="-i")),  # getopts: the next word is the argument
    (["-f", "a", "-f", "b"], Options(subnet_file="b")),  # the last one wins
    (["-i", "--"], Options(individual=True, combined=False)),
    (["-h"], Options(help=True)),
    (["-?"], Options(help=True)),
    (["-i", "-h", "-x"], Options(help=True)),  # usage ends the run where it stands
    (["-ih"], Options(help=True)),
], ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_parse_args(argv: list[str], options: Options) -> None:
    assert parse_args(argv) == options


@pytest.mark.parametrize(("argv", "message"), [
    (["-x"], "unknown option -x (see mk-docker-opts -h)"),
    (["-ix"], "unknown option -x (see mk-docker-opts -h)"),
    (["--help"], "unknown option --help (see mk-docker-opts -h)"),
    (["-f"], "option -f requires an argument"),
    (["-i", "-d"], "option -d requires an argument"),
    (["-ik"], "option -k requires an argument"),
    (["extra"], "unexpected argument 'extra'"),
    (["-i", "extra"], "unexpected argument 'extra'"),
    (["-"], "unexpected argument '-'"),
    (["--", "-i"], "unexpected argument '-i'"),
    (["-k", "A-B"], "-k 'A-B' is not a shell variable name"),
    (["-k", ""], "-k '' is not a shell variable name"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_parse_args_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        parse_args(argv)
    assert str(excinfo.value) == message


def test_usage_names_every_option() -> None:
    for letter in "fdickmh":
        assert f"\t-{letter}\t" in USAGE


# --- the command --------------------------------------------------------------------------

@pytest.mark.parametrize(("mtu", "masq"), VECTORS)
def test_main_default_writes_individual_and_combined(mtu: int, masq: bool, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    subnet, out = tmp_path / "subnet.env", tmp_path / "docker_opts.env"
    subnet.write_text(subnet_env(mtu, masq))
    run(["-f", str(subnet), "-d", str(out)])
    assert out.read_text() == expected(mtu, masq)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(("flags", "want"), [
    (["-i"], expected(1450, True, combined=False)),
    (["-c"], expected(1450, True, individual=False)),
    (["-i", "-c"], expected(1450, True)),
    (["-ic"], expected(1450, True)),
    (["-m"], expected(1450, True, ipmasq=False)),
    (["-mi"], expected(1450, True, combined=False, ipmasq=False)),
    (["-m", "-c"], expected(1450, True, individual=False, ipmasq=False)),
    (["-k", "FLANNEL_DOCKER"], expected(1450, True, key="FLANNEL_DOCKER")),
    (["-ck", "OPTS"], expected(1450, True, individual=False, key="OPTS")),
    (["-icmkX"], expected(1450, True, key="X", ipmasq=False)),
], ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_main_options(flags: list[str], want: str, files: tuple[Path, Path]) -> None:
    subnet, out = files
    run([*flags, "-f", str(subnet), "-d", str(out)])
    assert out.read_text() == want


def test_main_attached_file_arguments(files: tuple[Path, Path]) -> None:
    subnet, out = files
    run([f"-f{subnet}", f"-d{out}"])
    assert out.read_text() == expected(1450, True)


def test_main_exact_file_and_mode(files: tuple[Path, Path]) -> None:
    subnet, out = files
    old_umask = os.umask(0o077)
    try:
        run(["-f", str(subnet), "-d", str(out)])
    finally:
        os.umask(old_umask)
    assert out.read_bytes() == (
        b'DOCKER_OPT_BIP="--bip=10.5.72.1/24"\n'
        b'DOCKER_OPT_IPMASQ="--ip-masq=false"\n'
        b'DOCKER_OPT_MTU="--mtu=1450"\n'
        b'DOCKER_OPTS=" --bip=10.5.72.1/24 --ip-masq=false --mtu=1450"\n'
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in out.parent.iterdir()) == ["docker_opts.env", "subnet.env"]


def test_main_replaces_an_existing_file(files: tuple[Path, Path]) -> None:
    subnet, out = files
    out.write_text("OLD=1\n" * 100)
    out.chmod(0o600)
    run(["-c", "-f", str(subnet), "-d", str(out)])
    assert out.read_text() == expected(1450, True, individual=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_main_creates_the_output_directory(files: tuple[Path, Path]) -> None:
    subnet, out = files
    target = out.parent / "run" / "docker_opts.env"
    run(["-f", str(subnet), "-d", str(target)])
    assert target.read_text() == expected(1450, True)


def test_main_reads_quoted_and_commented_subnet_env(tmp_path: Path) -> None:
    subnet, out = tmp_path / "subnet.env", tmp_path / "out.env"
    subnet.write_text('# written by hand\nFLANNEL_SUBNET="10.9.8.1/24"\n\nFLANNEL_MTU=\'1472\'\n'
                      "FLANNEL_IPMASQ=false\n")
    run(["-c", "-f", str(subnet), "-d", str(out)])
    assert out.read_text() == 'DOCKER_OPTS=" --bip=10.9.8.1/24 --ip-masq=true --mtu=1472"\n'


def test_main_uses_sys_argv_and_the_defaults(monkeypatch: pytest.MonkeyPatch,
                                             files: tuple[Path, Path]) -> None:
    subnet, out = files
    monkeypatch.setattr(module, "DEFAULT_SUBNET_FILE", str(subnet))
    monkeypatch.setattr(sys, "argv", ["mk-docker-opts", "-i", "-d", str(out)])
    main()
    assert out.read_text() == expected(1450, True, combined=False)


def test_main_help(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    subnet, out = files
    run(["-h", "-f", str(subnet), "-d", str(out)])
    assert capsys.readouterr() == (USAGE + "\n", "")
    assert not out.exists()


# --- errors: one line, no traceback, nothing written --------------------------------------

@pytest.mark.parametrize(("argv", "line"), [
    (["-x"], "mk-docker-opts: unknown option -x (see mk-docker-opts -h)"),
    (["-f"], "mk-docker-opts: option -f requires an argument"),
    (["-ik"], "mk-docker-opts: option -k requires an argument"),
    (["-i", "-d"], "mk-docker-opts: option -d requires an argument"),
    (["--mtu"], "mk-docker-opts: unknown option --mtu (see mk-docker-opts -h)"),
    (["subnet.env"], "mk-docker-opts: unexpected argument 'subnet.env'"),
    (["-k", "NOT-A-NAME"], "mk-docker-opts: -k 'NOT-A-NAME' is not a shell variable name"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_main_usage_errors_exit_2(argv: list[str], line: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert fail(argv, capsys) == (2, line)


def test_main_missing_subnet_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing, out = tmp_path / "nope.env", tmp_path / "out.env"
    assert fail(["-f", str(missing), "-d", str(out)], capsys) == (
        1, f"mk-docker-opts: cannot read {missing}: No such file or directory")
    assert not out.exists()


def test_main_subnet_file_is_a_directory(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.env"
    assert fail(["-f", str(tmp_path), "-d", str(out)], capsys) == (
        1, f"mk-docker-opts: cannot read {tmp_path}: Is a directory")
    assert not out.exists()


def test_main_subnet_file_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subnet, out = tmp_path / "subnet.env", tmp_path / "out.env"
    subnet.write_bytes(b"FLANNEL_SUBNET=\xff\n")
    code, line = fail(["-f", str(subnet), "-d", str(out)], capsys)
    assert code == 1
    assert line.startswith(f"mk-docker-opts: cannot read {subnet}: ")
    assert not out.exists()


@pytest.mark.parametrize(("text", "reason"), [
    ("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", "FLANNEL_SUBNET is missing or empty"),
    ("FLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPMASQ=true\n", "FLANNEL_MTU is missing or empty"),
    ("FLANNEL_SUBNET=\nFLANNEL_MTU=1450\n", "FLANNEL_SUBNET is missing or empty"),
    ("", "FLANNEL_SUBNET is missing or empty"),
    ("FLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=maybe\n",
     "invalid FLANNEL_IPMASQ 'maybe' (want true or false)"),
    ("FLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450$(id)\n",
     "'--mtu=1450$(id)' cannot be written inside double quotes"),
    ("FLANNEL_SUBNET=10.5.72.1/24\nexport FLANNEL_MTU\n",
     "subnet.env line 2: expected KEY=VALUE, got 'export FLANNEL_MTU'"),
], ids=["no-subnet", "no-mtu", "empty-subnet", "empty-file", "bad-ipmasq", "unsafe",
        "malformed"])
def test_main_bad_subnet_file_exits_1(text: str, reason: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    subnet, out = tmp_path / "subnet.env", tmp_path / "out.env"
    subnet.write_text(text)
    assert fail(["-f", str(subnet), "-d", str(out)], capsys) == (
        1, f"mk-docker-opts: {subnet}: {reason}")
    assert not out.exists()


def test_main_unwritable_output(files: tuple[Path, Path],
                                capsys: pytest.CaptureFixture[str]) -> None:
    subnet, out = files
    blocker = out.parent / "file"
    blocker.write_text("")
    target = blocker / "docker_opts.env"  # its parent is a regular file
    code, line = fail(["-f", str(subnet), "-d", str(target)], capsys)
    assert code == 1
    assert line.startswith(f"mk-docker-opts: cannot write {target}: ")


def test_main_output_is_a_directory(files: tuple[Path, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    subnet, out = files
    out.mkdir()
    assert fail(["-f", str(subnet), "-d", str(out)], capsys) == (
        1, f"mk-docker-opts: cannot write {out}: Is a directory")
    assert sorted(p.name for p in out.parent.iterdir()) == ["docker_opts.env", "subnet.env"]


def test_module_runs_as_a_program(tmp_path: Path) -> None:
    """`python -m flanneld.docker_opts`: the __main__ guard, real exit codes, no traceback."""
    subnet, out = tmp_path / "subnet.env", tmp_path / "out.env"
    subnet.write_text(subnet_env(1472, False))
    ok = subprocess.run([sys.executable, "-m", "flanneld.docker_opts", "-f", str(subnet), "-d",
                         str(out)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    assert out.read_text() == expected(1472, False)
    bad = subprocess.run([sys.executable, "-m", "flanneld.docker_opts", "-f",
                          str(tmp_path / "missing")], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("mk-docker-opts: cannot read ")
    assert bad.stderr.count("\n") == 1


# --- a real shell reads what we wrote -----------------------------------------------------

def sh_value(path: Path, name: str) -> str:
    script = f'. "$1"; printf %s "${name}"'
    result = subprocess.run([SH, "-c", script, "sh", str(path)], capture_output=True,
                            text=True, check=True)
    assert result.stderr == ""
    return result.stdout


@pytest.mark.parametrize(("mtu", "masq"), VECTORS)
def test_sh_sources_the_combined_line(mtu: int, masq: bool, tmp_path: Path) -> None:
    subnet, out = tmp_path / "subnet.env", tmp_path / "docker_opts.env"
    subnet.write_text(subnet_env(mtu, masq))
    run(["-f", str(subnet), "-d", str(out)])
    result = subprocess.run([SH, "-c", f'. {out}; printf %s "$DOCKER_OPTS"'],
                            capture_output=True, text=True, check=True)
    docker_masq = "false" if masq else "true"
    assert result.stdout == f" --bip=10.5.72.1/24 --ip-masq={docker_masq} --mtu={mtu}"
    assert sh_value(out, "DOCKER_OPT_BIP") == "--bip=10.5.72.1/24"
    assert sh_value(out, "DOCKER_OPT_IPMASQ") == f"--ip-masq={docker_masq}"
    assert sh_value(out, "DOCKER_OPT_MTU") == f"--mtu={mtu}"


def test_sh_sources_a_custom_key_without_ipmasq(files: tuple[Path, Path]) -> None:
    subnet, out = files
    run(["-c", "-m", "-k", "FLANNEL_DOCKER_OPTS", "-f", str(subnet), "-d", str(out)])
    assert sh_value(out, "FLANNEL_DOCKER_OPTS") == " --bip=10.5.72.1/24 --mtu=1450"
    assert sh_value(out, "DOCKER_OPT_BIP") == ""


def test_dual_stack_subnet_env_gives_the_same_options_as_flannels_script() -> None:
    # flannel's mk-docker-opts script reads only FLANNEL_SUBNET, FLANNEL_MTU and
    # FLANNEL_IPMASQ: the IPv6 lines flanneld writes for dual stack change nothing
    v4_only = format_subnet_env(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.72.0/24"),
                                1450, True)
    dual = format_subnet_env(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.72.0/24"), 1450,
                             True, IPv6Network("fc00:5::/48"), IPv6Network("fc00:5:0:48::/64"))
    assert "FLANNEL_IPV6_SUBNET=fc00:5:0:48::1/64\n" in dual
    for individual, combined in ((True, True), (True, False), (False, True)):
        assert docker_opts(parse_subnet_env(dual), individual=individual, combined=combined,
                           key=DEFAULT_KEY, ipmasq=True) == \
            docker_opts(parse_subnet_env(v4_only), individual=individual, combined=combined,
                        key=DEFAULT_KEY, ipmasq=True)
