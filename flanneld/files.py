"""Files the daemon writes for others to read (subnet.env, docker_opts.env): written whole
or not at all (a temporary file beside the target, then a rename), so a reader never sees
half a file; check_writable tries the same steps at start, before a lease is taken. Shell.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


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
