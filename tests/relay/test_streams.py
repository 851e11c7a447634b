"""Long-running answers through the relay: watches flushed as events happen, exec over a
WebSocket tunnel, and upgrade refusals passed back unchanged."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from broker import subjects
from broker.transport import EdgeClient
from tests.relay.conftest import Policy, SimAdmin, SimRunner, new_relay
from tests.relay.helpers import WsReader, open_watch, request, websocket_headers, ws_frame
from tests.support import eventually

WAIT = 30.0
"""Upper bound for a single read (a hang guard, not a timing assertion)."""


async def _setup(policy: Policy, admin: SimAdmin, role: str = "edit") -> tuple[str, str, str]:
    cluster, user, ns = policy.name("c"), policy.name("dev"), policy.name("ns")
    status, body = await admin.call(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
    )
    assert status == 201, body
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(policy.name("g"), user, role, cluster, namespaces=(ns,))
    return cluster, user, ns


async def test_watch_streams_events_as_they_happen(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user, ns = await _setup(policy, admin, "view")
    async with new_relay(nc, sim, cluster):
        watch = await open_watch(edge, cluster, user, f"/api/v1/namespaces/{ns}/configmaps")
        async with watch:
            head = await asyncio.wait_for(watch.response_head(), WAIT)
            assert head.status == 200
            buffered = b""
            for i in range(3):
                name = f"cm-{i}"
                status, body = await admin.call(
                    "POST",
                    f"/api/v1/namespaces/{ns}/configmaps",
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}},
                )
                assert status == 201, body
                # the event arrives while the watch is still open, before anything else happens
                while f'"name":"{name}"'.encode() not in buffered.replace(b" ", b""):
                    chunk = await asyncio.wait_for(watch.read(), WAIT)
                    assert chunk is not None, "the watch ended"
                    buffered += chunk
            lines = [json.loads(x) for x in buffered.splitlines() if x.strip()]
            added = [e["object"]["metadata"]["name"] for e in lines if e["type"] == "ADDED"]
            assert [n for n in added if n.startswith("cm-")] == ["cm-0", "cm-1", "cm-2"]
            assert not watch.closed


async def _running_pod(edge: EdgeClient, cluster: str, user: str, ns: str, admin: SimAdmin) -> str:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "box"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
    }
    made = await request(
        edge, cluster, user, "POST", f"/api/v1/namespaces/{ns}/pods", body=json.dumps(pod).encode()
    )
    assert made.status == 201, made.body

    async def running() -> bool:
        found = await admin.get(f"/api/v1/namespaces/{ns}/pods/box")
        return bool(found) and found.get("status", {}).get("phase") == "Running"

    await eventually(running, "the pod to run", within=WAIT)
    return "box"


async def test_exec_over_websocket_is_a_raw_tunnel_with_the_exit_code(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user, ns = await _setup(policy, admin, "edit")
    async with new_relay(nc, sim, cluster):
        pod = await _running_pod(edge, cluster, user, ns, admin)
        query = urlencode(
            [("command", "sh"), ("command", "-c"), ("command", "read x; echo got $x; exit 3"),
             ("stdin", "true"), ("stdout", "true"), ("stderr", "true")]
        )  # fmt: skip
        stream = await edge.open(
            cluster,
            method="GET",
            path=f"/api/v1/namespaces/{ns}/pods/{pod}/exec",
            query=query,
            headers=websocket_headers("v5.channel.k8s.io"),
            user=user,
        )
        async with stream:
            head = await asyncio.wait_for(stream.response_head(), WAIT)
            assert head.status == 101, head
            protocol = {k.lower(): v for k, v in head.headers}["sec-websocket-protocol"]
            assert protocol == "v5.channel.k8s.io"
            await stream.send(ws_frame(0x2, b"\x00hello\n"))  # stdin, through the tunnel
            reader = WsReader()
            channels: dict[int, bytes] = {}
            closed = False
            while not closed:
                chunk = await asyncio.wait_for(stream.read(), WAIT)
                if chunk is None:
                    break
                for opcode, payload in reader.feed(chunk):
                    if opcode == 0x8:
                        closed = True
                    elif opcode == 0x2 and payload:
                        channels[payload[0]] = channels.get(payload[0], b"") + payload[1:]
        assert channels.get(1) == b"got hello\n"
        status = json.loads(channels[3])
        assert status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "3"}


async def test_refused_upgrade_is_passed_back_unchanged(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user, ns = await _setup(policy, admin, "edit")
    async with new_relay(nc, sim, cluster):
        pod = await _running_pod(edge, cluster, user, ns, admin)
        stream = await edge.open(
            cluster,
            method="GET",
            path=f"/api/v1/namespaces/{ns}/pods/{pod}/exec",
            query="command=true&stdout=true",
            headers=websocket_headers("v99.unknown.k8s.io"),
            user=user,
        )
        async with stream:
            head = await asyncio.wait_for(stream.response_head(), WAIT)
            body = b"".join([c async for c in stream])
        assert head.status == 403
        headers = {k.lower(): v for k, v in head.headers}
        assert int(headers["content-length"]) == len(body)
        # kubelet's own words, byte for byte (kubectl shows them, or falls back to SPDY)
        assert body.startswith(b"unable to upgrade: requested protocol(s) are not supported")


async def test_edge_cancel_closes_the_upstream_watch(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user, ns = await _setup(policy, admin, "admin")

    async def secret_watchers() -> int:
        async def count() -> int:
            return sum(
                1
                for key, watchers in sim.sim.store._watchers.items()
                if key.endswith("secrets")
                for w in watchers
                if w.namespace == ns
            )

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(count(), sim.thread.loop))

    async with new_relay(nc, sim, cluster):
        watch = await open_watch(edge, cluster, user, f"/api/v1/namespaces/{ns}/secrets")
        assert (await asyncio.wait_for(watch.response_head(), WAIT)).status == 200
        assert await secret_watchers() == 1
        await watch.cancel("client went away")
        # The simulator (aiohttp) notices a closed connection only when a write fails, so give
        # it something to write each time we look; had the relay kept the connection open, the
        # writes would succeed and the watch would live on.
        pokes = iter(range(1000))

        async def closed() -> bool:
            name = f"poke-{next(pokes)}"
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
            status, body = await admin.call("POST", f"/api/v1/namespaces/{ns}/secrets", secret)
            assert status == 201, body
            return await secret_watchers() == 0

        await eventually(closed, "the upstream watch to close", every=0.1)


async def test_a_small_answer_reaches_the_edge_as_one_frame(
    nc: Client, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user, ns = await _setup(policy, admin, "view")
    registry = CollectorRegistry()
    edge = EdgeClient(nc, subjects.edge_peer(policy.name("edge")), registry=registry)
    await edge.start()

    def frames_in() -> tuple[float | None, ...]:
        return tuple(
            registry.get_sample_value(
                "kubegate_transport_frames_total", {"role": "edge", "direction": "in", "type": t}
            )
            for t in ("head", "resp", "end")
        )

    try:
        async with new_relay(nc, sim, cluster):
            answer = await request(edge, cluster, user, "GET", f"/api/v1/namespaces/{ns}")
            assert answer.status == 200 and answer.json()["metadata"]["name"] == ns
            assert frames_in() == (1, 0, 0)  # head, body and end in one
            refused = await request(edge, cluster, user, "DELETE", f"/api/v1/namespaces/{ns}")
            assert refused.status == 403 and refused.json()["kind"] == "Status"
            assert frames_in() == (2, 0, 0)
    finally:
        await edge.close()
