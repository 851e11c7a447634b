"""Relays come and go: replicas share a cluster's requests, a killed relay fails its streams
at the edge instead of hanging them, a restarted one serves again, a relay whose API server is
down answers with a clean error, and one whose policy is stale refuses to serve."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client

from broker.errors import NoRelayError, PeerLostError, RemoteStreamError
from broker.transport import EdgeClient
from domain import events as ev
from tests.relay.conftest import Policy, SimAdmin, SimRunner, new_relay
from tests.relay.helpers import open_watch, request
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0


async def test_two_replicas_share_requests_and_provision_once(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user = await policy.granted_user()
    async with new_relay(nc, sim, cluster) as one, new_relay(nc, sim, cluster) as two:
        served: Counter[str] = Counter()

        async def one_request() -> None:
            stream = await edge.open(
                cluster, method="GET", path="/api/v1/namespaces", user=user, has_body=False
            )
            async with stream:
                assert (await stream.response_head()).status == 200
                _ = [c async for c in stream]
            served[stream.relay_id or ""] += 1

        await asyncio.gather(*(one_request() for _ in range(24)))
        ids = {f"r/{cluster}/{one.relay_id}", f"r/{cluster}/{two.relay_id}"}
        assert set(served) == ids, served  # both replicas took some

    logged = await policy.events_of("serviceaccount", f"{cluster}:{user}")
    assert [type(e).__name__ for e in logged] == ["ServiceAccountProvisioned"]
    relays = [e for e in await policy.events_of("cluster", cluster) if hasattr(e, "relay_id")]
    connected = sorted(e.relay_id for e in relays if isinstance(e, ev.RelayConnected))
    disconnected = sorted(e.relay_id for e in relays if isinstance(e, ev.RelayDisconnected))
    assert connected == disconnected == sorted([one.relay_id, two.relay_id])
    assert all(e.relay_id.startswith(f"relay-{cluster}-") for e in relays)


class RelayProcess:
    """`kubegate relay` as a real process (so it can be killed)."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "relay", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def banner(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"relay exited ({self.proc.wait()}): {err[-2000:]}")
        return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def processes() -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for p in started:
        p.close()


async def _start_process(processes: list[RelayProcess], *args: str) -> RelayProcess:
    p = RelayProcess(*args)
    processes.append(p)
    line = await asyncio.to_thread(p.banner)
    assert "serving cluster" in line, line
    return p


async def test_killed_relay_fails_the_watch_and_a_restarted_one_serves(
    nats_url: str, edge: EdgeClient, sim: SimRunner, policy: Policy, processes: list[RelayProcess]
) -> None:
    cluster, user = await policy.granted_user()
    args = ("--cluster", cluster, "--nats", nats_url, "--kubeconfig", sim.kubeconfig,
            "--log-level", "warning")  # fmt: skip
    first = await _start_process(processes, *args)
    watch = await open_watch(edge, cluster, user, "/api/v1/namespaces/default/configmaps")
    async with watch:
        assert (await asyncio.wait_for(watch.response_head(), WAIT)).status == 200
        first.kill()
        with pytest.raises(PeerLostError):
            while await asyncio.wait_for(watch.read(), WAIT) is not None:
                pass
    with pytest.raises(NoRelayError):
        await request(edge, cluster, user, "GET", "/api/v1/namespaces")

    await _start_process(processes, *args)
    again = await request(edge, cluster, user, "GET", "/api/v1/namespaces")
    assert again.status == 200, again.body


async def test_cli_serves_metrics_and_health(
    nats_url: str, edge: EdgeClient, sim: SimRunner, policy: Policy, processes: list[RelayProcess]
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster, user = await policy.granted_user()
    await _start_process(
        processes, "--cluster", cluster, "--nats", nats_url, "--kubeconfig", sim.kubeconfig,
        "--log-level", "warning", "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
    )  # fmt: skip
    assert (await request(edge, cluster, user, "GET", "/api/v1/namespaces")).status == 200
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
    assert 'kubegate_relay_requests_total{method="GET",outcome="200"} 1.0' in text
    assert "kubegate_relay_jit_provisioning_total" in text
    assert "kubegate_relay_upstream_head_seconds_bucket" in text


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "relay", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_cli_start_errors_are_one_line(nats_url: str, sim: SimRunner, tmp_path: Path) -> None:
    no_nats = await asyncio.to_thread(
        _run_cli, "--cluster", "x", "--nats", f"nats://127.0.0.1:{_free_port()}",
        "--kubeconfig", sim.kubeconfig, "--log-level", "critical",
    )  # fmt: skip
    assert no_nats.returncode == 3
    assert no_nats.stderr.startswith("error: cannot reach NATS at nats://127.0.0.1:")
    assert no_nats.stderr.count("\n") == 1
    assert "Traceback" not in no_nats.stderr

    dead = tmp_path / "dead.kubeconfig"
    text = await asyncio.to_thread(Path(sim.kubeconfig).read_text)
    dead.write_text(text.replace(sim.sim.url, f"https://127.0.0.1:{_free_port()}"))
    no_api = await asyncio.to_thread(
        _run_cli, "--cluster", "x", "--nats", nats_url, "--kubeconfig", str(dead),
        "--log-level", "critical",
    )  # fmt: skip
    assert no_api.returncode == 3
    assert no_api.stderr.startswith("error: cannot reach the kube-apiserver at https://127.0.0.1:")
    assert no_api.stderr.count("\n") == 1, no_api.stderr
    assert "Traceback" not in no_api.stderr

    short = await asyncio.to_thread(_run_cli, "--cluster", "x", "--nats", nats_url, "--idle", "30s")
    assert short.returncode == 2
    assert "shorter than 1m" in short.stderr


async def test_api_server_down_gives_a_clean_upstream_error(
    nc: Client, edge: EdgeClient, policy: Policy, tmp_path: Path
) -> None:
    own = SimRunner(tmp_path / "sim")
    try:
        cluster, user = await policy.granted_user()
        async with new_relay(nc, own, cluster):
            assert (await request(edge, cluster, user, "GET", "/api/v1/namespaces")).status == 200
            own.stop()
            with pytest.raises(RemoteStreamError) as failed:
                await request(edge, cluster, user, "GET", "/api/v1/namespaces")
            assert failed.value.code == "upstream"
            assert "kube-apiserver unreachable" in failed.value.message
            assert "\n" not in failed.value.message
            watch = await open_watch(edge, cluster, user, "/api/v1/namespaces/default/pods")
            with pytest.raises(RemoteStreamError):
                await asyncio.wait_for(watch.response_head(), WAIT)
    finally:
        own.thread.close()


async def test_stale_policy_refuses_to_serve(
    nc: Client, edge: EdgeClient, sim: SimRunner, policy: Policy
) -> None:
    cluster, user = await policy.granted_user()
    async with new_relay(nc, sim, cluster, staleness_bound_s=0.0):
        with pytest.raises(RemoteStreamError) as refused:
            await request(edge, cluster, user, "GET", "/api/v1/namespaces")
        assert refused.value.code == "overloaded"
        assert "event log" in refused.value.message


async def test_shutdown_lets_in_flight_streams_finish(
    nc: Client, edge: EdgeClient, sim: SimRunner, policy: Policy
) -> None:
    cluster, user = await policy.granted_user()
    relay = new_relay(nc, sim, cluster, drain_s=20.0)
    await relay.start()
    try:
        stream = await edge.open(
            cluster,
            method="GET",
            path="/api/v1/namespaces/default/configmaps",
            query="watch=true&timeoutSeconds=1",
            user=user,
            has_body=False,
        )
        assert (await asyncio.wait_for(stream.response_head(), WAIT)).status == 200
        stopping = asyncio.create_task(relay.stop())
        await eventually(relay.draining.is_set, "the relay to leave the queue group")
        with pytest.raises(NoRelayError):  # new requests go elsewhere (here: nowhere)
            await request(edge, cluster, user, "GET", "/api/v1/namespaces")
        rest = [c async for c in stream]  # ends normally: the server's timeout, not an abort
        assert stream.failure is None, (stream.failure, rest)
        await asyncio.wait_for(stopping, WAIT)
    finally:
        await relay.stop()
