"""Client certificates (CN = user, O = groups), and pod stream routing before the runtime exists."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import aiohttp
import pytest

from ops.sim import Simulator
from tests.sim.conftest import Kubectl, SimThread


async def test_client_certificate_identity(
    sim: Simulator, sim_thread: SimThread, tmp_path: Path
) -> None:
    issued = sim_thread.call(sim.issue_client_cert, "alice", ["dev-team", "system:masters"])
    (tmp_path / "c.pem").write_bytes(issued.cert_pem)
    (tmp_path / "k.pem").write_bytes(issued.key_pem)
    ctx = ssl.create_default_context(cafile=str(sim.ca_path))
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        async with session.post(
            f"{sim.url}/apis/authentication.k8s.io/v1/selfsubjectreviews", json=review
        ) as resp:
            assert resp.status == 201
            body = json.loads(await resp.read())
    info = body["status"]["userInfo"]
    assert info["username"] == "alice"
    assert info["groups"] == ["dev-team", "system:masters", "system:authenticated"]


@pytest.mark.e2e
def test_kubectl_with_client_certificate(
    sim: Simulator, sim_thread: SimThread, kubectl: Kubectl, tmp_path: Path
) -> None:
    issued = sim_thread.call(sim.issue_client_cert, "bob", ["readers"])
    config = sim.write_kubeconfig(tmp_path / "bob.kubeconfig", "bob", cert=issued)
    bob = Kubectl(kubectl.binary, config, tmp_path / "cache")
    assert (
        json.loads(bob("auth", "whoami", "-o", "json"))["status"]["userInfo"]["username"] == "bob"
    )
    denied = bob.run("get", "pods", "-n", "default", check=False)
    assert 'User "bob" cannot list resource "pods"' in denied.stderr


async def test_pod_stream_subresources_are_routed(sim: Simulator) -> None:
    ctx = ssl.create_default_context(cafile=str(sim.ca_path))
    headers = {"Authorization": f"Bearer {sim.admin_token}"}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx), headers=headers
    ) as session:
        async with session.get(f"{sim.url}/api/v1/namespaces/default/pods/missing/log") as resp:
            assert resp.status == 404
            assert json.loads(await resp.read())["message"] == 'pods "missing" not found'
