"""Builds the optional native fast path (backends/_native/*.c -> backends._fastpath).

Everything else is in pyproject.toml. gcc and the Python headers are enough; where the
build fails, the package installs without it and the Python engine runs instead.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = ["backends/_native/codec.c", "backends/_native/tun.c", "backends/_native/udp.c",
           "backends/_native/engine.c", "backends/_native/module.c"]
FLAGS = ["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
         "-fno-strict-aliasing", "-pthread"]


class OptionalBuildExt(build_ext):
    """A C extension that may fail to build: the pure-Python engine is the fallback."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler failure
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            if os.environ.get("FLANNELD_REQUIRE_NATIVE") == "1":
                raise
            self._skip(exc)

    @staticmethod
    def _skip(exc: Exception) -> None:
        print(f"warning: the native fast path was not built ({exc}); flanneld-py will use "
              "its Python engine", file=sys.stderr)


setup(
    ext_modules=[Extension("backends._fastpath", SOURCES, depends=[
        "backends/_native/fastpath.h", "backends/_native/engine.h"],
        extra_compile_args=FLAGS, extra_link_args=["-pthread"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
