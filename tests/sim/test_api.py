"""The API surface at the HTTP level: Status bodies, discovery, pagination, watch, limits."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import urllib.parse
from collections.abc import AsyncIterator

import aiohttp
import pytest

from ops.sim import Simulator
from tests.sim.conftest import SimThread

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


class Http:
    def __init__(self, session: aiohttp.ClientSession, sim: Simulator, token: str | None) -> None:
        self.session = session
        self.base = sim.url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        headers: dict | None = None,
    ) -> tuple[int, dict, dict]:
        hdrs = {**self.headers, **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            hdrs["Content-Type"] = content_type
        async with self.session.request(method, self.base + path, data=data, headers=hdrs) as resp:
            text = await resp.read()
            try:
                parsed = json.loads(text) if text else {}
            except json.JSONDecodeError:
                parsed = {"raw": text.decode(errors="replace")}
            return resp.status, parsed, dict(resp.headers)


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[Http]:
    ctx = ssl.create_default_context(cafile=str(sim.ca_path))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        yield Http(session, sim, sim.admin_token)


@pytest.fixture
async def anonymous(sim: Simulator) -> AsyncIterator[Http]:
    ctx = ssl.create_default_context(cafile=str(sim.ca_path))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        yield Http(session, sim, None)


async def make_ns(http: Http, name: str) -> None:
    code, _, _ = await http.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert code == 201


def cm(name: str, **labels: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    }


async def test_unauthenticated_and_bad_tokens_get_401_status(anonymous: Http, http: Http) -> None:
    code, body, _ = await anonymous.request("GET", "/api/v1/namespaces")
    assert code == 401
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    anonymous.headers = {"Authorization": "Bearer not-a-token"}
    code, body, _ = await anonymous.request("GET", "/version")
    assert code == 401 and body["reason"] == "Unauthorized"
    code, body, _ = await http.request("GET", "/version")
    assert code == 200 and body["gitVersion"].startswith("v1.33")


async def test_not_found_conflict_and_already_exists(http: Http, ns_name: str) -> None:
    await make_ns(http, ns_name)
    base = f"/api/v1/namespaces/{ns_name}/configmaps"
    code, body, _ = await http.request("GET", f"{base}/nope")
    assert (code, body["reason"], body["message"]) == (
        404,
        "NotFound",
        'configmaps "nope" not found',
    )
    assert body["details"] == {"name": "nope", "kind": "configmaps"}
    code, created, _ = await http.request("POST", base, cm("a"))
    assert code == 201 and created["metadata"]["resourceVersion"]
    code, body, _ = await http.request("POST", base, cm("a"))
    assert (code, body["reason"]) == (409, "AlreadyExists")
    stale = dict(created, data={"k": "other"})
    code, _, _ = await http.request("PUT", f"{base}/a", stale)
    assert code == 200
    code, body, _ = await http.request("PUT", f"{base}/a", stale)
    assert (code, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    code, body, _ = await http.request("GET", "/apis/apps/v1/namespaces/x/widgets")
    assert (code, body["reason"]) == (404, "NotFound")
    code, body, _ = await http.request("POST", "/api/v1/namespaces/no-such-ns/configmaps", cm("x"))
    assert (code, body["message"]) == (404, 'namespaces "no-such-ns" not found')


async def test_generate_name_uid_and_timestamps(http: Http, ns_name: str) -> None:
    await make_ns(http, ns_name)
    body = {"metadata": {"generateName": "gen-"}, "data": {}}
    code, one, _ = await http.request("POST", f"/api/v1/namespaces/{ns_name}/configmaps", body)
    code2, two, _ = await http.request("POST", f"/api/v1/namespaces/{ns_name}/configmaps", body)
    assert code == code2 == 201
    assert one["metadata"]["name"].startswith("gen-") and len(one["metadata"]["name"]) == 9
    assert one["metadata"]["name"] != two["metadata"]["name"]
    assert one["metadata"]["uid"] != two["metadata"]["uid"]
    assert one["metadata"]["creationTimestamp"].endswith("Z")


async def test_bad_input_gets_status_not_traceback(http: Http, ns_name: str) -> None:
    await make_ns(http, ns_name)
    base = f"/api/v1/namespaces/{ns_name}/configmaps"
    code, body, _ = await http.request(
        "POST", base, raw=b'{"metadata": ', content_type="application/json"
    )
    assert (code, body["reason"]) == (400, "BadRequest") and "json parse error" in body["message"]
    code, body, _ = await http.request(
        "POST", base, raw=b"metadata: [unclosed", content_type="application/yaml"
    )
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body, _ = await http.request(
        "POST", base, {"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    )
    assert code == 400 and "does not match the expected API version (v1)" in body["message"]
    code, body, _ = await http.request(
        "POST", base, {"metadata": {"name": "x"}, "data": "not-a-map"}
    )
    assert code == 400 and "cannot unmarshal string" in body["message"]
    big = {"metadata": {"name": "big"}, "data": {"k": "x" * (3 * 1024 * 1024 + 10)}}
    code, body, _ = await http.request("POST", base, big)
    assert (code, body["reason"]) == (413, "RequestEntityTooLarge")
    code, body, _ = await http.request(
        "POST", base, raw=b"\x00\x01", content_type="application/octet-stream"
    )
    assert (code, body["reason"]) == (415, "UnsupportedMediaType")
    code, body, _ = await http.request(
        "POST", base, raw=b"name: yaml-ok\n", content_type="application/yaml"
    )
    assert (code, body["reason"]) == (422, "Invalid")  # no metadata.name
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    code, body, _ = await http.request(
        "POST",
        base,
        raw=b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n",
        content_type="application/yaml",
    )
    assert code == 201 and body["metadata"]["name"] == "from-yaml"
    code, body, _ = await http.request(
        "POST", base + "?fieldValidation=Strict", {"metadata": {"name": "s"}, "extra": 1}
    )
    assert code == 400 and 'strict decoding error: unknown field "extra"' in body["message"]
    code, body, headers = await http.request("POST", base, {"metadata": {"name": "w"}, "extra": 1})
    assert code == 201 and 'unknown field \\"extra\\"' in headers["Warning"]
    assert "extra" not in body


async def test_pagination_and_expired_continue(
    http: Http, sim_thread: SimThread, ns_name: str
) -> None:
    await make_ns(http, ns_name)
    base = f"/api/v1/namespaces/{ns_name}/configmaps"
    for i in range(5):
        await http.request("POST", base, cm(f"p{i}", page="yes"))
    names, token, first_rv = [], "", None
    while True:
        code, body, _ = await http.request(
            "GET",
            f"{base}?limit=2&labelSelector=page%3Dyes" + (f"&continue={token}" if token else ""),
        )
        assert code == 200
        first_rv = first_rv or body["metadata"]["resourceVersion"]
        assert body["metadata"]["resourceVersion"] == first_rv  # one consistent snapshot
        names += [i["metadata"]["name"] for i in body["items"]]
        token = body["metadata"].get("continue", "")
        if not token:
            break
        await http.request("POST", base, cm(f"late{len(names)}", page="yes"))
    assert names == [f"p{i}" for i in range(5)]
    code, body, _ = await http.request("GET", f"{base}?limit=2")
    token = body["metadata"]["continue"]
    assert body["metadata"]["remainingItemCount"] >= 1
    await http.request("POST", base, cm("after"))
    sim_thread.call(sim_thread.sim.compact)
    code, body, _ = await http.request("GET", f"{base}?limit=2&continue={token}")
    assert (code, body["reason"]) == (410, "Expired")
    assert body["metadata"]["continue"]


async def test_table_output_and_aggregated_discovery(http: Http, ns_name: str) -> None:
    await make_ns(http, ns_name)
    await http.request("POST", f"/api/v1/namespaces/{ns_name}/configmaps", cm("tab"))
    code, body, _ = await http.request(
        "GET", f"/api/v1/namespaces/{ns_name}/configmaps", headers={"Accept": TABLE}
    )
    assert code == 200 and body["kind"] == "Table"
    assert [c["name"] for c in body["columnDefinitions"]] == ["Name", "Data", "Age"]
    row = next(r for r in body["rows"] if r["cells"][0] == "tab")
    assert row["cells"][1] == 1 and row["object"]["kind"] == "PartialObjectMetadata"
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    code, body, headers = await http.request("GET", "/apis", headers={"Accept": accept})
    assert headers["Content-Type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    apps = next(i for i in body["items"] if i["metadata"]["name"] == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert {s["subresource"] for s in deploy["subresources"]} == {"scale", "status"}
    code, body, _ = await http.request("GET", "/api", headers={"Accept": "application/json"})
    assert body["kind"] == "APIVersions" and body["versions"] == ["v1"]


async def read_events(resp: aiohttp.ClientResponse, count: int) -> list[dict]:
    events = []
    while len(events) < count:
        line = await asyncio.wait_for(resp.content.readline(), 30)
        if not line:
            break
        events.append(json.loads(line))
    return events


async def test_watch_from_resource_version_with_bookmarks_and_selectors(
    http: Http, ns_name: str
) -> None:
    await make_ns(http, ns_name)
    base = f"/api/v1/namespaces/{ns_name}/configmaps"
    _, listing, _ = await http.request("GET", base)
    rv = listing["metadata"]["resourceVersion"]
    query = f"watch=1&resourceVersion={rv}&allowWatchBookmarks=true&labelSelector=team%3Dblue"
    url = f"{http.base}{base}?{query}"
    async with http.session.get(url, headers=http.headers) as resp:
        assert resp.status == 200
        await http.request("POST", base, cm("red", team="red"))
        await http.request("POST", base, cm("blue", team="blue"))
        await http.request(
            "PATCH",
            f"{base}/blue",
            {"metadata": {"labels": {"team": "green"}}},
            content_type="application/merge-patch+json",
        )
        await http.request(
            "PATCH",
            f"{base}/red",
            {"metadata": {"labels": {"team": "blue"}}},
            content_type="application/merge-patch+json",
        )
        events = []
        while len([e for e in events if e["type"] != "BOOKMARK"]) < 3 or not any(
            e["type"] == "BOOKMARK" for e in events
        ):
            events += await read_events(resp, 1)
    changes = [
        (e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"
    ]
    assert changes == [("ADDED", "blue"), ("DELETED", "blue"), ("ADDED", "red")]
    bookmark = next(e for e in events if e["type"] == "BOOKMARK")
    assert bookmark["object"]["kind"] == "ConfigMap" and int(
        bookmark["object"]["metadata"]["resourceVersion"]
    ) >= int(rv)


async def test_watch_too_old_resource_version_is_410_in_stream(
    http: Http, sim_thread: SimThread, ns_name: str
) -> None:
    await make_ns(http, ns_name)
    base = f"/api/v1/namespaces/{ns_name}/configmaps"
    _, listing, _ = await http.request("GET", base)
    await http.request("POST", base, cm("x"))
    sim_thread.call(sim_thread.sim.compact)
    url = f"{http.base}{base}?watch=true&resourceVersion={listing['metadata']['resourceVersion']}"
    async with http.session.get(url, headers=http.headers) as resp:
        assert resp.status == 200
        events = await read_events(resp, 2)
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


async def test_watch_timeout_ends_stream(http: Http, ns_name: str) -> None:
    await make_ns(http, ns_name)
    url = f"{http.base}/api/v1/namespaces/{ns_name}/configmaps?watch=1&timeoutSeconds=1"
    async with http.session.get(url, headers=http.headers) as resp:
        events = await read_events(resp, 100)
    assert [e["type"] for e in events] == ["ADDED"]  # kube-root-ca.crt, then the stream closed


async def test_namespace_deletion_terminates_then_removes_contents(
    http: Http, ns_name: str
) -> None:
    await make_ns(http, ns_name)
    await http.request(
        "POST",
        f"/api/v1/namespaces/{ns_name}/configmaps",
        {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}, "data": {}},
    )
    code, body, _ = await http.request("DELETE", f"/api/v1/namespaces/{ns_name}")
    assert code == 200 and body["status"]["phase"] == "Terminating"
    code, body, _ = await http.request(
        "POST", f"/api/v1/namespaces/{ns_name}/configmaps", cm("new")
    )
    assert code == 403 and "because it is being terminated" in body["message"]
    code, body, _ = await http.request("GET", f"/api/v1/namespaces/{ns_name}/configmaps/held")
    assert code == 200 and body["metadata"]["deletionTimestamp"]
    code, ns, _ = await http.request("GET", f"/api/v1/namespaces/{ns_name}")
    assert code == 200 and ns["status"]["phase"] == "Terminating"
    await http.request(
        "PATCH",
        f"/api/v1/namespaces/{ns_name}/configmaps/held",
        [{"op": "remove", "path": "/metadata/finalizers"}],
        content_type="application/json-patch+json",
    )
    for _ in range(300):
        code, _, _ = await http.request("GET", f"/api/v1/namespaces/{ns_name}")
        if code == 404:
            break
        await asyncio.sleep(0.05)
    assert code == 404


async def test_forbidden_status_shape(
    http: Http, sim: Simulator, sim_thread: SimThread, ns_name: str
) -> None:
    await make_ns(http, ns_name)
    await http.request(
        "POST", f"/api/v1/namespaces/{ns_name}/serviceaccounts", {"metadata": {"name": "nobody"}}
    )
    token = sim_thread.call(sim.issue_token, ns_name, "nobody")
    http.headers = {"Authorization": f"Bearer {token}"}
    code, body, _ = await http.request("GET", f"/api/v1/namespaces/{ns_name}/pods/p1")
    assert code == 403
    assert body["message"] == (
        f'pods "p1" is forbidden: User "system:serviceaccount:{ns_name}:nobody" cannot get '
        f"resource "
        f'"pods" in API group "" in the namespace "{ns_name}"'
    )
    assert body["details"] == {"name": "p1", "kind": "pods"}
    code, body, _ = await http.request("GET", "/apis")
    assert code == 200  # discovery is open to every authenticated user
    code, body, _ = await http.request("GET", "/metrics")
    assert (
        code == 403
        and body["message"]
        == f'forbidden: User "system:serviceaccount:{ns_name}:nobody" cannot get path "/metrics"'
    )


async def test_short_lived_token_expires(
    http: Http, sim: Simulator, sim_thread: SimThread, ns_name: str
) -> None:
    await make_ns(http, ns_name)
    await http.request(
        "POST", f"/api/v1/namespaces/{ns_name}/serviceaccounts", {"metadata": {"name": "brief"}}
    )
    token = sim_thread.call(sim.issue_token, ns_name, "brief", 1)
    http.headers = {"Authorization": f"Bearer {token}"}
    code, _, _ = await http.request("GET", "/version")
    assert code == 200
    for _ in range(100):
        code, _, _ = await http.request("GET", "/version")
        if code == 401:
            break
        await asyncio.sleep(0.1)
    assert code == 401


async def test_two_simulators_in_one_process(tmp_path) -> None:
    async with (
        Simulator(tmp_path / "a", name="a") as one,
        Simulator(tmp_path / "b", name="b") as two,
    ):
        assert one.url != two.url and one.admin_token != two.admin_token
        ctx = ssl.create_default_context(cafile=str(one.ca_path))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            http = Http(session, one, one.admin_token)
            code, _, _ = await http.request(
                "POST", "/api/v1/namespaces", {"metadata": {"name": "only-in-a"}}
            )
            assert code == 201
        assert one.store.get("/namespaces", ("", "only-in-a")) is not None
        assert two.store.get("/namespaces", ("", "only-in-a")) is None


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl CLI")
@pytest.mark.parametrize(
    "offer", ["TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"]
)
def test_tls13_suite_is_the_clients_first_choice(sim: Simulator, offer: str) -> None:
    """kubectl gets AES-128-GCM, as from kube-apiserver (Go), not Python's AES-256-GCM."""
    hostport = urllib.parse.urlsplit(sim.url).netloc
    out = subprocess.run(
        ["openssl", "s_client", "-connect", hostport, "-brief", "-tls1_3", "-ciphersuites", offer],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert f"Ciphersuite: {offer.split(':')[0]}" in out.stdout + out.stderr, out
