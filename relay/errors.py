"""Relay failures, rooted in `KubegateError`."""

from __future__ import annotations

from domain.errors import KubegateError


class RelayError(KubegateError):
    """Root of relay failures."""


class UpstreamError(RelayError):
    """The cluster's kube-apiserver could not be reached or broke a stream."""
