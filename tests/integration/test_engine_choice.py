"""FLANNELD_ENGINE and the fallback: where the native fast path cannot be imported, the
daemon says so in one line and the Python engine carries the traffic; where it is required
and missing, or the variable is misspelt, one line and an exit before any lease is taken.

The extension is hidden from the daemon by a real import failure: a sitecustomize module on
its PYTHONPATH refuses `backends._fastpath` as an uninstalled module would be refused.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest

from flanneld.lab import Host, Lab, wait_for

UDP = {"Network": "10.5.0.0/16", "Backend": {"Type": "udp"}}
HEALTHZ = "-healthz-port=8471"
HIDE_NATIVE = '''
import importlib.abc, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "backends._fastpath":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
'''


def without_native(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(HIDE_NATIVE)
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{tmp_path}{os.pathsep}{path}" if path else str(tmp_path)}


def errors(host: Host) -> list[str]:
    return [line for line in host.log_file.read_text().splitlines() if " E " in line]


def test_without_the_extension_the_python_engine_carries_traffic(lab: Lab,
                                                                 tmp_path: Path) -> None:
    lab.put_config(UDP)
    hidden, native = lab.add_host(), lab.add_host()
    lab.start_daemon(hidden, HEALTHZ, env={**without_native(tmp_path), "FLANNELD_ENGINE": ""})
    lab.start_daemon(native, HEALTHZ)
    for host in (hidden, native):
        lab.wait_ready(host)
        lab.add_container(host)
    wait_for("c1 -> c2", partial(lab.can_reach, hidden, native.container_ip))
    wait_for("c2 -> c1", partial(lab.can_reach, native, hidden.container_ip))
    assert lab.iperf(hidden, native, seconds=2) > 50e6
    log = hidden.log_file.read_text()
    said = [line for line in log.splitlines() if "native fast path is not available" in line]
    assert len(said) == 1 and "backends._fastpath" in said[0], log
    assert "engine=python" in log and "Traceback" not in log
    assert lab.counters(hidden)["engine_native"] == 0
    assert lab.counters(native)["engine_native"] == 1


@pytest.mark.parametrize("engine", ["native", "fast"])
def test_a_required_or_misspelt_engine_is_one_line_and_no_lease(lab: Lab, tmp_path: Path,
                                                                engine: str) -> None:
    lab.put_config(UDP)
    host = lab.add_host()
    lab.start_daemon(host, env={**without_native(tmp_path), "FLANNELD_ENGINE": engine})
    assert host.daemon is not None
    assert host.daemon.wait(30) != 0
    log = host.log_file.read_text()
    assert "Traceback" not in log
    assert len(errors(host)) == 1 and "FLANNELD_ENGINE" in errors(host)[0], log
    if engine == "fast":  # refused before anything was leased
        assert lab.leases() == {}
