"""Prometheus metrics of the frame transport, one set of collectors per registry.

An edge client and a relay server may share a registry (one process in `kubegate demo`), so the
collectors are created once per registry and every sample carries a `role` label.
"""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge

from broker import frames
from broker.metric_children import Children

FRAME_TYPES = tuple(frames.frame_type_names())
CANCEL_REASONS = (
    "cancel", "abort", "remote_cancel", "remote_abort", "remote_error",
    "shutdown", "transport", "peer_lost", "protocol",
)  # fmt: skip
"""Every `reason` a stream is cancelled with (`StreamBase._fail` callers)."""
REJECT_REASONS = ("malformed", "oversize", "protocol", "unknown_stream", "internal")
"""Every `reason` a received frame is rejected with."""


class TransportMetrics:
    """The collectors; use `for_registry` rather than constructing twice on one registry."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, TransportMetrics] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, ["role", *labels], registry=registry)

        self.streams_open = Gauge(
            "kubegate_transport_streams_open", "Streams open now", ["role"], registry=registry
        )
        self.streams_opened = counter("kubegate_transport_streams_opened", "Streams opened", [])
        self.frames = counter(
            "kubegate_transport_frames",
            "Frames sent and received",
            ["direction", "type"],
        )
        self.bytes = counter(
            "kubegate_transport_bytes", "Encoded frame bytes sent and received", ["direction"]
        )
        self.rejected = counter(
            "kubegate_transport_frames_rejected",
            "Received frames rejected (malformed, oversize, unknown stream, protocol)",
            ["reason"],
        )
        self.credit_stalls = counter(
            "kubegate_transport_credit_stalls",
            "Times a sender waited for the receiver to grant credit",
            [],
        )
        self.cancellations = counter(
            "kubegate_transport_stream_cancellations",
            "Streams ended by cancel, abort, lost peer, protocol failure or shutdown",
            ["reason"],
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> TransportMetrics:
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls._by_registry[registry] = cls(registry)
        return metrics

    def role(self, role: str) -> RoleMetrics:
        return RoleMetrics(self, role)


class RoleMetrics:
    """The collectors bound to one role (`edge` or `relay`), children cached for the hot path."""

    def __init__(self, metrics: TransportMetrics, role: str) -> None:
        self.role = role
        self.streams_open = metrics.streams_open.labels(role)
        self.streams_opened = metrics.streams_opened.labels(role)
        self.credit_stalls = metrics.credit_stalls.labels(role)
        self.bytes_in = metrics.bytes.labels(role, "in")
        self.bytes_out = metrics.bytes.labels(role, "out")
        # every known label value up front: the series exist (at 0) from the start, and the
        # first revocation, which ends many streams at once, creates no children on its path
        self._frames = Children(metrics.frames, role).warm(
            (d, t) for d in ("in", "out") for t in FRAME_TYPES
        )
        self._rejected = Children(metrics.rejected, role).warm((r,) for r in REJECT_REASONS)
        self._cancelled = Children(metrics.cancellations, role).warm((r,) for r in CANCEL_REASONS)

    def frame(self, direction: str, frame_type: str, size: int) -> None:
        self._frames(direction, frame_type).inc()
        (self.bytes_in if direction == "in" else self.bytes_out).inc(size)

    def rejected(self, reason: str) -> None:
        self._rejected(reason).inc()

    def cancelled(self, reason: str) -> None:
        """Counted per stream; a revocation cuts many streams at once."""
        self._cancelled(reason).inc()
