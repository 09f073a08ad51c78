"""backends/_bulk.py against the kernel itself, in a namespace of the test's own: what the
bulk requests add, the bulk deletes take away again, only ours, and entries that are
already gone count as gone, not as failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flanneld.lab import sh

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = """
import asyncio, json, sys
from ipaddress import IPv4Address as A, IPv4Network as N
from backends._bulk import *
index = {name: int(open(f"/sys/class/net/{name}/ifindex").read()) for name in ("d0", "vx0")}
requests = eval(sys.argv[1])
failed, gone = asyncio.run(program(requests, "test"))
print(json.dumps([[r.what for r in failed], gone]))
"""
MAC = "bytes.fromhex('0e0102030405')"


@pytest.fixture
def ns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (a network namespace of its own)")
    name = f"flbulk{os.getpid()}"
    sh("ip", "netns", "add", name)
    try:
        for command in (
            "link add d0 type veth peer name d1", "link set d1 up", "link set d0 up",
            "addr add 192.0.2.1/24 dev d0",
            "link add vx0 type vxlan id 1 dstport 8472 local 192.0.2.1 nolearning proxy "
            "l2miss l3miss",
            "link set vx0 up",
        ):
            sh("ip", "-n", name, *command.split())
        yield name
    finally:
        sh("ip", "netns", "del", name)


def run_in(ns: str, script: str, *args: str) -> Any:
    """Run a Python script inside the namespace; the JSON it prints."""
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", script, *args],
                          cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)


def program(ns: str, requests: str) -> tuple[list[str], int]:
    """Run backends._bulk.program on `requests` (Python source) inside the namespace."""
    failed, gone = run_in(ns, PROGRAM, requests)
    return failed, gone


def ours(ns: str, dev: str = "d0") -> set[str]:
    out = sh("ip", "-n", ns, "-4", "route", "show", "proto", "70", "dev", dev).stdout
    return {line.split()[0] for line in out.splitlines()}


def test_bulk_deletes_take_away_what_bulk_added_and_only_ours(ns: str) -> None:
    nets = [f"10.9.{i}.0/24" for i in range(40)]
    failed, gone = program(ns, "[" + ",".join(
        f"route_replace(N('{net}'), A('192.0.2.9'), index['d0'], 70)" for net in nets) + "]")
    assert (failed, gone) == ([], 0)
    assert ours(ns) == set(nets)
    # somebody flushed one of ours, and took over another subnet with a route of their own
    sh("ip", "-n", ns, "route", "del", nets[0])
    sh("ip", "-n", ns, "route", "replace", nets[1], "via", "192.0.2.9", "proto", "static")
    failed, gone = program(ns, "[" + ",".join(
        f"route_delete(N('{net}'), A('192.0.2.9'), index['d0'], 70)" for net in nets) + "]")
    assert (failed, gone) == ([], 2)  # both not ours to delete: gone, not failed
    assert ours(ns) == set()
    assert "10.9.1.0/24 via 192.0.2.9" in sh("ip", "-n", ns, "route", "show", "proto",
                                             "static").stdout


def test_bulk_deletes_of_a_vxlan_peer_remove_route_neighbour_and_fdb_entry(ns: str) -> None:
    peer = (f"route_replace(N('10.9.3.0/24'), A('10.9.3.0'), index['vx0'], 70, onlink=True),"
            f"neigh_replace(A('10.9.3.0'), {MAC}, index['vx0']),"
            f"fdb_replace({MAC}, A('192.0.2.3'), index['vx0'])")
    assert program(ns, f"[{peer}]") == ([], 0)
    assert ours(ns, "vx0") == {"10.9.3.0/24"}
    assert "0e:01:02:03:04:05" in sh("ip", "-n", ns, "neigh", "show", "dev", "vx0").stdout
    removal = (f"route_delete(N('10.9.3.0/24'), A('10.9.3.0'), index['vx0'], 70, onlink=True),"
               f"fdb_delete({MAC}, A('192.0.2.3'), index['vx0']),"
               f"neigh_delete(A('10.9.3.0'), index['vx0'])")
    assert program(ns, f"[{removal}]") == ([], 0)
    assert ours(ns, "vx0") == set()
    assert "0e:01:02:03:04:05" not in sh("ip", "-n", ns, "neigh", "show", "dev", "vx0").stdout
    assert "192.0.2.3" not in sh("bridge", "-n", ns, "fdb", "show", "dev", "vx0").stdout
    # a second time: everything is gone already, and a request that cannot work fails
    failed, gone = program(ns, f"[{removal}, route_replace(N('10.9.4.0/24'), A('10.9.4.1'), "
                               f"index['d0'], 70)]")
    assert (failed, gone) == (["route 10.9.4.0/24 via 10.9.4.1"], 3)


MISSES = """
import json, socket, subprocess, time
from backends._bulk import miss_socket, parse_misses, _NLMSGHDR
sock = miss_socket()
# changes the socket must not see: a neighbour and an FDB entry added and deleted
for args in ("neigh replace 10.9.9.9 lladdr 0e:00:00:00:00:09 dev vx0 nud permanent",
             "neigh del 10.9.9.9 dev vx0",
             "fdb append 0e:00:00:00:00:0a dev vx0 dst 192.0.2.10 self permanent"):
    cmd = ("bridge " if args.startswith("fdb") else "ip ") + args
    subprocess.run(cmd.split(), check=True)
subprocess.run("ping -c 2 -i 0.2 -W 1 10.9.8.8".split(), capture_output=True)  # a miss
types, misses, deadline = [], [], time.monotonic() + 2
while time.monotonic() < deadline:
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        time.sleep(0.05)
        continue
    types.append(_NLMSGHDR.unpack_from(data)[1])
    misses += [[m.family, m.dst, m.lladdr] for m in parse_misses(data)]
print(json.dumps([types, misses]))
"""


def test_the_miss_socket_sees_the_kernels_misses_and_nothing_else(ns: str) -> None:
    sh("ip", "-n", ns, "addr", "add", "10.9.1.0/32", "dev", "vx0")
    sh("ip", "-n", ns, "route", "add", "10.9.8.0/24", "dev", "vx0")
    # as the vxlan backend sets it: neighbour resolution on vx0 asks userspace
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.neigh.vx0.app_solicit=3")
    types, misses = run_in(ns, MISSES)
    assert types and set(types) == {30}, types  # RTM_GETNEIGH only
    assert [socket.AF_INET, "10.9.8.8", None] in misses, misses
