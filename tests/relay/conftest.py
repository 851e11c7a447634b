"""Relay test fixtures: one simulator per test module (on its own loop thread), the session
nats-server, a frame client standing in for the edge, and policy written as events."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from broker import subjects
from broker.connection import connect
from broker.store import EventStore
from broker.streams import ensure_streams
from broker.transport import EdgeClient, TransportConfig
from domain import events as ev
from ops.sim import Simulator
from relay.service import RelayService, RelaySettings
from tests.support import LoopThread

FAST_TRANSPORT = TransportConfig(heartbeat_interval=0.2, dead_after=1.0)
"""Quick peer-loss detection so the kill tests stay short."""


class SimRunner:
    """A Simulator on its own event loop thread (the relay under test runs on the test's loop)."""

    def __init__(self, directory: Path, clock: Callable[[], datetime] | None = None) -> None:
        self.thread = LoopThread("relay-test-sim")
        self.sim = Simulator(directory, bookmark_interval=0.5, clock=clock)
        self.thread.run(self.sim.start())

    @property
    def kubeconfig(self) -> str:
        return str(self.sim.kubeconfig_path)

    def stop(self) -> None:
        self.thread.run(self.sim.stop())

    def close(self) -> None:
        self.thread.run(self.sim.stop())
        self.thread.close()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimRunner]:
    runner = SimRunner(tmp_path_factory.mktemp("relay-sim"))
    yield runner
    runner.close()


class SimAdmin:
    """Reads and writes the simulator as its administrator, independently of relay code."""

    def __init__(self, runner: SimRunner) -> None:
        self.url = runner.sim.url
        self.token = runner.sim.admin_token
        self.ctx = ssl.create_default_context(cafile=str(runner.sim.ca_path))
        self.session = aiohttp.ClientSession()

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        async with self.session.request(
            method, self.url + path, headers=headers, data=data, ssl=self.ctx
        ) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def get(self, path: str) -> Any:
        status, body = await self.call("GET", path)
        return body if status == 200 else None

    async def names(self, path: str, label_selector: str = "") -> list[str]:
        query = f"?labelSelector={label_selector}" if label_selector else ""
        body = await self.get(path + query)
        return sorted(
            (f"{i['metadata'].get('namespace', '')}/" if "namespace" in i["metadata"] else "")
            + i["metadata"]["name"]
            for i in (body or {}).get("items", [])
        )

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def admin(sim: SimRunner) -> AsyncIterator[SimAdmin]:
    a = SimAdmin(sim)
    yield a
    await a.close()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, name="kubegate-relay-test")
    await ensure_streams(client.jetstream())
    yield client
    await client.close()


@pytest.fixture
async def edge(nc: Client) -> AsyncIterator[EdgeClient]:
    client = EdgeClient(
        nc, subjects.edge_peer(f"test-edge-{uuid.uuid4().hex[:6]}"), config=FAST_TRANSPORT
    )
    await client.start()
    yield client
    await client.close()


@dataclass
class Policy:
    """Writes policy as events, the way the control plane does, with names unique per test."""

    store: EventStore
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def name(self, what: str) -> str:
        return f"{what}-{self.tag}"

    def _envelope(self) -> dict[str, Any]:
        return {"id": uuid.uuid4().hex, "time": datetime.now(UTC), "actor": "test"}

    async def append(self, event: ev.Event) -> int:
        return await self.store.append(event)

    async def user(self, user: str) -> None:
        await self.append(ev.UserRegistered(**self._envelope(), user=user))

    async def cluster(self, cluster: str, **labels: str) -> None:
        await self.append(ev.ClusterRegistered(**self._envelope(), cluster=cluster, labels=labels))

    async def grant(
        self,
        grant_id: str,
        user: str,
        role: str,
        cluster: str,
        namespaces: tuple[str, ...] = (),
        expires_in: timedelta | None = None,
    ) -> None:
        expires = datetime.now(UTC) + expires_in if expires_in else None
        await self.append(
            ev.GrantIssued(
                **self._envelope(),
                grant_id=grant_id,
                subject_kind="user",
                subject=user,
                role=role,
                clusters=(cluster,),
                namespaces=namespaces,
                expires_at=expires,
            )
        )

    async def granted_user(self, role: str = "view") -> tuple[str, str]:
        """A new cluster and a new user with `role` on it: (cluster, user)."""
        cluster, user = self.name("c"), self.name("u")
        await self.user(user)
        await self.cluster(cluster)
        await self.grant(self.name("g"), user, role, cluster)
        return cluster, user

    async def revoke(self, grant_id: str) -> None:
        await self.append(ev.GrantRevoked(**self._envelope(), grant_id=grant_id, reason="test"))

    async def disable(self, user: str) -> None:
        await self.append(ev.UserDisabled(**self._envelope(), user=user, reason="test"))

    async def events_of(self, family: str, aggregate: str) -> list[ev.Event]:
        return [r.event for r in await self.store.load(family, aggregate)]  # type: ignore[misc]


@pytest.fixture
def policy(nc: Client) -> Policy:
    return Policy(EventStore(nc))


def relay_settings(sim: SimRunner, cluster: str, **kw: Any) -> RelaySettings:
    kw.setdefault("transport", FAST_TRANSPORT)
    kw.setdefault("drain_s", 0.5)
    return RelaySettings(cluster=cluster, kubeconfig=sim.kubeconfig, **kw)


def new_relay(nc: Client, sim: SimRunner, cluster: str, **kw: Any) -> RelayService:
    return RelayService(relay_settings(sim, cluster, **kw), nc=nc, registry=CollectorRegistry())
