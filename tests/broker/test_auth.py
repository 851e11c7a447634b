"""Least-privilege NATS users: a relay reaches only its own cluster and cannot write policy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from prometheus_client import CollectorRegistry

from broker import auth, subjects
from broker.connection import connect
from broker.server import EmbeddedNats
from broker.streams import ensure_streams
from projections.policy import PolicyProjection
from tests.support import flushed


@pytest.fixture
def secured(tmp_path: Path):
    creds = {
        "controlplane": auth.new_credential("controlplane"),
        "edge": auth.new_credential("edge"),
        "relay": auth.new_credential("relay", "dev"),
    }
    server = EmbeddedNats(
        data_dir=tmp_path / "nats", extra_config=auth.authorization_block(list(creds.values()))
    )
    server.start()
    files = {role: c.save(tmp_path / f"{role}.json") for role, c in creds.items()}
    yield server, files
    server.stop()


async def _violations(url: str, creds: Path, action) -> list[str]:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(url, error_cb=on_error, **auth.connect_options(str(creds)))
    try:
        await action(nc)
        await flushed(nc)
        await asyncio.sleep(0.2)
    finally:
        await nc.close()
    return errors


async def test_relay_cannot_write_policy_or_read_other_clusters(secured) -> None:
    server, files = secured
    admin = await connect(server.url, name="admin", creds=str(files["controlplane"]))
    await ensure_streams(admin.jetstream())
    await admin.close()

    async def write_grant(nc) -> None:
        await nc.publish("kg.evt.grant.g1", b"{}")

    async def listen_prod(nc) -> None:
        await nc.subscribe(subjects.request_subject("prod"))
        await nc.subscribe(subjects.cluster_relays_wildcard("prod"))

    async def own_cluster(nc) -> None:
        await nc.subscribe(subjects.request_subject("dev"), queue=subjects.relay_queue("dev"))
        await nc.subscribe(subjects.peer_wildcard(subjects.relay_peer("dev", "r1")))
        await nc.publish(subjects.stream_subject(subjects.edge_peer("e1"), "s1"), b"x")

    grant = await _violations(server.url, files["relay"], write_grant)
    assert any('permissions violation for publish to "kg.evt.grant.g1"' in e for e in grant)
    prod = await _violations(server.url, files["relay"], listen_prod)
    assert sum("permissions violation for subscription" in e.lower() for e in prod) == 2
    assert await _violations(server.url, files["relay"], own_cluster) == []


async def test_relay_and_edge_can_follow_policy(secured) -> None:
    server, files = secured
    admin = await connect(server.url, name="admin", creds=str(files["controlplane"]))
    await ensure_streams(admin.jetstream())
    await admin.jetstream().publish("kg.evt.user.x", b'{"type":"Nope","id":"1"}')
    for role in ("relay", "edge"):
        nc = await connect(server.url, name=role, creds=str(files[role]))
        projection = PolicyProjection(nc, name=f"p-{role}", registry=CollectorRegistry())
        await projection.start()
        async with asyncio.timeout(20):
            await projection.wait_ready()
        assert projection.not_ready_reason() is None
        await projection.stop()
        await nc.close()
    await admin.close()


async def test_bad_credentials_are_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(auth.CredentialsError, match="not a kubegate credentials file"):
        auth.connect_options(str(bad))
    with pytest.raises(auth.CredentialsError, match="cannot read NATS credentials"):
        auth.connect_options(str(tmp_path / "missing.json"))
