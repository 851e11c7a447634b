"""Relays fail and come back: a killed relay ends its watches cleanly (no hang), a cluster with
no relay answers a readable 503, and a restarted relay serves again. Also a Kubernetes API
client (kubernetes-asyncio) through the edge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config, watch

from relay.service import RelayService, RelaySettings
from tests.e2e.conftest import RunningDemo, as_user, popen
from tests.support import wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _relay_process(demo: RunningDemo, tmp_path: Path) -> subprocess.Popen[bytes]:
    cred = demo.thread.run(demo.demo.control.relay_credentials("dev"))
    creds = cred.save(tmp_path / "dev.creds")
    return subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "relay", "--cluster", "dev", "--nats",
         demo.demo.control.nats_url, "--creds", str(creds), "--kubeconfig",
         str(demo.sim_kubeconfig("dev")), "--metrics-port", "0"],
        cwd=REPO,
        stdout=open(tmp_path / 'relay.log', 'w'),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _start_inprocess_relay(demo: RunningDemo) -> RelayService:
    async def start() -> RelayService:
        cred = await demo.demo.control.relay_credentials("dev")
        creds = cred.save(demo.dir / "clusters" / "dev" / "relay.creds")
        relay = RelayService(
            RelaySettings(
                cluster="dev",
                nats_url=demo.demo.control.nats_url,
                nats_creds=str(creds),
                kubeconfig=str(demo.sim_kubeconfig("dev")),
            )
        )
        await relay.start()
        return relay

    return demo.thread.run(start())


def test_killed_relay_ends_the_watch_and_a_new_one_serves(
    demo: RunningDemo, namespace: str, tmp_path: Path
) -> None:
    alice = as_user(demo, "alice", tmp_path)
    ours = demo.demo.relays["dev"].relay_id

    def spare_joined() -> list:
        sql = (
            "SELECT relay_id FROM cluster_events WHERE type = 'RelayConnected' "
            "AND cluster = 'dev' AND relay_id != ? AND time > now() - INTERVAL 1 MINUTE"
        )
        return demo.audit(sql, [ours])

    spare = _relay_process(demo, tmp_path)
    try:
        # Let the spare relay join, then take the demo's own dev relay away: the spare serves.
        wait_for(spare_joined, "the spare relay to join", deadline=60)
        demo.thread.run(demo.demo.relays.pop("dev").stop())
        watch_proc = popen(alice, "--context", "dev", "-n", namespace, "get", "cm", "-w")
        assert watch_proc.stdout is not None
        head = watch_proc.stdout.readline() + watch_proc.stdout.readline()
        assert "kube-root-ca.crt" in head, watch_proc.stderr.read() if watch_proc.stderr else ""
        os.killpg(spare.pid, signal.SIGKILL)
        spare.wait(10)
        started = time.monotonic()
        try:
            watch_proc.wait(30)
        except subprocess.TimeoutExpired:
            watch_proc.kill()
            pytest.fail("kubectl get -w hung after its relay was killed")
        assert time.monotonic() - started < 30

        # No relay at all: a readable 503 naming the cluster.
        none = alice.run("--context", "dev", "-n", namespace, "get", "cm", check=False)
        assert none.returncode == 1
        assert "cluster dev has no relay connected" in none.stderr

        # A relay comes back: requests work again.
        demo.demo.relays["dev"] = _start_inprocess_relay(demo)
        assert "kube-root-ca.crt" in alice("--context", "dev", "-n", namespace, "get", "cm")
    finally:
        if spare.poll() is None:
            os.killpg(spare.pid, signal.SIGKILL)
        if "dev" not in demo.demo.relays:
            demo.demo.relays["dev"] = _start_inprocess_relay(demo)


async def test_kubernetes_asyncio_client_through_the_edge(demo: RunningDemo) -> None:
    cfg = client.Configuration()
    await config.load_kube_config(
        str(demo.kubeconfig("admin")), context="prod", client_configuration=cfg
    )
    async with client.ApiClient(cfg) as api:
        core = client.CoreV1Api(api)
        name = f"ka-{os.getpid()}"
        await core.create_namespaced_config_map("demo", {"metadata": {"name": name}})
        w = watch.Watch()
        async for event in w.stream(
            core.list_namespaced_config_map,
            "demo",
            field_selector=f"metadata.name={name}",
            timeout_seconds=10,
        ):
            assert event["type"] == "ADDED" and event["object"].metadata.name == name
            w.stop()
            break
        else:
            pytest.fail("the watch ended without the ADDED event")
        got = await core.read_namespaced_config_map(name, "demo")
        assert got.metadata.name == name
        await core.delete_namespaced_config_map(name, "demo")
