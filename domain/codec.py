"""Event encoding: JSON bytes to catalog structs and back, tolerant of what it does not know.

`decode` never lets a newer or unknown event crash a reader: those come back as `UnknownEvent`
(raw bytes kept) so a projection can count and log them and carry on. Older schema versions are
upcast step by step by the functions in `UPCASTERS` before decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import msgspec

from domain import events
from domain.errors import MalformedEventError


class Envelope(msgspec.Struct, frozen=True):
    """The fields every event has; enough to route one we cannot fully decode."""

    type: str
    id: str = ""
    schema: int = 1
    actor: str = ""


class UnknownEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event of a type or schema version this build does not know, kept verbatim."""

    type: str
    id: str
    schema: int
    raw: bytes


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(type, from_schema) -> function turning that payload into schema from_schema + 1."""

_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)
_decoders: dict[str, msgspec.json.Decoder] = {
    name: msgspec.json.Decoder(cls) for name, cls in events.CATALOG.items()
}


def encode(event: events.Event) -> bytes:
    """JSON bytes of an event, `type` first."""
    return _encoder.encode(event)


_SCHEMAS: dict[str, int] = {
    name: next(f.default for f in msgspec.structs.fields(cls) if f.name == "schema")
    for name, cls in events.CATALOG.items()
}


def current_schema(event_type: str) -> int:
    """The schema version this build writes for `event_type`."""
    return _SCHEMAS[event_type]


_any_decoder = msgspec.json.Decoder(Union[tuple(events.CATALOG.values())])  # noqa: UP007
"""One pass for the common case: a known type at this build's schema version."""


def decode(data: bytes) -> events.Event | UnknownEvent:
    """Decode one event. Raises `MalformedEventError` for bytes that are not an event at all."""
    try:
        event = _any_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass  # unknown type, older schema, or malformed: the careful path says which
    else:
        if event.schema == _SCHEMAS[type(event).__name__]:
            return event
    return _decode_carefully(data)


def _decode_carefully(data: bytes) -> events.Event | UnknownEvent:
    try:
        env = _envelope_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MalformedEventError(f"not an event envelope: {exc}") from exc
    decoder = _decoders.get(env.type)
    if decoder is None:
        return UnknownEvent(type=env.type, id=env.id, schema=env.schema, raw=bytes(data))
    current = current_schema(env.type)
    if env.schema > current:
        return UnknownEvent(type=env.type, id=env.id, schema=env.schema, raw=bytes(data))
    try:
        if env.schema < current:
            payload = msgspec.json.decode(data)
            for version in range(env.schema, current):
                upcast = UPCASTERS.get((env.type, version))
                if upcast is None:
                    raise MalformedEventError(f"no upcaster for {env.type} schema {version}")
                payload = upcast(payload)
            payload["schema"] = current
            return msgspec.convert(payload, events.CATALOG[env.type])
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedEventError(f"bad {env.type} event {env.id!r}: {exc}") from exc
