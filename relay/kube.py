"""The relay's control calls on its own credentials, with kubernetes-asyncio.

A thin adapter: plain dicts in and out (shaped like the Kubernetes objects, as `binding_plan`
makes them), the few kinds the relay manages, and typed errors (`KubeApiError`,
`KubeConflictError` for 409) instead of the library's exceptions. "Not found" is an answer,
not an error: reads return None and deletes return False.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from relay.errors import KubeApiError, KubeConflictError

Object = dict[str, Any]


@dataclass(frozen=True)
class _Kind:
    api: str  # "core" or "rbac"
    stem: str  # method name stem, e.g. "service_account"
    namespaced: bool
    list_all: str = ""  # method listing across namespaces


KINDS: dict[str, _Kind] = {
    "Namespace": _Kind("core", "namespace", False),
    "ServiceAccount": _Kind("core", "service_account", True),
    "ClusterRole": _Kind("rbac", "cluster_role", False),
    "ClusterRoleBinding": _Kind("rbac", "cluster_role_binding", False),
    "RoleBinding": _Kind("rbac", "role_binding", True, "list_role_binding_for_all_namespaces"),
}


def without_env_lookups(api_client: client.ApiClient) -> None:
    """Stop kubernetes-asyncio's session from consulting the environment on every call.

    Its session is made with `trust_env=True`, so for each API call aiohttp looks up `~/.netrc`
    and the proxy variables, each in a worker thread: two thread hand-offs per call, on every
    JIT provisioning and RBAC clean-up. Worse, a netrc entry for the API server's host makes
    every call fail: aiohttp refuses to add its login to a request that already carries the
    relay's bearer token. The session is replaced by one on the same connector that does
    neither, unless the environment names a proxy, which is then still honoured. Call inside
    the event loop, before the first call.
    """
    if urllib.request.getproxies():
        return
    rest = api_client.rest_client
    old = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=old.connector,
        trust_env=False,
        read_bufsize=2**21,  # as kubernetes-asyncio
    )
    old.detach()  # the connector now belongs to the new session


class KubeObjects:
    """Create, read, replace, delete and list the objects a relay manages."""

    def __init__(self, api_client: client.ApiClient, *, timeout_s: float = 30.0) -> None:
        self.api_client = api_client
        self.timeout_s = timeout_s
        self._apis = {
            "core": client.CoreV1Api(api_client),
            "rbac": client.RbacAuthorizationV1Api(api_client),
        }

    # -- generic verbs ---------------------------------------------------------------------

    def _method(self, kind: str, verb: str) -> Any:
        k = KINDS[kind]
        infix = "namespaced_" if k.namespaced else ""
        return getattr(self._apis[k.api], f"{verb}_{infix}{k.stem}")

    async def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self.timeout_s)
        try:
            return await fn(*args, **kwargs)
        except ApiException as exc:
            raise _api_error(action, exc) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise KubeApiError(action, 0, "", f"kube-apiserver unreachable: {exc!r}") from exc

    def _to_dict(self, model: Any) -> Object:
        return self.api_client.sanitize_for_serialization(model)

    async def create(self, obj: Object) -> Object | None:
        """Create `obj`; None if it already exists."""
        kind, meta = obj["kind"], obj["metadata"]
        fn = self._method(kind, "create")
        args = (meta["namespace"], obj) if KINDS[kind].namespaced else (obj,)
        try:
            made = await self._call(f"create {_ref(kind, meta)}", fn, *args)
        except KubeConflictError as exc:
            if exc.reason == "AlreadyExists":
                return None
            raise
        return self._to_dict(made)

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Object | None:
        fn = self._method(kind, "read")
        args = (name, namespace) if KINDS[kind].namespaced else (name,)
        try:
            found = await self._call(f"read {kind} {name}", fn, *args)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return self._to_dict(found)

    async def replace(self, obj: Object) -> Object:
        """Replace the whole object (carry `metadata.resourceVersion` to make it conditional)."""
        kind, meta = obj["kind"], obj["metadata"]
        fn = self._method(kind, "replace")
        name = meta["name"]
        args = (name, meta["namespace"], obj) if KINDS[kind].namespaced else (name, obj)
        return self._to_dict(await self._call(f"replace {_ref(kind, meta)}", fn, *args))

    async def patch(self, kind: str, name: str, namespace: str | None, patch: Object) -> Object:
        """A strategic-merge patch (e.g. annotations); raises 404 as `KubeApiError`."""
        fn = self._method(kind, "patch")
        args = (name, namespace, patch) if KINDS[kind].namespaced else (name, patch)
        return self._to_dict(await self._call(f"patch {kind} {name}", fn, *args))

    async def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        uid: str | None = None,
    ) -> bool:
        """Delete; False if it was already gone. With preconditions, a changed object raises
        `KubeConflictError` and stays."""
        fn = self._method(kind, "delete")
        args = (name, namespace) if KINDS[kind].namespaced else (name,)
        body: Object = {"apiVersion": "v1", "kind": "DeleteOptions"}
        pre = {k: v for k, v in (("resourceVersion", resource_version), ("uid", uid)) if v}
        if pre:
            body["preconditions"] = pre
        try:
            await self._call(f"delete {kind} {name}", fn, *args, body=body)
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def list(
        self, kind: str, *, label_selector: str, namespace: str | None = None
    ) -> list[Object]:
        """Objects with the labels; namespaced kinds across all namespaces unless one is given."""
        k = KINDS[kind]
        if k.namespaced and namespace is None:
            if k.list_all:
                fn = getattr(self._apis[k.api], k.list_all)
            else:
                fn = getattr(self._apis[k.api], f"list_{k.stem}_for_all_namespaces")
            answer = await self._call(f"list {kind}", fn, label_selector=label_selector)
        elif k.namespaced:
            fn = self._method(kind, "list")
            answer = await self._call(
                f"list {kind} in {namespace}", fn, namespace, label_selector=label_selector
            )
        else:
            fn = getattr(self._apis[k.api], f"list_{k.stem}")
            answer = await self._call(f"list {kind}", fn, label_selector=label_selector)
        items = self._to_dict(answer).get("items") or []
        for item in items:  # list items carry no kind/apiVersion
            item.setdefault("kind", kind)
        return items

    # -- the rest ------------------------------------------------------------------------------

    async def token(
        self, name: str, namespace: str, *, seconds: int, audiences: list[str] | None = None
    ) -> tuple[str, datetime]:
        """A TokenRequest for a service account: (token, expiry)."""
        spec: Object = {"expirationSeconds": seconds}
        if audiences:
            spec["audiences"] = audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        answer = await self._call(
            f"token for ServiceAccount {namespace}/{name}",
            self._apis["core"].create_namespaced_service_account_token,
            name,
            namespace,
            body,
        )
        status = answer.status
        expires = status.expiration_timestamp
        if isinstance(expires, str):
            expires = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return status.token, expires

    async def server_version(self) -> Object:
        """`/version`: the cheapest call that proves the API server answers our credentials."""
        answer = await self._call(
            "read the server version", client.VersionApi(self.api_client).get_code
        )
        return self._to_dict(answer)


def _ref(kind: str, meta: Object) -> str:
    ns = meta.get("namespace")
    return f"{kind} {ns}/{meta['name']}" if ns else f"{kind} {meta['name']}"


def _api_error(action: str, exc: ApiException) -> KubeApiError:
    status = int(exc.status or 0)
    reason, message = str(exc.reason or ""), ""
    if exc.body:
        try:
            body = json.loads(exc.body)
            reason = body.get("reason") or reason
            message = body.get("message") or ""
        except (ValueError, AttributeError):
            message = str(exc.body)[:300]
    cls = KubeConflictError if status == 409 else KubeApiError
    return cls(action, status, reason, message or str(exc.reason or ""))
