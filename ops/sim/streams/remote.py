"""What exec and attach sessions share, whatever the transport: the request's options, the
client's events, and the `Remote` a session talks to (`remote_websocket`, `remote_spdy`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from ops.sim.streams import channel, status

EVENT_QUEUE = 64  # client events waiting for the session: bounded, so a flood backs up


@dataclass(frozen=True, slots=True)
class Options:
    container: str
    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def _flag(query: Mapping[str, str], name: str) -> bool:
    """apimachinery's string-to-bool conversion: absent, "0" and "false" are false."""
    if name not in query:
        return False
    value = query[name]
    return value != "0" and value.lower() != "false"


def parse_options(request: web.BaseRequest, kind: str) -> Options:
    query = request.rel_url.query
    options = Options(
        container=query.get("container", ""),
        command=tuple(query.getall("command", [])),
        stdin=_flag(query, "stdin"),
        stdout=_flag(query, "stdout"),
        stderr=_flag(query, "stderr"),
        tty=_flag(query, "tty"),
    )
    if kind == "exec" and not options.command:
        raise status.bad_request("you must specify at least one command for the container")
    if not (options.stdin or options.stdout or options.stderr):
        raise status.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    if options.tty and options.stderr:  # kubelet: "tty and stderr is not supported"
        options = Options(**{**_fields(options), "stderr": False})
    return options


def _fields(options: Options) -> dict[str, Any]:
    return {f: getattr(options, f) for f in Options.__slots__}


# Client events.
@dataclass(frozen=True, slots=True)
class Stdin:
    data: bytes


@dataclass(frozen=True, slots=True)
class StdinClosed:
    pass


@dataclass(frozen=True, slots=True)
class Resize:
    size: channel.TerminalSize


@dataclass(frozen=True, slots=True)
class Gone:
    pass


Event = Stdin | StdinClosed | Resize | Gone


class Remote(Protocol):
    events: asyncio.Queue[Event]

    async def start(self) -> None: ...

    async def write(self, stream: int, data: bytes) -> None: ...

    async def finish(self, final: dict[str, Any]) -> None: ...

    async def abort(self) -> None: ...
