"""Every NATS subject and stream name kubegate uses, in one place.

Ids (user names, e-mail addresses, cluster names) may hold characters a subject token cannot
(`.`, `*`, `>`, whitespace), so `token()` escapes them reversibly: `alice@example.com` becomes
`alice@example%2Ecom`.

Layout:
  kg.evt.<family>.<id>          control events (stream KG_CONTROL), one subject per aggregate
  kg.act.<family>.<id>          activity events (stream KG_ACTIVITY): kubectl requests, recordings
  kg.req.<cluster>              request frames, edge -> relay (queue group `relay.<cluster>`)
  kg.s.<peer>.<stream>          frames for one open stream, addressed to the peer that holds it
  kg.s.<peer>.%HB               per-peer heartbeats (`%HB` is a token `token()` never produces)
  kg.live.relay.<cluster>       relay liveness (core NATS, not persisted)
"""

from __future__ import annotations

CONTROL_STREAM = "KG_CONTROL"
ACTIVITY_STREAM = "KG_ACTIVITY"
CONTROL_PREFIX = "kg.evt"
ACTIVITY_PREFIX = "kg.act"

_UNSAFE = {".": "%2E", "*": "%2A", ">": "%3E", "%": "%25", " ": "%20", "\t": "%09"}


def token(value: str) -> str:
    """One subject token holding `value`, whatever it contains. Reversible with `untoken`."""
    if not value:
        return "%00"
    out = []
    for ch in value:
        if ch in _UNSAFE:
            out.append(_UNSAFE[ch])
        elif ord(ch) < 0x21 or ord(ch) == 0x7F:
            out.append(f"%{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out)


def untoken(tok: str) -> str:
    """Inverse of `token`."""
    if tok == "%00":
        return ""
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


def request_subject(cluster: str) -> str:
    """Where edges send `Open` frames for a cluster; relays of that cluster queue-subscribe."""
    return f"kg.req.{token(cluster)}"


def relay_queue(cluster: str) -> str:
    return f"relay.{token(cluster)}"


def stream_subject(peer: str, stream_id: str) -> str:
    """Frames for one open stream, delivered to `peer` (an edge id or a relay id)."""
    return f"kg.s.{token(peer)}.{token(stream_id)}"


def peer_wildcard(peer: str) -> str:
    """Everything addressed to one peer: it subscribes once and demultiplexes by stream id."""
    return f"kg.s.{token(peer)}.*"


HEARTBEAT_TOKEN = "%HB"
"""Last token of heartbeat subjects: `token()` always follows `%` with two hex digits, so no
escaped id can collide with it, and it is covered by `peer_wildcard` (one subscription keeps
heartbeats ordered after the frames they vouch for)."""


def peer_heartbeat_subject(peer: str) -> str:
    """Where heartbeats for `peer` go: one message per interval per peer pair, not per stream."""
    return f"kg.s.{token(peer)}.{HEARTBEAT_TOKEN}"


def last_token(subject: str) -> str:
    """The final token of a subject (a stream id or `HEARTBEAT_TOKEN` under `peer_wildcard`)."""
    return subject.rpartition(".")[2]


def relay_liveness_subject(cluster: str) -> str:
    return f"kg.live.relay.{token(cluster)}"
