"""The differential tests (tests/unit/test_native.py) once more, with the native fast path
built under AddressSanitizer and UndefinedBehaviorSanitizer: any out-of-bounds access,
use after free or undefined operation on those inputs fails this test.

The extension is built in a copy of the tree (the installed one is left alone) and the
tests run there with the sanitizer runtime preloaded into the interpreter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SANITIZE = "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"


def test_the_differential_tests_are_clean_under_asan_and_ubsan(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("*.so", "__pycache__", ".hypothesis", "build", "*.egg-info")
    for name in ("backends", "tun", "lease", "flanneld", "tests"):
        shutil.copytree(ROOT / name, tree / name, ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree,
        env={**os.environ, "CFLAGS": SANITIZE, "LDFLAGS": SANITIZE,
             "FLANNELD_REQUIRE_NATIVE": "1"},
        capture_output=True, text=True, check=False, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    runtime = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert Path(runtime).is_file(), f"no AddressSanitizer runtime ({runtime})"
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "tests/unit/test_native.py"], cwd=tree,
        env={**os.environ, "LD_PRELOAD": runtime,
             # CPython keeps memory to the end on purpose: leaks are not what is checked
             "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:strict_string_checks=1",
             "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"},
        capture_output=True, text=True, check=False, timeout=1800)
    assert tests.returncode == 0, (tests.stdout[-3000:], tests.stderr[-3000:])
    assert " passed" in tests.stdout and "ERROR: AddressSanitizer" not in tests.stderr
