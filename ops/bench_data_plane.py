"""Data-plane benchmarks (latency, streaming, revocation); filled in as the data plane lands."""

from __future__ import annotations

from typing import Any

RUNNERS: dict[str, Any] = {}


def add_parsers(sub: Any) -> None:
    """Register `kubegate bench <name>` for each data-plane benchmark."""
