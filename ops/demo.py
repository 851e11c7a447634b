"""`kubegate demo`: the whole product on one machine, seeded, ready for vanilla kubectl.

Runs embedded NATS, the control plane with its edge, two simulated clusters (`dev`, `prod`),
each with an in-cluster relay, and seeds users: `admin` (cluster-admin on both), `alice` (edit
on `dev`, through group `devs`) and `bob` (view on `prod`). It writes `<dir>/<user>.kubeconfig`,
`<dir>/admin.conf` for the admin CLI and `<dir>/ready.json` once serving. Seeding is idempotent:
a second start on the same directory keeps the log and adds nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain import aggregates
from edge import kubeconfig as kcfg
from ops.config import ADMIN_CONF, READY_JSON
from ops.controlplane import ControlPlaneService, Settings, utcnow

log = logging.getLogger("kubegate.ops.demo")

CLUSTERS = {"dev": {"env": "dev"}, "prod": {"env": "prod"}}
USERS = {
    "admin": {"groups": ["admins", "approvers"], "display_name": "Demo administrator"},
    "alice": {"groups": ["devs"], "display_name": "Alice (developer)"},
    "bob": {"groups": [], "display_name": "Bob (on call, read-only)"},
}
GROUPS = {
    "admins": "kubegate administrators",
    "approvers": "may approve break-glass requests",
    "devs": "developers",
}
GRANTS = [
    {
        "id": "demo-admins",
        "subject_kind": "group",
        "subject": "admins",
        "role": "cluster-admin",
        "clusters": ["*"],
        "reason": "demo: administrators",
    },
    {
        "id": "demo-devs-dev",
        "subject_kind": "group",
        "subject": "devs",
        "role": "edit",
        "clusters": ["dev"],
        "reason": "demo: developers edit dev",
    },
    {
        "id": "demo-bob-prod",
        "subject_kind": "user",
        "subject": "bob",
        "role": "view",
        "clusters": ["prod"],
        "reason": "demo: on-call reads prod",
    },
]
CERT_TTL = dt.timedelta(hours=24)


@dataclass
class Demo:
    """Everything `kubegate demo` runs; an async context manager (used by the tests too)."""

    directory: Path
    host: str = "127.0.0.1"
    edge_port: int = 0
    admin_port: int = 0
    relay_idle: dt.timedelta = dt.timedelta(hours=8)
    control: ControlPlaneService | None = None
    sims: dict[str, Any] = field(default_factory=dict)
    relays: dict[str, Any] = field(default_factory=dict)
    kubeconfigs: dict[str, Path] = field(default_factory=dict)

    @property
    def admin_conf(self) -> Path:
        return self.directory / ADMIN_CONF

    async def start(self) -> None:
        from ops.sim.simulator import Simulator

        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / READY_JSON).unlink(missing_ok=True)
        self.control = ControlPlaneService(
            Settings(
                data_dir=self.directory / "controlplane",
                host=self.host,
                edge_port=self.edge_port,
                admin_port=self.admin_port,
            )
        )
        await self.control.start()
        for name in CLUSTERS:
            sim = Simulator(self.directory / "clusters" / name, name=name)
            await sim.__aenter__()
            self.sims[name] = sim
        await asyncio.to_thread(self._seed)
        for name, sim in self.sims.items():
            self.relays[name] = await self._start_relay(name, sim)
        await self._seed_workloads()
        await self._write_kubeconfigs()
        shutil.copy(self.control.data_dir / ADMIN_CONF, self.admin_conf)
        self._write_ready()

    async def _start_relay(self, cluster: str, sim: Any) -> Any:
        from relay.service import RelayService, RelaySettings

        cred = await self.control.relay_credentials(cluster)
        creds_file = cred.save(self.directory / "clusters" / cluster / "relay.creds")
        relay = RelayService(
            RelaySettings(
                cluster=cluster,
                nats_url=self.control.nats_url,
                nats_creds=str(creds_file),
                kubeconfig=str(sim.kubeconfig_path),
                idle=self.relay_idle,
            )
        )
        await relay.start()
        return relay

    def _seed(self) -> None:
        """Groups, users, clusters and grants, each only if missing (restarts add nothing)."""
        plane = self.control.control
        run = uuid.uuid4().hex[:8]

        def cmd(what: str) -> dict[str, str]:
            return {"actor": "demo", "command_id": f"demo-seed-{what}-{run}"}

        for group, description in GROUPS.items():
            if plane.find(aggregates.Group, group) is None:
                plane.create_group(group, description=description, **cmd(f"group-{group}"))
        for user, spec in USERS.items():
            if plane.find(aggregates.User, user) is None:
                plane.register_user(
                    user,
                    groups=spec["groups"],
                    display_name=spec["display_name"],
                    **cmd(f"user-{user}"),
                )
        for cluster, labels in CLUSTERS.items():
            if plane.find(aggregates.Cluster, cluster) is None:
                plane.register_cluster(cluster, labels=labels, **cmd(f"cluster-{cluster}"))
        for grant in GRANTS:
            if plane.find(aggregates.Grant, grant["id"]) is None:
                spec = {k: v for k, v in grant.items() if k != "id"}
                plane.issue_grant(grant["id"], **spec, **cmd(f"grant-{grant['id']}"))

    async def _seed_workloads(self) -> None:
        """A namespace `demo` with a small deployment in each cluster, so there is something
        to look at."""
        from kubernetes_asyncio import client, config

        for sim in self.sims.values():
            cfg = client.Configuration()
            await config.load_kube_config(str(sim.kubeconfig_path), client_configuration=cfg)
            async with client.ApiClient(cfg) as api:
                core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
                with contextlib.suppress(client.ApiException):
                    await core.create_namespace({"metadata": {"name": "demo"}})
                with contextlib.suppress(client.ApiException):
                    await apps.create_namespaced_deployment(
                        "demo",
                        {
                            "metadata": {"name": "web", "labels": {"app": "web"}},
                            "spec": {
                                "replicas": 2,
                                "selector": {"matchLabels": {"app": "web"}},
                                "template": {
                                    "metadata": {"labels": {"app": "web"}},
                                    "spec": {
                                        "containers": [{"name": "web", "image": "nginx:1.27"}]
                                    },
                                },
                            },
                        },
                    )

    async def _write_kubeconfigs(self) -> None:
        control = self.control
        for user in USERS:
            clusters = control.edge.policy.clusters_for(user)
            issued = control.ca.issue_client(user, CERT_TTL, now=utcnow())
            await asyncio.to_thread(
                control.control.issue_certificate,
                issued.serial,
                actor="demo",
                command_id=f"demo-cert-{issued.serial}",
                user=user,
                not_before=issued.not_before,
                not_after=issued.not_after,
                fingerprint=issued.fingerprint,
                clusters=clusters,
            )
            config = kcfg.build(
                user=user,
                edge_url=control.edge_url,
                ca_pem=control.ca.cert_pem,
                cert=issued,
                clusters=clusters,
            )
            path = self.directory / f"{user}.kubeconfig"
            path.write_text(kcfg.render(config))
            path.chmod(0o600)
            self.kubeconfigs[user] = path

    def _write_ready(self) -> None:
        control = self.control
        ready = {
            "nats_url": control.nats_url,
            "edge_url": control.edge_url,
            "admin_url": control.admin_url,
            "admin_config": str(self.admin_conf),
            "kubeconfigs": {u: str(p) for u, p in self.kubeconfigs.items()},
            "clusters": {n: str(s.kubeconfig_path) for n, s in self.sims.items()},
        }
        tmp = self.directory / (READY_JSON + ".tmp")
        tmp.write_text(json.dumps(ready, indent=2) + "\n")
        tmp.replace(self.directory / READY_JSON)

    def banner(self) -> str:
        d = self.directory
        return "\n".join(
            [
                "kubegate demo is running: NATS, control plane, edge, clusters dev and prod, "
                "one relay each.",
                f"  edge:      {self.control.edge_url}",
                f"  admin API: {self.control.admin_url}",
                "",
                "Try:",
                f"  kubectl --kubeconfig {d}/alice.kubeconfig --context dev get pods -n demo",
                f"  kubectl --kubeconfig {d}/alice.kubeconfig --context dev create deployment "
                "api --image=nginx -n demo",
                f"  kubectl --kubeconfig {d}/bob.kubeconfig --context prod delete deployment "
                "web -n demo    # 403: bob only views prod",
                f"  kubectl --kubeconfig {d}/admin.kubeconfig --context prod exec -n demo "
                "deploy/web -- sh -c 'echo hello from prod'",
                f"  export KUBEGATE_CONFIG={d}/admin.conf",
                '  kubegate audit sql "SELECT user, verb, resource, status FROM kubectl_events '
                'ORDER BY seq DESC LIMIT 10"',
                "  kubegate revoke --user alice --reason demo    # cuts alice's streams at once",
                "Stop with Ctrl-C.",
            ]
        )

    async def stop(self) -> None:
        (self.directory / READY_JSON).unlink(missing_ok=True)
        for relay in self.relays.values():
            with contextlib.suppress(Exception):
                await relay.stop()
        for sim in self.sims.values():
            with contextlib.suppress(Exception):
                await sim.__aexit__(None, None, None)
        if self.control is not None:
            await self.control.stop()

    async def __aenter__(self) -> Demo:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
