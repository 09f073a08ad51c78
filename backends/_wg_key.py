"""The wireguard backend's private key file (/run/flannel/wgkey, or WIREGUARD_KEY_FILE):
read it, or make it once. Shell: the only place the key touches the file system.

The file holds the key in base64 as `wg genkey` prints it, without a newline, as Go
flannel writes it. A new file is made under a temporary name with mode 0400 from its
creation (the key is never readable by others, not for a moment) and then linked into
place, so a reader never sees half a key and two daemons starting together agree on one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from lease.errors import BackendError

KEY_MODE = 0o400
log = logging.getLogger(__name__)


def _create(path: Path, text: str) -> bool:
    """Write `text` to a new file at `path` (mode 0400); False if one appeared meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # fails if the file exists: never replaces a key in use
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return True


def load_or_create(path: Path, decode: Callable[[str], bytes],
                   make: Callable[[], tuple[bytes, str]]) -> tuple[bytes, bool]:
    """(key, created): the key `decode` reads from `path`, or the one `make` gives (its
    bytes and text), written there. BackendError in one line if the file cannot be read,
    is garbled (decode's ValueError) or cannot be written; the key itself is never in it."""
    for _ in range(2):
        try:
            text = path.read_text()
        except FileNotFoundError:
            key, text = make()
            try:
                if _create(path, text):
                    return key, True
            except OSError as exc:
                raise BackendError(f"wireguard: cannot write the key file {path}: "
                                   f"{exc.strerror or exc}") from None
            continue  # another daemon made it first: use its key
        except IsADirectoryError:
            raise BackendError(f"wireguard: the key file {path} is a directory") from None
        except OSError as exc:
            raise BackendError(f"wireguard: cannot read the key file {path}: "
                               f"{exc.strerror or os.strerror(exc.errno or errno.EIO)}") \
                from None
        except UnicodeDecodeError:
            text = "\x00"  # not text: garbled, as below
        try:
            key = decode(text)
        except ValueError as exc:
            raise BackendError(f"wireguard: the key file {path}: {exc}; remove it to make a "
                               "new key (peers learn it from our lease)") from None
        _check_mode(path)
        return key, False
    raise BackendError(f"wireguard: the key file {path} appears and vanishes")


def _check_mode(path: Path) -> None:
    """One warning if others than its owner may read the key (a file copied in by hand)."""
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("the key file %s can be read by others (mode %04o); chmod 0400 it",
                        path, mode)
