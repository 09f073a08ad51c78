"""flanneld/files.py: files written whole or not at all, with their mode, and the check at
start that they can be written."""

from __future__ import annotations

import os
import stat
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Final

import pytest

from flanneld.files import check_writable, write_atomic
from flanneld.subnet_env import format_subnet_env

SUBNET_ENV: Final = ("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\n"
                     "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")



def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_creates_parent_directories(tmp_path: Path) -> None:
    target = tmp_path / "run" / "flannel" / "subnet.env"
    write_atomic(target, SUBNET_ENV)
    assert target.read_bytes() == SUBNET_ENV.encode("ascii")


def test_write_content_is_exact(tmp_path: Path) -> None:
    target = tmp_path / "subnet.env"
    text = format_subnet_env(IPv4Network("10.5.0.0/16"), IPv4Network("10.5.72.0/24"), 1450, True,
                             IPv6Network("fd00:10:5::/48"), IPv6Network("fd00:10:5:48::/64"))
    write_atomic(str(target), text)
    assert target.read_bytes() == text.encode("ascii")


def test_write_mode_is_0644(tmp_path: Path) -> None:
    target = tmp_path / "subnet.env"
    write_atomic(target, SUBNET_ENV)
    assert mode_of(target) == 0o644


def test_write_mode_is_0644_under_a_strict_umask(tmp_path: Path) -> None:
    target = tmp_path / "subnet.env"
    old = os.umask(0o077)
    try:
        write_atomic(target, SUBNET_ENV)
    finally:
        os.umask(old)
    assert mode_of(target) == 0o644


def test_write_honours_an_explicit_mode(tmp_path: Path) -> None:
    target = tmp_path / "subnet.env"
    write_atomic(target, SUBNET_ENV, mode=0o600)
    assert mode_of(target) == 0o600


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "subnet.env"
    target.write_text("FLANNEL_SUBNET=10.9.9.1/24\n" * 100)
    target.chmod(0o600)
    old_inode = target.stat().st_ino
    write_atomic(target, SUBNET_ENV)
    assert target.read_text() == SUBNET_ENV
    assert mode_of(target) == 0o644
    # A rename, not a rewrite in place: a reader holding the old file never sees half a file.
    assert target.stat().st_ino != old_inode


def test_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "subnet.env"
    for mtu in (1450, 1500, 8951):
        write_atomic(target, SUBNET_ENV.replace("1450", str(mtu)))
    assert sorted(os.listdir(tmp_path)) == ["subnet.env"]
    assert "FLANNEL_MTU=8951\n" in target.read_text()


def test_failed_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "subnet.env"
    target.mkdir()
    (target / "occupied").write_text("x")
    with pytest.raises(OSError):
        write_atomic(target, SUBNET_ENV)
    assert sorted(os.listdir(tmp_path)) == ["subnet.env"]
    assert target.is_dir()


def test_check_writable_creates_the_directory_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "run" / "flannel" / "subnet.env"
    check_writable(target)
    assert target.parent.is_dir()
    assert list(target.parent.iterdir()) == []


def test_check_writable_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("")
    with pytest.raises(NotADirectoryError) as info:
        check_writable(tmp_path / "run" / "subnet.env")
    assert info.value.filename == str(tmp_path / "run")
    with pytest.raises(NotADirectoryError):
        check_writable(tmp_path / "run" / "flannel" / "subnet.env")


def test_check_writable_refuses_a_directory_as_the_file(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path)
