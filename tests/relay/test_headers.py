"""Header hygiene towards the API server (pure functions, no network)."""

from __future__ import annotations

from relay import headers as hdr


def test_identity_and_hop_by_hop_headers_are_dropped_and_the_token_added() -> None:
    incoming = [
        ("Accept", "application/json"),
        ("authorization", "Bearer stolen"),
        ("Impersonate-User", "admin"),
        ("impersonate-extra-scopes", "x"),
        ("X-Remote-User", "admin"),
        ("Cookie", "a=b"),
        ("Connection", "keep-alive, X-Private"),
        ("X-Private", "hop"),
        ("Transfer-Encoding", "chunked"),
        ("Host", "edge.example"),
        ("Content-Type", "application/yaml"),
    ]
    out, dropped = hdr.upstream_headers(incoming, token="t0k", upgrade=False)
    assert out == [
        ("Accept", "application/json"),
        ("Content-Type", "application/yaml"),
        ("Authorization", "Bearer t0k"),
    ]
    assert dropped == ["authorization", "Impersonate-User", "impersonate-extra-scopes",
                       "X-Remote-User", "Cookie"]  # fmt: skip


def test_upgrade_keeps_exactly_the_upgrade_pair() -> None:
    incoming = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
    ]
    assert hdr.is_upgrade(incoming)
    out, _ = hdr.upstream_headers(incoming, token="t", upgrade=True)
    assert out == [
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
        ("Connection", "Upgrade"),
        ("Authorization", "Bearer t"),
    ]


def test_what_is_an_upgrade() -> None:
    assert hdr.is_upgrade([("connection", "keep-alive, upgrade"), ("upgrade", "SPDY/3.1")])
    assert not hdr.is_upgrade([("Upgrade", "websocket")])  # no Connection: upgrade
    assert not hdr.is_upgrade([("Connection", "Upgrade")])  # nothing to upgrade to
    assert not hdr.is_upgrade([("Connection", "Upgrade"), ("Upgrade", " ")])


def test_response_headers_lose_hop_by_hop_but_a_101_keeps_upgrade() -> None:
    answer = [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked"),
              ("Connection", "Upgrade"), ("Upgrade", "websocket")]  # fmt: skip
    assert hdr.downstream_headers(answer, upgrade=False) == [("Content-Type", "application/json")]
    assert hdr.downstream_headers(answer, upgrade=True) == [
        ("Content-Type", "application/json"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
    ]
