"""mk-docker-opts: flannel's mk-docker-opts script, subnet.env -> Docker options.

Reads subnet.env and writes a file a shell or systemd `EnvironmentFile=` can load:

    DOCKER_OPT_BIP="--bip=10.5.72.1/24"
    DOCKER_OPT_IPMASQ="--ip-masq=false"
    DOCKER_OPT_MTU="--mtu=1450"
    DOCKER_OPTS=" --bip=10.5.72.1/24 --ip-masq=false --mtu=1450"

`docker_opts()` and `parse_args()` are pure; `main()` is the thin shell that reads subnet.env
and writes the result with `write_atomic` (mode 0644).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from lease.errors import ConfigError, DecodeError, FlannelError

from .files import write_atomic
from .subnet_env import DEFAULT_SUBNET_FILE, parse_subnet_env

PROG: Final = "mk-docker-opts"
DEFAULT_OUTPUT_FILE: Final = "/run/docker_opts.env"
DEFAULT_KEY: Final = "DOCKER_OPTS"
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2

USAGE: Final = f"""\
{PROG} [-f FLANNEL-ENV-FILE] [-d DOCKER-ENV-FILE] [-i] [-c] [-m] [-k COMBINED-KEY]

Generate Docker daemon options based on flannel env file
OPTIONS:
\t-f\tPath to flannel env file. Defaults to {DEFAULT_SUBNET_FILE}
\t-d\tPath to Docker env file to write to. Defaults to {DEFAULT_OUTPUT_FILE}
\t-i\tOutput each Docker option as individual var. e.g. DOCKER_OPT_MTU=1500
\t-c\tOutput combined Docker options into {DEFAULT_KEY} var
\t-k\tSet the combined options key to this value (default {DEFAULT_KEY}=)
\t-m\tDo not output --ip-masq (useful for older Docker version)
\t-h\tShow this help
Without -i and -c, both are written."""

_SHELL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that keep their meaning inside "..." (or end it); flannel's script writes values
# unescaped, so a value holding one would yield a file that runs code or fails when sourced.
_UNSAFE_IN_QUOTES: Final = frozenset('"\\$`\n')
_FLAGS: Final = frozenset("icmh?")
_WITH_ARGUMENT: Final = frozenset("fdk")


class UsageError(ConfigError):
    """A bad command line; the message is the whole story."""


@dataclass(frozen=True, slots=True)
class Options:
    subnet_file: str = DEFAULT_SUBNET_FILE
    output_file: str = DEFAULT_OUTPUT_FILE
    individual: bool = True
    combined: bool = True
    key: str = DEFAULT_KEY
    ipmasq: bool = True
    help: bool = False


def parse_args(argv: Sequence[str]) -> Options:
    """The script's `getopts "f:d:icmk:?h"`: `-f FILE`, `-fFILE`, grouped flags (`-ic`),
    options end at `--` or the first operand. Operands are an error (the script ignored them).
    Neither -i nor -c means both, as in the script."""
    subnet_file, output_file, key = DEFAULT_SUBNET_FILE, DEFAULT_OUTPUT_FILE, DEFAULT_KEY
    individual = combined = False
    ipmasq = True
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            index -= 1
            break
        if arg.startswith("--"):
            raise UsageError(f"unknown option {arg} (see {PROG} -h)")
        position = 1
        while position < len(arg):
            letter = arg[position]
            position += 1
            if letter in _WITH_ARGUMENT:
                if position < len(arg):
                    value, position = arg[position:], len(arg)
                elif index < len(argv):
                    value, index = argv[index], index + 1
                else:
                    raise UsageError(f"option -{letter} requires an argument")
                if letter == "f":
                    subnet_file = value
                elif letter == "d":
                    output_file = value
                else:
                    key = value
            elif letter not in _FLAGS:
                raise UsageError(f"unknown option -{letter} (see {PROG} -h)")
            elif letter == "i":
                individual = True
            elif letter == "c":
                combined = True
            elif letter == "m":
                ipmasq = False
            else:
                return Options(help=True)  # the script's usage() ends the run where it stands
    if index < len(argv):
        raise UsageError(f"unexpected argument {argv[index]!r}")
    if not _SHELL_NAME.fullmatch(key):
        raise UsageError(f"-k {key!r} is not a shell variable name")
    if not individual and not combined:
        individual = combined = True
    return Options(subnet_file, output_file, individual, combined, key, ipmasq)


def _required(values: Mapping[str, str], name: str) -> str:
    value = values.get(name, "")
    if not value:
        raise DecodeError(f"{name} is missing or empty")
    return value


def docker_options(values: Mapping[str, str], *, ipmasq: bool) -> list[tuple[str, str]]:
    """(variable, option) pairs in the script's order (its variables sorted by name).

    FLANNEL_IPMASQ=true means flannel masquerades, so Docker must not (`--ip-masq=false`);
    `false` gives `--ip-masq=true`; unset or empty leaves the option out, as the script does;
    any other value is an error, as in the script.
    """
    pairs = [("DOCKER_OPT_BIP", f"--bip={_required(values, 'FLANNEL_SUBNET')}")]
    masq = values.get("FLANNEL_IPMASQ", "")
    if ipmasq and masq:
        if masq not in ("true", "false"):
            raise DecodeError(f"invalid FLANNEL_IPMASQ {masq!r} (want true or false)")
        pairs.append(("DOCKER_OPT_IPMASQ", f"--ip-masq={'false' if masq == 'true' else 'true'}"))
    pairs.append(("DOCKER_OPT_MTU", f"--mtu={_required(values, 'FLANNEL_MTU')}"))
    for _, option in pairs:
        if not _UNSAFE_IN_QUOTES.isdisjoint(option):
            raise DecodeError(f"{option!r} cannot be written inside double quotes")
    return pairs


def docker_opts(
    values: Mapping[str, str], *, individual: bool, combined: bool, key: str, ipmasq: bool
) -> str:
    """The text the script writes for subnet.env `values`: the individual DOCKER_OPT_* lines,
    then `key=" --bip=... --ip-masq=... --mtu=..."` (each option after one space)."""
    if not _SHELL_NAME.fullmatch(key):
        raise ConfigError(f"{key!r} is not a shell variable name")
    pairs = docker_options(values, ipmasq=ipmasq)
    lines = [f'{name}="{option}"' for name, option in pairs] if individual else []
    if combined:
        lines.append(f'{key}="{"".join(" " + option for _, option in pairs)}"')
    return "".join(line + "\n" for line in lines)


def _run(options: Options) -> None:
    try:
        with open(options.subnet_file, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FlannelError(f"cannot read {options.subnet_file}: {reason}") from None
    try:
        output = docker_opts(
            parse_subnet_env(text),
            individual=options.individual,
            combined=options.combined,
            key=options.key,
            ipmasq=options.ipmasq,
        )
    except DecodeError as exc:
        raise DecodeError(f"{options.subnet_file}: {exc}") from None
    try:
        write_atomic(options.output_file, output)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise FlannelError(f"cannot write {options.output_file}: {reason}") from None


def main(argv: Sequence[str] | None = None) -> None:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if options.help:
        print(USAGE)
        return
    try:
        _run(options)
    except FlannelError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
