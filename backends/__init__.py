"""Backends: one public module each; this registry maps the config's Backend.Type to it.

Registration is an explicit table, not an import side effect; a backend module is only
imported when it is chosen.
"""

from __future__ import annotations

import importlib
from typing import Final

from flanneld.errors import ConfigError

from ._base import Backend, BackendContext, ExternalInterface

REGISTRY: Final[dict[str, str]] = {
    "host-gw": "backends.hostgw:HostGWBackend",
    "udp": "backends.udp:UDPBackend",
    "vxlan": "backends.vxlan:VXLANBackend",
}

__all__ = ["REGISTRY", "Backend", "BackendContext", "ExternalInterface", "create_backend"]


def create_backend(context: BackendContext) -> Backend:
    """Instantiate the backend the network config names; ConfigError if unknown."""
    kind = context.network.backend.type
    target = REGISTRY.get(kind)
    if target is None:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"network config: unknown backend type {kind!r} (known: {known})")
    module_name, class_name = target.split(":")
    factory = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = factory(context)
    return backend
