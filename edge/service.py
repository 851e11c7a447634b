"""One edge: the kubectl listener (mutual TLS), its policy projection and its frame client.

`kubegate up` runs one beside the control plane; `kubegate edge` runs more anywhere that
reaches NATS (edges are stateless: everything they know comes from the log). An edge refuses to
serve (503) until its policy has caught up, and when it has lost the log for longer than the
staleness bound. Whenever policy may have shrunk someone's access, it re-judges that user's
live requests and cuts what is no longer allowed.
"""

from __future__ import annotations

import logging
import socket
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.client import Client as NatsClient
from prometheus_client import CollectorRegistry

from broker import subjects
from broker.activity import ActivityPublisher, ActivityQueue
from broker.transport import EdgeClient
from edge.http1 import Http1Server
from edge.proxy import KubeProxy
from projections.policy import PolicyProjection

log = logging.getLogger("kubegate.edge.service")

AUDIT_AFTER_CUT_S = 0.1
"""How long an edge holds its audit events after cutting live streams. A revocation cuts a
user's streams on every edge and relay at once, and each cut stream has its KubectlCompleted
to store: sent at once, they reach nats-server while it is still delivering the revocation to
every relay, and take CPU from the relays still cutting on a shared host. Held, they follow a
moment later; nothing is lost. `kubegate bench revocation` (200 relays, 4 edges, 2 cores): p99
51-60 ms sending at once, 41-46 ms with audit left out entirely (three runs each)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_edge_id() -> str:
    return f"edge-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""TLS 1.2 suites the edge accepts: forward-secret AEADs only (TLS 1.3's are all AEADs)."""


def kubectl_ssl_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """Server TLS for kubectl: our certificate, client certificates checked against our CA.

    Optional at the TLS layer so a request without a certificate gets a readable 401 Status;
    a certificate from another CA, or an expired one, still fails the handshake.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    # Python's server contexts pick the suite by their own order, AES-256-GCM first. Go
    # clients (kubectl, helm, client-go) list AES-128-GCM first on AES hardware and ChaCha20
    # first without it, which is also what a kube-apiserver (Go) picks for them; Python has
    # no call to reorder TLS 1.3 suites, so the edge follows the client. Every suite on offer
    # is an AEAD: the client's choice costs nothing in strength.
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cafile=str(ca_file))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass
class EdgeSettings:
    ca_file: Path
    cert_file: Path
    key_file: Path
    host: str = "127.0.0.1"
    port: int = 0
    public_host: str = ""
    staleness_bound_s: float = 30.0
    open_timeout_s: float = 10.0
    edge_id: str = ""


class EdgeService:
    """Starts and stops one edge on a connected NATS client."""

    def __init__(
        self,
        nc: NatsClient,
        settings: EdgeSettings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.nc = nc
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.clock = clock
        self.edge_id = settings.edge_id or new_edge_id()
        self.policy = PolicyProjection(
            nc,
            name=f"policy-{self.edge_id}",
            registry=self.registry,
            staleness_bound_s=settings.staleness_bound_s,
            clock=clock,
        )
        self.activity = ActivityPublisher(nc, registry=self.registry)
        self.activity_queue = ActivityQueue(self.activity)
        self.client = EdgeClient(nc, subjects.edge_peer(self.edge_id), registry=self.registry)
        self.proxy = KubeProxy(
            client=self.client,
            policy=self.policy,
            emit=self.activity_queue.put,
            edge_id=self.edge_id,
            open_timeout_s=settings.open_timeout_s,
            clock=clock,
        )
        self.server = Http1Server(
            self.proxy,
            ssl_context=kubectl_ssl_context(
                settings.ca_file, settings.cert_file, settings.key_file
            ),
        )
        self.url = ""
        self.policy.on_change(self._recheck)

    def _recheck(self, users: frozenset[str] | None) -> None:
        cut = self.proxy.live.recheck(self.policy, self.clock(), users)
        if cut:
            self.activity_queue.hold(AUDIT_AFTER_CUT_S)
            log.info("cut live requests after a policy change", extra={"cut": cut})

    async def start(self, *, wait_ready: bool = False) -> None:
        """Listen at once (answering 503 until policy is current); optionally wait for it."""
        await self.client.start()
        await self.policy.start()
        port = await self.server.start(self.settings.host, self.settings.port)
        self.url = f"https://{self.settings.public_host or self.settings.host}:{port}"
        if wait_ready:
            await self.policy.wait_ready()

    async def stop(self) -> None:
        await self.server.stop()
        await self.client.close()
        await self.activity_queue.close()
        try:
            await self.activity.flush(5.0)
        except Exception:
            log.warning("activity events may be lost at shutdown", exc_info=True)
        await self.activity.close()
        await self.policy.stop()
