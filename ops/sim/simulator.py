"""`Simulator`: one Kubernetes API server stand-in, served over TLS, usable in-process.

    async with Simulator(directory) as sim:
        sim.kubeconfig_path, sim.url, sim.admin_token, sim.ca_path

Everything it owns (store, controllers, HTTP server, pod runtime) lives on the instance, so
several simulators can run in one process. The directory keeps the CA, keys and admin token, so
a restarted simulator accepts the same credentials.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import importlib
import logging
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ops.sim import api, bootstrap, kubeconfig, naming, pki
from ops.sim.authn import AUTHENTICATED, Authenticator, TokenIssuer, UserInfo
from ops.sim.controllers import NODE, Controllers
from ops.sim.errors import SimConfigError
from ops.sim.rbac import Authorizer, escalation_check
from ops.sim.registry import NAMESPACES, Registry, WriteContext
from ops.sim.resources import Catalog
from ops.sim.store import Store

log = logging.getLogger("kubegate.ops.sim.simulator")

GIT_VERSION = "v1.33.1"
ADMIN_USER = "kubernetes-admin"


class Simulator:
    """A TLS Kubernetes API simulator rooted in `directory`."""

    def __init__(
        self,
        directory: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "sim",
        bookmark_interval: float = 30.0,
        history_limit: int = 20000,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """`clock` (default: the wall clock) times tokens and pods; tests pass a faster one to
        live through minutes of a cluster's time in seconds."""
        if port < 0 or port > 65535:
            raise SimConfigError(f"port out of range: {port}")
        if bookmark_interval <= 0:
            raise SimConfigError("bookmark_interval must be positive")
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.name = name
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.bookmark_interval = bookmark_interval
        self.git_version = GIT_VERSION
        self.audience = "https://kubernetes.default.svc.cluster.local"
        self.catalog = Catalog()
        self.store = Store(history_limit=history_limit)
        self.registry = Registry(self.store, self.catalog)
        self.authorizer = Authorizer(self.store)
        self.registry.admission.append(escalation_check(self.authorizer))
        self.stopping = asyncio.Event()
        self.runtime: Any = None
        self._stream_handle: Any = None
        self._runner: web.AppRunner | None = None
        self._controllers: Controllers | None = None
        self.admin_token = ""
        self.kubeconfig_path = self.directory / "admin.kubeconfig"
        self.ca_path = self.directory / "ca.crt"
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SimConfigError(f"cannot use {self.directory}: {exc}") from exc
        self.ca = await asyncio.to_thread(pki.CertificateAuthority, self.directory)
        signing_key = await asyncio.to_thread(
            pki.load_or_make_signing_key, self.directory / "sa.key"
        )
        self.issuer = TokenIssuer(
            signing_key, self._account_uid, clock=lambda: self.clock().timestamp()
        )
        self.authenticator = Authenticator(self.issuer)
        self.admin_token = self._load_admin_token()
        self.authenticator.add_token(
            self.admin_token, UserInfo(ADMIN_USER, "", ("system:masters", AUTHENTICATED))
        )
        self._controllers = Controllers(self)
        self._bootstrap()
        self._load_runtime()
        hosts = [
            "localhost",
            "127.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        if self.host not in hosts and self.host not in ("0.0.0.0", "::"):
            hosts.append(self.host)
        server_cert = await asyncio.to_thread(self.ca.issue_server, hosts)
        ssl_context = self.ca.server_context(server_cert)
        app = api.make_app(api.ApiHandler(self))
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, ssl_context=ssl_context)
        await site.start()
        display_host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        self.host = display_host
        self.url = f"https://{display_host}:{self.port}"
        kubeconfig.write(
            self.kubeconfig_path,
            kubeconfig.render(
                self.name, self.url, self.ca.cert_pem, ADMIN_USER, token=self.admin_token
            ),
        )
        self._controllers.start()
        log.info("simulator serving", extra={"url": self.url, "dir": str(self.directory)})

    async def stop(self) -> None:
        self.stopping.set()
        self.store.close_watchers()
        if self._controllers is not None:
            await self._controllers.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            for closer in ("aclose", "close", "stop"):
                fn = getattr(runtime, closer, None)
                if fn is not None:
                    result = fn()
                    if asyncio.iscoroutine(result):
                        await result
                    break

    def _load_admin_token(self) -> str:
        path = self.directory / "admin.token"
        if path.exists():
            return path.read_text().strip()
        token = secrets.token_urlsafe(32)
        path.write_text(token)
        path.chmod(0o600)
        return token

    def _load_runtime(self) -> None:
        """The pod runtime and stream handler come from ops.sim.runtime / ops.sim.streams, which
        may not be present in every build: without them, stream subresources answer 501."""
        try:
            runtime_mod = importlib.import_module("ops.sim.runtime")
            streams_mod = importlib.import_module("ops.sim.streams")
        except ImportError:
            return
        try:
            self.runtime = runtime_mod.PodRuntime(self.directory / "pods", clock=self.clock)
            self._stream_handle = streams_mod.handle
        except Exception:
            log.exception("pod runtime failed to start; stream subresources disabled")
            self.runtime = None

    def stream_handler(self) -> Any:
        return self._stream_handle

    def notify_pod_added(self, pod: dict[str, Any]) -> None:
        if self.runtime is not None:
            try:
                self.runtime.pod_added(copy.deepcopy(pod))
            except Exception:
                log.exception("runtime.pod_added failed")

    def notify_pod_removed(self, namespace: str, name: str) -> None:
        if self.runtime is not None:
            try:
                self.runtime.pod_removed(namespace, name)
            except Exception:
                log.exception("runtime.pod_removed failed")

    # -- cluster content ------------------------------------------------------------------------

    def _system(self) -> WriteContext:
        return WriteContext(UserInfo("system:apiserver", "", ("system:masters",)), "kube-apiserver")

    def _bootstrap(self) -> None:
        ctx = self._system()
        ns_rt = self.catalog.by_plural("", "v1", "namespaces")
        for name in bootstrap.NAMESPACES:
            self.registry.create(
                ns_rt,
                "",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                ctx,
            )
        node_rt = self.catalog.by_plural("", "v1", "nodes")
        node = bootstrap.node(NODE)
        node_status = node.pop("status")
        created = self.registry.create(node_rt, "", node, ctx)
        created = copy.deepcopy(created)
        now = naming.timestamp()
        for cond in node_status["conditions"]:
            cond.update(lastHeartbeatTime=now, lastTransitionTime=now)
        created["status"] = node_status
        self.registry.update(
            node_rt, "", NODE, created, WriteContext(ctx.user, "kubelet"), "status"
        )
        cr_rt = self.catalog.by_plural("rbac.authorization.k8s.io", "v1", "clusterroles")
        for role in bootstrap.cluster_roles():
            self.registry.create(cr_rt, "", role, ctx)
        crb_rt = self.catalog.by_plural("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        for binding in bootstrap.cluster_role_bindings():
            self.registry.create(crb_rt, "", binding, ctx)
        svc_rt = self.catalog.by_plural("", "v1", "services")
        self.registry.create(
            svc_rt,
            "default",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "clusterIP": "10.96.0.1",
                    "ports": [{"name": "https", "port": 443, "targetPort": 6443}],
                },
            },
            ctx,
        )

    def _account_uid(self, namespace: str, name: str) -> str | None:
        sa = self.store.get("/serviceaccounts", (namespace, name))
        return None if sa is None else sa["metadata"]["uid"]

    def finalize_namespace(
        self, name: str, obj: dict[str, Any], ctx: WriteContext
    ) -> dict[str, Any]:
        """PUT namespaces/{name}/finalize: only spec.finalizers changes; an empty list on a
        terminating namespace removes it."""
        ns_rt = self.catalog.by_plural("", "v1", "namespaces")
        old = self.registry.get(ns_rt, "", name)
        new = copy.deepcopy(old)
        new["spec"] = {"finalizers": list((obj.get("spec") or {}).get("finalizers") or [])}
        if not new["spec"]["finalizers"]:
            new["spec"] = {}
        if (
            old["metadata"].get("deletionTimestamp")
            and not new["spec"].get("finalizers")
            and not new["metadata"].get("finalizers")
        ):
            new["metadata"]["resourceVersion"] = str(self.store.next_rv())
            self.store.remove(NAMESPACES, ("", name), new)
            return new
        new["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store.put(NAMESPACES, ("", name), new)
        return new

    # -- in-process conveniences for tests and demos ---------------------------------------------

    def version_info(self) -> dict[str, str]:
        return {
            "major": "1",
            "minor": "33",
            "emulationMajor": "1",
            "emulationMinor": "33",
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": "32",
            "gitVersion": self.git_version,
            "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
            "gitTreeState": "clean",
            "buildDate": "2025-05-15T08:19:08Z",
            "goVersion": "go1.24.2",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def issue_token(
        self,
        namespace: str,
        service_account: str,
        ttl_seconds: float = 3600,
        audiences: list[str] | None = None,
    ) -> str:
        """A service-account token with any TTL (TokenRequest enforces >= 10 minutes)."""
        uid = self._account_uid(namespace, service_account)
        if uid is None:
            raise SimConfigError(f"no service account {namespace}/{service_account}")
        token, _ = self.issuer.issue(namespace, service_account, uid, ttl_seconds, audiences)
        return token

    def issue_client_cert(
        self, user: str, groups: list[str] | tuple[str, ...] = ()
    ) -> pki.IssuedCert:
        return self.ca.issue_client(user, groups)

    def write_kubeconfig(
        self,
        path: str | Path,
        user: str,
        *,
        token: str | None = None,
        cert: pki.IssuedCert | None = None,
        namespace: str | None = None,
    ) -> Path:
        config = kubeconfig.render(
            self.name,
            self.url,
            self.ca.cert_pem,
            user,
            token=token,
            cert_pem=cert.cert_pem if cert else None,
            key_pem=cert.key_pem if cert else None,
            namespace=namespace,
        )
        return kubeconfig.write(Path(path), config)

    def compact(self) -> int:
        """Forget all history (like an etcd compaction): older continue tokens and watch
        resourceVersions then get 410."""
        return self.store.compact()

    async def wait_idle(self, limit: float = 10.0) -> None:
        """Wait until the controllers have no queued work (for deterministic tests)."""
        deadline = asyncio.get_running_loop().time() + limit
        while self._controllers is not None and (
            self._controllers._dirty or self._controllers._wake.is_set()
        ):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("simulator controllers did not settle")
            await asyncio.sleep(0.01)


__all__ = ["Simulator", "dt"]
