"""The two JetStream streams of the log, created idempotently and checked at start.

KG_CONTROL holds control events (users, groups, grants, revocations, clusters, logins, sessions,
service accounts); KG_ACTIVITY holds the high-volume kubectl activity. Both are file-backed and
immutable (`deny_delete`, `deny_purge`: the server refuses deletes and purges, and refuses to
switch either off later) and allow atomic batches for multi-aggregate appends.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js.errors import NotFoundError

from broker import subjects
from broker.errors import BrokerError


class StreamMismatchError(BrokerError):
    """An existing stream's settings differ from what kubegate needs; names each difference."""

    def __init__(self, stream: str, differences: dict[str, tuple[object, object]]) -> None:
        detail = ", ".join(
            f"{k}: has {have!r}, needs {want!r}" for k, (have, want) in differences.items()
        )
        super().__init__(f"stream {stream} exists with other settings ({detail})")
        self.stream = stream
        self.differences = differences


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str


CONTROL = StreamSpec(
    name=subjects.CONTROL_STREAM,
    subjects=(f"{subjects.CONTROL_PREFIX}.>",),
    description="kubegate control events: identity, policy, sessions, service accounts",
)
ACTIVITY = StreamSpec(
    name=subjects.ACTIVITY_STREAM,
    subjects=(f"{subjects.ACTIVITY_PREFIX}.>",),
    description="kubegate kubectl activity and session recordings",
)
ALL = (CONTROL, ACTIVITY)

DUPLICATE_WINDOW_S = 120.0


def stream_config(spec: StreamSpec, replicas: int = 1) -> jsapi.StreamConfig:
    return jsapi.StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        storage=jsapi.StorageType.FILE,
        retention=jsapi.RetentionPolicy.LIMITS,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_atomic=True,
    )


_CHECKED = ("subjects", "storage", "num_replicas", "deny_delete", "deny_purge", "allow_atomic")


def _differences(
    have: jsapi.StreamConfig, want: jsapi.StreamConfig
) -> dict[str, tuple[object, object]]:
    diffs: dict[str, tuple[object, object]] = {}
    for name in _CHECKED:
        h, w = getattr(have, name, None), getattr(want, name, None)
        if name == "subjects":
            h, w = sorted(h or []), sorted(w or [])
        if (bool(h) != w) if isinstance(w, bool) else (h != w):
            diffs[name] = (h, w)
    return diffs


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create both streams if missing; raise `StreamMismatchError` if one exists differently."""
    for spec in ALL:
        await ensure_stream(js, spec, replicas)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int = 1) -> None:
    """Create one stream with the log's settings if missing, or check the existing one."""
    want = stream_config(spec, replicas)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(want)
        return
    diffs = _differences(info.config, want)
    if diffs:
        raise StreamMismatchError(spec.name, diffs)
