"""subnet.env: flannel's hand-off file to Docker and friends (FLANNEL.md §2).

format/parse are pure; write_atomic is the one effect (temp file + rename, mode 0644), so a
reader never sees half a file; check_writable tries the same steps at start, before a lease
is taken.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Mapping
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path

from lease.errors import DecodeError


def format_subnet_env(
    network: IPv4Network,
    subnet: IPv4Network,
    mtu: int,
    ip_masq: bool,
    ipv6_network: IPv6Network | None = None,
    ipv6_subnet: IPv6Network | None = None,
) -> str:
    """flannel's WriteSubnetFile, byte for byte: FLANNEL_SUBNET is the first usable address
    with the subnet's prefix length (what `dockerd --bip` wants)."""
    lines = [
        f"FLANNEL_NETWORK={network}",
        f"FLANNEL_SUBNET={subnet.network_address + 1}/{subnet.prefixlen}",
    ]
    if ipv6_network is not None and ipv6_subnet is not None:
        lines.append(f"FLANNEL_IPV6_NETWORK={ipv6_network}")
        first6 = ipv6_subnet.network_address + 1
        lines.append(f"FLANNEL_IPV6_SUBNET={first6}/{ipv6_subnet.prefixlen}")
    lines.append(f"FLANNEL_MTU={mtu}")
    lines.append(f"FLANNEL_IPMASQ={'true' if ip_masq else 'false'}")
    return "\n".join(lines) + "\n"


def parse_subnet_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments skipped); DecodeError on anything else."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise DecodeError(f"subnet.env line {number}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def previous_subnet(values: Mapping[str, str]) -> IPv4Network | None:
    """The subnet a previous run held (the hint for allocation), if the file names one."""
    text = values.get("FLANNEL_SUBNET")
    if not text:
        return None
    try:
        return IPv4Interface(text).network
    except ValueError:
        raise DecodeError(f"subnet.env: FLANNEL_SUBNET={text!r} is not an IPv4 CIDR") from None


def previous_ipv6_subnet(values: Mapping[str, str]) -> IPv6Network | None:
    text = values.get("FLANNEL_IPV6_SUBNET")
    if not text:
        return None
    try:
        return IPv6Interface(text).network
    except ValueError:
        raise DecodeError(f"subnet.env: FLANNEL_IPV6_SUBNET={text!r} is not an IPv6 CIDR") from None


def _temp_beside(target: Path) -> tuple[int, str]:
    """A new temporary file in `target`'s directory, made if missing: mkstemp's (fd, path).
    NotADirectoryError naming the directory if a file is in its place."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # what mkdir says when the directory is a file
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR),
                                 str(target.parent)) from None
    return tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)


def write_atomic(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    target = Path(path)
    fd, tmp = _temp_beside(target)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike[str]) -> None:
    """OSError unless write_atomic could write `path`: its directory is created if missing
    (as write_atomic does), and a temporary file is made there and removed."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    fd, tmp = _temp_beside(target)
    os.close(fd)
    os.unlink(tmp)
