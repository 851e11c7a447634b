"""`kubegate events tail`: the latest events of the log, as lines or JSON, optionally followed."""

from __future__ import annotations

import asyncio
import json

import msgspec

from broker.connection import connect
from broker.store import EventStore, Recorded, UndecodableMessageError
from broker.subjects import ACTIVITY_STREAM, CONTROL_STREAM
from domain import codec

STREAMS = {"control": (CONTROL_STREAM,), "activity": (ACTIVITY_STREAM,)}
STREAMS["all"] = STREAMS["control"] + STREAMS["activity"]

_SKIP = {"id", "time", "actor", "cause", "schema", "type"}


def summary(rec: Recorded) -> str:
    """One line: time, stream:seq, type, actor and the payload's fields."""
    event = rec.event
    stamp = rec.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    where = f"{'ctl' if rec.stream == CONTROL_STREAM else 'act'}:{rec.seq}"
    if isinstance(event, codec.UnknownEvent):
        return f"{stamp} {where} {event.type} (unknown schema {event.schema})"
    fields = {
        k: v
        for k, v in msgspec.structs.asdict(event).items()
        if k not in _SKIP and v not in ("", (), {}, None)
    }
    detail = " ".join(f"{k}={_short(v)}" for k, v in fields.items())
    return f"{stamp} {where} {type(event).__name__} by {event.actor} {detail}".rstrip()


def _short(value: object) -> str:
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_json(rec: Recorded) -> str:
    if isinstance(rec.event, codec.UnknownEvent):
        data = json.loads(rec.event.raw)
    else:
        data = json.loads(codec.encode(rec.event))
    return json.dumps({"stream": rec.stream, "seq": rec.seq, "subject": rec.subject, **data})


async def _read(store: EventStore, stream: str, from_seq: int, follow: bool, out: list | None, fmt):
    seq = from_seq
    while True:
        try:
            async for rec in store.read(stream, seq, follow=follow):
                seq = rec.seq + 1
                if out is not None:
                    out.append(rec)
                else:
                    print(fmt(rec), flush=True)
            return
        except UndecodableMessageError as exc:
            bad = getattr(exc, "seq", seq)
            print(f"# {stream}:{bad} is not an event (skipped)", flush=True)
            seq = bad + 1


async def tail(
    url: str, creds: str | None, *, streams: str, last: int, follow: bool, as_json: bool
) -> int:
    fmt = globals()["as_json"] if as_json else summary
    nc = await connect(url, name="kubegate-events-tail", creds=creds)
    try:
        store = EventStore(nc)
        names = STREAMS[streams]
        starts = {n: max(1, await store.latest_seq(n) - last + 1) for n in names}
        collected: list[Recorded] = []
        await asyncio.gather(*(_read(store, n, starts[n], False, collected, fmt) for n in names))
        collected.sort(key=lambda r: r.time)
        for rec in collected[-last:] if last else []:
            print(fmt(rec), flush=True)
        if follow:
            nexts = {
                n: (max((r.seq for r in collected if r.stream == n), default=starts[n] - 1) + 1)
                for n in names
            }
            await asyncio.gather(*(_read(store, n, nexts[n], True, None, fmt) for n in names))
    finally:
        await nc.close()
    return 0
