"""The whole path with real parts: kubectl -> edge (mutual TLS, policy) -> NATS -> relay (its
own least-privilege NATS user) -> simulator, as the user's just-in-time service account."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge import kubeconfig as kcfg
from ops.controlplane import ControlPlaneService, Settings
from relay.service import RelayService, RelaySettings
from tests import tools
from tests.relay.conftest import SimRunner
from tests.support import Kubectl

pytestmark = pytest.mark.e2e


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[ControlPlaneService]:
    service = ControlPlaneService(Settings(data_dir=tmp_path / "cp"))
    await service.start()
    yield service
    await service.stop()


def _cmd(what: str) -> dict[str, str]:
    return {"actor": "test", "command_id": f"{what}-{uuid.uuid4().hex[:8]}"}


async def test_kubectl_through_edge_and_relay(
    control: ControlPlaneService, sim: SimRunner, tmp_path: Path
) -> None:
    try:
        binary = tools.kubectl_133()
    except tools.ToolUnavailableError as exc:
        pytest.skip(str(exc))
    cluster, user, ns = "e2e", "alice", f"team-{uuid.uuid4().hex[:6]}"
    plane = control.control
    assert plane is not None
    await asyncio.to_thread(plane.register_user, user, **_cmd("user"))
    await asyncio.to_thread(plane.register_cluster, cluster, **_cmd("cluster"))
    grant = "alice-edit"
    await asyncio.to_thread(
        plane.issue_grant,
        grant,
        subject_kind="user",
        subject=user,
        role="edit",
        clusters=[cluster],
        namespaces=[ns],
        **_cmd("grant"),
    )
    creds = (await control.relay_credentials(cluster)).save(tmp_path / "relay.json")
    admin = Kubectl(binary, Path(sim.kubeconfig), tmp_path / "admin-cache")
    await asyncio.to_thread(admin, "create", "namespace", ns)

    relay = RelayService(
        RelaySettings(
            cluster=cluster,
            nats_url=control.nats_url,
            nats_creds=str(creds),
            kubeconfig=sim.kubeconfig,
        )
    )
    await relay.start()
    try:
        now = dt.datetime.now(dt.UTC)
        issued = control.ca.issue_client(user, dt.timedelta(hours=1), now=now)
        await asyncio.to_thread(
            plane.issue_certificate,
            issued.serial,
            user=user,
            not_before=issued.not_before,
            not_after=issued.not_after,
            fingerprint=issued.fingerprint,
            clusters=[cluster],
            **_cmd("cert"),
        )
        config = kcfg.build(
            user=user,
            edge_url=control.edge_url,
            ca_pem=control.ca.cert_pem,
            cert=issued,
            clusters=[cluster],
        )
        path = tmp_path / "alice.kubeconfig"
        path.write_text(kcfg.render(config))
        kubectl = Kubectl(binary, path, tmp_path / "cache")

        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "box", "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1h"]}]},
        }
        await asyncio.to_thread(kubectl, "apply", "-f", "-", stdin=json.dumps(pod))
        await asyncio.to_thread(
            kubectl, "-n", ns, "wait", "--for=condition=Ready", "pod/box", "--timeout=30s"
        )
        for websockets in ("true", "false"):  # WebSocket, then SPDY
            kubectl.env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = websockets
            ran = await asyncio.to_thread(
                kubectl.run, "-n", ns, "exec", "box", "--", "sh", "-c", "echo hi; exit 3",
                check=False,
            )  # fmt: skip
            assert ran.returncode == 3, ran.stderr
            assert ran.stdout == "hi\n"

        accounts = await asyncio.to_thread(
            admin, "-n", "kubegate-system", "get", "serviceaccounts", "-o", "name"
        )
        assert "serviceaccount/kg-alice-" in accounts

        denied = await asyncio.to_thread(kubectl.run, "-n", "default", "get", "pods", check=False)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr

        await asyncio.to_thread(plane.revoke_grant, grant, **_cmd("revoke"))
        gone = await asyncio.to_thread(kubectl.run, "-n", ns, "get", "pods", check=False)
        assert gone.returncode != 0 and "Forbidden" in gone.stderr
    finally:
        await relay.stop()
