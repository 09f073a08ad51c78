"""The one error tree. Everything a user or the network can cause derives from FlannelError.

It sits at the bottom: every package (lease, tun, backends, flanneld) imports it, and it
imports nothing.

The CLI turns any FlannelError into one line on stderr and a non-zero exit; a traceback
means a bug in flanneld-py, never a bad input.
"""

from __future__ import annotations


class FlannelError(Exception):
    """Root of every error flanneld-py raises on purpose."""


class ConfigError(FlannelError, ValueError):
    """A bad network config (etcd `<prefix>/config`), backend option or flag value."""


class DecodeError(FlannelError, ValueError):
    """Malformed input from the network or etcd: a packet, a lease value, a subnet key."""


class LeaseError(FlannelError):
    """The subnet lease cannot be acquired or kept (out of subnets, lost to another host)."""


class StoreUnavailable(FlannelError):
    """etcd could not be reached or did not answer in time; the caller retries."""


class StoreAuthError(StoreUnavailable):
    """etcd answered but refused our credentials (or auth is not enabled there)."""


class BackendError(FlannelError):
    """A backend cannot start or program the kernel (missing privileges, NAT, no module)."""
