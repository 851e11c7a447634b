"""Every NATS subject and stream name kubegate uses, in one place.

Ids (user names, e-mail addresses, cluster names) may hold characters a subject token cannot
(`.`, `*`, `>`, whitespace), so `token()` escapes them reversibly: `alice@example.com` becomes
`alice@example%2Ecom`.

Layout:
  kg.evt.<family>.<id>          control events (stream KG_CONTROL), one subject per aggregate
  kg.act.<family>.<id>          activity events (stream KG_ACTIVITY): kubectl requests, recordings
  kg.req.<cluster>              request frames, edge -> relay (queue group `relay.<cluster>`)
  kg.s.e.<edge>.<stream>        frames for one open stream, addressed to the edge holding it
  kg.s.r.<cluster>.<relay>.<s>  ... or to the relay replica holding it
  kg.s.<peer>.%HB               per-peer heartbeats (`%HB` is a token `token()` never produces)
  kg.live.relay.<cluster>       relay liveness (core NATS, not persisted)

The eventsourcing persistence module (broker.es_persistence) stores under a prefix P (`kg.evt`
for the control plane), so that an aggregate id `family:id` lands on the same subject as the
catalog's `event_subject`:
  P.<family>.<id>               events of aggregate "family:id"  (exactly two tokens after P)
  P.%id.<id>                    events of a string id without a family
  P.%uuid.<hex>                 events of a UUID id
  P.%es.<purpose>.<2 tokens>    other aggregate recorders (snapshots): four tokens after P
  P.%es.tracking.<application>  tracking positions: three tokens after P
`token()` yields `%` followed by a non-hex letter only as `%nul` (an id that is one NUL; the
empty id is `%00`), so `%id`, `%uuid` and `%es` cannot collide with an escaped id, and the depth
tells events (`P.*.*`) from the rest.
"""

from __future__ import annotations

import re
from uuid import UUID

CONTROL_STREAM = "KG_CONTROL"
ACTIVITY_STREAM = "KG_ACTIVITY"
CONTROL_PREFIX = "kg.evt"
ACTIVITY_PREFIX = "kg.act"

_UNSAFE = {".": "%2E", "*": "%2A", ">": "%3E", "%": "%25", " ": "%20", "\t": "%09"}


_ESCAPES = {c: f"%{c:02X}" for c in (*range(0x21), 0x7F)} | {ord(k): v for k, v in _UNSAFE.items()}
"""What `token` replaces: the subject syntax characters, `%`, controls, spaces and DEL."""
_LONE_NUL = "%nul"
"""The token of the id made of one NUL character (`%` and a non-hex letter: no escape)."""
_NEEDS_ESCAPE = re.compile("[" + re.escape("".join(map(chr, _ESCAPES))) + "]")


def token(value: str) -> str:
    """One subject token holding `value`, whatever it contains. Reversible with `untoken`.

    A regex scan and, when something needs escaping, one `str.translate` (both in C): every
    request and event names a subject this way, and a character-by-character loop was a
    percent of an edge's CPU per proxied GET."""
    if not value:
        return "%00"
    if value == "\x00":
        return _LONE_NUL  # "%00" already means the empty id
    if _NEEDS_ESCAPE.search(value) is None:
        return value  # ids, names: the usual case
    return value.translate(_ESCAPES)


def untoken(tok: str) -> str:
    """Inverse of `token`."""
    if tok == "%00":
        return ""
    if tok == _LONE_NUL:
        return "\x00"
    out = []
    i = 0
    while i < len(tok):
        if tok[i] == "%" and i + 3 <= len(tok):
            out.append(chr(int(tok[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(tok[i])
            i += 1
    return "".join(out)


def event_subject(stream: str, family: str, aggregate_id: str) -> str:
    """Subject of one aggregate's events; `stream` is `control` or `activity`."""
    prefix = CONTROL_PREFIX if stream == "control" else ACTIVITY_PREFIX
    return f"{prefix}.{family}.{token(aggregate_id)}"


def family_wildcard(stream: str, family: str) -> str:
    """Every aggregate subject of one event family (a consumer filter)."""
    prefix = CONTROL_PREFIX if stream == "control" else ACTIVITY_PREFIX
    return f"{prefix}.{family}.*"


def request_subject(cluster: str) -> str:
    """Where edges send `Open` frames for a cluster; relays of that cluster queue-subscribe."""
    return f"kg.req.{token(cluster)}"


def relay_queue(cluster: str) -> str:
    return f"relay.{token(cluster)}"


def edge_peer(edge_id: str) -> str:
    """The peer id of an edge: its frames live under `kg.s.e.<edge>.`."""
    return f"e/{edge_id}"


def relay_peer(cluster: str, relay_id: str) -> str:
    """The peer id of a relay replica: its frames live under `kg.s.r.<cluster>.<relay>.`, so a
    relay's NATS permissions can be limited to its own cluster's streams."""
    return f"r/{cluster}/{relay_id}"


def peer_tokens(peer: str) -> str:
    """Subject tokens for a peer id: `e/<id>` -> `e.<id>`, `r/<cluster>/<id>` ->
    `r.<cluster>.<id>`, anything else -> `p.<peer>` (each part escaped with `token`)."""
    kind, _, rest = peer.partition("/")
    if kind == "e" and rest:
        return f"e.{token(rest)}"
    if kind == "r" and rest:
        cluster, sep, rid = rest.partition("/")
        if sep and cluster and rid:
            return f"r.{token(cluster)}.{token(rid)}"
    return f"p.{token(peer)}"


def stream_subject(peer: str, stream_id: str) -> str:
    """Frames for one open stream, delivered to `peer` (an edge id or a relay id)."""
    return f"kg.s.{peer_tokens(peer)}.{token(stream_id)}"


def peer_wildcard(peer: str) -> str:
    """Everything addressed to one peer: it subscribes once and demultiplexes by stream id."""
    return f"kg.s.{peer_tokens(peer)}.*"


def cluster_relays_wildcard(cluster: str) -> str:
    """Every frame addressed to any relay of `cluster` (for NATS permissions)."""
    return f"kg.s.r.{token(cluster)}.>"


EDGES_WILDCARD = "kg.s.e.>"
"""Every frame addressed to any edge (for NATS permissions)."""


HEARTBEAT_TOKEN = "%HB"
"""Last token of heartbeat subjects: `token()` always follows `%` with two hex digits, so no
escaped id can collide with it, and it is covered by `peer_wildcard` (one subscription keeps
heartbeats ordered after the frames they vouch for)."""


def peer_heartbeat_subject(peer: str) -> str:
    """Where heartbeats for `peer` go: one message per interval per peer pair, not per stream."""
    return f"kg.s.{peer_tokens(peer)}.{HEARTBEAT_TOKEN}"


def last_token(subject: str) -> str:
    """The final token of a subject (a stream id or `HEARTBEAT_TOKEN` under `peer_wildcard`)."""
    return subject.rpartition(".")[2]


def relay_liveness_subject(cluster: str) -> str:
    return f"kg.live.relay.{token(cluster)}"


ES_PLAIN = "%id"
ES_UUID = "%uuid"
ES_META = "%es"


def es_event_subject(prefix: str, originator_id: str | UUID) -> str:
    """Subject of one eventsourcing aggregate's events; `family:id` gives `prefix.family.id`."""
    return f"{prefix}.{_es_tokens(originator_id)}"


def es_purpose_subject(prefix: str, purpose: str, originator_id: str | UUID) -> str:
    """Subject of an aggregate's records for another purpose (`snapshots`)."""
    return f"{prefix}.{ES_META}.{token(purpose)}.{_es_tokens(originator_id)}"


def es_tracking_subject(prefix: str, application: str) -> str:
    """Subject of one upstream application's tracking positions."""
    return f"{prefix}.{ES_META}.tracking.{token(application)}"


def es_events_filter(prefix: str) -> str:
    """Matches every event subject under `prefix`, and nothing of snapshots or tracking."""
    return f"{prefix}.*.*"


def _es_tokens(originator_id: str | UUID) -> str:
    if isinstance(originator_id, UUID):
        return f"{ES_UUID}.{originator_id.hex}"
    family, sep, rest = originator_id.partition(":")
    if not sep:
        return f"{ES_PLAIN}.{token(originator_id)}"
    return f"{token(family)}.{token(rest)}"
