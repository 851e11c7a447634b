"""kubernetes-asyncio as a client: CRUD, watch, TokenRequest and token lifecycle."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.rest import ApiException

from ops.sim import Simulator


async def api_client(kubeconfig: str) -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(cfg)


async def test_crud_and_conflicts(sim: Simulator, ns_name: str) -> None:
    async with await api_client(str(sim.kubeconfig_path)) as api:
        core = client.CoreV1Api(api)
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns_name)))
        cm = await core.create_namespaced_config_map(
            ns_name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"a": "1"})
        )
        assert cm.metadata.uid and cm.metadata.resource_version
        with pytest.raises(ApiException) as exists:
            await core.create_namespaced_config_map(
                ns_name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"))
            )
        assert exists.value.status == 409 and '"reason":"AlreadyExists"' in exists.value.body
        cm.data["a"] = "2"
        updated = await core.replace_namespaced_config_map("c", ns_name, cm)
        assert int(updated.metadata.resource_version) > int(cm.metadata.resource_version)
        with pytest.raises(ApiException) as stale:
            await core.replace_namespaced_config_map("c", ns_name, cm)  # the old resourceVersion
        assert stale.value.status == 409 and "the object has been modified" in stale.value.body
        patched = await core.patch_namespaced_config_map("c", ns_name, {"data": {"b": "3"}})
        assert patched.data == {"a": "2", "b": "3"}
        listed = await core.list_namespaced_config_map(ns_name, label_selector="")
        assert {i.metadata.name for i in listed.items} >= {"c", "kube-root-ca.crt"}
        await core.delete_namespaced_config_map("c", ns_name)
        with pytest.raises(ApiException) as missing:
            await core.read_namespaced_config_map("c", ns_name)
        assert missing.value.status == 404 and 'configmaps \\"c\\" not found' in missing.value.body


async def test_watch_stream(sim: Simulator, ns_name: str) -> None:
    async with await api_client(str(sim.kubeconfig_path)) as api:
        core = client.CoreV1Api(api)
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns_name)))
        start = await core.list_namespaced_config_map(ns_name)
        seen: list[tuple[str, str]] = []

        async def follow() -> None:
            w = watch.Watch()
            async with w.stream(
                core.list_namespaced_config_map,
                ns_name,
                resource_version=start.metadata.resource_version,
                timeout_seconds=30,
            ) as stream:
                async for event in stream:
                    seen.append((event["type"], event["object"].metadata.name))
                    if event["type"] == "DELETED":
                        return

        task = asyncio.create_task(follow())
        await core.create_namespaced_config_map(
            ns_name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w"))
        )
        await core.patch_namespaced_config_map("w", ns_name, {"data": {"x": "y"}})
        await core.delete_namespaced_config_map("w", ns_name)
        await asyncio.wait_for(task, 30)
        assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


async def test_token_request_authenticates_until_account_is_deleted(
    sim: Simulator, ns_name: str, tmp_path
) -> None:
    async with await api_client(str(sim.kubeconfig_path)) as api:
        core = client.CoreV1Api(api)
        rbac = client.RbacAuthorizationV1Api(api)
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns_name)))
        await core.create_namespaced_service_account(
            ns_name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="bot"))
        )
        await rbac.create_namespaced_role_binding(
            ns_name,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="bot-edit"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="edit"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="bot", namespace=ns_name)
                ],
            ),
        )
        with pytest.raises(ApiException) as short:
            await core.create_namespaced_service_account_token(
                "bot",
                ns_name,
                client.AuthenticationV1TokenRequest(
                    spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=60)
                ),
            )
        assert (
            short.value.status == 422
            and "may not specify a duration less than 10 minutes" in short.value.body
        )
        issued = await core.create_namespaced_service_account_token(
            "bot",
            ns_name,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
            ),
        )
        token = issued.status.token
        assert issued.status.expiration_timestamp is not None
    path = sim.write_kubeconfig(tmp_path / "bot.kubeconfig", "bot", token=token)
    async with await api_client(str(path)) as bot_api:
        bot = client.CoreV1Api(bot_api)
        made = await bot.create_namespaced_config_map(
            ns_name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="by-bot"))
        )
        assert made.metadata.name == "by-bot"
        with pytest.raises(ApiException) as denied:
            await bot.list_namespace()
        assert denied.value.status == 403
        assert (
            f'User \\"system:serviceaccount:{ns_name}:bot\\" cannot list resource \\"namespaces\\" '
            'in API group \\"\\" at the cluster scope'
        ) in denied.value.body
        async with await api_client(str(sim.kubeconfig_path)) as admin:
            await client.CoreV1Api(admin).delete_namespaced_service_account("bot", ns_name)
        with pytest.raises(ApiException) as revoked:
            await bot.list_namespaced_config_map(ns_name)
        assert revoked.value.status == 401


async def test_rbac_escalation_is_refused_unless_bind_is_granted(
    sim: Simulator, ns_name: str, tmp_path
) -> None:
    async with await api_client(str(sim.kubeconfig_path)) as api:
        core = client.CoreV1Api(api)
        rbac = client.RbacAuthorizationV1Api(api)
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns_name)))
        await core.create_namespaced_service_account(
            ns_name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="granter"))
        )
        await rbac.create_namespaced_role_binding(
            ns_name,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="granter-admin"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="admin"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="granter", namespace=ns_name)
                ],
            ),
        )
        token = (
            await core.create_namespaced_service_account_token(
                "granter",
                ns_name,
                client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
            )
        ).status.token
    path = sim.write_kubeconfig(tmp_path / "granter.kubeconfig", "granter", token=token)

    def binding(name: str, role: str) -> client.V1RoleBinding:
        return client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=name),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="User", name="someone", api_group="rbac.authorization.k8s.io"
                )
            ],
        )

    async with await api_client(str(path)) as granter_api:
        granter = client.RbacAuthorizationV1Api(granter_api)
        made = await granter.create_namespaced_role_binding(ns_name, binding("ok", "view"))
        assert made.metadata.name == "ok"  # admin holds everything view grants in the namespace
        with pytest.raises(ApiException) as escalation:
            await granter.create_namespaced_role_binding(
                ns_name, binding("too-much", "cluster-admin")
            )
        assert escalation.value.status == 403
        assert "is attempting to grant RBAC permissions not currently held" in escalation.value.body
