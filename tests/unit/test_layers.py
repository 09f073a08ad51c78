"""The package's layers hold: no module imports one of a layer above it, and no two modules
import each other, directly or around a circle (imports inside functions, made lazily on
purpose, count for the layers but not for circles).

Layers, bottom up: lease (with the error tree, lease/errors.py) and tun side by side (tun
takes only the error tree from lease); backends; flanneld; benchmarks and tests on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lease", "tun", "backends", "flanneld")
MAY_IMPORT = {
    "lease": {"lease"},
    "tun": {"tun", "lease.errors"},
    "backends": {"backends", "tun", "lease"},
    "flanneld": {"flanneld", "backends", "tun", "lease"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(every project module `path` imports, those imported at module level outside
    `if TYPE_CHECKING`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else \
        module_name(path).rpartition(".")[0]
    found: set[str] = set()
    top: set[str] = set()

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            return [f"{module}.{alias.name}" for alias in node.names] + [module]
        return []

    for node in ast.walk(tree):
        for name in names(node):
            if name.split(".")[0] in PACKAGES:
                found.add(name)
    for node in tree.body:  # module level (not in functions, not under TYPE_CHECKING)
        for name in names(node):
            if name.split(".")[0] in PACKAGES:
                top.add(name)
    return found, top


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (`a.b.c` may be module a.b's name c)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_no_module_imports_from_a_layer_above() -> None:
    wrong = []
    for name, path in project_modules().items():
        allowed = MAY_IMPORT[name.split(".")[0]]
        for imported in imports(path)[0]:
            if not any(imported == a or imported.startswith(a + ".") for a in allowed):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circles() -> None:
    modules = project_modules()
    graph = {name: {m for i in imports(path)[1] if (m := resolve(i, modules)) and m != name}
             for name, path in modules.items()}
    circles = []

    def visit(node: str, trail: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in trail:
                circles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            elif nxt not in done:
                visit(nxt, [*trail, nxt], done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], done)
    assert not circles, "\n".join(sorted(set(circles)))


def test_the_checker_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    sample = ROOT / "backends" / "udp.py"
    found, top = imports(sample)
    assert "backends._codec" in found and "backends._codec" in top
    assert any(name.startswith("tun.") for name in found)


def test_the_daemon_does_not_import_the_command_line() -> None:
    """flanneld/options.py holds Options; the daemon takes one without knowing the CLI."""
    found, _ = imports(ROOT / "flanneld" / "daemon.py")
    assert not {name for name in found if name.startswith("flanneld.cli")}
