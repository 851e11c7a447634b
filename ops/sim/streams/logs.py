"""pods/log: PodLogOptions from the query, the API server's refusals, a flushed text stream.

Every chunk is written as soon as it exists (kube-apiserver flushes each write of a follow), and
a follow ends when the pod is deleted, when the client goes away (checked at every keep-alive
tick of the log reader) or when `limitBytes` is used up.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from aiohttp import web

from ops.sim.streams import podspec, status
from ops.sim.streams.podlog import LogOptions, parse_time

if TYPE_CHECKING:
    from ops.sim.runtime import PodRuntime

log = logging.getLogger("kubegate.ops.sim.streams.logs")


def _bool(request: web.BaseRequest, name: str) -> bool:
    value = request.rel_url.query.get(name)
    if value is None:
        return False
    return value != "0" and value.lower() != "false"


def _int(request: web.BaseRequest, name: str) -> int | None:
    value = request.rel_url.query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise status.bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def parse_options(request: web.BaseRequest, pod_name: str, runtime: PodRuntime) -> LogOptions:
    """The query as PodLogOptions, validated like kube-apiserver (422 for bad values)."""
    tail = _int(request, "tailLines")
    limit = _int(request, "limitBytes")
    since_seconds = _int(request, "sinceSeconds")
    since_text = request.rel_url.query.get("sinceTime")
    kind = "PodLogOptions"
    if tail is not None and tail < 0:
        raise status.invalid(
            kind, pod_name, "tailLines", tail, "must be greater than or equal to 0"
        )
    if limit is not None and limit < 1:
        raise status.invalid(kind, pod_name, "limitBytes", limit, "must be greater than 0")
    if since_seconds is not None and since_seconds < 1:
        raise status.invalid(
            kind, pod_name, "sinceSeconds", since_seconds, "must be greater than 0"
        )
    if since_seconds is not None and since_text:
        raise status.forbidden_field(
            kind, pod_name, "", "at most one of `sinceTime` or `sinceSeconds` may be specified"
        )
    since = None
    if since_text:
        try:
            since = parse_time(since_text)
        except ValueError:
            raise status.bad_request(
                f'parsing time "{since_text}" as "2006-01-02T15:04:05Z07:00": cannot parse'
            ) from None
    elif since_seconds is not None:
        since = runtime.clock() - timedelta(seconds=since_seconds)
    return LogOptions(
        follow=_bool(request, "follow"),
        tail_lines=tail,
        since=since,
        timestamps=_bool(request, "timestamps"),
        limit_bytes=limit,
    )


async def serve(request: web.Request, pod: podspec.Pod, runtime: PodRuntime) -> web.StreamResponse:
    pod_name = podspec.name(pod)
    container_name = podspec.choose_container(pod, request.rel_url.query.get("container", ""))
    options = parse_options(request, pod_name, runtime)
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    if not podspec.has_host(pod):
        await response.prepare(request)  # no node, no kubelet: an empty log
        return response
    if _bool(request, "previous"):
        raise status.bad_request(
            f'previous terminated container "{container_name}" in pod "{pod_name}" not found'
        )
    state = podspec.container_state(pod, container_name)
    if state.state == "waiting":
        raise status.bad_request(
            f'container "{container_name}" in pod "{pod_name}" is waiting to start: {state.reason}'
        )
    runtime_pod = runtime.get(pod)
    container = runtime_pod.containers.get(container_name)
    await response.prepare(request)
    if container is None:  # an init or ephemeral container: nothing ran here
        return response
    if state.state != "running":  # a finished container's log is complete: nothing to follow
        options = dataclasses.replace(options, follow=False)
    runtime.metrics.sessions.labels("log", "http").inc()
    runtime.metrics.active.labels("log").inc()
    try:
        async for chunk in container.log.read(options):
            transport = request.transport
            if transport is None or transport.is_closing():
                break  # the client went away
            if chunk:
                await response.write(chunk)
    except ConnectionError as exc:
        log.debug("log client went away", extra={"error": str(exc)})
    finally:
        runtime.metrics.active.labels("log").dec()
    return response
