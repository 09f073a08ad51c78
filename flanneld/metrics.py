"""Prometheus metrics (/metrics on the healthz listener) through prometheus-client.

Nothing is counted twice: the packet path keeps plain integer counters and this collector
turns a snapshot of them into metric families at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_DIRECTIONS: Final = {"tx": "sent to peers (encapsulated)", "rx": "received from peers"}
_NOT_COUNTERS: Final = {"subnet", "backend", "peers", "lease_expires_in_s", "lease_expiry_unix",
                        "watch_connected", "watch_reconnects", "lease_renewals"}


class SnapshotCollector(Collector):
    """Metric families from `snapshot()`: the daemon's /counters dictionary."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        data = dict(self._snapshot())
        backend = str(data.get("backend", ""))
        info = GaugeMetricFamily("flanneld_info", "flanneld-py build and lease",
                                 labels=["version", "backend", "subnet"])
        info.add_metric([__version__, backend, str(data.get("subnet", ""))], 1)
        yield info
        expiry = data.get("lease_expiry_unix")
        lease = GaugeMetricFamily("flanneld_lease_expiry_timestamp_seconds",
                                  "When our subnet lease expires (Unix time; +Inf for a "
                                  "reservation)")
        lease.add_metric([], float("inf") if expiry is None else float(expiry))
        yield lease
        yield GaugeMetricFamily("flanneld_peers", "Peers (other hosts' leases) known",
                                value=float(data.get("peers", 0)))
        yield GaugeMetricFamily("flanneld_etcd_watch_connected",
                                "1 while the lease watch on etcd is connected",
                                value=float(bool(data.get("watch_connected"))))
        yield CounterMetricFamily("flanneld_etcd_watch_reconnects",
                                  "Times the lease watch had to reconnect to etcd",
                                  value=float(data.get("watch_reconnects", 0)))
        yield CounterMetricFamily("flanneld_lease_renewals", "Lease renewals done",
                                  value=float(data.get("lease_renewals", 0)))
        packets = CounterMetricFamily("flanneld_datapath_packets", "Packets moved by the "
                                      "userspace data path", labels=["backend", "direction"])
        octets = CounterMetricFamily("flanneld_datapath_bytes", "Bytes moved by the "
                                     "userspace data path", labels=["backend", "direction"])
        drops = CounterMetricFamily("flanneld_datapath_drops", "Packets dropped, by reason",
                                    labels=["backend", "reason"])
        events = CounterMetricFamily("flanneld_backend_events", "Backend events (routes, "
                                     "misses answered, GSO/GRO batches, ...)",
                                     labels=["backend", "event"])
        for key, value in sorted(data.items()):
            if key in _NOT_COUNTERS or not isinstance(value, int | float) or \
                    isinstance(value, bool):
                continue
            direction, _, unit = key.partition("_")
            if direction in _DIRECTIONS and unit in ("packets", "bytes"):
                (packets if unit == "packets" else octets).add_metric([backend, direction],
                                                                      float(value))
            elif key.startswith("drop_"):
                drops.add_metric([backend, key.removeprefix("drop_")], float(value))
            else:
                events.add_metric([backend, key], float(value))
        yield from (packets, octets, drops, events)


def render(snapshot: Callable[[], Mapping[str, Any]]) -> bytes:
    """The Prometheus text exposition of one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)
