"""The relay's kubernetes-asyncio client talks to its API server without consulting the
environment: no netrc lookup, no proxy variables (unless a proxy is named)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio import client as kclient
from nats.aio.client import Client

from broker.transport import EdgeClient
from relay.kube import KubeObjects, without_env_lookups
from relay.service import load_kube_configuration
from tests.relay.conftest import Policy, SimRunner, new_relay
from tests.relay.helpers import request


def _netrc_for_loopback(path: Path) -> Path:
    """A netrc with credentials for every host the simulator may answer on."""
    netrc = path / "netrc"
    netrc.write_text(
        "".join(f"machine {h} login intruder password nope\n" for h in ("127.0.0.1", "localhost"))
    )
    netrc.chmod(0o600)
    return netrc


async def _api_client(sim: SimRunner) -> kclient.ApiClient:
    return kclient.ApiClient(configuration=await load_kube_configuration(sim.kubeconfig, None))


async def test_a_netrc_entry_for_the_api_server_does_not_reach_control_calls(
    sim: SimRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETRC", str(_netrc_for_loopback(tmp_path)))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    api = await _api_client(sim)
    try:
        without_env_lookups(api)
        assert api.rest_client.pool_manager.trust_env is False
        found = await KubeObjects(api).server_version()
        assert found.get("gitVersion")
    finally:
        await api.close()


async def test_the_library_default_would_have_sent_the_netrc_credentials(
    sim: SimRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `without_env_lookups` prevents: with the library's session, aiohttp adds the netrc
    login to a call that already carries the relay's bearer token, and refuses it."""
    monkeypatch.setenv("NETRC", str(_netrc_for_loopback(tmp_path)))
    api = await _api_client(sim)
    try:
        with pytest.raises(ValueError, match="Cannot combine AUTHORIZATION header"):
            await KubeObjects(api).server_version()
    finally:
        await api.close()


async def test_a_proxy_named_in_the_environment_is_still_honoured(
    sim: SimRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    api = await _api_client(sim)
    try:
        without_env_lookups(api)
        assert api.rest_client.pool_manager.trust_env is True
    finally:
        await api.close()


async def test_a_relay_provisions_and_serves_with_a_netrc_entry_for_its_api_server(
    nc: Client,
    edge: EdgeClient,
    sim: SimRunner,
    policy: Policy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NETRC", str(_netrc_for_loopback(tmp_path)))
    cluster, user = await policy.granted_user()
    async with new_relay(nc, sim, cluster):
        answer = await request(edge, cluster, user, "GET", "/api/v1/namespaces")
    assert answer.status == 200, answer.body
