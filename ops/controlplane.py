"""`kubegate up`: the control plane and an edge in one process, on embedded or external NATS.

What runs: NATS (embedded in `<data-dir>/nats` unless `--nats URL`), the two log streams, the
control-plane command layer (eventsourcing over JetStream), the policy, sessions and audit
projections, the admin API (HTTPS, admin token; logins and console sessions) with the web
console and its browser shell (`/console/`), and the kubectl edge (HTTPS, mutual TLS).
When everything serves, `<data-dir>/ready.json` names the endpoints and `<data-dir>/admin.conf`
lets the CLI reach them. More edges can run elsewhere with `kubegate edge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from aiohttp import web
from prometheus_client import CollectorRegistry

from broker.auth import Credential, CredentialsError, UserBook
from broker.connection import connect
from broker.server import EmbeddedNats
from broker.streams import ensure_streams
from domain.control import ControlPlane
from edge.admin_api import AdminContext, build_app
from edge.ca import CertificateAuthority, write_server_files
from edge.console import Console, ConsoleSettings
from edge.identity_service import IdentityService
from edge.identity_settings import IdentitySettings
from edge.service import EdgeService, EdgeSettings
from ops.config import ADMIN_CONF, READY_JSON, AdminConfig
from ops.grant_expiry import GrantExpiryRecorder
from projections.audit import AuditStore, audit_runner

log = logging.getLogger("kubegate.ops.controlplane")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Settings:
    data_dir: Path
    nats_url: str | None = None
    nats_creds: str | None = None
    host: str = "127.0.0.1"
    edge_port: int = 0
    admin_port: int = 0
    public_host: str = ""
    replicas: int = 1
    staleness_bound_s: float = 30.0
    hostnames: list[str] = field(default_factory=list)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)


def admin_ssl_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki / "edge.crt", pki / "edge.key")
    return ctx


class ControlPlaneService:
    """Starts and stops everything `kubegate up` runs. Use as an async context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.registry = CollectorRegistry()
        self.nats: EmbeddedNats | None = None
        self.users: UserBook | None = None
        self.nats_creds: str | None = None
        self.nats_url = settings.nats_url or ""
        self.nc: Any = None
        self.control: ControlPlane | None = None
        self.edge: EdgeService | None = None
        self.audit: AuditStore | None = None
        self.audit_runner: Any = None
        self.admin_runner: web.AppRunner | None = None
        self.admin_ctx: AdminContext | None = None
        self.console: Console | None = None
        self.identity: IdentityService | None = None
        self.expiry: GrantExpiryRecorder | None = None
        self.admin_token = ""
        self.ca: CertificateAuthority | None = None
        self.edge_url = ""
        self.admin_url = ""
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- start/stop -------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / READY_JSON).unlink(missing_ok=True)
        self.nats_creds = s.nats_creds
        if not s.nats_url:
            # The embedded server gets least-privilege users (broker.auth); we hold the admin.
            self.users = UserBook(self.data_dir / "nats-users.json")
            controlplane, _ = self.users.ensure("controlplane")
            edge, _ = self.users.ensure("edge")
            self.nats = EmbeddedNats(
                data_dir=self.data_dir / "nats", extra_config=self.users.authorization()
            )
            await asyncio.to_thread(self.nats.start)
            self.nats_url = self.nats.url
            self.nats_creds = str(controlplane.save(self.data_dir / "creds" / "controlplane.json"))
            edge.save(self.data_dir / "creds" / "edge.json")
        self.nc = await connect(self.nats_url, name="kubegate-up", creds=self.nats_creds)
        await ensure_streams(self.nc.jetstream(), replicas=s.replicas)

        pki = self.data_dir / "pki"
        self.ca = CertificateAuthority.load_or_create(pki)
        hostnames = list(dict.fromkeys([*s.hostnames, s.public_host or s.host, "localhost"]))
        hostnames += [h for h in ("127.0.0.1",) if h not in hostnames]
        write_server_files(self.ca, pki, hostnames)
        self.admin_token = self._admin_token()

        env = {"PERSISTENCE_MODULE": "broker.es_persistence", "KUBEGATE_NATS_URL": self.nats_url}
        if self.nats_creds:
            env["KUBEGATE_NATS_CREDS"] = self.nats_creds
        self.control = await asyncio.to_thread(ControlPlane, env, clock=utcnow)

        self.audit = AuditStore(self.data_dir / "audit.duckdb")
        self.audit_runner = audit_runner(self.nc, self.audit, registry=self.registry)
        await self.audit_runner.start()

        self.edge = EdgeService(
            self.nc,
            EdgeSettings(
                ca_file=pki / "ca.crt",
                cert_file=pki / "edge.crt",
                key_file=pki / "edge.key",
                host=s.host,
                port=s.edge_port,
                public_host=s.public_host,
                staleness_bound_s=s.staleness_bound_s,
            ),
            registry=self.registry,
            clock=utcnow,
        )
        await self.edge.start()
        self.edge_url = self.edge.url
        public = s.public_host or s.host

        self.identity = IdentityService(
            self.nc,
            control=self.control,
            policy=self.edge.policy,
            clock=utcnow,
            settings=s.identity,
            registry=self.registry,
        )
        await self.identity.start()
        self.expiry = GrantExpiryRecorder(self.control, self.edge.policy, utcnow)
        self.expiry.start()
        self.console = Console(s.console, registry=self.registry)
        ctx = AdminContext(
            control=self.control,
            ca=self.ca,
            edge_url=self.edge_url,
            admin_tokens={self.admin_token: "admin"},
            clock=utcnow,
            audit_query=self._audit_query,
            policy=self.edge.policy,
            registry=self.registry,
            relay_credentials=self.relay_credentials,
            extra_routes=self.console.routes(),
            identity=self.identity,
        )
        self.admin_ctx = ctx
        self.admin_runner = web.AppRunner(build_app(ctx), access_log=None)
        await self.admin_runner.setup()
        site = web.TCPSite(
            self.admin_runner,
            s.host,
            s.admin_port,
            ssl_context=admin_ssl_context(pki),
        )
        await site.start()
        admin_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.admin_url = f"https://{public}:{admin_port}"

        async with asyncio.timeout(60):
            await self.edge.policy.wait_ready()
            await self.identity.wait_ready()
        self._write_files()

    def _admin_token(self) -> str:
        path = self.data_dir / "admin-token"
        if path.exists():
            return path.read_text().strip()
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token

    def _write_files(self) -> None:
        ca_file = self.data_dir / "pki" / "ca.crt"
        AdminConfig(
            admin_url=self.admin_url,
            token=self.admin_token,
            ca_file=str(ca_file),
            nats_url=self.nats_url,
            nats_creds=self.nats_creds or "",
            edge_url=self.edge_url,
        ).save(self.data_dir / ADMIN_CONF)
        ready = {
            "nats_url": self.nats_url,
            "admin_url": self.admin_url,
            "edge_url": self.edge_url,
            "edge_id": self.edge.edge_id if self.edge else "",
            "ca_file": str(ca_file),
            "admin_config": str(self.data_dir / ADMIN_CONF),
            "audit_db": str(self.data_dir / "audit.duckdb"),
            "pid": os.getpid(),
        }
        tmp = self.data_dir / (READY_JSON + ".tmp")
        tmp.write_text(json.dumps(ready, indent=2) + "\n")
        tmp.replace(self.data_dir / READY_JSON)

    async def relay_credentials(self, cluster: str) -> Credential:
        """NATS credentials for the relays of `cluster` (made, and the server reloaded, once)."""
        if self.users is None or self.nats is None:
            raise CredentialsError(
                "relay credentials come from your NATS operator when kubegate runs with --nats"
            )
        cred, made = self.users.ensure("relay", cluster)
        if made:
            self.nats.reload(self.users.authorization())
            await self._until_accepted(cred)
        return cred

    async def _until_accepted(self, cred: Credential) -> None:
        """Wait until the reloaded server accepts a new user (reload is asynchronous)."""
        for _ in range(100):
            try:
                nc = await nats.connect(
                    self.nats_url,
                    user=cred.user,
                    password=cred.password,
                    allow_reconnect=False,
                    connect_timeout=1,
                    error_cb=_expected_refusal,
                )
            except Exception:
                await asyncio.sleep(0.05)
                continue
            await nc.close()
            return
        raise CredentialsError(f"NATS did not accept the new user {cred.user}")

    async def _audit_query(self, sql: str, params: list[Any]) -> tuple[list[str], list[Any]]:
        assert self.audit is not None
        columns, rows = await self.audit.query_async(sql, params or None)
        return columns, [list(r) for r in rows]

    async def stop(self) -> None:
        (self.data_dir / READY_JSON).unlink(missing_ok=True)
        if self.console is not None:
            await self.console.close()
        if self.admin_runner is not None:
            await self.admin_runner.cleanup()
        if self.expiry is not None:
            await self.expiry.stop()
        if self.identity is not None:
            await self.identity.stop()
        if self.edge is not None:
            await self.edge.stop()
        if self.audit_runner is not None:
            await self.audit_runner.stop()
        if self.audit is not None:
            self.audit.close()
        if self.control is not None:
            await asyncio.to_thread(self.control.close)
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)

    async def __aenter__(self) -> ControlPlaneService:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _expected_refusal(exc: Exception) -> None:
    """nats-py's error callback for the accepted-yet? probes: a refusal while the server reloads
    is expected and retried, not an error worth a traceback in the log."""
