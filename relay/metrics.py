"""The relay's Prometheus metrics, registered once per registry (tests run many relays)."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from broker.metric_children import Children

_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, RelayMetrics] = (
    weakref.WeakKeyDictionary()
)


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
EARLY_OUTCOMES = ("aborted", "no_access", "not_ready", "upstream_error")
"""Request outcomes other than an HTTP status."""


class RelayMetrics:
    """Requests, upstream latency, JIT provisioning, sweeps and revocations."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "kubegate_relay_requests_total",
            "Proxied requests by method and outcome (HTTP status, or refused/upstream_error/"
            "no_access/not_ready/aborted).",
            ["method", "outcome"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "kubegate_relay_upstream_head_seconds",
            "Time from sending a request to the kube-apiserver to its response head.",
            ["kind"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.provisioning = Counter(
            "kubegate_relay_jit_provisioning_total",
            "Service-account work by action (create, existing, bindings, token, touch, remove) "
            "and result (ok, error).",
            ["action", "result"],
            registry=registry,
        )
        self.provisioning_latency = Histogram(
            "kubegate_relay_jit_provisioning_seconds",
            "Time a request waited for its user's service account, bindings and token.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.accounts = Gauge(
            "kubegate_relay_jit_accounts",
            "Service accounts this relay holds a token for.",
            registry=registry,
        )
        self.removals = Counter(
            "kubegate_relay_jit_removed_total",
            "Service accounts this relay removed, by reason (idle, revoked, access-changed).",
            ["reason"],
            registry=registry,
        )
        self.sweeps = Counter(
            "kubegate_relay_sweeps_total",
            "Idle sweeps run, by result (ok, error).",
            ["result"],
            registry=registry,
        )
        self.aborted_streams = Counter(
            "kubegate_relay_streams_aborted_total",
            "Live streams cut because the user's access on this cluster ended.",
            registry=registry,
        )
        self.ready = Gauge(
            "kubegate_relay_ready",
            "1 while the relay's policy is current and it serves requests.",
            registry=registry,
        )

        self.upstream_head = Children(self.upstream_latency).warm([("http",), ("upgrade",)])
        """`upstream_head(kind)`: the histogram's child, looked up once (observed per request)."""
        # created up front (series at 0): one revocation aborts many streams at once
        self._requests = Children(self.requests).warm(
            (method, outcome) for method in METHODS for outcome in EARLY_OUTCOMES
        )

    def request(self, method: str, outcome: str) -> None:
        """Count one proxied request (children cached: a revocation ends many at once)."""
        self._requests(method, outcome).inc()

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> RelayMetrics:
        found = _BY_REGISTRY.get(registry)
        if found is None:
            found = _BY_REGISTRY[registry] = cls(registry)
        return found
