"""Every known label value of the transport and relay counters exists from the start (at 0):
dashboards see the series before the first event, and a revocation that ends many streams at
once creates none on its path."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from broker import frames
from broker.transport_metrics import CANCEL_REASONS, REJECT_REASONS, TransportMetrics
from relay.metrics import EARLY_OUTCOMES, METHODS, RelayMetrics


def _zero_series(registry: CollectorRegistry) -> set[str]:
    return {
        line.rsplit(" ", 1)[0]
        for line in generate_latest(registry).decode().splitlines()
        if line.endswith(" 0.0") and not line.startswith("#")
    }


def test_frame_types_are_every_wire_tag() -> None:
    assert frames.frame_type_names() == [
        "open", "accept", "head", "req", "resp", "end", "error", "cancel", "window", "hb",
    ]  # fmt: skip


def test_transport_series_exist_before_any_frame() -> None:
    registry = CollectorRegistry()
    TransportMetrics.for_registry(registry).role("relay")
    series = _zero_series(registry)
    for direction in ("in", "out"):
        for tag in frames.frame_type_names():
            name = "kubegate_transport_frames_total"
            assert f'{name}{{direction="{direction}",role="relay",type="{tag}"}}' in series
    for reason in CANCEL_REASONS:
        name = "kubegate_transport_stream_cancellations_total"
        assert f'{name}{{reason="{reason}",role="relay"}}' in series
    for reason in REJECT_REASONS:
        assert (
            f'kubegate_transport_frames_rejected_total{{reason="{reason}",role="relay"}}' in series
        )


def test_relay_request_outcomes_exist_before_any_request() -> None:
    registry = CollectorRegistry()
    metrics = RelayMetrics.for_registry(registry)
    series = _zero_series(registry)
    for method in METHODS:
        for outcome in EARLY_OUTCOMES:
            name = "kubegate_relay_requests_total"
            assert f'{name}{{method="{method}",outcome="{outcome}"}}' in series
    metrics.request("GET", "aborted")
    assert 'kubegate_relay_requests_total{method="GET",outcome="aborted"}' not in _zero_series(
        registry
    )
