"""Benchmarks that build a lab, measure, and tear it down."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from flanneld.lab import LabError

T = TypeVar("T")


def guarded(work: Callable[[], T]) -> T:
    """Run a benchmark's lab work so that SIGTERM and Ctrl-C still tear the lab down, and a
    lab failure ends it with one line (exit 1), not a traceback."""

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that the lab's teardown runs

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return work()
    except LabError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ninterrupted; lab torn down", file=sys.stderr)
        sys.exit(130)
