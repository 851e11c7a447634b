"""Edge failures, rooted in `KubegateError`."""

from __future__ import annotations

from domain.errors import KubegateError


class EdgeError(KubegateError):
    """Root of edge failures."""
