"""An in-memory, etcd-like object store: one revision counter, a change log, watchers.

Every write bumps the global revision and appends a `Change` to the log. Lists can be served as of
any revision newer than the compaction point (by undoing later changes), which is how continue
tokens stay consistent; watches replay the log from a revision and then follow live changes.
Objects are plain JSON dicts and are never mutated once stored: writers hand in fresh dicts.
Everything is synchronous, so each write is atomic on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("kubegate.ops.sim.store")

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Obj = dict[str, Any]

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(frozen=True)
class Change:
    rv: int
    type: str
    resource: str
    key: Key
    obj: Obj  # the object after the change (for DELETED: the last state, with the delete's rv)
    old: Obj | None


class TooOldError(Exception):
    """A revision older than the compaction point (the API answers 410)."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


@dataclass(eq=False)
class Watcher:
    """A live subscription; `queue` gets `Change`s, then None when the store drops the watcher."""

    resource: str
    namespace: str | None
    queue: asyncio.Queue[Change | None] = field(default_factory=lambda: asyncio.Queue(1000))
    closed: bool = False


class Store:
    def __init__(self, history_limit: int = 20000) -> None:
        self.rv = 1
        self._objects: dict[str, dict[Key, Obj]] = {}
        self._log: deque[Change] = deque()
        self._compacted = 1  # changes with rv > _compacted are retained
        self._history_limit = history_limit
        self._watchers: dict[str, set[Watcher]] = {}
        self._listeners: list[Callable[[Change], None]] = []

    # -- reads ---------------------------------------------------------------------------------

    def get(self, resource: str, key: Key) -> Obj | None:
        return self._objects.get(resource, {}).get(key)

    def items(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Current objects, sorted by (namespace, name)."""
        objs = self._objects.get(resource, {})
        keys = sorted(k for k in objs if namespace is None or k[0] == namespace)
        return [objs[k] for k in keys]

    def items_at(self, resource: str, rv: int, namespace: str | None = None) -> list[Obj]:
        """Objects as they were at revision `rv` (raises TooOldError past compaction)."""
        if rv >= self.rv:
            return self.items(resource, namespace)
        if rv < self._compacted:
            raise TooOldError(rv, self._compacted)
        state = dict(self._objects.get(resource, {}))
        for change in reversed(self._log):
            if change.rv <= rv:
                break
            if change.resource != resource:
                continue
            if change.old is None:
                state.pop(change.key, None)
            else:
                state[change.key] = change.old
        keys = sorted(k for k in state if namespace is None or k[0] == namespace)
        return [state[k] for k in keys]

    def resources(self) -> list[str]:
        return list(self._objects)

    @property
    def oldest_rv(self) -> int:
        return self._compacted

    # -- writes --------------------------------------------------------------------------------

    def next_rv(self) -> int:
        """The revision the next write will get (so callers can stamp objects first)."""
        return self.rv + 1

    def put(self, resource: str, key: Key, obj: Obj) -> Change:
        """Create or replace; `obj` must already carry metadata.resourceVersion == next_rv()."""
        self.rv += 1
        objs = self._objects.setdefault(resource, {})
        old = objs.get(key)
        objs[key] = obj
        change = Change(self.rv, MODIFIED if old is not None else ADDED, resource, key, obj, old)
        self._record(change)
        return change

    def remove(self, resource: str, key: Key, last: Obj) -> Change:
        """Delete; `last` is the final state to report (stamped with next_rv())."""
        self.rv += 1
        old = self._objects.get(resource, {}).pop(key)
        change = Change(self.rv, DELETED, resource, key, last, old)
        self._record(change)
        return change

    def _record(self, change: Change) -> None:
        self._log.append(change)
        if len(self._log) > self._history_limit:
            dropped = self._log.popleft()
            self._compacted = dropped.rv
        for watcher in list(self._watchers.get(change.resource, ())):
            if watcher.namespace is not None and watcher.namespace != change.key[0]:
                continue
            try:
                watcher.queue.put_nowait(change)
            except asyncio.QueueFull:
                log.warning("dropping slow watcher", extra={"resource": change.resource})
                self.unwatch(watcher)
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("store listener failed", extra={"resource": change.resource})

    def compact(self, rv: int | None = None) -> int:
        """Forget changes up to `rv` (default: all); older lists and watches then get 410."""
        target = self.rv if rv is None else min(rv, self.rv)
        while self._log and self._log[0].rv <= target:
            self._log.popleft()
        self._compacted = max(self._compacted, target)
        return self._compacted

    # -- watching ------------------------------------------------------------------------------

    def changes_since(self, resource: str, rv: int, namespace: str | None) -> Iterator[Change]:
        if rv < self._compacted:
            raise TooOldError(rv, self._compacted)
        for change in self._log:
            if change.rv > rv and change.resource == resource:
                if namespace is None or change.key[0] == namespace:
                    yield change

    def watch(self, resource: str, namespace: str | None) -> Watcher:
        watcher = Watcher(resource, namespace)
        self._watchers.setdefault(resource, set()).add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.resource, set()).discard(watcher)
        if not watcher.closed:
            watcher.closed = True
            try:
                watcher.queue.put_nowait(None)
            except asyncio.QueueFull:
                pass

    def close_watchers(self) -> None:
        for watchers in list(self._watchers.values()):
            for watcher in list(watchers):
                self.unwatch(watcher)

    def listen(self, listener: Callable[[Change], None]) -> None:
        """Call `listener` synchronously after every change (controllers enqueue work here)."""
        self._listeners.append(listener)
