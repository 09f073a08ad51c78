"""Fixtures for tests that need root, network namespaces and a real etcd.

These tests are the heart of the suite: they fail (not skip) when the machine cannot run
them, so a green run always means they ran.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flanneld.lab import Lab, sh, wait_for

HOST_GW = {"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}


def _require() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces); run them as root")
    missing = [t for t in ("ip", "etcd", "etcdctl", "iperf3", "ping", "ss", "socat", "ethtool")
               if not shutil.which(t)]
    if missing:
        pytest.fail(f"integration tests need {', '.join(missing)}; run the README's test command")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """An underlay namespace with a real etcd; tests add hosts. Always torn down, its work
    directory (etcd's data, the logs) removed."""
    _require()
    lab = Lab(hosts_count=0)
    with lab.running():
        yield lab
    leftover = [ns for ns in sh("ip", "netns", "list").stdout.split() if ns.startswith(lab.prefix)]
    assert not leftover, f"namespaces left behind: {leftover}"
    assert not lab.workdir.exists(), f"{lab.workdir} left behind (etcd's data is 62 MB)"


@pytest.fixture(params=["native", "python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The userspace data planes' engine for every daemon the test starts: the native fast
    path, or the Python engine it falls back to (FLANNELD_ENGINE, which daemons inherit)."""
    monkeypatch.setenv("FLANNELD_ENGINE", request.param)
    return str(request.param)


def engine_variant(monkeypatch: pytest.MonkeyPatch, variant: str) -> str:
    """A parameter like "udp-python": FLANNELD_ENGINE=python for the test, "udp" returned;
    without the suffix the native engine."""
    base = variant.removesuffix("-python")
    monkeypatch.setenv("FLANNELD_ENGINE", "native" if base == variant else "python")
    return base


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def local_etcd() -> Iterator[str]:
    """A real etcd on loopback (root namespace, nothing but a listening socket), for
    store-level tests that talk to etcd from the test process itself."""
    _require()
    data = Path(tempfile.mkdtemp(prefix="flanneld-etcd-"))
    client, peer = _free_port(), _free_port()
    log = (data / "etcd.log").open("wb")
    proc = subprocess.Popen(
        ["etcd", "--name", "t", "--data-dir", str(data / "d"),
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"t=http://127.0.0.1:{peer}"],
        stdout=log, stderr=log,
    )
    endpoint = f"http://127.0.0.1:{client}"
    try:
        wait_for("local etcd", lambda: subprocess.run(
            ["etcdctl", f"--endpoints={endpoint}", "endpoint", "health"],
            env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, check=False,
        ).returncode == 0, timeout=30, interval=0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        shutil.rmtree(data, ignore_errors=True)
