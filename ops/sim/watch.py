"""Streaming watches: replay from a resourceVersion, then live changes, bookmarks, timeouts.

Events are written and flushed one JSON line at a time. Label/field selectors are applied per
watcher with Kubernetes' transitions: an object that starts matching arrives as ADDED, one that
stops matching as DELETED. A resourceVersion older than the retained history gets a 200 stream
carrying one ERROR event with a 410 Expired Status, as kube-apiserver's watch cache does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ops.sim import status
from ops.sim.resources import ResourceType
from ops.sim.store import ADDED, DELETED, MODIFIED, Change, Store, TooOldError

log = logging.getLogger("kubegate.ops.sim.watch")

Obj = dict[str, Any]
Transform = Callable[[Obj, bool], Obj]  # (object, first event) -> wire object


@dataclass
class WatchOptions:
    resource_version: str
    timeout_seconds: float | None
    bookmarks: bool
    send_initial_events: bool
    match: Callable[[Obj], bool]
    bookmark_interval: float


def _event(kind: str, obj: Obj) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _typed(rt: ResourceType, obj: Obj) -> Obj:
    if obj.get("kind") and obj.get("apiVersion"):
        return obj
    return {"kind": rt.kind, "apiVersion": rt.group_version, **obj}


def _bookmark(rt: ResourceType, rv: int, initial_end: bool = False) -> Obj:
    meta: Obj = {"resourceVersion": str(rv), "creationTimestamp": None}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": rt.kind, "apiVersion": rt.group_version, "metadata": meta}


def _translate(change: Change, match: Callable[[Obj], bool]) -> tuple[str, Obj] | None:
    now = match(change.obj)
    before = change.old is not None and match(change.old)
    if change.type == DELETED:
        return (DELETED, change.obj) if before or now else None
    if change.type == ADDED:
        return (ADDED, change.obj) if now else None
    if now and before:
        return MODIFIED, change.obj
    if now:
        return ADDED, change.obj
    if before:
        return DELETED, change.obj
    return None


async def serve(
    request: web.Request,
    store: Store,
    rt: ResourceType,
    namespace: str | None,
    opts: WatchOptions,
    transform: Transform,
    content_type: str,
    stopping: asyncio.Event,
) -> web.StreamResponse:
    initial: list[tuple[str, Obj]] = []
    error: Obj | None = None
    rv_text = opts.resource_version
    watcher = None
    if rv_text not in ("", "0"):
        try:
            since = int(rv_text)
        except ValueError as exc:
            raise status.bad_request(f'invalid resource version "{rv_text}"') from exc
        if since > store.rv:
            raise status.timeout(f"Too large resource version: {since}, current: {store.rv}")
        try:
            replay = list(store.changes_since(rt.key, since, namespace))
        except TooOldError as exc:
            error = status.expired(
                f"too old resource version: {exc.requested} ({exc.oldest})"
            ).status()
            replay = []
        if opts.send_initial_events and error is None:
            items = store.items_at(rt.key, since, namespace)
            initial = [(ADDED, o) for o in items if opts.match(o)]
        for change in replay:
            translated = _translate(change, opts.match)
            if translated:
                initial.append(translated)
    else:
        initial = [(ADDED, o) for o in store.items(rt.key, namespace) if opts.match(o)]
    start_rv = store.rv
    if error is None:
        watcher = store.watch(rt.key, namespace)
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "no-cache, private",
        },
    )
    response.enable_chunked_encoding()
    timeout = opts.timeout_seconds
    if timeout is None:
        timeout = random.uniform(1800, 3600)
    deadline = time.monotonic() + timeout
    first = True
    try:
        await response.prepare(request)
        if error is not None:
            await response.write(_event("ERROR", error))
            return response
        for kind, obj in initial:
            await response.write(_event(kind, transform(_typed(rt, obj), first)))
            first = False
        if opts.send_initial_events and opts.bookmarks:
            await response.write(_event("BOOKMARK", _bookmark(rt, start_rv, initial_end=True)))
        # Without bookmarks there is nothing to wake for but changes and the deadline (a past
        # `next_bookmark` would make every wait zero: a busy loop).
        next_bookmark = time.monotonic() + opts.bookmark_interval if opts.bookmarks else deadline
        stop_task = asyncio.ensure_future(stopping.wait())
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = min(deadline, next_bookmark) - now
                get_task = asyncio.ensure_future(watcher.queue.get())
                done, _ = await asyncio.wait(
                    {get_task, stop_task}, timeout=max(wait, 0), return_when=asyncio.FIRST_COMPLETED
                )
                if get_task not in done:
                    get_task.cancel()
                    if stop_task in done:
                        break
                    if opts.bookmarks and time.monotonic() >= next_bookmark:
                        await response.write(_event("BOOKMARK", _bookmark(rt, store.rv)))
                        next_bookmark = time.monotonic() + opts.bookmark_interval
                    continue
                change = get_task.result()
                if change is None:
                    break
                translated = _translate(change, opts.match)
                if translated:
                    kind, obj = translated
                    await response.write(_event(kind, transform(_typed(rt, obj), first)))
                    first = False
        finally:
            stop_task.cancel()
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        if watcher is not None:
            store.unwatch(watcher)
    return response
