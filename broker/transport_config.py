"""Tunables of the frame transport, validated once up front.

Defaults suit a LAN or a region: a dead peer is noticed within `dead_after` (+ one tick), and an
idle stream costs nothing on the wire but its entry in one heartbeat per peer pair per interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker import frames
from broker.errors import TransportError


class TransportConfigError(TransportError):
    """A transport setting that cannot work (e.g. chunks larger than a frame)."""


FRAME_OVERHEAD = 1024
"""Room for a data frame's envelope (tag, seq, msgpack headers) on top of its chunk."""


@dataclass(frozen=True)
class TransportConfig:
    chunk_size: int = 256 * 1024
    """Largest data chunk per frame; big writes are split."""
    window: int = 1024 * 1024
    """Bytes a receiver lets the sender have in flight per stream and direction (its buffer)."""
    max_window: int = 4 * 1024 * 1024
    """What `window` grows to, doubling, for a stream its reader keeps up with (bulk lists,
    port-forwards, cp)."""
    grow_window_within: float = 0.01
    """Seconds: a reader that took less than this to read half its window gets it doubled."""
    max_frame_bytes: int = frames.MAX_FRAME_BYTES
    """Frames longer than this are rejected unparsed; must stay below NATS max_payload."""
    heartbeat_interval: float = 1.0
    """Seconds between heartbeats to each peer we share a stream with (and liveness sweeps)."""
    dead_after: float = 3.5
    """A stream whose peer said nothing about it for this long fails with `PeerLostError`."""
    heartbeat_batch: int = 4096
    """Streams listed per heartbeat message (more streams -> more messages per interval)."""
    max_streams: int = 10_000
    """Streams a relay serves at once; beyond it new opens are refused as overloaded."""
    accept_within: float = 0.05
    """Seconds a relay may hold the Accept of a bodiless Open for the stream's first frame to
    travel with it (one message instead of two for a quick answer). Kept well below
    `dead_after`: until the Accept arrives the edge cannot vouch for the stream."""
    open_timeout: float = 10.0
    """Default wait for a relay's Accept."""
    close_timeout: float = 5.0
    """How long closing a relay server waits for handlers to return after cancelling them."""

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise TransportConfigError("chunk_size must be positive")
        if self.chunk_size + FRAME_OVERHEAD > self.max_frame_bytes:
            raise TransportConfigError(
                f"chunk_size {self.chunk_size} does not fit in max_frame_bytes "
                f"{self.max_frame_bytes} (needs {FRAME_OVERHEAD} bytes of envelope)"
            )
        if self.window < self.chunk_size:
            raise TransportConfigError("window must hold at least one chunk")
        if self.heartbeat_interval <= 0:
            raise TransportConfigError("heartbeat_interval must be positive")
        if self.dead_after < 2 * self.heartbeat_interval:
            raise TransportConfigError("dead_after must be at least two heartbeat intervals")
        if not 0 <= self.accept_within <= self.dead_after / 4:
            raise TransportConfigError("accept_within must be within 0..dead_after/4")
        if not 1 <= self.heartbeat_batch <= 16384:
            raise TransportConfigError("heartbeat_batch must be within 1..16384")
        if self.max_streams < 1:
            raise TransportConfigError("max_streams must be positive")

    def check_payload_limit(self, max_payload: int) -> None:
        """Fail early if NATS would refuse our largest frames."""
        if self.max_frame_bytes > max_payload:
            raise TransportConfigError(
                f"max_frame_bytes {self.max_frame_bytes} exceeds the server's max_payload "
                f"{max_payload}"
            )
