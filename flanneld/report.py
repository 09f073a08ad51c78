"""What a running node says about itself: /counters (flat numbers, for programs and the
Prometheus collector) and /status (its lease, its peers and the counters, for `flanneld
status`). Read from the lease manager and the backend at each request; nothing is kept."""

from __future__ import annotations

import math
import time
from typing import Any

from backends import Backend
from lease.config import NetworkConfig
from lease.manager import LeaseManager
from lease.model import Lease


class Report:
    def __init__(self, manager: LeaseManager, lease: Lease, config: NetworkConfig,
                 backend: Backend) -> None:
        self._manager, self._lease, self._config, self._backend = \
            manager, lease, config, backend

    def counters(self) -> dict[str, Any]:
        manager, lease = self._manager, self._lease
        left_s = manager.expires_at - time.monotonic()
        finite = math.isfinite(left_s)
        return {
            "subnet": str(lease.subnet), "peers": len(manager.peers),
            **({"ipv6_subnet": str(lease.ipv6_subnet)} if lease.ipv6_subnet else {}),
            "lease_expires_in_s": round(left_s, 1) if finite else None,
            "lease_expiry_unix": round(time.time() + left_s, 1) if finite else None,
            "lease_renewals": manager.renewals, "watch_connected": manager.watch_connected,
            "watch_reconnects": manager.watch_reconnects,
            "config_rejected": manager.config_rejected,
            "backend": self._config.backend.type, **self._backend.counters(),
        }

    def status(self) -> dict[str, Any]:
        snapshot = self.counters()
        own = self._manager.lease or self._lease
        return {
            "lease": {"subnet": str(own.subnet), "public_ip": str(own.attrs.public_ip),
                      **ipv6_fields(own), "backend": self._config.backend.type,
                      "reservation": own.is_reservation,
                      "expires_in_s": snapshot["lease_expires_in_s"]},
            "peers": [{"subnet": str(peer.subnet), "public_ip": str(peer.attrs.public_ip),
                       **ipv6_fields(peer), "backend_type": peer.attrs.backend_type}
                      for peer in self._manager.peers.values()],
            "counters": snapshot,
        }


def ipv6_fields(lease: Lease) -> dict[str, str]:
    """A dual-stack lease's IPv6 subnet and PublicIPv6, for /status (nothing for v4-only)."""
    fields: dict[str, str] = {}
    if lease.ipv6_subnet is not None:
        fields["ipv6_subnet"] = str(lease.ipv6_subnet)
    if lease.attrs.public_ipv6 is not None:
        fields["public_ipv6"] = str(lease.attrs.public_ipv6)
    return fields
