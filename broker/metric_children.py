"""Children of a labelled Prometheus metric, each looked up once.

`metric.labels(...)` validates, hashes and takes a lock on every call; on paths that count per
frame or per stream (a revocation ends many at once) the child is kept instead. Creating a child
costs far more than a lookup (validation, locks, new values), so known label values are created
up front with `warm`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Children:
    """`children(*labels)` -> the child of `metric` for `fixed + labels`, cached."""

    def __init__(self, metric: Any, *fixed: str) -> None:
        self._metric = metric
        self._fixed = fixed
        self._cache: dict[tuple[str, ...], Any] = {}

    def warm(self, label_sets: Iterable[tuple[str, ...]]) -> Children:
        """Create these children now (their series appear at 0); returns self."""
        for labels in label_sets:
            self(*labels)
        return self

    def __call__(self, *labels: str) -> Any:
        child = self._cache.get(labels)
        if child is None:
            child = self._cache[labels] = self._metric.labels(*self._fixed, *labels)
        return child
