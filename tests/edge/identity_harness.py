"""A real admin API with logins, for the login and OIDC tests: the session nats-server, a
control plane on JetStream, a policy projection, an `IdentityService`, HTTPS with the test CA,
and an aiohttp client. Time is an injected clock shared by every part."""

from __future__ import annotations

import asyncio
import io
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import nats
from aiohttp import web
from argon2 import PasswordHasher
from prometheus_client import CollectorRegistry

from broker.store import EventStore
from broker.streams import ensure_streams
from domain.control import ControlPlane
from edge.admin_api import AdminContext, build_app
from edge.identity_service import IdentityService
from edge.identity_settings import IdentitySettings
from projections.policy import PolicyProjection
from tests import support
from tests.edge.conftest import Pki

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
"""Tests hash and check with small argon2id parameters (the cost is the parameters')."""


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: Any = None


@dataclass
class Replica:
    """One admin API process: its policy projection, identity service and HTTPS listener."""

    policy: PolicyProjection
    identity: IdentityService
    runner: web.AppRunner
    url: str


@dataclass
class Rig:
    nc: Any
    control: ControlPlane
    clock: Clock
    pki: Pki
    admin_token: str
    http: aiohttp.ClientSession
    replicas: list[Replica] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.replicas[0].url

    @property
    def identity(self) -> IdentityService:
        return self.replicas[0].identity

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        replica: int = 0,
        raw: bytes | None = None,
    ) -> Answer:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        url = self.replicas[replica].url + path
        async with self.http.request(method, url, headers=headers, **kwargs) as resp:
            data = await resp.json(content_type=None) if resp.status != 204 else {}
            return Answer(resp.status, data or {}, resp.headers)

    async def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        answer = await self.call(method, path, body, token=self.admin_token)
        assert answer.status < 300, (path, answer)
        return answer.body

    async def local_user(
        self, password: str = "correct horse", groups: tuple[str, ...] = ()
    ) -> str:
        user = uid("u")
        for group in groups:
            await self.call("POST", "/v1/groups", {"name": group}, token=self.admin_token)
        await self.admin("POST", "/v1/users", {"name": user, "groups": list(groups)})
        await self.admin(
            "POST", f"/v1/users/{user}/password-hash", {"password_hash": CHEAP.hash(password)}
        )
        return user

    async def login(self, user: str, password: str, replica: int = 0) -> Answer:
        return await self.call(
            "POST", "/v1/login", {"user": user, "password": password}, replica=replica
        )

    async def logged(self, family: str, key: str) -> list[Any]:
        return [r.event for r in await EventStore(self.nc).load(family, key)]

    async def add_replica(
        self, settings: IdentitySettings | Callable[[str], IdentitySettings]
    ) -> Replica:
        """Settings, or a function of this replica's URL giving them (an OIDC redirect URI
        names the admin API's own address, so the socket is bound first)."""
        name = uid("replica")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"https://localhost:{sock.getsockname()[1]}"
        if callable(settings):
            settings = settings(url)
        registry = CollectorRegistry()
        policy = PolicyProjection(
            self.nc, name=f"policy-{name}", registry=registry, clock=self.clock
        )
        identity = IdentityService(
            self.nc,
            control=self.control,
            policy=policy,
            clock=self.clock,
            settings=settings,
            registry=registry,
            hasher=CHEAP,
            name=f"identity-{name}",
        )
        await policy.start()
        await identity.start(sweeper=False)
        async with asyncio.timeout(60):
            await policy.wait_ready()
            await identity.wait_ready()
        ctx = AdminContext(
            control=self.control,
            ca=self.pki.ca,
            edge_url="https://edge.invalid",
            admin_tokens={self.admin_token: "admin"},
            clock=self.clock,
            policy=policy,
            registry=registry,
            identity=identity,
        )
        runner = web.AppRunner(build_app(ctx), access_log=None)
        await runner.setup()
        site = web.SockSite(runner, sock, ssl_context=self.pki.server_context())
        await site.start()
        replica = Replica(policy, identity, runner, url)
        self.replicas.append(replica)
        return replica

    async def close(self) -> None:
        """Stop everything, each step bounded: a step that hangs fails the test by name,
        with the stacks of the tasks still running."""
        for replica in self.replicas:
            await _bounded("admin API", replica.runner.cleanup())
            await _bounded("identity service", replica.identity.stop())
            await _bounded("policy projection", replica.policy.stop())
        await _bounded("HTTP client", self.http.close())
        await _bounded("control plane", asyncio.to_thread(self.control.close))
        await _bounded("NATS client", self.nc.close())


async def _bounded(what: str, step: Any, within: float = 20.0) -> None:
    try:
        async with asyncio.timeout(within):
            await step
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        raise AssertionError(f"stopping the {what} hung:\n{stacks.getvalue()}") from None


async def start_rig(
    nats_url: str,
    pki: Pki,
    settings: IdentitySettings | Callable[[str], IdentitySettings] | None = None,
    replicas: int = 1,
    clock: Clock | None = None,
) -> Rig:
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    clock = clock or Clock()
    env = {"PERSISTENCE_MODULE": "broker.es_persistence", "KUBEGATE_NATS_URL": nats_url}
    control = await asyncio.to_thread(ControlPlane, env, clock=clock)
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=pki.client_context()),
        cookie_jar=aiohttp.CookieJar(unsafe=True),
    )
    rig = Rig(nc, control, clock, pki, uuid.uuid4().hex, http)
    try:
        for _ in range(replicas):
            await rig.add_replica(settings or IdentitySettings())
    except BaseException:
        await rig.close()
        raise
    return rig


async def eventually(check: Any, what: str, within: float = 10.0) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy (`tests.support`'s
    poller, at this harness's pace)."""
    return await support.eventually(check, what, within, every=0.02)
