"""Our nats-py client against nats-py's own: the parser makes the same calls into the client
for the same bytes however the reads split them, PUB commands are the same bytes, and large
messages, with and without headers, cross a real server both ways."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.errors import (
    BadSubjectError,
    ConnectionClosedError,
    MaxPayloadError,
    ProtocolError,
)
from nats.protocol import command as stock_command
from nats.protocol import parser as stock

from broker import nats_parser
from broker.connection import connect
from broker.nats_client import (
    NatsClient,
    parse_header_lines,
    pub_command,
    publish_parts,
    publish_parts_nowait,
    subscribe_direct,
)
from tests.support import eventually, flushed

BIG = os.urandom(300_000)
"""Longer than nats-py's 32 KiB reads, so a payload spans many of them."""

STREAM = b"".join(
    [
        b'INFO {"server_id":"x","max_payload":1048576}\r\n',
        b"+OK\r\n",
        b"PING\r\n",
        b"MSG a.b 1 5\r\nhello\r\n",
        b"MSG a.b 2 _INBOX.x 0\r\n\r\n",
        b"PONG\r\n",
        b"MSG a.b  3   reply.to   12\r\nMSG x 1 2\r\n\r\n",  # a payload that looks like protocol
        b"HMSG a.c 4 18 23\r\nNATS/1.0\r\nK: v\r\n\r\nhello\r\n",
        b"HMSG a.c 5 in.box 12 12\r\nNATS/1.0\r\n\r\n\r\n",
        b"-ERR 'Permissions Violation for Subscription'\r\n",
        b"MSG big 6 %d\r\n" % len(BIG),
        BIG,
        b"\r\n",
        b"HMSG big 7 r 18 %d\r\nNATS/1.0\r\nK: v\r\n\r\n" % (18 + len(BIG)),
        BIG,
        b"\r\n",
        b"PING\r\n",
    ]
)


class Recorder:
    """Stands in for the nats-py client a parser calls back into; records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def _process_msg(self, sid: int, subject: Any, reply: Any, data: Any, hdr: Any) -> None:
        self.calls.append(
            ("msg", sid, bytes(subject), bytes(reply), bytes(data), hdr and bytes(hdr))
        )
        assert type(data) is bytes and (hdr is None or type(hdr) is bytes)

    async def _process_err(self, message: str) -> None:
        self.calls.append(("err", message))

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.calls.append(("info", info))


async def calls_of(make: type[stock.Parser], reads: list[bytes]) -> list[tuple[Any, ...]]:
    client = Recorder()
    parser = make(client)
    for read in reads:
        await parser.parse(read)
    return client.calls


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


async def test_the_stream_in_one_read_gives_what_nats_py_gives() -> None:
    expected = await calls_of(stock.Parser, [STREAM])
    assert [c[0] for c in expected].count("msg") == 7
    assert await calls_of(nats_parser.Parser, [STREAM]) == expected


async def test_split_in_two_at_every_place_around_the_control_lines() -> None:
    expected = await calls_of(stock.Parser, [STREAM])
    first, second = STREAM.index(b"MSG big"), STREAM.index(b"HMSG big")
    places = [*range(1, first + 40), *range(second - 40, second + 80)]
    places += range(len(STREAM) - 40, len(STREAM))
    for cut in places:
        assert await calls_of(nats_parser.Parser, split(STREAM, [cut])) == expected, cut


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=40))
async def test_any_split_into_reads(cuts: list[int]) -> None:
    expected = await calls_of(stock.Parser, [STREAM])
    assert await calls_of(nats_parser.Parser, split(STREAM, cuts)) == expected


async def test_the_reads_nats_py_makes() -> None:
    reads = [STREAM[i : i + 32768] for i in range(0, len(STREAM), 32768)]
    assert await calls_of(nats_parser.Parser, reads) == await calls_of(stock.Parser, [STREAM])


@pytest.mark.parametrize(
    "garbage", [b"BOGUS line\r\n", b"MSG a.b 1 5\r\nhello\r\nWHAT\r\n", b"MSG a b x\r\n\r\n"]
)
async def test_unknown_protocol_is_an_error_as_in_nats_py(garbage: bytes) -> None:
    for make in (stock.Parser, nats_parser.Parser):
        with pytest.raises(ProtocolError):
            await calls_of(make, [garbage])


async def test_an_incomplete_control_line_waits_for_more() -> None:
    reads = [b"MSG a.b 1", b" 5\r\nhel", b"lo\r\nPI", b"NG\r\n"]
    got = await calls_of(nats_parser.Parser, reads)
    assert got == [("msg", 1, b"a.b", b"", b"hello", None), ("ping",)]


async def test_reset_drops_a_half_read_message() -> None:
    client = Recorder()
    parser = nats_parser.Parser(client)
    await parser.parse(b"MSG a.b 1 10\r\nhalf")
    parser.reset()
    await parser.parse(b"PING\r\n")
    assert client.calls == [("ping",)]


async def test_connections_use_it(nats_url: str) -> None:
    nc = await connect(nats_url, name="t")
    try:
        assert type(nc) is NatsClient and type(nc._ps) is nats_parser.Parser
    finally:
        await nc.close()


@pytest.mark.parametrize("reply", ["", "_INBOX.abc.1"])
@pytest.mark.parametrize("payload", [b"", b"x", b"\r\n", BIG])
def test_pub_commands_are_nats_py_bytes(reply: str, payload: bytes) -> None:
    expected = stock_command.pub_cmd("kg.frames.c1.s", reply, payload)
    assert pub_command("kg.frames.c1.s", reply, payload) == expected


async def _command_of(
    client_class: type[Client], subject: str, reply: str, payload: bytes, headers: Any
) -> bytes | Exception:
    """What a client of `client_class` would write for one publish (or what it raises)."""
    client = client_class()
    sent: list[bytes] = []

    async def capture(command: bytes, priority: bool = False) -> None:
        sent.append(command)

    client._send_command = capture  # type: ignore[method-assign]
    try:
        await client._send_publish(subject, reply, payload, len(payload), headers)
    except Exception as exc:
        return exc
    return sent[0]


_HEADER_TEXT = st.text(alphabet=st.sampled_from(list("Nats-Msg-Id_x: \t\r\nÄ(€")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(_HEADER_TEXT, _HEADER_TEXT, max_size=4),
    payload=st.sampled_from([b"", b"x", b"\r\n", b"{}" * 40]),
    reply=st.sampled_from(["", "_INBOX.abc.1"]),
)
async def test_publishes_with_headers_are_nats_py_bytes(
    headers: dict[str, str], payload: bytes, reply: str
) -> None:
    ours = await _command_of(NatsClient, "kg.act.x", reply, payload, headers)
    stock_answer = await _command_of(Client, "kg.act.x", reply, payload, headers)
    if isinstance(stock_answer, Exception):
        assert type(ours) is type(stock_answer) and str(ours) == str(stock_answer)
    else:
        assert ours == stock_answer


async def test_activity_style_headers_are_nats_py_bytes() -> None:
    headers = {"Nats-Msg-Id": "3f2a9c1e-q", "Nats-Expected-Stream": "KG_ACTIVITY"}
    for payload in (b"{}", BIG):
        args = ("kg.act.req.r1", "_INBOX.a.7", payload, headers)
        ours = await _command_of(NatsClient, *args)
        assert ours == await _command_of(Client, *args)
        assert ours.startswith(b"HPUB kg.act.req.r1 _INBOX.a.7 ")


@asynccontextmanager
async def _ours_and_a_stock_subscriber(
    nats_url: str, subject: str, name: str
) -> AsyncIterator[tuple[Client, Client, Any]]:
    """Our client, nats-py's own, and its subscription to `subject`, which the server has."""
    stock_client = await nats.connect(nats_url)
    ours = await connect(nats_url, name=name)
    try:
        sub = await stock_client.subscribe(subject)
        await flushed(stock_client)
        yield ours, stock_client, sub
    finally:
        await ours.close()
        await stock_client.close()


async def test_what_we_publish_reaches_a_stock_client(nats_url: str) -> None:
    async with _ours_and_a_stock_subscriber(nats_url, "parser.pub", "t-ours") as (ours, _, sub):
        sizes = (0, 1, 32768, 300_000, 1_000_000)
        bodies = [os.urandom(size) for size in sizes]
        for body in bodies:
            await ours.publish("parser.pub", body, reply="parser.reply")
        await ours.publish("parser.pub", BIG, headers={"K": "v"})
        for body in bodies:
            msg = await sub.next_msg(timeout=10)
            assert (msg.data, msg.reply) == (body, "parser.reply")
        msg = await sub.next_msg(timeout=10)
        assert msg.data == BIG and msg.headers == {"K": "v"}


async def test_large_requests_with_headers_through_a_real_server(nats_url: str) -> None:
    served: Client = await connect(nats_url, name="t-served")
    asking: Client = await connect(nats_url, name="t-asking")
    try:

        async def echo(msg: Any) -> None:
            await msg.respond(msg.data[::-1])

        async def plain(msg: Any) -> None:
            await served.publish(msg.reply, msg.data)  # an answer without headers

        await served.subscribe("parser.echo", cb=echo)
        await served.subscribe("parser.plain", cb=plain)
        await served.flush()
        got = await asking.request("parser.plain", b"no headers", timeout=10)
        assert (got.data, got.headers) == (b"no headers", None)
        for size in (0, 1, 32767, 32768, 300_000, 1_000_000):
            body = os.urandom(size)
            got = await asking.request("parser.echo", body, timeout=10, headers={"K": str(size)})
            assert got.data == body[::-1]
        sub = await asking.subscribe("parser.hdr")
        await asking.flush()  # the server holds the subscription before the other client sends
        await served.publish("parser.hdr", BIG, headers={"Kubegate-Test": "yes"})
        msg = await sub.next_msg(timeout=10)
        assert msg.data == BIG and msg.headers == {"Kubegate-Test": "yes"}
    finally:
        await served.close()
        await asking.close()


HEADER_BYTES = st.sampled_from(
    [b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x1f", b"\x85", b"\xc3\xa9", b"\xff", b":", b"\r\n"]
) | st.binary(max_size=6)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.lists(HEADER_BYTES, max_size=4), st.lists(HEADER_BYTES, max_size=4))))
def test_header_lines_are_split_as_nats_py_splits_them(lines: list) -> None:
    raw = b"\r\n".join(b"".join(name) + b":" + b"".join(value) for name, value in lines)
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)
    assert parse_header_lines(raw + b"\r\n\r\n") == Client._parse_header_lines(raw + b"\r\n\r\n")


@given(st.binary(max_size=200))
def test_any_header_block_is_split_as_nats_py_splits_it(raw: bytes) -> None:
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)


STATUS_BLOCKS = [
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 0\r\nNats-Last-Stream: 7\r\n\r\n",
    b"NATS/1.0 404 No Messages\r\n\r\n",
    b"NATS/1.0 408\r\n\r\n",
    b"NATS/1.0\r\n\r\n",
    b"NATS/1.0\r\n",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STATUS_BLOCKS) | st.binary(max_size=120).map(b"NATS/1.0\r\n".__add__))
async def test_header_blocks_become_the_dicts_nats_py_makes(block: bytes) -> None:
    assert await NatsClient()._process_headers(block) == await Client()._process_headers(block)


@pytest.mark.parametrize("block", [None, b""])
async def test_messages_without_headers_have_none(block: bytes | None) -> None:
    assert await NatsClient()._process_headers(block) == await Client()._process_headers(block)


def test_names_with_any_kind_of_whitespace_are_skipped() -> None:
    raw = b"Ok: 1\r\n\x1cLead: 2\r\nIn side: 3\r\nTab\tIn: 4\r\n\x01Ctl: 5\r\n: 6\r\nNo colon"
    assert parse_header_lines(raw) == {"Ok": "1", "\x01Ctl": "5", "": "6"}
    assert NatsClient()._parse_header_lines is parse_header_lines


async def test_parts_are_published_as_one_message(nats_url: str) -> None:
    subscribed = _ours_and_a_stock_subscriber(nats_url, "parser.parts", "t-parts")
    async with subscribed as (ours, stock_client, sub):
        sent = []
        for client in (ours, stock_client):  # it needs only nats-py's client, not ours
            for parts in ([b"head", memoryview(BIG)[5:70_000]], [b""], [b"a", b"", b"bc"]):
                await publish_parts(client, "parser.parts", parts)
                sent.append(b"".join(parts))
            # Order holds within one connection only: let the server take this client's
            # messages before the next connection (or the burst below) publishes.
            await client.flush()
        # Interleaved with plain publishes from concurrent tasks: every message stays whole.
        bodies = [os.urandom(n) for n in range(0, 40_000, 997)]
        await asyncio.gather(
            *(publish_parts(ours, "parser.parts", [b[:7], b[7:]]) for b in bodies),
            *(ours.publish("parser.parts", b) for b in bodies),
        )
        got = [(await sub.next_msg(timeout=10)).data for _ in range(len(sent) + 2 * len(bodies))]
        assert got[: len(sent)] == sent
        assert sorted(got[len(sent) :]) == sorted(bodies * 2)
        assert ours.stats["out_msgs"] == 3 + 2 * len(bodies)


async def test_parts_that_cannot_be_published_raise_nats_py_errors(nats_url: str) -> None:
    client = await connect(nats_url, name="t-parts-errors")
    with pytest.raises(BadSubjectError):
        await publish_parts(client, "bad subject", [b"x"])
    with pytest.raises(MaxPayloadError):
        await publish_parts(client, "parser.big", [BIG, BIG, BIG, BIG])  # over 1 MiB
    await client.close()
    with pytest.raises(ConnectionClosedError):
        await publish_parts(client, "parser.closed", [b"x"])


async def test_parts_published_without_waiting_arrive_in_order_with_the_others(
    nats_url: str,
) -> None:
    subscribed = _ours_and_a_stock_subscriber(nats_url, "parser.nowait", "t-parts-nowait")
    async with subscribed as (ours, _, sub):
        sent = []
        for i in range(30):
            body = os.urandom(i * 997)
            if i % 3:
                # one call, two messages: both go out, back to back
                assert publish_parts_nowait(
                    ours, "parser.nowait", [[b"a", body[:5], body[5:]], [body, b"z"]]
                )
                sent += [b"a" + body, body + b"z"]
            else:
                await publish_parts(ours, "parser.nowait", [body])
                sent.append(body)
        got = [(await sub.next_msg(timeout=10)).data for _ in sent]
        assert got == sent
        assert ours.stats["out_msgs"] == len(sent)


async def test_parts_that_need_waiting_or_an_error_are_not_published_without_waiting(
    nats_url: str,
) -> None:
    """All or nothing: a refused call leaves nothing behind, and the awaitable path gives the
    waiting or the error."""
    subscribed = _ours_and_a_stock_subscriber(nats_url, "parser.refused", "t-refused")
    async with subscribed as (client, _, sub):
        assert not publish_parts_nowait(client, "bad subject", [[b"x"]])
        # one message of two over the server's 1 MiB limit: neither goes
        assert not publish_parts_nowait(client, "parser.refused", [[b"x"], [BIG, BIG, BIG, BIG]])
        # more than the outbound list may hold
        cap = client._max_pending_size
        assert not publish_parts_nowait(client, "parser.refused", [[BIG]] * (cap // len(BIG) + 1))
        assert client._pending_data_size == 0
        assert client.stats["out_msgs"] == 0
        assert publish_parts_nowait(client, "parser.refused", [[b"last"]])
        assert (await sub.next_msg(timeout=10)).data == b"last"
        with pytest.raises(TimeoutError):
            await sub.next_msg(timeout=0.3)
    assert not publish_parts_nowait(client, "parser.refused", [[b"closed"]])


async def test_direct_handlers_get_every_message_in_order_as_it_is_parsed(nats_url: str) -> None:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    ours = await connect(nats_url, name="t-direct", error_cb=on_error)
    sender = await nats.connect(nats_url)
    try:
        got: list[tuple[str, bytes, dict[str, str] | None]] = []

        def handler(msg: Any) -> None:
            got.append((msg.subject, msg.data, msg.headers))
            if msg.data == b"boom":
                raise RuntimeError("handler failed")

        sub = await subscribe_direct(ours, "direct.>", handler)
        await ours.flush()
        for i in range(200):
            await sender.publish(f"direct.{i % 3}", str(i).encode())
        await sender.publish("direct.h", BIG, headers={"K": "v"})
        await sender.publish("direct.x", b"boom")
        await sender.publish("direct.x", b"after")
        await sender.flush()
        await eventually(lambda: len(got) == 203, "203 messages")
        assert [data for _, data, _ in got[:200]] == [str(i).encode() for i in range(200)]
        assert got[200][:3] == ("direct.h", BIG, {"K": "v"})
        assert got[202][1] == b"after"  # the handler's error did not end the subscription
        assert [str(e) for e in errors] == ["handler failed"]
        # called from the connection's read loop: no task of the subscription's own
        assert sub._wait_for_msgs_task is None and sub.pending_msgs == 0
        assert ours.stats["in_msgs"] >= 203

        await sub.unsubscribe()
        await ours.flush()
        await sender.publish("direct.1", b"too late")
        await sender.flush()
        await ours.flush()
        assert len(got) == 203 and not ours._direct
    finally:
        await ours.close()
        await sender.close()


async def test_direct_handlers_share_a_queue_group_like_callbacks(nats_url: str) -> None:
    first = await connect(nats_url, name="t-q1")
    second = await connect(nats_url, name="t-q2")
    sender = await nats.connect(nats_url)
    try:
        got: list[bytes] = []
        await subscribe_direct(first, "direct.q", lambda m: got.append(m.data), queue="g")
        await subscribe_direct(second, "direct.q", lambda m: got.append(m.data), queue="g")
        await first.flush()
        await second.flush()
        for i in range(100):
            await sender.publish("direct.q", str(i).encode())
        await sender.flush()
        await eventually(lambda: len(got) == 100, "100 messages")
        assert sorted(got) == sorted(str(i).encode() for i in range(100))  # each exactly once
    finally:
        for nc in (first, second, sender):
            await nc.close()


async def test_on_a_stock_client_a_direct_handler_is_an_ordinary_callback(nats_url: str) -> None:
    stock_client = await nats.connect(nats_url)
    try:
        got: list[bytes] = []
        sub = await subscribe_direct(stock_client, "direct.stock", lambda m: got.append(m.data))
        await flushed(stock_client)
        await stock_client.publish("direct.stock", b"a")
        await stock_client.publish("direct.stock", b"b")
        await eventually(lambda: got == [b"a", b"b"], "both messages")
        assert sub._wait_for_msgs_task is not None
    finally:
        await stock_client.close()


async def test_flush_sends_what_is_buffered_before_its_ping() -> None:
    """A scripted server records the commands in the order they arrive: the SUB a flush
    follows must come first, or the server answers PONG before it has the subscription."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"s","version":"2.10.0","headers":true,"proto":1}\r\n')
        while line := await reader.readline():
            received.append(line.split(b" ", 1)[0].strip())
            if line.startswith(b"PING"):
                writer.write(b"PONG\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"nats://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    stock_client = await nats.connect(url)
    ours = await connect(url, name="t-flush-order")
    try:
        orders = []
        for client in (stock_client, ours):
            received.clear()
            await client.subscribe("order.a")
            await client.publish("order.b", b"x")
            await client.flush(timeout=5)
            await client.flush(timeout=5)
            orders.append(list(received))
        assert orders[0][0] == b"PING"  # nats-py's own order, which this client changes
        assert orders[1] == [b"SUB", b"PUB", b"x", b"PING", b"PING"]  # "x": the payload line
    finally:
        await ours.close()
        await stock_client.close()
        server.close()
