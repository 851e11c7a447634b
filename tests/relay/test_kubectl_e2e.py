"""The whole path with real parts: kubectl -> edge (mutual TLS, policy) -> NATS -> relay (its
own least-privilege NATS user) -> simulator, as the user's just-in-time service account."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from domain.control import ControlPlane
from edge import kubeconfig as kcfg
from ops.controlplane import ControlPlaneService, Settings
from relay.service import RelayService, RelaySettings
from tests import tools
from tests.relay.conftest import SimRunner
from tests.support import Kubectl, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[ControlPlaneService]:
    service = ControlPlaneService(Settings(data_dir=tmp_path / "cp"))
    await service.start()
    yield service
    await service.stop()


def _cmd(what: str) -> dict[str, str]:
    return {"actor": "test", "command_id": f"{what}-{uuid.uuid4().hex[:8]}"}


async def _seed(plane: ControlPlane, cluster: str, user: str, ns: str) -> str:
    """`user` with edit on `ns` of `cluster`; returns the grant id."""
    await asyncio.to_thread(plane.register_user, user, **_cmd("user"))
    await asyncio.to_thread(plane.register_cluster, cluster, **_cmd("cluster"))
    grant = f"{user}-edit"
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
    return grant


async def _kubectl_for(
    control: ControlPlaneService, binary: Path, user: str, cluster: str, tmp_path: Path
) -> Kubectl:
    """A real kubectl with a kubegate kubeconfig for `user` (its certificate recorded)."""
    plane = control.control
    assert plane is not None and control.ca is not None
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
    path = tmp_path / f"{user}.kubeconfig"
    path.write_text(kcfg.render(config))
    return Kubectl(binary, path, tmp_path / f"cache-{user}")


async def _start_relay(
    control: ControlPlaneService,
    sim: SimRunner,
    cluster: str,
    creds: Path,
    *,
    clock: Callable[[], dt.datetime] | None = None,
    **settings: Any,
) -> RelayService:
    """A started relay for `cluster` in front of `sim` (extra `RelaySettings` as keywords)."""
    relay = RelayService(
        RelaySettings(
            cluster=cluster,
            nats_url=control.nats_url,
            nats_creds=str(creds),
            kubeconfig=sim.kubeconfig,
            **settings,
        ),
        **({"clock": clock} if clock is not None else {}),
    )
    await relay.start()
    return relay


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
    grant = await _seed(plane, cluster, user, ns)
    creds = (await control.relay_credentials(cluster)).save(tmp_path / "relay.json")
    admin = Kubectl(binary, Path(sim.kubeconfig), tmp_path / "admin-cache")
    await asyncio.to_thread(admin, "create", "namespace", ns)

    relay = await _start_relay(control, sim, cluster, creds)
    try:
        kubectl = await _kubectl_for(control, binary, user, cluster, tmp_path)

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


class FastClock:
    """A cluster's clock running `factor` times faster than the wall clock."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.start = dt.datetime.now(dt.UTC)
        self._t0 = time.monotonic()

    def __call__(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=(time.monotonic() - self._t0) * self.factor)


async def test_watch_lives_through_minutes_of_cluster_time(
    control: ControlPlaneService, tmp_path: Path
) -> None:
    """`kubectl get -w` held through twelve minutes of the cluster's time (a 60x clock for the
    simulator and the relay): its JIT token expires and is renewed, idle sweeps run every
    simulated minute, and the quiet watch is neither cut nor its account swept; closed, the
    account goes idle and is swept as usual."""
    try:
        binary = tools.kubectl_133()
    except tools.ToolUnavailableError as exc:
        pytest.skip(str(exc))
    clock = FastClock(60)
    sim = SimRunner(tmp_path / "sim", clock=clock)
    cluster, user, ns = "slow", "wanda", f"team-{uuid.uuid4().hex[:6]}"
    plane = control.control
    assert plane is not None
    await _seed(plane, cluster, user, ns)
    creds = (await control.relay_credentials(cluster)).save(tmp_path / "relay.json")
    admin = Kubectl(binary, Path(sim.kubeconfig), tmp_path / "admin-cache")
    await asyncio.to_thread(admin, "create", "namespace", ns)
    relay = await _start_relay(
        control, sim, cluster, creds, clock=clock,
        idle=dt.timedelta(minutes=1), token_ttl=dt.timedelta(minutes=10),
        sweep_interval=dt.timedelta(seconds=0.5),
    )  # fmt: skip
    watch = None
    try:
        wanda = await _kubectl_for(control, binary, user, cluster, tmp_path)

        def account_uid() -> str:
            found = admin.run("-n", "kubegate-system", "get", "serviceaccounts", "-o", "json",
                              check=False)  # fmt: skip
            items = json.loads(found.stdout or "{}").get("items", [])
            mine = [a for a in items if a["metadata"]["name"].startswith(f"kg-{user}-")]
            return ",".join(a["metadata"]["uid"] for a in mine)

        await asyncio.to_thread(wanda, "-n", ns, "create", "configmap", "first")
        before = await asyncio.to_thread(account_uid)
        assert before, "the first request provisions wanda's account"
        watch = await asyncio.create_subprocess_exec(
            str(binary), "-n", ns, "get", "configmaps", "-w", "--output-watch-events",
            env=wanda.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        seen: list[str] = []

        async def read(stream: asyncio.StreamReader) -> None:
            while line := await stream.readline():
                seen.append(line.decode())

        assert watch.stdout is not None
        reader = asyncio.create_task(read(watch.stdout))
        started = clock()
        while clock() - started < dt.timedelta(minutes=12):
            await asyncio.sleep(0.5)
            assert watch.returncode is None, f"the watch ended: {seen}"
        # a token issued before the wait has expired by now: this request needs a new one
        await asyncio.to_thread(wanda, "-n", ns, "create", "configmap", "late")
        await asyncio.to_thread(
            wait_for, lambda: any("late" in line for line in seen), "the watch to see `late`"
        )
        assert watch.returncode is None
        assert await asyncio.to_thread(account_uid) == before, "swept while its watch was open"
        watch.terminate()
        await asyncio.wait_for(watch.wait(), 10)
        await reader
        await asyncio.to_thread(
            wait_for, lambda: account_uid() == "", "the idle account to be swept after the watch"
        )
    finally:
        if watch is not None and watch.returncode is None:
            watch.kill()
            await watch.wait()
        await relay.stop()
        sim.close()
