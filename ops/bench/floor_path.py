"""A yardstick for `bench stream`: what a lean Python path with kubegate's hops costs.

The port-forward goal (proxied MB/s >= 60% of direct) is a contest for two shared cores, so
its ratio is the ratio of CPU per MB. To tell what kubegate's own work costs from what the
hops cost any Python proxy, the benchmark runs this path next to kubegate's, in the same
minutes, against the same simulator and kubectl:

    kubectl --TLS--> floor edge --NATS--> floor relay --TLS--> simulator

It does only what the hops force: TLS ended and begun again (uvloop's, as kubegate's edge and
relay use), every read published as one NATS message on the raw protocol (what one turn of the
event loop publishes written at once), a 4 MiB credit window per direction so nothing buffers
without bound. Nothing else: no HTTP (the bytes of each TCP connection pass through unread, so
kubectl's own credentials reach the simulator), no identity, policy, frames, heartbeats, audit
or metrics. It is not a proxy to deploy; it exists only to be measured. Its NATS client
(`NatsLink`) is its own, on the raw protocol, rather than `broker.nats_client`: kubegate's
client is part of what the floor is measured against.

Run as `python -m ops.bench.floor_path edge|relay ...` (see `main`); `floor_path()` starts a
nats-server and both processes for a benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from broker.server import EmbeddedNats, free_port
from ops.bench.processes import spawn, stop, wait_file

WINDOW = 4 << 20
"""Bytes a side may have published and not yet had acknowledged (kubegate's `max_window`)."""
ACK_EVERY = 512 << 10
"""A side acknowledges what it has written on once this much has built up."""
WRITE_HIGH = 1 << 20
"""Buffered outgoing bytes past which a side holds its acknowledgements."""
MAX_PUBLISH = 256 << 10
"""Largest payload of one message (kubegate's `chunk_size`); longer reads are split."""
OPEN_TIMEOUT = 10.0
"""Seconds an edge waits for a relay to take a connection before closing it."""

MessageHandler = Callable[[memoryview, str], None]
"""Called with a message's payload and its reply subject ("" when none)."""


class NatsLink(asyncio.Protocol):
    """A NATS client connection on the raw protocol: PUB, SUB, UNSUB, and MSG delivered to
    handlers from the read callback."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._msg: tuple[int, str, int] | None = None
        """The control line of a message whose payload is still arriving: sid, reply, size."""
        self._parts: list[bytes | memoryview] = []
        """That payload's reads so far (the first one sliced), and their length."""
        self._have = 0
        self._line = b""
        """The start of a control line whose end has not arrived."""
        self._handlers: dict[int, MessageHandler] = {}
        self._sids = itertools.count(1)
        self._pongs: list[asyncio.Future[None]] = []
        self._out: list[bytes | memoryview] = []
        """PUB commands not yet written (see `publish`)."""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._write(b'CONNECT {"verbose":false,"pedantic":false}\r\n')

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        for waiter in self._pongs:
            if not waiter.done():
                waiter.set_exception(ConnectionError("NATS connection lost"))

    async def flush(self) -> None:
        """Wait until the server has processed everything sent so far (PING, then its PONG)."""
        waiter = asyncio.get_running_loop().create_future()
        self._pongs.append(waiter)
        self._write(b"PING\r\n")
        await waiter

    def subscribe(self, subject: str, handler: MessageHandler) -> int:
        sid = next(self._sids)
        self._handlers[sid] = handler
        self._write(b"SUB %s %d\r\n" % (subject.encode(), sid))
        return sid

    def unsubscribe(self, sid: int) -> None:
        if self._handlers.pop(sid, None) is not None:
            self._write(b"UNSUB %d\r\n" % sid)

    def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        """Queue a PUB; what one turn of the event loop publishes leaves in one write.

        Writing each message at once was dearer (nats-server reads smaller pieces): about
        0.2 ms per MB for nats-server in `bench stream`, as it was for kubegate's edge."""
        line = b"PUB %s %s%d\r\n" % (
            subject.encode(),
            (reply + " ").encode() if reply else b"",
            len(payload),
        )
        if not self._out:
            asyncio.get_running_loop().call_soon(self._write_out)
        self._out += (line, payload, b"\r\n")

    def _write_out(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None:
            self.transport.writelines(out)

    def _write(self, data: bytes) -> None:
        self._write_out()  # after what is queued: one connection's order is the server's
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        """Payloads are delivered as views of what was read: a message within one read is not
        copied at all, one spanning reads is joined once."""
        if self._msg is not None:  # a payload is arriving
            self._parts.append(data)
            self._have += len(data)
            sid, reply, size = self._msg
            if self._have < size + 2:
                return
            data = b"".join(self._parts)
            self._parts, self._have, self._msg = [], 0, None
            self._deliver(sid, reply, memoryview(data)[:size])
            pos = size + 2
        elif self._line:  # a control line split across reads
            data, self._line = self._line + data, b""
            pos = 0
        else:
            pos = 0
        self._scan(data, pos)

    def _scan(self, data: bytes, pos: int) -> None:
        end = len(data)
        while pos < end:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                self._line = data[pos:]
                return
            line = data[pos:eol]
            pos = eol + 2
            if line.startswith(b"MSG "):
                # MSG <subject> <sid> [reply] <size>
                words = line.split()
                sid, size = int(words[2]), int(words[-1])
                reply = words[3].decode() if len(words) == 5 else ""
                if end - pos < size + 2:
                    self._msg = (sid, reply, size)
                    self._parts = [memoryview(data)[pos:]]
                    self._have = end - pos
                    return
                self._deliver(sid, reply, memoryview(data)[pos : pos + size])
                pos += size + 2
            elif line.startswith(b"PING"):
                self._write(b"PONG\r\n")
            elif line.startswith(b"PONG") and self._pongs:
                waiter = self._pongs.pop(0)
                if not waiter.done():
                    waiter.set_result(None)
            elif line.startswith(b"-ERR"):
                print(f"floor path: NATS said {line.decode()}", file=sys.stderr)

    def _deliver(self, sid: int, reply: str, payload: memoryview) -> None:
        handler = self._handlers.get(sid)
        if handler is not None:
            handler(payload, reply)


class Tunnel(asyncio.Protocol):
    """One TCP connection's end: what it reads goes out on `out_subject`; what arrives on
    `in_subject` is written to it. An empty message means the other end closed. Credit comes
    back on `<subject>.ack`: the number of bytes written on."""

    def __init__(self, nats: NatsLink, out_subject: str, in_subject: str) -> None:
        self.nats = nats
        self.out_subject = out_subject
        self.transport: asyncio.Transport | None = None
        self._unacked = 0
        self._to_ack = 0
        self._reading_paused = False
        self._write_paused = False
        self._closed = False
        self._ack_out = f"{in_subject}.ack"
        self._sids = [
            nats.subscribe(in_subject, self._on_data),
            nats.subscribe(f"{out_subject}.ack", self._on_ack),
        ]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_HIGH)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        for at in range(0, len(data), MAX_PUBLISH):
            self.nats.publish(self.out_subject, data[at : at + MAX_PUBLISH])
        self._unacked += len(data)
        if self._unacked >= WINDOW and not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # TLS cannot half-close: the connection ends

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish(tell_peer=True)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._ack()

    def finish(self, tell_peer: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if tell_peer:
            self.nats.publish(self.out_subject, b"")
        for sid in self._sids:
            self.nats.unsubscribe(sid)
        if self.transport is not None:
            self.transport.close()

    def _on_data(self, payload: memoryview, reply: str) -> None:
        if self.transport is None:
            return
        if not payload:
            self.finish(tell_peer=False)
            return
        self.transport.write(payload)
        self._to_ack += len(payload)
        if not self._write_paused:
            self._ack()

    def _ack(self) -> None:
        if self._to_ack >= ACK_EVERY and not self._closed:
            self.nats.publish(self._ack_out, b"%d" % self._to_ack)
            self._to_ack = 0

    def _on_ack(self, payload: memoryview, reply: str) -> None:
        self._unacked -= int(bytes(payload))
        if self._reading_paused and self._unacked < WINDOW and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()


class _AcceptedTunnel(Tunnel):
    """A client's connection at the edge: not read until a relay has dialed the API server
    for it (asked on `floor.open`), closed if none answers within `OPEN_TIMEOUT`."""

    def __init__(self, nats: NatsLink, out_subject: str, in_subject: str, name: str) -> None:
        super().__init__(nats, out_subject, in_subject)
        self._name = name
        self._answer_sid = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.pause_reading()  # type: ignore[attr-defined]
        inbox = f"floor.inbox.{self._name}"
        self._answer_sid = self.nats.subscribe(inbox, self._answered)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(OPEN_TIMEOUT, self.finish, False)
        self.nats.publish("floor.open", self._name.encode(), reply=inbox)

    def _answered(self, payload: memoryview, reply: str) -> None:
        self.nats.unsubscribe(self._answer_sid)
        if self._timer is not None:
            self._timer.cancel()
        if payload == b"ok" and self.transport is not None and not self._closed:
            self.transport.resume_reading()
        else:
            self.finish(tell_peer=False)


async def run_edge(nats_port: int, cert: Path, key: Path, port: int, ready: Path) -> None:
    """TLS from clients (the simulator's own serving certificate, so its kubeconfig works
    as it is, pointed here); each connection asks a relay to dial the API server first."""
    loop = asyncio.get_running_loop()
    _, nats = await loop.create_connection(NatsLink, "127.0.0.1", nats_port)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE  # as kubegate's edge: the client's choice
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    ids = itertools.count()

    def accept() -> Tunnel:
        name = f"{os.getpid()}-{next(ids)}"
        return _AcceptedTunnel(nats, f"floor.up.{name}", f"floor.down.{name}", name)

    server = await loop.create_server(accept, "127.0.0.1", port, ssl=ctx)
    await nats.flush()
    await asyncio.to_thread(ready.write_text, "ready\n")
    async with server:
        await nats.lost


async def run_relay(nats_port: int, api_host: str, api_port: int, ca: Path, ready: Path) -> None:
    """Dials the API server over TLS for each connection an edge opens."""
    loop = asyncio.get_running_loop()
    _, nats = await loop.create_connection(NatsLink, "127.0.0.1", nats_port)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["http/1.1"])
    tasks: set[asyncio.Task[None]] = set()

    async def dial(name: str, reply: str) -> None:
        tunnel = Tunnel(nats, f"floor.down.{name}", f"floor.up.{name}")
        try:
            await loop.create_connection(lambda: tunnel, api_host, api_port, ssl=ctx)
        except (OSError, ssl.SSLError) as exc:
            print(f"floor path: dialing the API server failed: {exc}", file=sys.stderr)
            tunnel.finish(tell_peer=False)
            nats.publish(reply, b"failed")
            return
        nats.publish(reply, b"ok")  # after the SUBs: the server keeps one connection's order

    def on_open(payload: memoryview, reply: str) -> None:
        task = loop.create_task(dial(bytes(payload).decode(), reply))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    nats.subscribe("floor.open", on_open)
    await nats.flush()  # the server has the SUB: an edge's first open finds this relay
    await asyncio.to_thread(ready.write_text, "ready\n")
    await nats.lost


@dataclass
class FloorPath:
    """A running floor path: a kubeconfig that goes through it, and its processes' pids."""

    kubeconfig: Path
    pids: dict[str, int]
    """"edge", "relay", "nats": for `bench_cpu.CpuMeter`."""


@contextlib.asynccontextmanager
async def floor_path(base: Path, sim_dir: Path, sim_kubeconfig: Path) -> AsyncIterator[FloorPath]:
    """Start a nats-server of the settings kubegate's embedded one has (GOGC, GOMAXPROCS), a
    floor relay and a floor edge, for the simulator in `sim_dir`."""
    nats = EmbeddedNats(base / "nats", server_name="floor")
    await asyncio.to_thread(nats.start)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        config = yaml.safe_load(await asyncio.to_thread(sim_kubeconfig.read_text))
        api = config["clusters"][0]["cluster"]["server"]
        api_host, api_port = api.split("//", 1)[1].rsplit(":", 1)
        edge_port = free_port("127.0.0.1")
        for args in (
            ["relay", str(nats.port), api_host, api_port, str(sim_dir / "ca.crt")],
            [
                "edge",
                str(nats.port),
                str(sim_dir / "apiserver.crt"),
                str(sim_dir / "apiserver.key"),
                str(edge_port),
            ],
        ):
            role = args[0]
            ready, log = base / f"{role}.ready", base / f"{role}.log"
            procs.append(spawn("ops.bench.floor_path", *args, str(ready), log=log))
            await wait_file(ready, procs[-1], f"the floor {role}", start_within=30, log=log)
        config["clusters"][0]["cluster"]["server"] = f"https://{api_host}:{edge_port}"
        kubeconfig = base / "floor.kubeconfig"
        await asyncio.to_thread(kubeconfig.write_text, yaml.safe_dump(config))
        assert nats.process is not None
        yield FloorPath(
            kubeconfig,
            {"relay": procs[0].pid, "edge": procs[1].pid, "nats": nats.process.pid},
        )
    finally:
        await asyncio.to_thread(stop, procs, 10)
        await asyncio.to_thread(nats.stop)


def main(argv: list[str]) -> None:
    from ops.runtime import setup_process

    setup_process()  # uvloop and the allocator settings kubegate's processes run with
    role, rest = argv[0], argv[1:]
    if role == "edge":
        port, cert, key, listen, ready = rest
        asyncio.run(run_edge(int(port), Path(cert), Path(key), int(listen), Path(ready)))
    elif role == "relay":
        port, host, api_port, ca, ready = rest
        asyncio.run(run_relay(int(port), host, int(api_port), Path(ca), Path(ready)))
    else:
        raise SystemExit("usage: python -m ops.bench.floor_path edge|relay ...")


if __name__ == "__main__":
    main(sys.argv[1:])
