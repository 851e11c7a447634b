"""Requests through the relay run as the user's just-in-time service account, which holds the
user's grants and nothing else."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from broker.transport import EdgeClient
from relay.plans import service_account_name
from relay.service import RelayService
from tests.relay.conftest import Policy, SimAdmin, SimRunner, new_relay, relay_settings
from tests.relay.helpers import request
from tests.support import eventually

SA_NS = "kubegate-system"


async def _namespace(admin: SimAdmin, name: str) -> None:
    status, body = await admin.call(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    assert status == 201, body


async def test_edit_grant_lists_pods_as_the_jit_account(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user, ns = policy.name("c"), policy.name("alice"), policy.name("team")
    await _namespace(admin, ns)
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(policy.name("g"), user, "edit", cluster, namespaces=(ns,))
    async with new_relay(nc, sim, cluster):
        listed = await request(edge, cluster, user, "GET", f"/api/v1/namespaces/{ns}/pods")
        assert listed.status == 200, listed.body
        assert listed.json()["kind"] == "PodList"

        review = await request(
            edge,
            cluster,
            user,
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body=b'{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}',
        )
        assert review.status == 201, review.body
        sa = service_account_name(user)
        assert review.json()["status"]["userInfo"]["username"] == (
            f"system:serviceaccount:{SA_NS}:{sa}"
        )

        outside = await request(edge, cluster, user, "GET", "/api/v1/namespaces/default/pods")
        assert outside.status == 403, outside.body
        assert f"system:serviceaccount:{SA_NS}:{sa}" in outside.json()["message"]


async def test_account_bindings_and_labels_exist_and_provisioning_is_logged_once(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user = policy.name("c"), policy.name("bob")
    ns_a, ns_b = policy.name("a"), policy.name("b")
    for ns in (ns_a, ns_b):
        await _namespace(admin, ns)
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(policy.name("edit"), user, "edit", cluster, namespaces=(ns_a, ns_b))
    await policy.grant(policy.name("view"), user, "view", cluster)
    async with new_relay(nc, sim, cluster):
        answers = await asyncio.gather(
            *(
                request(edge, cluster, user, "GET", f"/api/v1/namespaces/{ns_a}/configmaps")
                for _ in range(8)
            )
        )
        assert [a.status for a in answers] == [200] * 8

    sa_name = service_account_name(user)
    sa = await admin.get(f"/api/v1/namespaces/{SA_NS}/serviceaccounts/{sa_name}")
    assert sa is not None
    labels = sa["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "kubegate"
    owner = labels["kubegate.io/owner"]
    assert sa["metadata"]["annotations"]["kubegate.io/user"] == user
    assert "kubegate.io/last-used" in sa["metadata"]["annotations"]

    selector = f"kubegate.io/owner={owner}"
    rbs = await admin.get(
        f"/apis/rbac.authorization.k8s.io/v1/rolebindings?labelSelector={selector}"
    )
    assert sorted(i["metadata"]["namespace"] for i in rbs["items"]) == sorted([ns_a, ns_b])
    assert {i["roleRef"]["name"] for i in rbs["items"]} == {"kubegate:edit"}
    crbs = await admin.get(
        f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?labelSelector={selector}"
    )
    assert [i["roleRef"]["name"] for i in crbs["items"]] == ["kubegate:view"]
    for binding in rbs["items"] + crbs["items"]:
        assert binding["subjects"][0]["name"] == sa_name
        assert binding["metadata"]["annotations"]["kubegate.io/user"] == user
    for role in ("kubegate:edit", "kubegate:view"):
        assert await admin.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}")

    logged = await policy.events_of("serviceaccount", f"{cluster}:{user}")
    provisioned = [e for e in logged if type(e).__name__ == "ServiceAccountProvisioned"]
    assert len(provisioned) == 1, logged
    assert provisioned[0].name == sa_name and provisioned[0].namespace == SA_NS
    assert sorted(provisioned[0].bindings) == sorted(
        [
            f"RoleBinding/{ns}/{i['metadata']['name']}"
            for i in rbs["items"]
            for ns in [i["metadata"]["namespace"]]
        ]
        + [f"ClusterRoleBinding/{crbs['items'][0]['metadata']['name']}"]
    )


async def test_identity_headers_from_the_frame_never_reach_the_api_server(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user = policy.name("c"), policy.name("mallory")
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(policy.name("g"), user, "view", cluster)
    smuggled = [
        ("Authorization", f"Bearer {sim.sim.admin_token}"),
        ("Impersonate-User", "kubernetes-admin"),
        ("Impersonate-Group", "system:masters"),
    ]
    async with new_relay(nc, sim, cluster):
        review = await request(
            edge,
            cluster,
            user,
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            headers=smuggled,
            body=b'{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}',
        )
        assert review.status == 201, review.body
        info = review.json()["status"]["userInfo"]
        assert info["username"] == f"system:serviceaccount:{SA_NS}:{service_account_name(user)}"
        assert "system:masters" not in info["groups"]
        # view does not write, whatever the headers claimed
        denied = await request(
            edge,
            cluster,
            user,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            headers=smuggled,
            body=b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}',
        )
        assert denied.status == 403, denied.body


async def test_user_without_access_here_is_refused_by_the_relay(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, other, user = policy.name("c"), policy.name("other"), policy.name("eve")
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.cluster(other)
    await policy.grant(policy.name("g"), user, "cluster-admin", other)
    async with new_relay(nc, sim, cluster):
        answer = await request(edge, cluster, user, "GET", "/api/v1/pods")
        assert answer.status == 403
        status = answer.json()
        assert status["kind"] == "Status" and status["reason"] == "Forbidden"
        assert cluster in status["message"]
        # nothing was made for her
    sa = service_account_name(user)
    assert await admin.get(f"/api/v1/namespaces/{SA_NS}/serviceaccounts/{sa}") is None


async def test_new_grant_takes_effect_on_the_next_request(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user, ns = policy.name("c"), policy.name("hal"), policy.name("ns")
    await _namespace(admin, ns)
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(policy.name("view"), user, "view", cluster, namespaces=(ns,))
    cm = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"%s"}}'
    path = f"/api/v1/namespaces/{ns}/configmaps"
    async with new_relay(nc, sim, cluster):
        denied = await request(edge, cluster, user, "POST", path, body=cm % b"a")
        assert denied.status == 403, denied.body  # the cluster refuses: view only
        await policy.grant(policy.name("edit"), user, "edit", cluster, namespaces=(ns,))

        async def allowed() -> bool:
            answer = await request(edge, cluster, user, "POST", path, body=cm % b"b")
            return answer.status == 201

        await eventually(allowed, "the new grant to reach the cluster")


async def test_account_deleted_behind_the_relays_back_is_made_again(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user = policy.name("c"), policy.name("ivy")
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(policy.name("g"), user, "view", cluster)
    sa_path = f"/api/v1/namespaces/{SA_NS}/serviceaccounts/{service_account_name(user)}"
    async with new_relay(nc, sim, cluster):
        assert (await request(edge, cluster, user, "GET", "/api/v1/namespaces")).status == 200
        first = await admin.get(sa_path)
        status, _ = await admin.call("DELETE", sa_path)
        assert status == 200
        # the cached token is now refused by the API server; the relay notices and starts over
        again = await request(edge, cluster, user, "GET", "/api/v1/namespaces")
        assert again.status == 200, again.body
        second = await admin.get(sa_path)
        assert second is not None and second["metadata"]["uid"] != first["metadata"]["uid"]
    logged = await policy.events_of("serviceaccount", f"{cluster}:{user}")
    assert [type(e).__name__ for e in logged] == ["ServiceAccountProvisioned"] * 2


async def test_token_is_renewed_before_it_expires(
    nc: Client, edge: EdgeClient, sim: SimRunner, policy: Policy
) -> None:
    cluster, user = policy.name("c"), policy.name("kim")
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(policy.name("g"), user, "view", cluster)
    skew = [timedelta(0)]
    relay = RelayService(
        relay_settings(sim, cluster),
        nc=nc,
        registry=CollectorRegistry(),
        clock=lambda: datetime.now(UTC) + skew[0],
    )

    def tokens() -> float:
        found = relay.registry.get_sample_value(
            "kubegate_relay_jit_provisioning_total", {"action": "token", "result": "ok"}
        )
        return found or 0.0

    async with relay:
        for _ in range(3):
            assert (await request(edge, cluster, user, "GET", "/api/v1/namespaces")).status == 200
        assert tokens() == 1.0  # cached
        skew[0] = timedelta(minutes=47)  # 1 h tokens are renewed at 80% of their life
        assert (await request(edge, cluster, user, "GET", "/api/v1/namespaces")).status == 200
        assert tokens() == 1.0
        skew[0] = timedelta(minutes=49)
        assert (await request(edge, cluster, user, "GET", "/api/v1/namespaces")).status == 200
        assert tokens() == 2.0
