"""The kubectl proxy: one HTTP request in, one frame stream to the cluster's relay, and back.

Order of work for every request: route by path prefix (`/k8s/<cluster>/...`), identity from the
client certificate only, fail closed while policy is not current (503), decide with the pure
policy function, record the decision (activity event), then stream: request body up, response
head and body down, flushed chunk by chunk; after a 101, raw bytes both ways. Every request ends
with exactly one KubectlCompleted event, whoever ended it (client, relay, revocation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import unquote

from broker import errors as berr
from broker.nats_parser import Buffer
from broker.transport import ClientStream, EdgeClient
from domain import events
from domain.policy.attributes import RequestAttributes, attributes_from_http
from domain.policy.decide import Caller, Decision
from domain.policy.errors import MalformedRequestError
from edge import headers as hdr
from edge.http1 import Request, Response, Tunnel
from edge.identity import identity_from_der
from edge.kubeconfig import CLUSTER_PREFIX
from edge.recording import SessionRecorder
from edge.status import status_body, warning_header

log = logging.getLogger("kubegate.edge.proxy")

JSON = "application/json"
DIRECT_WRITE = 16 * 1024
"""Response chunks at least this large go to the client from the NATS callback that brought
them (no task in between); smaller ones (watch events) wait for the response task, which sends
several that arrived together in one write."""


class PolicySource(Protocol):
    """What the proxy needs from the policy projection."""

    def not_ready_reason(self) -> str | None:
        """None when policy is current; else why the edge must refuse (fail closed)."""

    def decide(
        self, caller: Caller, cluster: str, attrs: RequestAttributes, now: datetime
    ) -> Decision: ...

    def groups_of(self, user: str) -> list[str]: ...


Emit = Callable[[events.Event], None]


@dataclass
class LiveRequest:
    """A request still streaming, re-judged whenever policy changes (revocation cuts it)."""

    request_id: str
    caller: Caller
    cluster: str
    attrs: RequestAttributes
    started: float
    stream: ClientStream | None = None
    cut_reason: str | None = None
    recording: str = ""
    _on_cut: list[Callable[[], None]] = field(default_factory=list)

    def cut(self, reason: str) -> None:
        if self.cut_reason is not None:
            return
        self.cut_reason = reason
        for callback in self._on_cut:
            callback()

    def note_relay_cut(self) -> None:
        """The relay cut the stream because the user's access to its cluster ended (it applied
        the change before this edge): record it as a cut, with the relay's reason."""
        failure = self.stream.failure if self.stream is not None else None
        if isinstance(failure, berr.StreamRevokedError):
            self.cut(failure.reason)


class LiveRequests:
    """Every proxied request in flight on this edge, by request id."""

    def __init__(self) -> None:
        self._by_id: dict[str, LiveRequest] = {}

    def add(self, live: LiveRequest) -> None:
        self._by_id[live.request_id] = live

    def remove(self, live: LiveRequest) -> None:
        self._by_id.pop(live.request_id, None)

    def __iter__(self):
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def recheck(
        self, policy: PolicySource, now: datetime, users: frozenset[str] | None = None
    ) -> int:
        """Cut every live request (of `users`, or everyone's) that policy no longer allows;
        returns how many were cut."""
        cut = 0
        for live in self:
            if live.cut_reason is not None:
                continue
            if users is not None and live.caller.user not in users:
                continue
            decision = policy.decide(live.caller, live.cluster, live.attrs, now)
            if not decision.allowed:
                live.cut(decision.reason)
                cut += 1
        return cut


def _long_running(attrs: RequestAttributes, query: str) -> bool:
    if attrs.verb == "watch":
        return True
    if attrs.subresource in ("log",) and "follow=true" in query:
        return True
    return attrs.subresource in ("exec", "attach", "portforward", "proxy")


class KubeProxy:
    """The handler behind the kubectl listener (see `edge.http1.Http1Server`)."""

    def __init__(
        self,
        *,
        client: EdgeClient,
        policy: PolicySource,
        emit: Emit,
        edge_id: str,
        open_timeout_s: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.policy = policy
        self.emit = emit
        self.edge_id = edge_id
        self.open_timeout_s = open_timeout_s
        self.clock = clock
        self.live = LiveRequests()

    # -- entry point ----------------------------------------------------------------------

    async def __call__(self, req: Request, resp: Response) -> None:
        if not req.path.startswith(CLUSTER_PREFIX):
            await self._status(resp, 404, f"no route for {req.path}: cluster URLs are /k8s/<name>/")
            return
        cluster_part, _, rest = req.path[len(CLUSTER_PREFIX) :].partition("/")
        cluster = unquote(cluster_part)
        path = "/" + rest
        if not cluster:
            await self._status(resp, 404, "no cluster named in the URL")
            return
        identity = identity_from_der(req.peer_cert_der)
        if identity is None:
            await self._status(
                resp,
                401,
                "a kubegate client certificate is required: use a kubeconfig from "
                "`kubegate kubeconfig`",
            )
            return
        try:
            attrs = attributes_from_http(req.method, unquote(path), req.query_string)
        except MalformedRequestError as exc:
            await self._status(resp, 400, f"malformed request path: {exc}")
            return
        reason = self.policy.not_ready_reason()
        if reason is not None:
            await self._status(resp, 503, f"kubegate edge is not serving: {reason}", attrs=attrs)
            return
        caller = identity.caller()  # via="browser" for a browser-shell certificate
        await self.serve(req, resp, caller, cluster, path, attrs)

    async def serve(
        self,
        req: Request,
        resp: Response,
        caller: Caller,
        cluster: str,
        path: str,
        attrs: RequestAttributes,
    ) -> None:
        """Decide and proxy one request for an already identified caller (cli or browser)."""
        request_id = uuid.uuid4().hex
        started = time.monotonic()
        decision = self.policy.decide(caller, cluster, attrs, self.clock())
        groups = self.policy.groups_of(caller.user) if decision.status != 401 else []
        self._emit_requested(request_id, caller, groups, cluster, attrs, req, decision)
        if not decision.allowed:
            await self._status(resp, decision.status, decision.reason, attrs=attrs)
            self._emit_completed(
                request_id, caller, cluster, attrs, decision, decision.status, 0, 0, started
            )
            return
        if decision.breakglass_id:
            self.emit(
                events.BreakGlassUsed(
                    id=f"{request_id}-bg",
                    time=self.clock(),
                    actor=caller.user,
                    cause=request_id,
                    request_id=decision.breakglass_id,
                    user=caller.user,
                    cluster=cluster,
                    request=request_id,
                    verb=attrs.verb,
                    resource=attrs.combined_resource,
                    namespace=attrs.namespace,
                    grant_id=decision.grant_id,
                )
            )
        live = LiveRequest(request_id, caller, cluster, attrs, started)
        self.live.add(live)
        ended_by = "complete"
        status = 0
        bytes_in = bytes_out = 0
        try:
            status, bytes_in, bytes_out, ended_by = await self._proxy(req, resp, live, groups, path)
        except ConnectionError:
            ended_by = "client"
            raise
        finally:
            self.live.remove(live)
            live.note_relay_cut()
            if live.cut_reason is not None:
                ended_by = "revoked"
            self._emit_completed(
                request_id,
                caller,
                cluster,
                attrs,
                decision,
                status or resp.status,
                bytes_in,
                bytes_out or resp.bytes_out,
                started,
                ended_by=ended_by,
                reason=live.cut_reason or "",
                recording=live.recording,
            )

    # -- streaming ------------------------------------------------------------------------

    async def _proxy(
        self, req: Request, resp: Response, live: LiveRequest, groups: list[str], path: str
    ) -> tuple[int, int, int, str]:
        upgrade = req.upgrade
        with_body = upgrade or hdr.has_request_body(req.method, req.headers)
        try:
            stream = await self.client.open(
                live.cluster,
                method=req.method,
                path=path,
                query=req.query_string,
                headers=hdr.request_headers(req.headers, upgrade=upgrade),
                user=live.caller.user,
                groups=groups,
                request_id=live.request_id,
                has_body=with_body,
                timeout=self.open_timeout_s,
            )
        except berr.NoRelayError:
            await self._status(resp, 503, f"cluster {live.cluster} has no relay connected")
            return 503, 0, 0, "error"
        except berr.OpenTimeoutError:
            await self._status(resp, 504, f"cluster {live.cluster}'s relay did not answer")
            return 504, 0, 0, "timeout"
        except berr.TransportError as exc:
            await self._status(resp, 502, f"cannot reach cluster {live.cluster}: {exc}")
            return 502, 0, 0, "error"
        live.stream = stream
        live._on_cut.append(lambda: asyncio.ensure_future(stream.cancel(live.cut_reason or "")))
        if live.cut_reason is not None:  # cut between decision and open
            await stream.cancel(live.cut_reason)
        gone = asyncio.ensure_future(_cancel_when_client_leaves(resp, stream))
        try:
            if upgrade:
                return await self._tunnel(req, resp, live, stream)
            return await self._http(req, resp, live, stream, with_body)
        finally:
            gone.cancel()
            with contextlib.suppress(Exception):
                await stream.cancel("edge request finished")

    async def _pump_up(self, req: Request, stream: ClientStream) -> int:
        sent = 0
        async for chunk in req.body:
            await stream.send(chunk)
            sent += len(chunk)
        await stream.end_send()
        return sent

    async def _http(
        self,
        req: Request,
        resp: Response,
        live: LiveRequest,
        stream: ClientStream,
        with_body: bool,
    ) -> tuple[int, int, int, str]:
        up_task = asyncio.ensure_future(self._pump_up(req, stream)) if with_body else None
        try:
            try:
                head = await stream.response_head()
            except berr.StreamError as exc:
                status, message = self._stream_failure(live, exc)
                await self._status(resp, status, message)
                return status, 0, 0, "revoked" if live.cut_reason else "error"
            out_headers = hdr.response_headers(head.headers, upgrade=False)
            await resp.start(
                head.status,
                out_headers,
                content_length=hdr.content_length(head.headers),
                hold=stream.ready,  # a small answer already here leaves in one write
            )
            # Bulk chunks go to the client as they arrive; small ones (watch events) queue, so
            # several that arrive together leave in one write.
            stream.set_sink(lambda chunk: len(chunk) >= DIRECT_WRITE and resp.write_nowait(chunk))
            ended_by = "complete"
            try:
                async for chunk in stream:
                    await resp.write(chunk, more=stream.ready)
            except berr.StreamError as exc:
                if resp.client_gone.is_set():
                    raise ConnectionResetError("the client left") from exc
                ended_by = "revoked" if live.cut_reason else "error"
                long_running = _long_running(live.attrs, req.query_string)
                log.info(
                    "stream ended early",
                    extra={"request_id": live.request_id, "error": str(exc)},
                )
                if not long_running:
                    # A truncated list must not look complete: drop the connection.
                    req.keep_alive = False
                    with contextlib.suppress(ConnectionError):
                        await resp.flush()
                    resp.finished = True
                    raise ConnectionResetError(str(exc)) from exc
            except ConnectionError:
                ended_by = "client"
                raise
            await resp.finish()
            bytes_in = 0
            if up_task is not None and up_task.done() and not up_task.cancelled():
                bytes_in = up_task.result() if up_task.exception() is None else 0
            return head.status, bytes_in or req.body_bytes, resp.bytes_out, ended_by
        finally:
            if up_task is not None and not up_task.done():
                up_task.cancel()
                with contextlib.suppress(BaseException):
                    await up_task

    async def _tunnel(
        self, req: Request, resp: Response, live: LiveRequest, stream: ClientStream
    ) -> tuple[int, int, int, str]:
        try:
            head = await stream.response_head()
        except berr.StreamError as exc:
            status, message = self._stream_failure(live, exc)
            await self._status(resp, status, message)
            return status, 0, 0, "revoked" if live.cut_reason else "error"
        if head.status != 101:
            # Not upgraded (403 from a 1.29 API server, 400, 404): pass it back unchanged so
            # kubectl's WebSocket -> SPDY fallback works.
            body = b"".join([chunk async for chunk in _safe_iter(stream)])
            out_headers = [(k, v) for k, v in hdr.response_headers(head.headers, upgrade=False)]
            await resp.start(head.status, out_headers, content_length=len(body))
            await resp.write(body)
            await resp.finish()
            return head.status, 0, len(body), "complete"
        out_headers = hdr.response_headers(head.headers, upgrade=True)
        tunnel = await resp.upgrade(out_headers)
        live._on_cut.append(tunnel.close)
        recorder = self._recorder(live, req, out_headers)

        # Bytes cross from the callback that brought them when the other side takes them at
        # once; exec/attach output and input are recorded as they go.
        tunnel.forward(_then_record(stream.send_nowait, recorder and recorder.client))
        stream.set_sink(_then_record(tunnel.write_nowait, recorder and recorder.server))
        up = asyncio.ensure_future(_tunnel_up(tunnel, stream, recorder))
        ended_by = "complete"
        try:
            async for chunk in stream:
                if recorder is not None:
                    recorder.server(chunk)
                await tunnel.write(chunk)
        except berr.StreamError:
            ended_by = "client" if resp.client_gone.is_set() else "error"
            ended_by = "revoked" if live.cut_reason else ended_by
        except ConnectionError:
            ended_by = "client"
        finally:
            up.cancel()
            with contextlib.suppress(BaseException):
                await up
            tunnel.close()
        if live.cut_reason:
            ended_by = "revoked"
        if recorder is not None:
            recorder.flush()
            live.recording = recorder.reference
        return 101, tunnel.bytes_in, resp.bytes_out, ended_by

    def _recorder(
        self, live: LiveRequest, req: Request, response_headers: list[tuple[str, str]]
    ) -> SessionRecorder | None:
        """A recorder for exec and attach sessions (port-forward bytes are not recorded)."""
        if live.attrs.subresource not in ("exec", "attach"):
            return None
        protocol = ""
        for name, value in response_headers:
            if name.lower() == "sec-websocket-protocol":
                protocol = value.strip()
        if not protocol:
            protocol = req.header("upgrade") or "unknown"
        return SessionRecorder(
            live.request_id,
            subprotocol=protocol,
            emit=self.emit,
            clock=self.clock,
            actor=live.caller.user,
        )

    # -- helpers --------------------------------------------------------------------------

    def _stream_failure(self, live: LiveRequest, exc: berr.StreamError) -> tuple[int, str]:
        live.note_relay_cut()
        if live.cut_reason is not None:
            return 403, f"access ended: {live.cut_reason}"
        if isinstance(exc, berr.PeerLostError):
            return 502, f"lost the relay of cluster {live.cluster}"
        if isinstance(exc, berr.RemoteStreamError):
            return 502, f"cluster {live.cluster}: {exc.message}"
        return 502, f"cluster {live.cluster}: {exc}"

    async def _status(
        self, resp: Response, code: int, message: str, attrs: RequestAttributes | None = None
    ) -> None:
        name = kind = group = ""
        if attrs is not None and attrs.is_resource_request:
            name, kind, group = attrs.name, attrs.resource, attrs.api_group
        body = status_body(code, message, name=name, kind=kind, group=group)
        # kubectl prints a resource request's Status message itself; for discovery and 401 it
        # prints only "unknown" or "provide credentials", so the reason travels as a warning.
        hidden = code == 401 or attrs is None or not attrs.is_resource_request
        extra = [warning_header(message)] if hidden else []
        with contextlib.suppress(ConnectionError):
            await resp.send(code, body, JSON, extra=extra)

    def _emit_requested(
        self,
        request_id: str,
        caller: Caller,
        groups: list[str],
        cluster: str,
        attrs: RequestAttributes,
        req: Request,
        decision: Decision,
    ) -> None:
        self.emit(
            events.KubectlRequested(
                id=f"{request_id}-q",
                time=self.clock(),
                actor=caller.user,
                cause=request_id,
                request_id=request_id,
                user=caller.user,
                cluster=cluster,
                verb=attrs.verb,
                api_group=attrs.api_group,
                resource=attrs.resource,
                subresource=attrs.subresource,
                namespace=attrs.namespace,
                name=attrs.name,
                decision="allow" if decision.allowed else "deny",
                reason=decision.reason if not decision.allowed else "",
                groups=tuple(groups),
                method=req.method,
                path=attrs.path,
                query=req.query_string[:2048],
                grant_id=decision.grant_id,
                via=caller.via,
                session_id=caller.session_id,
                edge_id=self.edge_id,
                client_ip=req.peer[0] if req.peer else "",
                user_agent=req.header("user-agent")[:256],
            )
        )

    def _emit_completed(
        self,
        request_id: str,
        caller: Caller,
        cluster: str,
        attrs: RequestAttributes,
        decision: Decision,
        status: int,
        bytes_in: int,
        bytes_out: int,
        started: float,
        *,
        ended_by: str = "complete",
        reason: str = "",
        recording: str = "",
    ) -> None:
        self.emit(
            events.KubectlCompleted(
                id=f"{request_id}-c",
                time=self.clock(),
                actor=caller.user,
                cause=request_id,
                request_id=request_id,
                user=caller.user,
                cluster=cluster,
                verb=attrs.verb,
                api_group=attrs.api_group,
                resource=attrs.resource,
                subresource=attrs.subresource,
                namespace=attrs.namespace,
                name=attrs.name,
                decision="allow" if decision.allowed else "deny",
                reason=reason or (decision.reason if not decision.allowed else ""),
                status=status,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                duration_ms=(time.monotonic() - started) * 1000.0,
                ended_by=ended_by,  # type: ignore[arg-type]
                recording=recording,
            )
        )


async def _safe_iter(stream: ClientStream):
    with contextlib.suppress(berr.StreamError):
        async for chunk in stream:
            yield chunk


async def _cancel_when_client_leaves(resp: Response, stream: ClientStream) -> None:
    """Cancel the stream (and so the request at the relay) when the client disconnects,
    even while the response is quiet and nothing is being written to notice it."""
    await resp.client_gone.wait()
    await stream.cancel("the client disconnected")


def _then_record(
    take: Callable[[Buffer], bool], record: Callable[[Buffer], None] | None
) -> Callable[[Buffer], bool]:
    """`take` (a write that may refuse, False), then `record` what it took, if recording."""

    def both(data: Buffer) -> bool:
        if not take(data):
            return False
        if record is not None:
            record(data)
        return True

    return both


async def _tunnel_up(
    tunnel: Tunnel, stream: ClientStream, recorder: SessionRecorder | None
) -> None:
    try:
        while data := await tunnel.read():
            if recorder is not None:
                recorder.client(data)
            await stream.send(data)
        await stream.end_send()
    except (berr.StreamError, ConnectionError):
        pass
