"""The whole stack for console and shell tests, real parts only: `kubegate up`'s service (control
plane, policy, audit, identity service, admin API with the console, edge) on the session
nats-server, a relay for one cluster, the Kubernetes API simulator, real kubectl; plus a shell
client over a real WebSocket."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from edge.console import ConsoleSettings, ShellSettings
from edge.sessions import mint
from ops.controlplane import ControlPlaneService, Settings
from relay.service import RelayService, RelaySettings
from tests import tools
from tests.relay.conftest import SimRunner
from tests.support import Kubectl, LoopThread

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def plain(data: bytes) -> str:
    return ANSI.sub(b"", data).decode("utf-8", "replace")


def cmd(what: str) -> dict[str, str]:
    return {"actor": "test", "command_id": f"{what}-{uuid.uuid4().hex[:10]}"}


class Sessions:
    """Console sessions as a login makes them (a minted token, only its hash in the log),
    started through the control plane so a test may pick the expiry; the stack's real
    identity service authenticates them and logs them out."""

    def __init__(self, service: ControlPlaneService) -> None:
        self.service = service

    def start(
        self, user: str, *, ttl: dt.timedelta = dt.timedelta(hours=1), idle_s: int = 1800
    ) -> tuple[str, str]:
        minted = mint()
        assert self.service.control is not None
        self.service.control.start_console_session(
            minted.session_id,
            user=user,
            expires_at=dt.datetime.now(dt.UTC) + ttl,
            idle_timeout_s=idle_s,
            token_hash=minted.token_hash,
            **cmd("session"),
        )
        return minted.token, minted.session_id

    def end(self, session_id: str, reason: str = "logout") -> None:
        assert self.service.control is not None
        self.service.control.end_console_session(session_id, reason=reason, **cmd("end"))


@dataclass
class Stack:
    thread: LoopThread
    service: ControlPlaneService
    relay: RelayService
    sim: SimRunner
    cluster: str
    kubectl_binary: Path
    work: Path
    sessions: Sessions = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.service)

    @property
    def plane(self) -> Any:
        return self.service.control

    @property
    def admin_url(self) -> str:
        return self.service.admin_url

    @property
    def ca_file(self) -> Path:
        return self.service.data_dir / "pki" / "ca.crt"

    def ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def admin(self) -> Kubectl:
        """kubectl as the simulator's administrator (not through kubegate)."""
        return Kubectl(self.kubectl_binary, Path(self.sim.kubeconfig), self.work / "admin-cache")

    def user(self, user: str, *, namespaces: tuple[str, ...], role: str = "edit") -> str:
        """A user with a grant on the stack's cluster; returns the grant id."""
        self.plane.register_user(user, **cmd("user"))
        grant = f"g-{user}"
        self.plane.issue_grant(
            grant,
            subject_kind="user",
            subject=user,
            role=role,
            clusters=[self.cluster],
            namespaces=list(namespaces),
            **cmd("grant"),
        )
        return grant

    def wait_policy(self, check: Any, what: str, deadline: float = 30.0) -> None:
        """Until the admin API's policy projection shows `check(state)`."""
        from tests.support import wait_for

        policy = self.service.edge.policy  # type: ignore[union-attr]
        wait_for(lambda: check(policy.state), what, deadline)

    def wait_reachable(self, user: str, token: str) -> None:
        """Until the admin API knows the session (policy and identity service) and lets the
        user reach the cluster."""
        from tests.support import wait_for

        policy = self.service.edge.policy  # type: ignore[union-attr]
        sessions = self.service.identity.sessions  # type: ignore[union-attr]
        wait_for(
            lambda: (
                (found := sessions.find(token)) is not None
                and found.session_id in policy.state.sessions
                and self.cluster in policy.clusters_for(user)
            ),
            f"{user}'s session and grant in the admin API",
        )

    async def call(
        self, method: str, path: str, *, token: str = "", body: Any = None
    ) -> tuple[int, Any]:
        """The admin API over HTTPS, as `token` (default: the admin)."""
        headers = {"Authorization": f"Bearer {token or self.service.admin_token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method, self.admin_url + path, json=body, headers=headers, ssl=self.ssl()
            ) as resp,
        ):
            return resp.status, await resp.json()

    async def logout(self, token: str) -> None:
        status, body = await self.call("POST", "/v1/logout", token=token)
        assert status == 200, body

    async def audit(self, sql: str, params: list[Any]) -> list[list[Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                self.admin_url + "/v1/audit/sql",
                json={"sql": sql, "params": params},
                headers={"Authorization": f"Bearer {self.service.admin_token}"},
                ssl=self.ssl(),
            ) as resp,
        ):
            body = await resp.json()
            assert resp.status == 200, body
            return body["rows"]

    async def audit_until(
        self, sql: str, params: list[Any], want: Any, deadline: float = 30.0
    ) -> list[list[Any]]:
        end = asyncio.get_running_loop().time() + deadline
        while True:
            rows = await self.audit(sql, params)
            if want(rows):
                return rows
            if asyncio.get_running_loop().time() > end:
                everything = await self.audit(
                    'SELECT type, "user", verb, resource, via FROM kubectl_events '
                    "ORDER BY seq DESC LIMIT 8",
                    [],
                )
                raise AssertionError(f"audit never showed what was wanted: {rows}; {everything}")
            await asyncio.sleep(0.2)


def start_stack(tmp: Path, nats_url: str) -> Stack:
    binary = tools.kubectl_133()
    thread = LoopThread("console-stack")
    sim = SimRunner(tmp / "sim")
    cluster = f"c-{uuid.uuid4().hex[:8]}"
    service = ControlPlaneService(
        Settings(
            data_dir=tmp / "cp",
            nats_url=nats_url,
            console=ConsoleSettings(
                shell=ShellSettings(
                    kubectl=str(binary), helm=str(tools.helm()), scratch_root=tmp / "shells"
                )
            ),
        )
    )
    thread.run(service.start())
    service.control.register_cluster(cluster, **cmd("cluster"))  # type: ignore[union-attr]
    relay = RelayService(
        RelaySettings(cluster=cluster, nats_url=nats_url, kubeconfig=sim.kubeconfig, drain_s=0.5)
    )
    thread.run(relay.start())
    return Stack(thread, service, relay, sim, cluster, binary, tmp)


def stop_stack(stack: Stack) -> None:
    stack.thread.run(stack.relay.stop())
    stack.thread.run(stack.service.stop())
    stack.sim.close()
    stack.thread.close()


class ShellClient:
    """A browser shell over a real WebSocket: type lines, read the terminal."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self.raw = b""
        self.events: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.prompt = b""

    @classmethod
    async def connect(
        cls, stack: Stack, token: str, cluster: str | None = None, *, auth: str = "header"
    ) -> ShellClient:
        cluster = cluster or stack.cluster
        http = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {token}"} if auth == "header" else {}
        try:
            ws = await http.ws_connect(
                f"{stack.admin_url}/v1/shell?cluster={cluster}",
                headers=headers,
                protocols=("kubegate.shell.v1",),
                ssl=stack.ssl(),
                heartbeat=30,
            )
        except BaseException:
            await http.close()
            raise
        client = cls(http, ws)
        client.prompt = f"{cluster}\x1b[0m $ ".encode()
        if auth == "message":
            await ws.send_str(json.dumps({"type": "auth", "token": token}))
        return client

    async def _receive(self) -> bool:
        msg = await self.ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            self.raw += msg.data
        elif msg.type == aiohttp.WSMsgType.TEXT:
            self.events.append(json.loads(msg.data))
        else:
            self.close_code = self.ws.close_code
            return False
        return True

    async def ready(self, within: float = 60) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while not any(e["type"] == "ready" for e in self.events):
                if not await self._receive():
                    raise AssertionError(f"closed before ready: {self.close_code} {self.events}")
            await self.until(self.prompt, 0, within)
        return next(e for e in self.events if e["type"] == "ready")

    async def until(self, marker: bytes, start: int, within: float = 60) -> int:
        """Read until `marker` appears at or after `start`; returns where it ends."""
        try:
            async with asyncio.timeout(within):
                while (at := self.raw.find(marker, start)) < 0:
                    if not await self._receive():
                        raise AssertionError(
                            f"closed ({self.close_code}) before {marker!r}: "
                            f"{plain(self.raw[start:])}"
                        )
        except TimeoutError:
            raise AssertionError(
                f"no {marker!r} within {within}s; the terminal showed: {plain(self.raw[start:])!r}"
            ) from None
        return at + len(marker)

    async def type(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def run(self, line: str, within: float = 60) -> str:
        """Type a line; the terminal text between its echo and the next prompt."""
        start = len(self.raw)
        await self.type(line.encode() + b"\r")
        echoed = await self.until(b"\r\n", start, within)
        done = await self.until(self.prompt, echoed, within)
        return plain(self.raw[echoed : done - len(self.prompt)])

    async def event(self, kind: str, within: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for e in self.events:
                    if e["type"] == kind:
                        self.events.remove(e)
                        return e
                if not await self._receive():
                    raise AssertionError(f"closed ({self.close_code}) before a {kind} event")

    async def wait_closed(self, within: float = 60) -> int:
        async with asyncio.timeout(within):
            while await self._receive():
                pass
        assert self.close_code is not None
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()
