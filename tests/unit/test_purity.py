"""Pure modules stay pure: no event loop, sockets, files, clock or kernel."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ["lease/config.py", "lease/model.py", "lease/allocation.py", "lease/store.py",
        "lease/errors.py", "backends/_base.py", "backends/_codec.py",
        "backends/_vxlan_plan.py", "backends/_vxlan_codec.py", "tun/offload.py",
        "tun/packet.py", "tun/vxlan.py", "tun/wireguard.py", "flanneld/subnet_env.py",
        "flanneld/options.py"]
FORBIDDEN = {"asyncio", "socket", "os", "subprocess", "time", "threading", "pyroute2",
             "etcd3aio", "grpc", "pytun", "uvloop", "select", "fcntl", "shutil", "pathlib"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_nothing_effectful(module: str) -> None:
    assert imported_modules(ROOT / module) & FORBIDDEN == set()


def test_the_checker_notices_an_effectful_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os.path\nfrom asyncio import sleep\nfrom . import sibling\n")
    assert imported_modules(sample) == {"os", "asyncio"}
