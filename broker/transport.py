"""The edge <-> relay frame transport over NATS core: the names other packages use.

Edge: `EdgeClient(nc, peer_id)`, `await client.open(cluster, method=..., path=..., user=...)`
-> `ClientStream`. Relay: `RelayServer(nc, cluster, relay_id, handler)`; the handler gets a
`ServerStream`. Both: `live_streams(user)`, `abort(stream_id, reason)`,
`abort_user(user, reason)`, `close()`. The protocol is described in docs/frames.md.
"""

from __future__ import annotations

from broker.transport_config import TransportConfig, TransportConfigError
from broker.transport_edge import ClientStream, EdgeClient
from broker.transport_metrics import TransportMetrics
from broker.transport_relay import Handler, RelayServer, ServerStream
from broker.transport_stream import LiveStream

__all__ = [
    "ClientStream",
    "EdgeClient",
    "Handler",
    "LiveStream",
    "RelayServer",
    "ServerStream",
    "TransportConfig",
    "TransportConfigError",
    "TransportMetrics",
]
