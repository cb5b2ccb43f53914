"""``/metrics`` in Prometheus text format.

The counters live where they are counted (`ManagerStats`, `HubStats`, a virtual-key
manager's `cache_info`); a collector reads them at scrape time, so the hot paths pay
nothing for being observed. Only what the core does not count is counted here: HTTP
requests, and the propagation lag of changes that other processes committed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from reactivex.disposable import CompositeDisposable

from confman import ConfigChange, ConfigHub

from .event_data import event_data_of

__all__ = ["Metrics"]

_MANAGER_COUNTERS = {
    "writes": "committed writes",
    "conflicts": "writes refused by a version check",
    "validation_failures": "writes or stored documents refused by validation",
    "notifications": "changes applied and emitted to subscribers",
    "subscriber_errors": "exceptions raised by subscribers (isolated)",
}
_HUB_COUNTERS = {
    "catch_up_runs": "reads of the change log",
    "caught_up_changes": "changes applied from the change log",
    "notices_received": "change notices received from the bus",
    "publish_failures": "change notices that could not be published",
    "store_errors": "failed database operations",
}


class _HubCollector(Collector):
    def __init__(self, hub: ConfigHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        for name, text in _MANAGER_COUNTERS.items():
            family = CounterMetricFamily(f"confman_{name}", text, labels=["namespace"])
            for manager in hub.managers():
                family.add_metric([manager.namespace], getattr(manager.stats, name))
            yield family
        for name, text in _HUB_COUNTERS.items():
            yield CounterMetricFamily(f"confman_hub_{name}", text, value=getattr(hub.stats, name))
        yield GaugeMetricFamily(
            "confman_applied_seq", "every change up to this seq is applied", hub.applied_seq
        )
        yield GaugeMetricFamily("confman_leader", "1 while this instance leads", hub.is_leader)
        hits = CounterMetricFamily(
            "confman_cache_hits", "lookups answered from memory", labels=["namespace", "kind"]
        )
        misses = CounterMetricFamily(
            "confman_cache_misses", "lookups that read the database", labels=["namespace"]
        )
        ratio = GaugeMetricFamily(
            "confman_cache_hit_ratio", "hits / lookups since start", labels=["namespace"]
        )
        for manager in hub.managers():
            info_of = getattr(manager, "cache_info", None)
            if info_of is None:
                continue
            info: Any = info_of()
            hits.add_metric([manager.namespace, "known"], info.hits)
            hits.add_metric([manager.namespace, "unknown"], info.negative_hits)
            misses.add_metric([manager.namespace], info.misses)
            lookups = info.hits + info.negative_hits + info.misses
            answered = lookups - info.misses
            ratio.add_metric([manager.namespace], answered / lookups if lookups else 0.0)
        yield from (hits, misses, ratio)
        event_data = event_data_of(hub)
        yield CounterMetricFamily(
            "confman_event_reads",
            "change-log reads for the documents the event stream sends (one per change, "
            "however many streams send it)",
            value=event_data.reads if event_data is not None else 0,
        )


class Metrics:
    """The registry of one app: the hub's figures plus HTTP and propagation metrics."""

    def __init__(self, hub: ConfigHub) -> None:
        self.hub = hub
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_HubCollector(hub))
        self.requests = Counter(
            "confman_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.lag = Histogram(
            "confman_propagation_lag_seconds",
            "commit in another process to applied here",
            ["namespace"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self._subscriptions = CompositeDisposable(
            [m.changes.subscribe(self._observe) for m in hub.managers()]
        )

    def _observe(self, change: ConfigChange[Any]) -> None:
        if change.origin != self.hub.instance_id:
            lag = max(0.0, time.time() - change.at.timestamp())
            self.lag.labels(change.namespace).observe(lag)

    def close(self) -> None:
        self._subscriptions.dispose()
