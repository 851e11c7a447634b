"""Prometheus metrics of projection runners, one set per registry shared by every runner in it.

Runners are told apart by the `projection` label, so an edge running its policy, sessions and
audit projections against one registry exposes them side by side.
"""

from __future__ import annotations

import threading
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter, Gauge

RESET_REASONS = ("heartbeat", "consumer-deleted", "gap", "status", "error")
"""Why a runner recreated its consumer (the `reason` label of the resets counter)."""


class ProjectionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["projection", "stream"]
        self.applied = Counter(
            "kubegate_projection_applied_events",
            "Log records handed to the read model",
            labels,
            registry=registry,
        )
        self.malformed = Counter(
            "kubegate_projection_malformed_events",
            "Log records that did not decode as an event (skipped by models)",
            labels,
            registry=registry,
        )
        self.unknown = Counter(
            "kubegate_projection_unknown_events",
            "Events of a type or schema this build does not know (kept raw)",
            labels,
            registry=registry,
        )
        self.resets = Counter(
            "kubegate_projection_consumer_resets",
            "Consumers recreated from the last accepted sequence",
            [*labels, "reason"],
            registry=registry,
        )
        self.lag = Gauge(
            "kubegate_projection_lag_events",
            "Messages in the stream after the last applied one",
            labels,
            registry=registry,
        )
        self.position = Gauge(
            "kubegate_projection_position",
            "Last stream sequence applied to the read model",
            labels,
            registry=registry,
        )
        self.caught_up = Gauge(
            "kubegate_projection_caught_up",
            "1 once the model has applied the log as it stood at start, while running",
            ["projection"],
            registry=registry,
        )
        self.contact_age = Gauge(
            "kubegate_projection_contact_age_seconds",
            "Seconds since the runner last knew it had applied everything in the log",
            ["projection"],
            registry=registry,
        )


_lock = threading.Lock()
_by_registry: WeakKeyDictionary[CollectorRegistry, ProjectionMetrics] = WeakKeyDictionary()


def metrics_for(registry: CollectorRegistry) -> ProjectionMetrics:
    """The projection metrics registered in `registry`, registering them on first use."""
    with _lock:
        found = _by_registry.get(registry)
        if found is None:
            found = _by_registry[registry] = ProjectionMetrics(registry)
        return found
