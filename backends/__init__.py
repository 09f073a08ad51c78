"""Backends: one public module each; this registry maps the config's Backend.Type to it.

Registration is an explicit table, not an import side effect; a backend module is only
imported when it is chosen.
"""

from __future__ import annotations

import importlib
from typing import Final

from lease.config import NetworkConfig
from lease.errors import ConfigError

from ._base import Backend, BackendContext, ExternalInterface
from ._netlink import Netlink, collect

REGISTRY: Final[dict[str, str]] = {
    "host-gw": "backends.hostgw:HostGWBackend",
    "udp": "backends.udp:UDPBackend",
    "vxlan": "backends.vxlan:VXLANBackend",
    "wireguard": "backends.wireguard:WireGuardBackend",
}

# each backend's option parser (`from_spec`), where it has options to check
OPTIONS: Final[dict[str, str]] = {
    "udp": "backends.udp:UDPConfig",
    "vxlan": "backends.vxlan:VXLANConfig",
    "wireguard": "backends.wireguard:WireGuardConfig",
}

# backends that carry IPv4 only, as in flannel (its udp backend has no IPv6 data path)
IPV4_ONLY: Final = frozenset({"udp"})

__all__ = ["REGISTRY", "Backend", "BackendContext", "ExternalInterface", "Netlink", "collect",
           "create_backend", "check_backend"]


def check_backend(network: NetworkConfig) -> None:
    """ConfigError if the config's backend is unknown or its options are not valid: what
    create_backend would say, without creating anything (for a config read at run time)."""
    kind = network.backend.type
    if kind not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"network config: unknown backend type {kind!r} (known: {known})")
    _check_family(network)
    target = OPTIONS.get(kind)
    if target is not None:
        module_name, class_name = target.split(":")
        getattr(importlib.import_module(module_name), class_name).from_spec(network.backend)


def _check_family(network: NetworkConfig) -> None:
    kind = network.backend.type
    if network.enable_ipv6 and kind in IPV4_ONLY:
        raise ConfigError(f"network config: the {kind} backend is IPv4-only, as in flannel, "
                          "but EnableIPv6 is true; use vxlan or host-gw for IPv6")


def create_backend(context: BackendContext) -> Backend:
    """Instantiate the backend the network config names; ConfigError if unknown."""
    kind = context.network.backend.type
    target = REGISTRY.get(kind)
    if target is None:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"network config: unknown backend type {kind!r} (known: {known})")
    _check_family(context.network)
    module_name, class_name = target.split(":")
    factory = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = factory(context)
    return backend
