"""The edge <-> relay transport against a real nats-server: bodies, tunnels, flow control,
liveness, cancellation, revocation and hostile input."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from prometheus_client import CollectorRegistry

from broker import frames, subjects
from broker.connection import connect
from broker.errors import (
    MalformedFrameError,
    NoRelayError,
    OpenRejectedError,
    OpenTimeoutError,
    PeerLostError,
    RemoteStreamError,
    StreamAbortedError,
    StreamCancelledError,
    StreamClosedError,
    StreamProtocolError,
    StreamRevokedError,
)
from broker.transport import (
    ClientStream,
    EdgeClient,
    Handler,
    RelayServer,
    ServerStream,
    TransportConfig,
)
from broker.transport_config import TransportConfigError
from tests.support import eventually

FAST = TransportConfig(heartbeat_interval=0.2, dead_after=1.0, window=256 * 1024)
FIXED = TransportConfig(
    heartbeat_interval=0.2, dead_after=1.0, window=256 * 1024, max_window=256 * 1024
)
"""Windows that never grow, for tests that count grants."""
MiB = 1024 * 1024
T = TypeVar("T")


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await with a generous hang guard: a bug shows as a failure, not a stuck run."""
    try:
        return await asyncio.wait_for(awaitable, timeout=60)
    except TimeoutError:
        pytest.fail("hung: the stream never reported its outcome")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@dataclass
class Rig:
    """Edges, relays and their NATS connections for one test, torn down afterwards."""

    url: str
    cluster: str = field(default_factory=lambda: f"c-{uuid.uuid4().hex[:8]}")
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    conns: list[NatsClient] = field(default_factory=list)
    endpoints: list[EdgeClient | RelayServer] = field(default_factory=list)

    async def connect(self) -> NatsClient:
        """A connection as edges and relays make them (`broker.connection`: our client)."""
        nc = await connect(self.url, name="rig", allow_reconnect=False)
        self.conns.append(nc)
        return nc

    async def relay(
        self, handler: Handler, config: TransportConfig = FAST, relay_id: str | None = None
    ) -> tuple[RelayServer, NatsClient]:
        nc = await self.connect()
        relay_id = relay_id or f"relay-{uuid.uuid4().hex[:8]}"
        server = RelayServer(
            nc, self.cluster, relay_id, handler, config=config, registry=self.registry
        )
        await server.start()
        self.endpoints.append(server)
        return server, nc

    async def edge(self, config: TransportConfig = FAST) -> tuple[EdgeClient, NatsClient]:
        nc = await self.connect()
        client = EdgeClient(
            nc, f"edge-{uuid.uuid4().hex[:8]}", config=config, registry=self.registry
        )
        await client.start()
        self.endpoints.append(client)
        return client, nc

    async def open(self, edge: EdgeClient, user: str = "alice", **kw: object) -> ClientStream:
        kw.setdefault("method", "GET")
        kw.setdefault("path", "/api/v1/pods")
        return await edge.open(self.cluster, user=user, **kw)  # type: ignore[arg-type]

    async def close(self) -> None:
        for endpoint in reversed(self.endpoints):
            await endpoint.close()
        for nc in self.conns:
            if not nc.is_closed:
                await nc.close()


@pytest.fixture
async def rig(nats_url: str) -> AsyncIterator[Rig]:
    r = Rig(nats_url)
    yield r
    await r.close()


async def echo(stream: ServerStream) -> None:
    """Streams the request body straight back."""
    await stream.send_head(200, [("X-Path", stream.open.path)])
    async for chunk in stream.request_body():
        await stream.send(chunk)
    await stream.end()


async def read_all(stream: ClientStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def send_all(stream: ClientStream, data: bytes) -> None:
    rnd = random.Random(7)
    view = memoryview(data)
    while view:
        n = rnd.randint(1, 300_000)
        await stream.send(view[:n])
        view = view[n:]
    await stream.end_send()


# -- bodies ----------------------------------------------------------------------------------


async def test_small_request_carries_every_open_field(rig: Rig) -> None:
    seen: list[frames.Open] = []

    async def handler(stream: ServerStream) -> None:
        seen.append(stream.open)
        body = b"".join([c async for c in stream.request_body()])
        await stream.send_head(201, [("Content-Type", "text/plain"), ("X-Len", str(len(body)))])
        await stream.send(body.upper())
        await stream.end()

    await rig.relay(handler)
    edge, _ = await rig.edge()
    stream = await rig.open(
        edge,
        user="alice@example.com",
        groups=["dev", "ops"],
        method="POST",
        path="/api/v1/namespaces/a.b/configmaps",
        query="dryRun=All&fieldManager=kubectl",
        headers=[("Content-Type", "application/json"), ("Accept", "a"), ("Accept", "b")],
        request_id="req-42",
    )
    await stream.send(b"hello ")
    await stream.send(b"relay")
    await stream.end_send()
    head = await stream.response_head()
    assert head.status == 201
    assert head.headers == [("Content-Type", "text/plain"), ("X-Len", "11")]
    assert await read_all(stream) == b"HELLO RELAY"
    (o,) = seen
    assert (o.method, o.path, o.query) == (
        "POST",
        "/api/v1/namespaces/a.b/configmaps",
        "dryRun=All&fieldManager=kubectl",
    )
    assert o.headers == [("Content-Type", "application/json"), ("Accept", "a"), ("Accept", "b")]
    assert (o.user, o.groups, o.request_id, o.cluster, o.peer) == (
        "alice@example.com",
        ["dev", "ops"],
        "req-42",
        rig.cluster,
        edge.peer_id,
    )
    assert stream.closed and stream.failure is None
    await eventually(lambda: not edge.live_streams(), "edge forgets the finished stream")
    with pytest.raises(StreamClosedError):
        await stream.send(b"late")


async def test_request_without_body_needs_no_end_frame(rig: Rig) -> None:
    bodies: list[bytes] = []

    async def handler(stream: ServerStream) -> None:
        bodies.append(b"".join([c async for c in stream.request_body()]))
        await stream.send_head(200)
        await stream.send(b"[]")
        await stream.end()

    await rig.relay(handler)
    edge, _ = await rig.edge()
    stream = await rig.open(edge, has_body=False)
    await stream.end_send()  # harmless: already half-closed
    with pytest.raises(StreamClosedError):
        await stream.send(b"a body after all")
    assert await read_all(stream) == b"[]"
    assert bodies == [b""]
    ends = sample(
        rig.registry, "kubegate_transport_frames_total", role="edge", direction="out", type="end"
    )
    assert ends == 0


async def test_20mb_echo_streams_both_ways_intact(rig: Rig) -> None:
    await rig.relay(echo, FIXED)
    edge, _ = await rig.edge(FIXED)
    body = os.urandom(20 * MiB)
    stream = await rig.open(edge, method="PUT")
    sender = asyncio.create_task(send_all(stream, body))
    echoed = await read_all(stream)
    await sender
    assert len(echoed) == len(body)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(body).digest()
    # the window really bounded what was in flight: many grants were needed
    windows = sample(
        rig.registry, "kubegate_transport_frames_total", role="edge", direction="out", type="window"
    )
    assert windows >= 20 * MiB // FIXED.window


async def _download_watching_the_buffer(
    rig: Rig, config: TransportConfig, size: int, pause: float
) -> tuple[int, float]:
    """`size` bytes from a relay to an edge reading with `pause` s between reads: the most
    bytes ever buffered at the edge, and how many window grants it sent."""
    payload = os.urandom(size)

    async def sender(stream: ServerStream) -> None:
        await stream.send_head(200)
        await stream.send(payload)
        await stream.end()

    await rig.relay(sender, config)
    edge, _ = await rig.edge(config)
    stream = await rig.open(edge)
    got, most = bytearray(), 0
    async for chunk in stream:
        most = max(most, stream.buffered_bytes + len(chunk))
        got += chunk
        if pause:
            await asyncio.sleep(pause)
    assert bytes(got) == payload
    grants = sample(
        rig.registry, "kubegate_transport_frames_total", role="edge", direction="out", type="window"
    )
    return most, grants


async def test_a_reader_that_keeps_up_gets_a_larger_window_never_past_the_maximum(
    rig: Rig,
) -> None:
    grows = TransportConfig(
        heartbeat_interval=0.2, dead_after=1.0, window=128 * 1024, chunk_size=64 * 1024,
        max_window=1 * MiB, grow_window_within=5.0,  # any pace counts as keeping up
    )  # fmt: skip
    most, grants = await _download_watching_the_buffer(rig, grows, 16 * MiB, 0)
    assert most <= grows.max_window
    # a fixed 128 KiB window needs a grant per 64 KiB read (256 of them); grown, far fewer
    assert grows.max_window // grows.window <= 16 * MiB // grows.max_window <= grants < 64


async def test_a_slow_reader_keeps_its_window(rig: Rig) -> None:
    slow = TransportConfig(
        heartbeat_interval=0.2, dead_after=1.0, window=128 * 1024, chunk_size=64 * 1024,
        max_window=1 * MiB, grow_window_within=0.01,
    )  # fmt: skip
    most, grants = await _download_watching_the_buffer(rig, slow, 2 * MiB, 0.03)
    assert most <= slow.window
    assert grants >= 2 * MiB // (slow.window // 2) - 2


async def test_20mb_upload_then_20mb_download(rig: Rig) -> None:
    async def handler(stream: ServerStream) -> None:
        digest = hashlib.sha256()
        size = 0
        async for chunk in stream.request_body():
            digest.update(chunk)
            size += len(chunk)
        await stream.send_head(200, [("X-Sha256", digest.hexdigest()), ("X-Size", str(size))])
        rnd = random.Random(size)
        for _ in range(20):
            await stream.send(rnd.randbytes(MiB))
        await stream.end()

    await rig.relay(handler)
    edge, _ = await rig.edge()
    body = os.urandom(20 * MiB)
    stream = await rig.open(edge, method="POST")
    await send_all(stream, body)
    head = await stream.response_head()
    assert dict(head.headers) == {
        "X-Sha256": hashlib.sha256(body).hexdigest(),
        "X-Size": str(20 * MiB),
    }
    rnd = random.Random(20 * MiB)
    expected = b"".join(rnd.randbytes(MiB) for _ in range(20))
    assert await read_all(stream) == expected


async def test_bytes_sent_are_the_bytes_at_send_time(rig: Rig) -> None:
    """Chunks reach NATS uncopied and may be written after `send` returns: a buffer the caller
    reuses at once must not change what the peer gets."""
    await rig.relay(echo, FIXED)
    edge, _ = await rig.edge(FIXED)
    stream = await rig.open(edge, method="PUT")
    buf = bytearray(b"a" * 300_000)
    view = memoryview(bytearray(b"b" * 1000))
    await stream.send(buf)
    buf[:] = b"x" * len(buf)
    await stream.send(view[100:200])
    view[:] = b"y" * len(view)
    await stream.send(memoryview(b"c" * 10))  # read-only: may go as it is
    await stream.end_send()
    assert await read_all(stream) == b"a" * 300_000 + b"b" * 100 + b"c" * 10


async def test_tunnel_after_101_carries_bytes_both_ways(rig: Rig) -> None:
    async def handler(stream: ServerStream) -> None:
        await stream.send_head(101, [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        async for chunk in stream.request_body():
            await stream.send(b"pong:" + chunk)
        await stream.send(b"bye")  # upstream half-closed; downstream still open
        await stream.end()

    await rig.relay(handler)
    edge, _ = await rig.edge()
    stream = await rig.open(edge, headers=[("Upgrade", "websocket")])
    assert (await stream.response_head()).status == 101
    for i in range(50):  # lock-step: each reply must arrive before the next ping is sent
        await stream.send(f"ping {i}".encode())
        assert await stream.read() == f"pong:ping {i}".encode()
    await stream.end_send()
    assert await read_all(stream) == b"bye"


async def test_send_nowait_sends_all_within_credit_or_nothing_and_keeps_order(rig: Rig) -> None:
    got = bytearray()

    async def collect(stream: ServerStream) -> None:
        await stream.send_head(101, [("Upgrade", "SPDY/3.1")])
        async for chunk in stream.request_body():
            got.extend(chunk)
        await stream.end()

    chunked = TransportConfig(
        heartbeat_interval=0.2, dead_after=1.0, window=256 * 1024, max_window=256 * 1024,
        chunk_size=32 * 1024,
    )  # fmt: skip
    await rig.relay(collect, chunked)
    edge, _ = await rig.edge(chunked)
    stream = await rig.open(edge, method="POST", headers=[("Upgrade", "SPDY/3.1")])
    assert (await stream.response_head()).status == 101
    await eventually(lambda: stream._credit == chunked.window, "the whole window granted")
    sent = [os.urandom(100_000)]  # more than a chunk: it goes as several frames
    assert stream.send_nowait(sent[-1])
    assert stream._credit == chunked.window - 100_000
    assert not stream.send_nowait(os.urandom(chunked.window))  # more than the credit left
    assert stream._credit == chunked.window - 100_000  # nothing of it went
    # While a send waits for credit (holding the stream's send turn), nothing jumps ahead.
    sent.append(os.urandom(2 * MiB))
    waiting = asyncio.create_task(stream.send(sent[-1]))
    await asyncio.sleep(0)  # it takes the send turn, uses the credit and waits for more
    assert stream._send_lock.locked()
    assert not stream.send_nowait(b"must wait")
    await guarded(waiting)
    await eventually(lambda: stream._credit >= 10, "credit again")
    async with stream._send_lock:  # a send under way, between two of its frames
        assert not stream.send_nowait(b"must wait too")
    sent.append(b"after")
    assert stream.send_nowait(sent[-1])
    await stream.end_send()
    assert not stream.send_nowait(b"after the end")
    assert await read_all(stream) == b""
    assert bytes(got) == b"".join(sent)
    out = sample(
        rig.registry, "kubegate_transport_frames_total", role="edge", direction="out", type="req"
    )
    assert out >= 4 + 2 * MiB // chunked.chunk_size  # 100 000 bytes were 4 frames


async def test_a_sink_takes_what_arrives_and_what_it_refuses_is_read_in_order(rig: Rig) -> None:
    taking = True
    sunk: list[bytes] = []
    order: list[tuple[str, bytes]] = []
    stop = asyncio.Event()

    def sink(data: memoryview) -> bool:
        assert type(data) is memoryview  # a view of the NATS message: no copy on this path
        if taking:
            sunk.append(bytes(data))
            order.append(("sink", bytes(data)))
        return taking

    relay_end: list[ServerStream] = []

    async def handler(stream: ServerStream) -> None:
        relay_end.append(stream)
        stream.set_sink(sink)
        await stream.send_head(101, [("Upgrade", "SPDY/3.1")])
        await stop.wait()  # reads nothing meanwhile: only the sink can take bytes
        async for chunk in stream.request_body():
            assert type(chunk) is bytes  # what waited for a reader was copied once, into bytes
            order.append(("read", chunk))
        await stream.end()

    await rig.relay(handler, FIXED)
    edge, _ = await rig.edge(FIXED)
    stream = await rig.open(edge, method="POST", headers=[("Upgrade", "SPDY/3.1")])
    assert (await stream.response_head()).status == 101
    # 16 windows' worth with nobody reading: the sink's bytes count as read and are credited
    first = os.urandom(16 * FIXED.window)
    await guarded(stream.send(first))
    await eventually(lambda: sum(map(len, sunk)) == len(first), "all of it sunk")
    taking = False  # now it refuses: bytes queue up (and wait for a reader) ...
    second = os.urandom(FIXED.window // 2)
    await guarded(stream.send(second))
    await asyncio.sleep(0.2)
    assert sum(map(len, sunk)) == len(first)
    taking = True  # ... and keep their place even once the sink would take more
    third = b"third"
    await guarded(stream.send(third))
    total = len(first) + len(second) + len(third)
    await eventually(lambda: relay_end[0].bytes_received == total, "all of it at the relay")
    await stream.end_send()
    stop.set()
    assert await read_all(stream) == b""
    assert b"".join(d for _, d in order) == first + second + third
    assert b"".join(d for who, d in order if who == "read") == second + third


async def test_metrics_account_for_every_stream_and_frame(rig: Rig) -> None:
    await rig.relay(echo)
    edge, _ = await rig.edge()
    for size in [0, 10, 300_000, 2 * MiB]:
        stream = await rig.open(edge, method="PUT")
        sender = asyncio.create_task(send_all(stream, os.urandom(size)))
        assert len(await read_all(stream)) == size
        await sender

    def count(name: str, **labels: str) -> float:
        return sample(rig.registry, f"kubegate_transport_{name}", **labels)

    def frames_of(role: str, direction: str, kind: str) -> float:
        return count("frames_total", role=role, direction=direction, type=kind)

    def balanced() -> bool:
        return all(
            frames_of(sender, "out", kind) == frames_of(receiver, "in", kind) > 0
            for sender, receiver, kinds in [
                ("edge", "relay", ["open", "req", "end", "window"]),
                ("relay", "edge", ["accept", "head", "resp", "end", "window"]),
            ]
            for kind in kinds
        )

    await eventually(balanced, "every frame sent was received and counted once")
    for role in ["edge", "relay"]:
        assert count("streams_opened_total", role=role) == 4
        assert count("streams_open", role=role) == 0
        assert count("bytes_total", role=role, direction="in") > 2 * MiB + 300_000


# -- flow control ----------------------------------------------------------------------------


async def test_slow_consumer_stalls_only_its_own_stream(rig: Rig) -> None:
    pattern = bytes(range(256)) * 4096  # 1 MiB

    async def handler(stream: ServerStream) -> None:
        await stream.send_head(200)
        if stream.open.path == "/firehose":
            for _ in range(16):
                await stream.send(pattern)
            await stream.end()
        else:
            await echo_body(stream)

    async def echo_body(stream: ServerStream) -> None:
        async for chunk in stream.request_body():
            await stream.send(chunk)
        await stream.end()

    await rig.relay(handler)
    edge, _ = await rig.edge()
    slow = await rig.open(edge, path="/firehose")
    await slow.end_send()
    await eventually(
        lambda: sample(rig.registry, "kubegate_transport_credit_stalls_total", role="relay") >= 1,
        "the firehose waits for credit",
    )
    assert slow.buffered_bytes <= FAST.window

    fast = await rig.open(edge, path="/echo")
    body = os.urandom(4 * MiB)
    sender = asyncio.create_task(send_all(fast, body))
    assert await read_all(fast) == body
    await sender
    assert not slow.closed and slow.buffered_bytes <= FAST.window  # still parked, bounded

    assert await read_all(slow) == pattern * 16


# -- opening ---------------------------------------------------------------------------------


async def test_no_relay_fails_fast_with_a_typed_error(rig: Rig) -> None:
    edge, _ = await rig.edge()
    with pytest.raises(NoRelayError) as err:
        await rig.open(edge, timeout=30)  # a timeout error here would mean we waited it out
    assert err.value.cluster == rig.cluster
    assert not edge.live_streams()


async def test_relay_that_never_answers_times_out(rig: Rig) -> None:
    mute = await rig.connect()
    await mute.subscribe(
        subjects.request_subject(rig.cluster), queue=subjects.relay_queue(rig.cluster)
    )
    await mute.flush()
    edge, _ = await rig.edge()
    with pytest.raises(OpenTimeoutError) as err:
        await rig.open(edge, timeout=0.3)
    assert isinstance(err.value, TimeoutError)
    assert not edge.live_streams()


async def test_bad_open_is_refused_locally(rig: Rig) -> None:
    await rig.relay(echo)
    edge, _ = await rig.edge()
    with pytest.raises(MalformedFrameError):
        await rig.open(edge, path="")
    assert not edge.live_streams()


async def test_overloaded_relay_refuses(rig: Rig) -> None:
    gate = asyncio.Event()

    async def handler(stream: ServerStream) -> None:
        await gate.wait()
        await stream.send_head(204)
        await stream.end()

    await rig.relay(
        handler, config=TransportConfig(heartbeat_interval=0.2, dead_after=1.0, max_streams=1)
    )
    edge, _ = await rig.edge()
    first = await rig.open(edge)
    with pytest.raises(OpenRejectedError) as err:
        await rig.open(edge)
    assert err.value.code == frames.ErrorCode.OVERLOADED
    gate.set()
    assert (await first.response_head()).status == 204


async def test_the_answer_to_an_open_comes_on_the_streams_own_subject(rig: Rig) -> None:
    relay, _ = await rig.relay(echo)
    # Opens are taken as they are parsed, not by a task of the subscription's own
    assert relay._open_sub is not None and relay._open_sub._wait_for_msgs_task is None
    spy = await rig.connect()
    seen = await spy.subscribe(subjects.request_subject(rig.cluster))  # beside the queue group
    await spy.flush()
    edge, _ = await rig.edge()
    stream = await rig.open(edge)
    msg = await seen.next_msg(timeout=10)
    opened = frames.decode_frame(msg.data)
    assert isinstance(opened, frames.Open) and opened.stream == stream.id
    assert msg.reply == subjects.stream_subject(edge.peer_id, stream.id)
    # no nats-py request machinery: no response inbox subscription on the edge's connection
    assert not edge._nc._resp_sub_prefix
    await stream.send(b"x")
    await stream.end_send()
    assert await read_all(stream) == b"x"


async def test_two_replicas_share_opens(rig: Rig) -> None:
    a, _ = await rig.relay(echo)
    b, _ = await rig.relay(echo)
    edge, _ = await rig.edge()
    served = set()
    for _ in range(40):
        stream = await rig.open(edge)
        await stream.send(b"x")
        await stream.end_send()
        assert await read_all(stream) == b"x"
        served.add(stream.relay_id)
    assert served == {a.relay_id, b.relay_id}


# -- handler outcomes ------------------------------------------------------------------------


async def test_handler_failures_reach_the_edge_as_remote_errors(rig: Rig) -> None:
    async def handler(stream: ServerStream) -> None:
        if stream.open.path == "/raise":
            raise RuntimeError("boom")
        if stream.open.path == "/upstream":
            await stream.fail(frames.ErrorCode.UPSTREAM, "apiserver unreachable")
        # "/silent": returns without a response

    await rig.relay(handler)
    edge, _ = await rig.edge()
    for path, code, text in [
        ("/raise", "internal", "RuntimeError: boom"),
        ("/upstream", "upstream", "apiserver unreachable"),
        ("/silent", "internal", "without a response"),
    ]:
        stream = await rig.open(edge, path=path)
        with pytest.raises(RemoteStreamError) as err:
            await stream.response_head()
        assert err.value.code == code and text in err.value.message


# -- cancellation and revocation -------------------------------------------------------------


@dataclass
class Parked:
    """A handler that answers 200 and then waits (a watch), recording how it ended."""

    started: dict[str, ServerStream] = field(default_factory=dict)
    cancelled: dict[str, ServerStream] = field(default_factory=dict)

    async def __call__(self, stream: ServerStream) -> None:
        self.started[stream.id] = stream
        await stream.send_head(200)
        await stream.send(b"event\n")
        try:
            async for chunk in stream.request_body():
                await stream.send(chunk)
            await stream.send(b"done\n")
            await stream.end()
        except asyncio.CancelledError:
            self.cancelled[stream.id] = stream
            raise


async def test_cancel_propagates_to_the_relay_handler(rig: Rig) -> None:
    parked = Parked()
    relay, _ = await rig.relay(parked)
    edge, _ = await rig.edge()
    stream = await rig.open(edge)
    assert await stream.read() == b"event\n"
    await stream.cancel("client went away")
    with pytest.raises(StreamCancelledError) as local:
        await guarded(stream.read())
    assert not local.value.by_peer
    await eventually(lambda: stream.id in parked.cancelled, "the relay handler is cancelled")
    failure = parked.cancelled[stream.id].failure
    assert isinstance(failure, StreamCancelledError) and failure.by_peer
    assert failure.reason == "client went away"
    assert not relay.live_streams() and not edge.live_streams()
    reasons = {
        (role, reason): sample(
            rig.registry, "kubegate_transport_stream_cancellations_total", role=role, reason=reason
        )
        for role, reason in [("edge", "cancel"), ("relay", "remote_cancel")]
    }
    assert reasons == {("edge", "cancel"): 1.0, ("relay", "remote_cancel"): 1.0}


async def test_abort_by_user_at_the_edge_and_at_the_relay(rig: Rig) -> None:
    parked = Parked()
    relay, _ = await rig.relay(parked)
    edge, _ = await rig.edge()
    alice = [await rig.open(edge, user="alice") for _ in range(3)]
    bob = await rig.open(edge, user="bob")
    for s in [*alice, bob]:
        assert await s.read() == b"event\n"
    assert {s.stream_id for s in edge.live_streams("alice")} == {s.id for s in alice}
    assert {s.stream_id for s in relay.live_streams("alice")} == {s.id for s in alice}

    assert await edge.abort_user("alice", "grant revoked") == 3
    for s in alice:
        with pytest.raises(StreamAbortedError) as err:
            await s.read()
        assert err.value.reason == "grant revoked"
    await eventually(lambda: len(parked.cancelled) == 3, "alice's handlers are cancelled")
    assert all(p.cancel_reason == "grant revoked" for p in parked.cancelled.values())
    assert [s.stream_id for s in relay.live_streams()] == [bob.id]

    await bob.send(b"still here")  # bob is untouched...
    assert await bob.read() == b"still here"
    assert await relay.abort_user("bob", "user disabled") == 1  # ...until the relay cuts him
    with pytest.raises(StreamRevokedError) as revoked:  # typed: his access ended there
        await bob.read()
    assert revoked.value.by_peer and revoked.value.reason == "user disabled"
    await eventually(lambda: bob.id in parked.cancelled, "bob's handler is cancelled")


async def test_relay_shutdown_aborts_its_streams(rig: Rig) -> None:
    parked = Parked()
    relay, _ = await rig.relay(parked)
    edge, _ = await rig.edge()
    stream = await rig.open(edge)
    assert await stream.read() == b"event\n"
    await relay.close()
    assert stream.id in parked.cancelled
    with pytest.raises(StreamAbortedError) as err:
        await guarded(stream.read())
    assert err.value.by_peer
    assert not isinstance(err.value, StreamRevokedError)  # a shutdown is not a revocation


# -- liveness --------------------------------------------------------------------------------


async def test_relay_killed_mid_stream_fails_the_edge_stream(rig: Rig) -> None:
    parked = Parked()
    relay, relay_nc = await rig.relay(parked)
    edge, _ = await rig.edge()
    stream = await rig.open(edge)
    assert await stream.read() == b"event\n"
    await relay_nc.close()  # the replica dies: no goodbye frame, no more heartbeats
    with pytest.raises(PeerLostError) as err:
        await guarded(stream.read())
    assert err.value.peer == relay.relay_id
    assert not edge.live_streams()


async def test_sender_starved_of_credit_learns_the_relay_died(rig: Rig) -> None:
    async def deaf(stream: ServerStream) -> None:
        await stream.send_head(200)
        await asyncio.Event().wait()  # never reads the body, so credit runs out

    _, relay_nc = await rig.relay(deaf)
    edge, _ = await rig.edge()
    stream = await rig.open(edge, method="POST")
    await eventually(lambda: stream._head is not None, "the head arrived")
    upload = asyncio.create_task(stream.send(b"x" * (10 * MiB)))
    await eventually(
        lambda: sample(rig.registry, "kubegate_transport_credit_stalls_total", role="edge") >= 1,
        "the upload waits for credit",
    )
    await relay_nc.close()
    with pytest.raises(PeerLostError):
        await guarded(upload)


async def test_edge_shutdown_cancels_relay_handlers(rig: Rig) -> None:
    parked = Parked()
    relay, _ = await rig.relay(parked)
    edge, _ = await rig.edge()
    streams = [await rig.open(edge) for _ in range(3)]
    await edge.close("edge draining")
    await eventually(lambda: len(parked.cancelled) == 3, "every handler is cancelled")
    assert {p.cancel_reason for p in parked.cancelled.values()} == {"edge draining"}
    for s in streams:
        with pytest.raises(StreamAbortedError):
            await s.read()
    assert not relay.live_streams()


async def test_edge_gone_cancels_the_relay_handler(rig: Rig) -> None:
    parked = Parked()
    relay, _ = await rig.relay(parked)
    edge, edge_nc = await rig.edge()
    stream = await rig.open(edge)
    assert await stream.read() == b"event\n"
    await edge_nc.close()
    await eventually(lambda: stream.id in parked.cancelled, "the orphaned handler is cancelled")
    assert isinstance(parked.cancelled[stream.id].failure, PeerLostError)
    assert not relay.live_streams()


async def test_idle_streams_live_on_one_heartbeat_per_peer(rig: Rig) -> None:
    parked = Parked()
    relay, _ = await rig.relay(parked)
    edge, _ = await rig.edge()
    streams = list(await asyncio.gather(*(rig.open(edge) for _ in range(300))))
    for s in streams:
        assert await s.read() == b"event\n"

    spy = await rig.connect()
    beats: dict[str, list[frames.Heartbeat]] = {"to_edge": [], "to_relay": []}

    def record(key: str) -> Callable[[object], Awaitable[None]]:
        async def cb(msg: nats.aio.msg.Msg) -> None:
            beats[key].append(frames.decode_frame(msg.data))  # type: ignore[arg-type]

        return cb

    await spy.subscribe(subjects.peer_heartbeat_subject(edge.peer_id), cb=record("to_edge"))
    await spy.subscribe(subjects.peer_heartbeat_subject(relay.relay_id), cb=record("to_relay"))
    await spy.flush()
    await asyncio.sleep(4 * FAST.dead_after)  # idle for several dead intervals

    assert len(edge.live_streams()) == 300 and len(relay.live_streams()) == 300
    ids = {s.id for s in streams}
    for key, sender in [("to_edge", relay.relay_id), ("to_relay", edge.peer_id)]:
        assert len(beats[key]) >= 3, key
        for hb in beats[key]:  # every heartbeat covers all 300 streams in one message
            assert hb.peer == sender and {sid for sid, _ in hb.streams} == ids
    for s in streams:  # and every stream still works
        await s.send(b"ping")
        await s.end_send()
        assert await read_all(s) == b"pingdone\n"
    assert not parked.cancelled


# -- hostile and broken input ----------------------------------------------------------------


async def test_malformed_and_oversize_frames_are_counted_and_ignored(rig: Rig) -> None:
    relay, _ = await rig.relay(echo)
    edge, _ = await rig.edge()
    stream = await rig.open(edge)
    raw = await rig.connect()
    oversize = b"\x00" * (FAST.max_frame_bytes + 1)
    targets = {
        "edge": subjects.stream_subject(edge.peer_id, stream.id),
        "relay": subjects.stream_subject(relay.relay_id, stream.id),
    }
    for subject in targets.values():
        await raw.publish(subject, b"\xc1garbage")
        await raw.publish(subject, msgspec.msgpack.encode({"t": "resp", "seq": "one"}))
        await raw.publish(subject, oversize)
        await raw.publish(subject.rpartition(".")[0] + "." + subjects.HEARTBEAT_TOKEN, b"junk")
        await raw.publish(
            subject.rpartition(".")[0] + ".nosuchstream", frames.encode_frame(frames.End(seq=1))
        )
    refused = await raw.request(subjects.request_subject(rig.cluster), b"not an open", timeout=5)
    reply = frames.decode_frame(refused.data)
    assert isinstance(reply, frames.Error) and reply.code == frames.ErrorCode.MALFORMED

    def rejected(role: str, reason: str) -> float:
        return sample(
            rig.registry, "kubegate_transport_frames_rejected_total", role=role, reason=reason
        )

    expected = {
        ("edge", "malformed"): 3,
        ("edge", "oversize"): 1,
        ("edge", "unknown_stream"): 1,
        ("relay", "malformed"): 4,
        ("relay", "oversize"): 1,
        ("relay", "unknown_stream"): 1,
    }
    await eventually(
        lambda: {k: rejected(*k) for k in expected} == expected,
        f"rejections counted as {expected}",
    )
    await stream.send(b"unharmed")
    await stream.end_send()
    assert await read_all(stream) == b"unharmed"


async def test_sequence_gap_is_a_stream_error_at_both_ends(rig: Rig) -> None:
    parked = Parked()
    await rig.relay(parked)
    edge, _ = await rig.edge()
    stream = await rig.open(edge)
    assert await stream.read() == b"event\n"
    raw = await rig.connect()
    # a frame that skips ahead, as if frames had been dropped in between
    skipped = frames.ResponseChunk(seq=99, data=b"corrupt")
    await raw.publish(
        subjects.stream_subject(edge.peer_id, stream.id), frames.encode_frame(skipped)
    )
    with pytest.raises(StreamProtocolError) as err:
        await guarded(stream.read())
    assert "sequence gap" in err.value.detail
    await eventually(lambda: stream.id in parked.cancelled, "the relay learns and stops")
    # frames are handled as they are parsed, not by a task of the subscription's own
    assert edge._sub is not None and edge._sub._wait_for_msgs_task is None


async def test_lost_tail_frames_are_detected_by_heartbeat(rig: Rig) -> None:
    parked = Parked()
    relay, _ = await rig.relay(parked)
    edge, _ = await rig.edge()
    stream = await rig.open(edge)
    assert await stream.read() == b"event\n"
    raw = await rig.connect()
    # the relay claims it sent more than arrived: the last frames were lost, nothing follows
    claim = frames.Heartbeat(peer=relay.relay_id, streams=[(stream.id, 50)])
    await raw.publish(subjects.peer_heartbeat_subject(edge.peer_id), frames.encode_frame(claim))
    with pytest.raises(StreamProtocolError) as err:
        await guarded(stream.read())
    assert "frames lost" in err.value.detail
    await eventually(lambda: stream.id in parked.cancelled, "the relay learns and stops")


async def test_credit_overrun_is_a_stream_error(rig: Rig) -> None:
    parked = Parked()
    await rig.relay(parked)
    edge, _ = await rig.edge()
    stream = await rig.open(edge)
    assert await stream.read() == b"event\n"
    raw = await rig.connect()
    # next in sequence but beyond the window the edge granted
    flood = frames.ResponseChunk(seq=stream._in_seq + 1, data=b"x" * (FAST.window + 1))
    await raw.publish(subjects.stream_subject(edge.peer_id, stream.id), frames.encode_frame(flood))
    with pytest.raises(StreamProtocolError) as err:
        await guarded(stream.read())
    assert "credit overrun" in err.value.detail


async def _raw_answer(rig: Rig, *, head_body: bool) -> list[frames.Frame]:
    """The frames a relay answers a bodiless Open with, as a bare NATS client sees them."""
    raw = await rig.connect()
    peer = subjects.edge_peer(f"raw-{uuid.uuid4().hex[:6]}")
    stream_id = uuid.uuid4().hex
    sub = await raw.subscribe(subjects.stream_subject(peer, stream_id))
    opened = frames.Open(
        stream=stream_id, peer=peer, cluster=rig.cluster, method="GET", path="/small",
        user="alice", credit=FAST.window, end=True, head_body=head_body,
    )  # fmt: skip
    accept = frames.decode_frame((await raw.request(
        subjects.request_subject(rig.cluster), frames.encode_frame(opened), timeout=10
    )).data)  # fmt: skip
    assert isinstance(accept, frames.Accept)
    got: list[frames.Frame] = []
    while not got or not (isinstance(got[-1], frames.End) or getattr(got[-1], "end", False)):
        got.append(frames.decode_frame((await sub.next_msg(timeout=10)).data))
    return got


async def _small(stream: ServerStream) -> None:
    await stream.respond(200, [("Content-Type", "text/plain")], b"small answer")


async def test_a_whole_small_response_is_one_frame_to_an_edge_that_takes_it(rig: Rig) -> None:
    await rig.relay(_small)
    edge, _ = await rig.edge()
    stream = await rig.open(edge)
    head = await guarded(stream.response_head())
    assert (head.status, head.headers) == (200, [("Content-Type", "text/plain")])
    assert await read_all(stream) == b"small answer"
    assert stream.closed and stream.failure is None
    in_frames = {
        t: sample(rig.registry, "kubegate_transport_frames_total", role="edge", direction="in",
                  type=t)
        for t in ("head", "resp", "end")
    }  # fmt: skip
    assert in_frames == {"head": 1, "resp": 0, "end": 0}
    assert await _raw_answer(rig, head_body=True) == [
        frames.Head(seq=1, status=200, headers=[("Content-Type", "text/plain")],
                    data=b"small answer", end=True)
    ]  # fmt: skip


async def test_an_edge_that_does_not_take_bodies_in_heads_gets_separate_frames(rig: Rig) -> None:
    await rig.relay(_small)
    assert await _raw_answer(rig, head_body=False) == [
        frames.Head(seq=1, status=200, headers=[("Content-Type", "text/plain")]),
        frames.ResponseChunk(seq=2, data=b"small answer"),
        frames.End(seq=3),
    ]


async def test_responses_too_large_for_one_frame_still_arrive_whole(rig: Rig) -> None:
    big_body = os.urandom(FAST.chunk_size + 1)  # more than a chunk (and than the first credit)
    big_headers = [("X-Big", "v" * 63_000)] * 8  # fits a frame, but not with the body too
    after_head = os.urandom(30_000)

    async def handler(stream: ServerStream) -> None:
        if stream.open.path == "/body":
            await stream.respond(200, [], big_body)
        else:
            await stream.respond(200, big_headers, after_head)

    await rig.relay(handler)
    edge, _ = await rig.edge()
    stream = await rig.open(edge, path="/body")
    assert (await guarded(stream.response_head())).status == 200
    assert await read_all(stream) == big_body
    stream = await rig.open(edge, path="/headers")
    assert (await guarded(stream.response_head())).headers == big_headers
    assert await read_all(stream) == after_head


async def test_a_bodiless_open_is_accepted_while_its_answer_is_slow(rig: Rig) -> None:
    """Its Accept waits for the first frame to travel with it, but not for long."""
    release = asyncio.Event()

    async def slow(stream: ServerStream) -> None:
        body = b"".join([chunk async for chunk in stream.request_body()])
        await release.wait()
        await stream.respond(200, [], b"late" + body)

    await rig.relay(slow)
    edge, _ = await rig.edge()
    stream = await guarded(rig.open(edge, has_body=False))  # no answer yet: the Accept alone
    assert stream.remote_peer is not None and not stream.ready
    release.set()
    assert await read_all(stream) == b"late"
    # and with a request body to send, the Accept (the edge's credit) leaves at once
    stream = await guarded(rig.open(edge, method="PUT", has_body=True))
    assert stream.remote_peer is not None
    await stream.send(b" body")
    await stream.end_send()
    assert await read_all(stream) == b"late body"


async def test_a_stream_cut_while_its_accept_is_held_gets_the_accept_then_the_cut(
    rig: Rig,
) -> None:
    """The held Accept goes out before the terminal frame: the edge learns who answered and
    that the user's access ended, rather than waiting for an Accept that never comes."""
    started = asyncio.Event()

    async def waits(stream: ServerStream) -> None:
        started.set()
        await asyncio.sleep(60)

    holding = TransportConfig(heartbeat_interval=0.2, dead_after=4.0, accept_within=1.0)
    relay, _ = await rig.relay(waits, config=holding)
    edge, _ = await rig.edge(config=holding)
    opening = asyncio.ensure_future(rig.open(edge, has_body=False))
    await guarded(started.wait())
    assert not opening.done(), "the Accept is still held"
    assert await relay.abort_user("alice", "user disabled") == 1
    stream = await guarded(opening)
    assert stream.remote_peer is not None
    with pytest.raises(StreamRevokedError) as revoked:
        await guarded(stream.read())
    assert revoked.value.by_peer and revoked.value.reason == "user disabled"


@pytest.mark.parametrize("within", [-0.1, 0.3])
def test_an_accept_may_not_be_held_near_the_dead_peer_bound(within: float) -> None:
    with pytest.raises(TransportConfigError, match="accept_within"):
        TransportConfig(heartbeat_interval=0.2, dead_after=1.0, accept_within=within)
    assert TransportConfig(heartbeat_interval=0.2, dead_after=1.0, accept_within=0.25)
