"""One relay replica: NATS, the cluster's API server, policy, JIT accounts and the frame server.

Start order matters. The relay checks that its API server answers its own credentials (a clear
error at start rather than failing every request later), then follows the control log with a
policy projection that never sees password hashes (`kg.evt.credential.>` is filtered out) and
waits until it has caught up: only then does it join the cluster's queue group, so a revocation
written while no relay ran is applied before any request is served. Later, when the projection
loses the log for longer than the staleness bound, each request is refused (`overloaded`, 503 at
the edge) until it recovers.

Stop order: leave the queue group (new requests go to other replicas), let in-flight streams
finish for a short grace period, abort the rest, then record `RelayDisconnected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig
from nats.aio.client import Client as NatsClient
from prometheus_client import CollectorRegistry

from broker import subjects
from broker.connection import connect
from broker.store import EventStore
from broker.transport import RelayServer, TransportConfig
from domain import events
from domain.policy.state import PolicyState
from projections.policy import PolicyProjection
from relay.agent import RelayAgent
from relay.errors import ApiServerUnavailableError, KubeApiError, RelayConfigError
from relay.jit import MIN_TOKEN_TTL, JitAccounts
from relay.kube import KubeObjects, without_env_lookups
from relay.metrics import RelayMetrics
from relay.plans import Planner
from relay.probes import ProbeServer
from relay.revocation import AccessWatcher
from relay.upstream import Upstream

log = logging.getLogger("kubegate.relay.service")

HIDDEN_FAMILIES = frozenset({"credential"})
"""Control-log families a relay never reads (password hashes live in `credential`)."""

MIN_IDLE = timedelta(minutes=1)
"""The shortest idle period the CLI accepts (the constructor takes less, for tests)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_relay_id(cluster: str) -> str:
    """`relay-<cluster>-<host>-<random>`: unique per process, so a restart is a new peer."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"relay-{cluster}-{host}-{secrets.token_hex(4)}"


def policy_filter() -> list[str]:
    """The control-log subjects a relay's projection follows: the families of the events policy
    folds, never the hidden ones. Nothing else can change a relay's plans, and some families are
    busy: after one revocation every relay of every cluster records a ServiceAccountRemoved, which
    N relays all reading would be N² deliveries, each decoded while relays are still cutting."""
    folded = PolicyState.folded_types()
    families = sorted(
        {
            cls.FAMILY
            for cls in events.CATALOG.values()
            if cls.STREAM == "control" and cls in folded and cls.FAMILY not in HIDDEN_FAMILIES
        }
    )
    return [f"{subjects.CONTROL_PREFIX}.{subjects.token(f)}.*" for f in families]


def package_version() -> str:
    try:
        return version("kubegate")
    except PackageNotFoundError:
        return "0.0.0+local"


@dataclass
class RelaySettings:
    cluster: str
    nats_url: str = ""
    """Used when no NATS client is passed to the service."""
    nats_creds: str | None = None
    kubeconfig: str | None = None
    """The relay's own credentials; None: in-cluster (its pod's service account)."""
    context: str | None = None
    namespace: str = "kubegate-system"
    idle: timedelta = timedelta(hours=8)
    token_ttl: timedelta = timedelta(hours=1)
    sweep_interval: timedelta | None = None
    relay_id: str = ""
    staleness_bound_s: float = 30.0
    ready_timeout_s: float = 120.0
    """How long start() waits for the policy projection to catch up with the log."""
    drain_s: float = 5.0
    """Grace for in-flight streams at shutdown before they are aborted."""
    transport: TransportConfig | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    """Serve /metrics and /healthz on this port (0: not at all)."""

    def validate(self) -> None:
        if not self.cluster:
            raise RelayConfigError("a cluster name is required")
        if self.idle <= timedelta(0):
            raise RelayConfigError("the idle period must be positive")
        if self.token_ttl < MIN_TOKEN_TTL:
            raise RelayConfigError(f"token lifetime must be at least {MIN_TOKEN_TTL}")
        if not self.namespace:
            raise RelayConfigError("a namespace for service accounts is required")


class _RelayServer(RelayServer):
    """`RelayServer` that can leave the queue group before closing (graceful drain)."""

    async def stop_accepting(self) -> None:
        sub, self._open_sub = self._open_sub, None
        await self._unsubscribe(sub)


async def load_kube_configuration(kubeconfig: str | None, context: str | None) -> Any:
    """A kubernetes-asyncio Configuration from a kubeconfig file, or in-cluster."""
    cfg = kclient.Configuration()
    try:
        if kubeconfig:
            await kconfig.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
        else:
            kconfig.load_incluster_config(client_configuration=cfg)
    except (kconfig.ConfigException, OSError, ValueError, TypeError) as exc:
        where = kubeconfig or "in-cluster service account"
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise RelayConfigError(f"cannot load Kubernetes credentials ({where}): {detail}") from exc
    return cfg


class RelayService:
    """Starts and stops one relay replica; see the module docstring."""

    def __init__(
        self,
        settings: RelaySettings,
        *,
        nc: NatsClient | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        settings.validate()
        self.settings = settings
        self.cluster = settings.cluster
        self.relay_id = settings.relay_id or new_relay_id(settings.cluster)
        self.registry = registry or CollectorRegistry()
        self.metrics = RelayMetrics.for_registry(self.registry)
        self.clock = clock
        self.nc = nc
        self._own_nc = nc is None
        self.api_client: Any = None
        self.kube: KubeObjects | None = None
        self.upstream: Upstream | None = None
        self.policy: PolicyProjection | None = None
        self.planner: Planner | None = None
        self.accounts: JitAccounts | None = None
        self.server: _RelayServer | None = None
        self.watcher: AccessWatcher | None = None
        self.store: EventStore | None = None
        self.probes: ProbeServer | None = None
        self.agent: RelayAgent | None = None
        self.draining = asyncio.Event()
        """Set once the replica has left the queue group (no new streams come here)."""
        self._connected = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        if s.metrics_port:
            self.probes = ProbeServer(self.registry, self.not_ready_reason)
            try:
                await self.probes.start(s.metrics_host, s.metrics_port)
            except OSError as exc:
                self.probes = None
                raise RelayConfigError(
                    f"cannot serve metrics on {s.metrics_host}:{s.metrics_port}: {exc.strerror}"
                ) from exc
        if self.nc is None:
            self.nc = await connect(
                s.nats_url, name=f"kubegate-{self.relay_id}", creds=s.nats_creds
            )
        cfg = await load_kube_configuration(s.kubeconfig, s.context)
        self.api_client = kclient.ApiClient(configuration=cfg)
        without_env_lookups(self.api_client)
        self.kube = KubeObjects(self.api_client)
        try:
            found = await self.kube.server_version()
        except KubeApiError as exc:
            raise ApiServerUnavailableError(cfg.host, exc.message or str(exc)) from exc
        log.info(
            "kube-apiserver answers",
            extra={"url": cfg.host, "version": found.get("gitVersion", "")},
        )
        self.upstream = Upstream.from_configuration(cfg)
        self.store = EventStore(self.nc)
        self.policy = PolicyProjection(
            self.nc,
            name=f"policy-{self.relay_id}",
            registry=self.registry,
            staleness_bound_s=s.staleness_bound_s,
            filter_subjects=policy_filter(),
            clock=self.clock,
        )
        self.planner = Planner(self.policy, self.cluster, s.namespace)
        self.server = _RelayServer(
            self.nc,
            self.cluster,
            subjects.relay_peer(self.cluster, self.relay_id),
            self._handle,
            config=s.transport,
            registry=self.registry,
        )
        self.accounts = JitAccounts(
            self.kube,
            self.planner,
            relay_id=self.relay_id,
            emit=self.store.append,
            metrics=self.metrics,
            token_ttl=s.token_ttl,
            idle=s.idle,
            sweep_interval=s.sweep_interval,
            active_users=self._active_users,
            clock=self.clock,
        )
        self.agent = RelayAgent(
            cluster=self.cluster,
            upstream=self.upstream,
            accounts=self.accounts,
            metrics=self.metrics,
            not_ready=self.not_ready_reason,
        )
        self.watcher = AccessWatcher(self.planner, self.accounts, self.server, self.metrics)
        self.policy.on_change(self.watcher.on_change)
        await self.policy.start()
        try:
            await asyncio.wait_for(self.policy.wait_ready(), s.ready_timeout_s)
        except TimeoutError as exc:
            raise RelayConfigError(
                f"policy did not catch up with the event log in {s.ready_timeout_s:.0f}s"
            ) from exc
        self.watcher.start()
        self.watcher.recheck_all()  # revocations while no relay was running
        self.accounts.start()
        await self.server.start()
        self._connected = True
        self.metrics.ready.set(1)
        await self._record(
            events.RelayConnected(
                id=f"{self.relay_id}-connected",
                time=self.clock(),
                actor=self.relay_id,
                cluster=self.cluster,
                relay_id=self.relay_id,
                version=package_version(),
                host=socket.gethostname(),
            )
        )
        log.info("relay serving", extra={"cluster": self.cluster, "relay_id": self.relay_id})

    async def stop(self, reason: str = "relay shutting down") -> None:
        """Drain and stop; safe to call more than once and after a failed start."""
        self.metrics.ready.set(0)
        if self.server is not None:
            await self.server.stop_accepting()
            self.draining.set()
            await self._drain(self.settings.drain_s)
            await self.server.close(reason)
            self.server = None
        if self._connected:
            self._connected = False
            await self._record(
                events.RelayDisconnected(
                    id=f"{self.relay_id}-disconnected",
                    time=self.clock(),
                    actor=self.relay_id,
                    cluster=self.cluster,
                    relay_id=self.relay_id,
                    reason=reason,
                )
            )
        if self.watcher is not None:
            await self.watcher.stop()
        if self.accounts is not None:
            await self.accounts.stop()
        if self.policy is not None:
            await self.policy.stop()
            self.policy = None
        if self.upstream is not None:
            await self.upstream.close()
            self.upstream = None
        if self.api_client is not None:
            with contextlib.suppress(Exception):
                await self.api_client.close()
            self.api_client = None
        if self._own_nc and self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None
        if self.probes is not None:
            await self.probes.stop()
            self.probes = None

    async def __aenter__(self) -> RelayService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- helpers ------------------------------------------------------------------------------

    async def _handle(self, stream: Any) -> None:
        assert self.agent is not None
        await self.agent(stream)

    def not_ready_reason(self) -> str | None:
        if self.policy is None or self.server is None:
            return "starting"
        return self.policy.not_ready_reason()

    def _active_users(self) -> set[str]:
        if self.server is None:
            return set()
        return {s.user for s in self.server.live_streams()}

    async def _drain(self, grace_s: float) -> None:
        """Wait (bounded) for in-flight streams to finish on their own."""
        agent = self.agent
        if agent is None or agent.in_flight == 0:
            return
        log.info("draining", extra={"streams": agent.in_flight, "grace_s": grace_s})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(agent.wait_idle(), grace_s)

    async def _record(self, event: events.Event) -> None:
        if self.store is None:
            return
        try:
            await asyncio.wait_for(self.store.append(event), 5.0)
        except Exception:
            log.warning("could not record %s", type(event).__name__, exc_info=True)
