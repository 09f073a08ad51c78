"""Command line: flannel's flags, parsed the way Go's flag package does, plus FLANNELD_* env.

One or two dashes; `-flag=value` or `-flag value`; boolean flags take `-flag` or
`-flag=false`. A flag not on the command line is read from `FLANNELD_<NAME>` (upper case,
`-` -> `_`). Unknown flags and bad values end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final

from . import __version__
from .options import Options

EXIT_USAGE: Final = 2
DEFAULTS: Final = Options()


class UsageError(Exception):
    """A bad command line; the message is the whole story."""


def _bool(text: str) -> bool:
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError("not a boolean (true/false)")


_GO_INT: Final = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)")


def _int(text: str) -> int:
    """Go's strconv.ParseInt(text, 0, 64): ASCII only, 0x/0b/0o prefixes, leading 0 = octal."""
    if not _GO_INT.fullmatch(text):
        raise ValueError("not an integer")
    sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
    if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
        return sign * int(digits, 8)
    return sign * int(digits, 0)


def _ipv4(text: str) -> str:
    return str(IPv4Address(text)) if text else ""


def _dataplane(text: str) -> str:
    if text not in ("", "kernel", "userspace"):
        raise ValueError("must be kernel or userspace")
    return text


def _wg_dataplane(text: str) -> str:
    if text not in ("", "auto", "kernel", "userspace"):
        raise ValueError("must be auto, kernel or userspace")
    return text


def _offload(text: str) -> str:
    if text not in ("", "on", "off"):
        raise ValueError("must be on or off")
    return text


def _ipv6(text: str) -> str:
    return str(IPv6Address(text)) if text else ""


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    help: str
    parse: Callable[[str], Any] = str
    repeated: bool = False
    check: Callable[[Any], str | None] = lambda value: None

    @property
    def is_bool(self) -> bool:
        return self.parse is _bool

    @property
    def default(self) -> Any:
        """flannel's default, as Options holds it (defined once, in flanneld/options.py)."""
        return getattr(DEFAULTS, self.name.replace("-", "_"))


def _between(low: int, high: int) -> Callable[[Any], str | None]:
    return lambda value: None if low <= value <= high else f"must be between {low} and {high}"


FLAGS: Final[tuple[Flag, ...]] = (
    Flag("etcd-endpoints", "a comma-delimited list of etcd endpoints"),
    Flag("etcd-prefix", "etcd prefix"),
    Flag("etcd-keyfile", "SSL key file used to secure etcd communication"),
    Flag("etcd-certfile", "SSL certification file used to secure etcd communication"),
    Flag("etcd-cafile", "SSL Certificate Authority file used to secure etcd communication"),
    Flag("etcd-username", "username for BasicAuth to etcd"),
    Flag("etcd-password", "password for BasicAuth to etcd"),
    Flag("iface", "interface to use (IP or name) for inter-host communication; repeatable",
         repeated=True),
    Flag("iface-regex", "regex of interface names or IPs to use; repeatable", repeated=True),
    Flag("iface-can-reach", "use the interface that routes to this IP", _ipv4),
    Flag("public-ip", "IP accessible by other nodes for inter-host communication", _ipv4),
    Flag("public-ipv6", "IPv6 accessible by other nodes for inter-host communication "
         "(with EnableIPv6)", _ipv6),
    Flag("subnet-file", "filename where env variables (subnet, MTU, ...) will be written to"),
    Flag("subnet-lease-renew-margin",
         "subnet lease renewal margin, in minutes, ranging from 1 to 1439", _int,
         check=_between(1, 1439)),
    Flag("subnet-lease-ttl",
         "TTL of the subnet lease in etcd, in seconds (flannel: fixed 86400)", _int,
         check=_between(5, 7 * 86400)),
    Flag("vxlan-dataplane", "vxlan only: this node's data plane, kernel or userspace "
         "(overrides the network config's Backend.Dataplane)", _dataplane),
    Flag("wireguard-dataplane", "wireguard only: this node's data plane, auto, kernel or "
         "userspace (overrides the network config's Backend.Dataplane)", _wg_dataplane),
    Flag("offload", "udp, userspace vxlan and wireguard: this node's TUN offloads and UDP "
         "GSO/GRO, on or off (overrides the network config's Backend.Offload)", _offload),
    Flag("ip-masq", "setup IP masquerade rule for traffic destined outside of overlay "
         "network", _bool),
    Flag("iptables-resync", "resync period for iptables rules, in seconds", _int,
         check=_between(1, 86400)),
    Flag("iptables-forward-rules", "add default accept rules to FORWARD chain", _bool),
    Flag("healthz-ip", "the IP address for healthz server to listen", _ipv4),
    Flag("healthz-port", "the port for healthz server to listen (0 to disable)", _int,
         check=_between(0, 65535)),
    Flag("v", "log level for V logs (>0 logs debug)", _int, check=_between(0, 10)),
    Flag("version", "print version and exit", _bool),
    Flag("print-systemd-unit", "print a systemd unit for flanneld and exit", _bool),
    Flag("print-docker-dropin",
         "print a docker.service drop-in that feeds it subnet.env, and exit", _bool),
)
_BY_NAME: Final = {flag.name: flag for flag in FLAGS}


def usage() -> str:
    lines = ["Usage: flanneld [OPTION]...", ""]
    for flag in FLAGS:
        kind = "" if flag.is_bool else " value"
        default = "" if flag.default in ("", (), False) else f" (default {flag.default})"
        lines.append(f"  -{flag.name}{kind}\n        {flag.help}{default}")
    lines.append("\nEvery flag can also be set as FLANNELD_<NAME>, e.g. FLANNELD_ETCD_ENDPOINTS.")
    return "\n".join(lines)


def _convert(flag: Flag, text: str, origin: str) -> Any:
    try:
        value = flag.parse(text)
    except ValueError as exc:
        reason = str(exc) if flag.parse in (_bool, _dataplane, _wg_dataplane) else "not valid"
        raise UsageError(f"invalid value {text!r} for {origin}: {reason}") from None
    problem = flag.check(value)
    if problem:
        raise UsageError(f"invalid value {text!r} for {origin}: {problem}")
    return value


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> Options:
    """Parse like Go's flag package, then fill unset flags from FLANNELD_* variables."""
    values: dict[str, Any] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            raise UsageError(f"unexpected argument {arg!r}")
        if arg.startswith("---") or arg[1:].startswith("-="):
            raise UsageError(f"bad flag syntax: {arg}")
        name, has_value, text = arg.lstrip("-").partition("=")
        if name in ("h", "help"):
            values["help"] = True
            continue
        flag = _BY_NAME.get(name)
        if flag is None:
            raise UsageError(f"unknown flag {arg.split('=')[0]!r} (see flanneld -help)")
        if not has_value and not flag.is_bool:
            if not args:
                raise UsageError(f"flag needs an argument: -{name}")
            text = args.pop(0)
        elif not has_value:
            text = "true"
        value = _convert(flag, text, f"flag -{name}")
        if flag.repeated:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    if args:
        raise UsageError(f"unexpected argument {args[0]!r}")

    for flag in FLAGS:
        env_name = "FLANNELD_" + flag.name.upper().replace("-", "_")
        if flag.name in values or not environ.get(env_name):
            continue  # unset and empty variables leave the default, as flannel's SetFlagsFromEnv
        text = environ[env_name]
        if flag.repeated:
            values[flag.name] = [_convert(flag, part.strip(), env_name)
                                 for part in text.split(",") if part.strip()]
        else:
            values[flag.name] = _convert(flag, text, env_name)

    fields: dict[str, Any] = {name.replace("-", "_"): tuple(v) if isinstance(v, list) else v
                              for name, v in values.items()}
    return Options(**fields)


def main(argv: Sequence[str] | None = None) -> None:
    import os

    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["status"]:
        from .status import main as status_main

        sys.exit(status_main(args[1:]))
    try:
        options = parse_args(args, os.environ)
    except UsageError as exc:
        print(f"flanneld: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if options.help:
        print(usage())
        sys.exit(0)
    if options.version:
        print(__version__)
        sys.exit(0)
    if options.print_systemd_unit or options.print_docker_dropin:
        from .systemd import DOCKER_DROPIN, unit_text

        executable = shutil.which("flanneld") or f"{sys.executable} -m flanneld"
        print(unit_text(executable) if options.print_systemd_unit else DOCKER_DROPIN, end="")
        sys.exit(0)

    from .daemon import run_daemon

    sys.exit(run_daemon(options))
