"""Revocation and idleness at the relay: accounts and bindings follow the policy, live streams
of a user left without access are cut, and idle accounts are swept."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from nats.aio.client import Client

from broker.errors import StreamAbortedError
from broker.transport import EdgeClient
from domain import events as ev
from relay.plans import service_account_name
from tests.relay.conftest import Policy, SimAdmin, SimRunner, new_relay
from tests.relay.helpers import open_watch, request
from tests.support import eventually

SA_NS = "kubegate-system"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
WAIT = 30.0


async def _namespace(admin: SimAdmin, policy: Policy, what: str) -> str:
    ns = policy.name(what)
    status, body = await admin.call(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
    )
    assert status == 201, body
    return ns


async def _sa(admin: SimAdmin, user: str) -> dict | None:
    return await admin.get(
        f"/api/v1/namespaces/{SA_NS}/serviceaccounts/{service_account_name(user)}"
    )


async def _bindings(admin: SimAdmin, owner: str) -> list[str]:
    selector = f"kubegate.io/owner={owner}"
    names = []
    for kind in ("rolebindings", "clusterrolebindings"):
        found = await admin.get(f"{RBAC}/{kind}?labelSelector={selector}")
        names += [
            f"{kind}/{i['metadata'].get('namespace', '')}/{i['roleRef']['name']}"
            for i in found["items"]
        ]
    return sorted(names)


async def _removed(policy: Policy, cluster: str, user: str) -> list[ev.ServiceAccountRemoved]:
    logged = await policy.events_of("serviceaccount", f"{cluster}:{user}")
    return [e for e in logged if isinstance(e, ev.ServiceAccountRemoved)]


async def test_revoked_grant_removes_account_and_cuts_the_live_watch(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user = policy.name("c"), policy.name("ann")
    ns = await _namespace(admin, policy, "ns")
    grant = policy.name("g")
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(grant, user, "view", cluster, namespaces=(ns,))
    async with new_relay(nc, sim, cluster):
        watch = await open_watch(edge, cluster, user, f"/api/v1/namespaces/{ns}/pods")
        async with watch:
            assert (await asyncio.wait_for(watch.response_head(), WAIT)).status == 200
            sa = await _sa(admin, user)
            assert sa is not None
            owner = sa["metadata"]["labels"]["kubegate.io/owner"]
            assert await _bindings(admin, owner) == [f"rolebindings/{ns}/kubegate:view"]

            await policy.revoke(grant)
            with pytest.raises(StreamAbortedError) as cut:
                while await asyncio.wait_for(watch.read(), WAIT) is not None:
                    pass
            assert cut.value.by_peer
            assert "access to cluster" in str(cut.value)

        await eventually(lambda: _gone(admin, user), "the account to be deleted")
        await eventually(lambda: _bindings_are(admin, owner, []), "the bindings to go")
        removed = await eventually(lambda: _removed(policy, cluster, user), "the removal event")
        assert [e.reason for e in removed] == ["access-changed"]
        # and the relay itself refuses the user now
        again = await request(edge, cluster, user, "GET", f"/api/v1/namespaces/{ns}/pods")
        assert again.status == 403


async def _gone(admin: SimAdmin, user: str) -> bool:
    return await _sa(admin, user) is None


async def test_a_pending_rbac_clean_up_never_holds_up_the_next_cut(
    nc: Client,
    edge: EdgeClient,
    sim: SimRunner,
    admin: SimAdmin,
    policy: Policy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The clean-up after the first revocation waits (here: an hour); the second user's watch
    is still cut as soon as the second revocation arrives."""
    import relay.revocation

    monkeypatch.setattr(relay.revocation, "RECONCILE_AFTER_S", 3600.0)
    cluster, users = policy.name("c"), [policy.name("amy"), policy.name("ben")]
    await policy.cluster(cluster)
    for user in users:
        await policy.user(user)
        await policy.grant(f"g-{user}", user, "view", cluster)
    async with new_relay(nc, sim, cluster):
        watches = [await open_watch(edge, cluster, u, "/api/v1/namespaces") for u in users]
        for watch in watches:
            assert (await asyncio.wait_for(watch.response_head(), WAIT)).status == 200
        for user, watch in zip(users, watches, strict=True):
            async with watch:
                await policy.revoke(f"g-{user}")
                with pytest.raises(StreamAbortedError):
                    while await asyncio.wait_for(watch.read(), WAIT) is not None:
                        pass
        assert await _sa(admin, users[0]) is not None  # its clean-up is still waiting


async def test_disabled_user_is_removed_with_reason_revoked(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user = policy.name("c"), policy.name("dan")
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(policy.name("g"), user, "view", cluster)
    async with new_relay(nc, sim, cluster):
        assert (await request(edge, cluster, user, "GET", "/api/v1/namespaces")).status == 200
        await policy.disable(user)
        await eventually(lambda: _gone(admin, user), "the account to be deleted")
        removed = await eventually(lambda: _removed(policy, cluster, user), "the removal event")
        assert [e.reason for e in removed] == ["revoked"]


async def test_fewer_grants_reconcile_bindings_and_the_cluster_refuses_the_rest(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user = policy.name("c"), policy.name("fay")
    ns = await _namespace(admin, policy, "ns")
    edit = policy.name("edit")
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(edit, user, "edit", cluster, namespaces=(ns,))
    await policy.grant(policy.name("view"), user, "view", cluster)
    cm = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"%s"}}'
    async with new_relay(nc, sim, cluster):
        made = await request(
            edge, cluster, user, "POST", f"/api/v1/namespaces/{ns}/configmaps", body=cm % b"one"
        )
        assert made.status == 201, made.body
        owner = (await _sa(admin, user))["metadata"]["labels"]["kubegate.io/owner"]
        assert len(await _bindings(admin, owner)) == 2

        await policy.revoke(edit)
        await eventually(
            lambda: _bindings_are(admin, owner, ["clusterrolebindings//kubegate:view"]),
            "the edit binding to go",
        )
        assert await _sa(admin, user) is not None  # still has view: the account stays
        denied = await request(
            edge, cluster, user, "POST", f"/api/v1/namespaces/{ns}/configmaps", body=cm % b"two"
        )
        assert denied.status == 403, denied.body
        assert "system:serviceaccount" in denied.json()["message"]  # the cluster said no
        listed = await request(edge, cluster, user, "GET", f"/api/v1/namespaces/{ns}/configmaps")
        assert listed.status == 200
    assert not await _removed(policy, cluster, user)


async def _bindings_are(admin: SimAdmin, owner: str, expected: list[str]) -> bool:
    return await _bindings(admin, owner) == expected


async def test_revocation_while_no_relay_runs_is_applied_at_start(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user = policy.name("c"), policy.name("gus")
    grant = policy.name("g")
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(grant, user, "view", cluster)
    async with new_relay(nc, sim, cluster):
        assert (await request(edge, cluster, user, "GET", "/api/v1/namespaces")).status == 200
    assert await _sa(admin, user) is not None
    await policy.revoke(grant)  # no relay is running
    async with new_relay(nc, sim, cluster):
        await eventually(lambda: _gone(admin, user), "the account to be deleted at start")
        removed = await eventually(lambda: _removed(policy, cluster, user), "the removal event")
        assert [e.reason for e in removed] == ["access-changed"]


async def test_idle_account_is_swept_with_its_bindings(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user, busy = policy.name("c"), policy.name("ida"), policy.name("bea")
    ns = await _namespace(admin, policy, "ns")
    await policy.cluster(cluster)
    for who in (user, busy):
        await policy.user(who)
        await policy.grant(policy.name(f"g-{who}"), who, "view", cluster, namespaces=(ns,))
    async with new_relay(nc, sim, cluster, idle=timedelta(seconds=2)) as relay:
        assert relay.accounts is not None
        for who in (user, busy):
            assert (
                await request(edge, cluster, who, "GET", f"/api/v1/namespaces/{ns}/pods")
            ).status == 200
        owner = (await _sa(admin, user))["metadata"]["labels"]["kubegate.io/owner"]
        # bea keeps a watch open: an open stream is use, however quiet
        watch = await open_watch(edge, cluster, busy, f"/api/v1/namespaces/{ns}/pods")
        async with watch:
            assert (await asyncio.wait_for(watch.response_head(), WAIT)).status == 200
            await eventually(lambda: _gone(admin, user), "the idle account to be swept")
            await eventually(lambda: _bindings_are(admin, owner, []), "the bindings to go")
            removed = await eventually(lambda: _removed(policy, cluster, user), "the removal event")
            assert [e.reason for e in removed] == ["idle"]

            def sweeps() -> float:
                found = relay.registry.get_sample_value(
                    "kubegate_relay_sweeps_total", {"result": "ok"}
                )
                return found or 0.0

            sweeps_after = sweeps() + 2
            await eventually(
                lambda: sweeps() >= sweeps_after,
                "two more sweeps",
            )
            assert await _sa(admin, busy) is not None
            assert not watch.closed
        # used again: provisioned again
        assert (
            await request(edge, cluster, user, "GET", f"/api/v1/namespaces/{ns}/pods")
        ).status == 200
        assert await _sa(admin, user) is not None


async def test_expired_grant_cuts_the_watch_without_any_event(
    nc: Client, edge: EdgeClient, sim: SimRunner, admin: SimAdmin, policy: Policy
) -> None:
    cluster, user = policy.name("c"), policy.name("jo")
    await policy.user(user)
    await policy.cluster(cluster)
    await policy.grant(policy.name("g"), user, "view", cluster, expires_in=timedelta(seconds=3))
    async with new_relay(nc, sim, cluster):
        watch = await open_watch(edge, cluster, user, "/api/v1/namespaces/default/pods")
        async with watch:
            assert (await asyncio.wait_for(watch.response_head(), WAIT)).status == 200
            with pytest.raises(StreamAbortedError):
                while await asyncio.wait_for(watch.read(), WAIT) is not None:
                    pass
        await eventually(lambda: _gone(admin, user), "the account to be deleted")
        removed = await eventually(lambda: _removed(policy, cluster, user), "the removal event")
        assert [e.reason for e in removed] == ["access-changed"]
